"""A memory cap on Python workers (``spark.executor.pyspark.memory``, applied by Spark as RLIMIT_AS): a cap under
which the job's libraries cannot load is refused before any work with one ``error:`` line naming the minimum. A
CNN stage whose worker cannot import torch under a real cap: tests/model/test_cnn_stage.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from imagequant.config import load_config
from imagequant.errors import ConfigError
from imagequant.worker_memory import pyspark_memory_mib

REPO = Path(__file__).resolve().parents[2]
KEY = "spark.conf.spark.executor.pyspark.memory"


def test_a_cap_under_the_minimum_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"spark.executor.pyspark.memory=4g .* at least 5g"):
        load_config(overrides=[f"{KEY}=4g"])
    with pytest.raises(ConfigError, match="at least 5g"):
        load_config(overrides=[f"{KEY}=4096"])  # no suffix: MiB, as Spark reads it
    assert load_config(overrides=[f"{KEY}=5g"]).spark.conf["spark.executor.pyspark.memory"] == "5g"
    load_config(overrides=[f"{KEY}=4g", "cnn.enabled=false"])  # OCR alone fits
    with pytest.raises(ConfigError, match="at least 2g"):
        load_config(overrides=[f"{KEY}=1g", "cnn.enabled=false"])
    # ResNet-50 on OpenVINO on a CPU executor imports no torch: 3g is enough (measured: works at 2.5 GiB).
    load_config(overrides=[f"{KEY}=3g", "cnn.device=cpu"])
    with pytest.raises(ConfigError, match=r"below what the CNN stage on OpenVINO and OCR need: at least 3g"):
        load_config(overrides=[f"{KEY}=2g", "cnn.device=cpu"])
    with pytest.raises(ConfigError, match="at least 5g"):
        load_config(overrides=[f"{KEY}=3g", "cnn.device=cpu", "cnn.cpu_runtime=torch"])
    assert [pyspark_memory_mib(v) for v in ("4g", "4096m", "512", "1t", "lots")] == [4096, 4096, 512, 1024**2, None]


def test_the_extract_job_refuses_the_cap_with_one_error_line(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("index,image_link,group_id,entity_name\n0,http://img.invalid/a.jpg,1,item_weight\n")
    done = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "extract_features.py"), "--catalog", str(catalog),
         "--store", str(tmp_path / "store"), "--set", f"{KEY}=4g"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "at least 5g" in lines[0], done.stderr
    assert not (tmp_path / "store").exists()  # before any work
