"""A memory cap on Python workers (``spark.executor.pyspark.memory``, applied by Spark as RLIMIT_AS): a cap under
which the job's libraries cannot load is refused before any work with one ``error:`` line naming the minimum,
and a CNN stage that fails in a worker (torch's import refused by a real RLIMIT_AS) gives its images a status
and a message instead of ending the job."""

from __future__ import annotations

import json
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


# In a fresh process under a real RLIMIT_AS of 2 GiB (the measured import needs about 3.1 GB more than the
# process holds): the CNN stage's Arrow function over one batch, its images' statuses out.
_CAPPED = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
import numpy as np, pyarrow as pa
from imagequant.config import load_config
from imagequant.spark.udfs import cnn_features_function

config = load_config(overrides=["cnn.enabled=true", "cnn.cpu_runtime=torch"])
size = config.imaging.cnn_size
crop = np.full((size, size, 3), 200, dtype=np.uint8).tobytes()
batch = pa.RecordBatch.from_pydict({
    "image_id": ["a", "b", "c"], "status": ["ok", "decode_error", "ok"], "error": ["", "bad bytes", ""],
    "cnn_input": pa.array([crop, b"", crop], type=pa.binary()),
})
out = pa.Table.from_batches(list(cnn_features_function(config)(iter([batch]))))
print(json.dumps({"status": out.column("status").to_pylist(), "error": out.column("error").to_pylist(),
                  "features": [float(np.abs(np.asarray(f)).sum()) for f in out.column("cnn_features").to_pylist()],
                  "torch": "torch" in sys.modules}))
"""


def test_a_cnn_stage_that_cannot_import_torch_gives_its_images_a_status() -> None:
    pytest.importorskip("torch")
    done = subprocess.run([sys.executable, "-c", _CAPPED], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == ["cnn_error", "decode_error", "cnn_error"]
    assert result["error"][1] == "bad bytes"  # an image without a crop keeps its own failure
    assert "the CNN stage failed in this worker (ImportError" in result["error"][0], result["error"][0]
    assert "at least 5g" in result["error"][0]
    assert result["features"] == [0.0, 0.0, 0.0] and not result["torch"]
