"""The benchmark scripts' command line: --help describes a script and runs nothing, any other argument is refused,
and a scale run with changed settings never takes the name of the shipped settings' result; a run names its CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
# scripts whose settings are all environment variables (stages.py and scaling.py parse their own arguments)
PLAIN_SCRIPTS = ["compaction.py", "dedup.py", "gpu_cnn.py", "gpu_ocr.py", "inference.py", "ocr_breakdown.py",
                 "ocr_cost.py", "scale.py", "training_input.py"]


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("script", PLAIN_SCRIPTS)
def test_help_describes_the_script_and_runs_nothing(script: str) -> None:
    done = _run(script, "--help")
    assert done.returncode == 0, done.stderr
    assert "takes no arguments" in done.stdout
    assert "[bench]" not in done.stdout + done.stderr  # no benchmark step started


def test_an_argument_is_refused_in_one_line() -> None:
    done = _run("scale.py", "--images", "10")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: scale.py takes no arguments (got --images 10); sizes and settings come from BENCH_* environment "
        "variables (bench/README.md), and --help describes it"]


def test_a_scale_run_with_changed_settings_is_named_by_them() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import scale
    finally:
        sys.path.remove(str(BENCH))
    assert scale.variant_name(["ocr.rapidocr.precision=int8"]) == "scale_precision-int8"
    assert scale.variant_name(["ocr.timeout_s=2.5", "cnn.cpu_runtime=torch"]) == "scale_timeout-s-2-5_cpu-runtime-torch"


def test_a_run_names_the_cpus_instruction_sets() -> None:
    """CPUs of one model name ("AMD EPYC") differ in bf16 and VNNI, which decide the runtimes' speed: a result
    records which of them its CPU has, and the tables name them."""
    sys.path.insert(0, str(BENCH))
    try:
        import benchlib
        import run_all
    finally:
        sys.path.remove(str(BENCH))
    features = benchlib.machine_facts()["cpu_features"]
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split()
    assert features == [f for f in benchlib.MODEL_CPU_FLAGS if f in flags]
    assert run_all._cpu({"cpu_model": "AMD EPYC", "cpu_features": ["avx2", "avx512_bf16"]}) == \
        "AMD EPYC (avx2, avx512_bf16)"
    assert run_all._cpu({"cpu_model": "AMD EPYC"}) == "AMD EPYC"  # a result stored before it was recorded
