"""Where the OCR models run (``ocr.device``): provider selection as a pure function, its configuration keys,
and the real onnxruntime falling back to the CPU when the CUDA provider does not start (this machine has no
GPU and the CPU build of onnxruntime)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from imagequant.config import CONF_DIR, OcrConfig, load_config
from imagequant.devices import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    OcrPlacement,
    cpu_flags,
    current_ocr_placement,
    has_int8_dot_product,
    ocr_placement,
    onnxruntime_providers,
    task_gpu,
)
from imagequant.errors import ConfigError
from imagequant.ocr.zoo import check_device
from tests.ocr.test_ocr import needs_rapidocr

GPU_BUILD = [CUDA_PROVIDER, CPU_PROVIDER]
CPU_BUILD = ["AzureExecutionProvider", CPU_PROVIDER]


def test_cpu_is_the_cpu_provider_alone() -> None:
    for device in ("cpu", "auto"):
        placement = ocr_placement(device, CPU_BUILD, assigned=None, visible=0)
        assert placement == OcrPlacement("cpu")
        assert [name for name, _ in placement.providers()] == [CPU_PROVIDER]
    # ocr.device=cpu keeps the CPU even where a GPU and the CUDA provider are there
    assert ocr_placement("cpu", GPU_BUILD, assigned=1, visible=2).device == "cpu"


def test_auto_takes_the_gpu_spark_assigned_else_a_visible_one() -> None:
    assigned = ocr_placement("auto", GPU_BUILD, assigned=3, visible=4)
    assert (assigned.device, assigned.device_id, assigned.describe()) == ("cuda", 3, "cuda:3")
    providers = assigned.providers()
    assert [name for name, _ in providers] == [CUDA_PROVIDER, CPU_PROVIDER]  # the CPU serves what CUDA lacks
    assert providers[0][1]["device_id"] == 3
    assert providers[0][1]["cudnn_conv_algo_search"] == "HEURISTIC"  # shapes change per call: no exhaustive search
    assert ocr_placement("auto", GPU_BUILD, assigned=None, visible=1) == OcrPlacement("cuda", 0)
    # Spark's assignment wins even when the process cannot enumerate devices the same way
    assert ocr_placement("auto", GPU_BUILD, assigned=2, visible=0) == OcrPlacement("cuda", 2)


def test_auto_falls_back_to_the_cpu_without_a_gpu_or_the_cuda_provider() -> None:
    assert ocr_placement("auto", GPU_BUILD, assigned=None, visible=0).device == "cpu"  # onnxruntime-gpu, no GPU
    assert ocr_placement("auto", CPU_BUILD, assigned=0, visible=1).device == "cpu"  # a GPU, the CPU build


def test_cuda_without_the_provider_or_a_gpu_is_one_clear_error() -> None:
    with pytest.raises(ConfigError) as info:
        ocr_placement("cuda", CPU_BUILD, assigned=0, visible=1)
    message = str(info.value)
    assert "ocr.device=cuda" in message and CUDA_PROVIDER in message and "imagequant[gpu]" in message
    assert "pip uninstall -y onnxruntime" in message  # the two builds must not be installed together
    with pytest.raises(ConfigError, match="no GPU is assigned to this task or visible"):
        ocr_placement("cuda", GPU_BUILD, assigned=None, visible=0)
    assert ocr_placement("cuda", GPU_BUILD, assigned=1, visible=2) == OcrPlacement("cuda", 1)
    with pytest.raises(ConfigError, match="ocr.device must be auto, cpu or cuda"):
        ocr_placement("gpu", GPU_BUILD, assigned=None, visible=1)


def test_this_machine_runs_ocr_on_the_cpu() -> None:
    # No Spark task, no GPU: auto is the CPU; cuda fails before any model is loaded.
    assert task_gpu() is None
    assert current_ocr_placement("auto") == OcrPlacement("cpu")
    assert check_device(OcrConfig(engine="rapidocr", device="auto")) == "cpu"
    if CUDA_PROVIDER not in onnxruntime_providers():
        with pytest.raises(ConfigError, match=CUDA_PROVIDER):
            check_device(OcrConfig(engine="rapidocr", device="cuda"))
    # Tesseract ignores ocr.device: it always runs on the CPU
    assert check_device(OcrConfig(engine="tesseract", device="cuda")) == "cpu"


def test_a_vnni_class_int8_instruction_is_read_from_the_cpu_flags() -> None:
    assert has_int8_dot_product(frozenset({"avx2", "fma", "avx512_vnni"})) is True
    assert has_int8_dot_product(frozenset({"avx2", "avx_vnni"})) is True
    assert has_int8_dot_product(frozenset({"avx2", "fma", "sha_ni"})) is False  # e.g. AMD Zen 3
    assert has_int8_dot_product(None) is None  # flags unknown (not Linux): nothing is claimed
    flags = cpu_flags()
    if sys.platform.startswith("linux"):
        assert flags is not None and "sse2" in flags


def test_device_and_batch_keys_are_validated() -> None:
    default = load_config()
    assert (default.ocr.device, default.ocr.rapidocr.rec_batch_lines) == ("auto", 6)  # RapidOCR's own CPU batch
    cfg = load_config(overrides=["ocr.device=cpu", "ocr.rapidocr.rec_batch_lines=64"])
    assert (cfg.ocr.device, cfg.ocr.rapidocr.rec_batch_lines) == ("cpu", 64)
    with pytest.raises(ConfigError, match="ocr.device must be auto, cpu or cuda, got 'gpu'"):
        load_config(overrides=["ocr.device=gpu"])
    with pytest.raises(ConfigError, match="ocr.rapidocr.rec_batch_lines must be >= 1"):
        load_config(overrides=["ocr.rapidocr.rec_batch_lines=0"])
    with pytest.raises(ConfigError, match="rec_batch_lines must be an integer"):
        load_config(overrides=["ocr.rapidocr.rec_batch_lines=6.5"])
    cluster = load_config([CONF_DIR / "cluster.yaml"])
    assert cluster.ocr.device == "auto" and cluster.ocr.rapidocr.rec_batch_lines > default.ocr.rapidocr.rec_batch_lines
    assert load_config([CONF_DIR / "local.yaml"]).ocr.device == "cpu"


@needs_rapidocr
# Placed on cuda without the CUDA provider (which resolving a placement never does), onnxruntime warns too.
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available:UserWarning")
def test_a_gpu_that_does_not_take_the_models_leaves_them_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    # The real onnxruntime asked for the CUDA provider it lacks: it keeps the CPU one, and so does the engine
    # (auto), saying so in the worker's log; ocr.device=cuda refuses.
    from imagequant.ocr.rapidocr import _rapid_models

    gpu = OcrPlacement("cuda", 0)
    models = _rapid_models(1, True, True, gpu)
    assert models.providers() == [CPU_PROVIDER] * 3
    assert models.describe() == CPU_PROVIDER and models.gpu_failure
    assert "OCR models not on cuda:0" in capsys.readouterr().err
    assert _rapid_models(1, True, True, gpu) is models  # not retried for every image
    with pytest.raises(ConfigError, match="ocr.device=cuda but the OCR models do not run on cuda:0"):
        _rapid_models(1, True, True, gpu, required=True)
    # The arena setting still reaches the sessions built with the CUDA provider list
    assert all(s.get_session_options().enable_cpu_mem_arena for s in models.sessions)


@needs_rapidocr
def test_engine_reports_the_provider_its_sessions_run_on() -> None:
    from imagequant.ocr.zoo import get_engine
    from tests.ocr.test_ocr import IMAGING, _cfg

    engine = get_engine(_cfg("rapidocr"), IMAGING)
    assert engine.describe_device() == CPU_PROVIDER
    assert [s.get_providers()[0] for s in engine._sessions] == [CPU_PROVIDER] * 3
    with pytest.raises(ConfigError, match="ocr.device=cuda"):
        get_engine(_cfg("rapidocr", device="cuda"), IMAGING)  # this machine's onnxruntime has no CUDA provider


@needs_rapidocr
def test_measure_ocr_says_where_the_models_ran(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from imagequant.synthetic import generate_sample

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "jobs"))
    try:
        import measure_ocr
    finally:
        sys.path.pop(0)
    generate_sample(tmp_path / "s", n_images=2, seed=5, difficulty="easy", image_size=(320, 480))
    out = tmp_path / "table.md"
    assert measure_ocr.main(["--labels", str(tmp_path / "s" / "labels.csv"), "--images-dir",
                             str(tmp_path / "s" / "images"), "--engine", "rapidocr", "--workers", "1",
                             "--out", str(out), "--set", "ocr.second_pass=false"]) == 0
    assert "with rapidocr on cpu" in capsys.readouterr().out
    assert f"- OCR models ran on: {CPU_PROVIDER}" in out.read_text()
    assert json.loads(out.with_suffix(".json").read_text())["devices"] == [CPU_PROVIDER]
    with pytest.raises(ConfigError, match="ocr.device=cuda"):
        measure_ocr.main(["--labels", str(tmp_path / "s" / "labels.csv"), "--images-dir",
                          str(tmp_path / "s" / "images"), "--out", str(out), "--set", "ocr.device=cuda"])
