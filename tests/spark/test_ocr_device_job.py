"""ocr.device through the extract job on a local[2] session: the provider the workers' OCR ran on reaches the
summary, a batch of images read together in Spark gives the per-image tokens, and a device that cannot work
ends the job with one error (exit 2), whether the driver sees it first or a worker does."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from imagequant.config import load_config
from imagequant.errors import ConfigError
from imagequant.spark.extract import run_extract, worker_config_error
from tests.ocr.test_ocr import needs_rapidocr

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four synthetic images in images/ (found there by the links' file names: nothing is fetched)."""
    from imagequant.synthetic import generate_sample

    out = tmp_path_factory.mktemp("ocrdev")
    generate_sample(out, n_images=4, seed=4321, difficulty="easy", image_size=(400, 640))
    return out


def _raise_config_error(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for _ in batches:
        raise ConfigError("ocr.device=cuda but no GPU is assigned to this task or visible to this worker")
    yield pd.DataFrame({"id": []})


def test_a_workers_configuration_error_is_found_in_the_failed_job(spark) -> None:
    frame = spark.range(2).mapInPandas(_raise_config_error, "id long")
    with pytest.raises(Exception) as info:
        frame.collect()
    assert worker_config_error(info.value) == (
        "ocr.device=cuda but no GPU is assigned to this task or visible to this worker")
    assert worker_config_error(RuntimeError("Python worker exited unexpectedly")) is None


def test_cuda_without_a_gpu_stops_a_local_job_before_any_work(spark, sample, tmp_path) -> None:
    config = load_config(overrides=["ocr.engine=rapidocr", "ocr.device=cuda", "cnn.enabled=false"])
    with pytest.raises(ConfigError, match="ocr.device=cuda"):
        run_extract(spark, config, str(sample / "labels.csv"), str(tmp_path / "store"), str(sample / "images"))
    assert not (tmp_path / "store").exists()


def test_cuda_without_a_gpu_exits_2_from_the_job(sample, tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "extract_features.py"), "--catalog", str(sample / "labels.csv"),
         "--store", str(tmp_path / "store"), "--images-dir", str(sample / "images"),
         "--set", "spark.master=local[1]", "--set", "ocr.device=cuda", "--set", "cnn.enabled=false"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "error: ocr.device=cuda" in done.stderr and "Traceback" not in done.stderr


@needs_rapidocr
def test_summary_names_the_provider_and_spark_batches_read_as_single_images(spark, sample, tmp_path) -> None:
    from imagequant.core.tokens import ocr_text
    from imagequant.imaging import decode_image
    from imagequant.ocr.zoo import get_engine
    from imagequant.scoring.second_look import lacks_candidates

    # One line per recognition call, so the images read together in each Arrow batch give exactly the tokens
    # of a read alone (with the same second-look target: the entities the catalog asks of the image); one
    # partition per core: two images per batch.
    config = load_config(overrides=["ocr.engine=rapidocr", "cnn.enabled=false", "ocr.rapidocr.rec_batch_lines=1",
                                    "spark.image_partitions_per_core=1"])
    summary = run_extract(spark, config, str(sample / "labels.csv"), str(tmp_path / "store"), str(sample / "images"))
    assert summary.processed_ok == summary.processed == 4
    assert summary.ocr_device == "CPUExecutionProvider"
    assert "ocr=rapidocr ocr_device=CPUExecutionProvider " in summary.line()
    images = pq.ParquetDataset(str(tmp_path / "store" / "images")).read().to_pandas()
    labels = pd.read_csv(sample / "labels.csv")
    engine = get_engine(config.ocr, config.imaging)
    for link, text, passes in zip(images["image_link"], images["ocr_text"], images["ocr_passes"], strict=True):
        image = decode_image((sample / "images" / Path(link).name).read_bytes())
        asked = sorted(set(labels.loc[labels["image_link"] == link, "entity_name"]))
        alone = engine.read_passes(image, lacks_candidates(asked, image.size))
        assert (text, passes) == (ocr_text(alone.tokens), "+".join(alone.passes)), link
