"""Configuration values that cannot work are rejected up front with their dotted name (ConfigError, exit 2):
impossible sizes, timeouts and counts, a --conf file that is not UTF-8, and Spark settings the JVM would
refuse (one ``error:`` line, no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from imagequant.config import load_config
from imagequant.errors import ConfigError, UsageError
from imagequant.spark.session import check_spark_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("setting", "key"), [
    ("imaging.cnn_size=0", "imaging.cnn_size"),
    ("imaging.cnn_size=-224", "imaging.cnn_size"),
    ("imaging.cnn_size=100000", "imaging.cnn_size"),  # its crop alone is over max_pixels
    ("imaging.ocr_min_side=0", "imaging.ocr_min_side"),
    ("imaging.ocr_max_side=-1", "imaging.ocr_max_side"),
    ("imaging.ocr_min_side=3000", "imaging.ocr_min_side"),  # above ocr_max_side (2400)
    ("imaging.max_pixels=0", "imaging.max_pixels"),
    ("fetch.connect_timeout_s=0", "fetch.connect_timeout_s"),
    ("fetch.connect_timeout_s=-1", "fetch.connect_timeout_s"),
    ("fetch.read_timeout_s=.nan", "fetch.read_timeout_s"),
    ("fetch.read_timeout_s=.inf", "fetch.read_timeout_s"),
    ("fetch.backoff_s=-0.5", "fetch.backoff_s"),
    ("fetch.backoff_s=.nan", "fetch.backoff_s"),
    ("fetch.max_backoff_s=.inf", "fetch.max_backoff_s"),
    ("fetch.max_backoff_s=-1", "fetch.max_backoff_s"),
    ("fetch.max_retry_after_s=-1", "fetch.max_retry_after_s"),
    ("fetch.max_retry_after_s=.nan", "fetch.max_retry_after_s"),
    ("fetch.max_retries=-1", "fetch.max_retries"),
    ("fetch.max_redirects=-1", "fetch.max_redirects"),
    ("fetch.pool_size=0", "fetch.pool_size"),
    ("fetch.per_host_concurrency=0", "fetch.per_host_concurrency"),
    ("fetch.max_bytes=0", "fetch.max_bytes"),
    ("ocr.timeout_s=0", "ocr.timeout_s"),
    ("ocr.timeout_s=-5", "ocr.timeout_s"),
    ("ocr.timeout_s=.nan", "ocr.timeout_s"),
    ("ocr.timeout_s=.inf", "ocr.timeout_s"),
    ("ocr.timeout_s=1e6", "ocr.timeout_s"),  # over a week: the clocks and sockets it reaches overflow
    ("ocr.timeout_s=200000", "ocr.wall_timeout_factor"),  # its wall-clock backstop (x4) is over a week
    ("fetch.read_timeout_s=1e300", "fetch.read_timeout_s"),
    ("fetch.max_retry_after_s=1e7", "fetch.max_retry_after_s"),
    ("spark.progress_interval_s=1e9", "spark.progress_interval_s"),
    ("ocr.min_confidence=.nan", "ocr.min_confidence"),
    ("ocr.min_confidence=101", "ocr.min_confidence"),
    ("ocr.rapidocr.text_score=2", "ocr.rapidocr.text_score"),
    ("ocr.rapidocr.det_upscale=.nan", "ocr.rapidocr.det_upscale"),
    ("ocr.tesseract.oem=9", "ocr.tesseract.oem"),
    ("ocr.tesseract.thread_limit=0", "ocr.tesseract.thread_limit"),
    ("cnn.torch_threads=0", "cnn.torch_threads"),
    ("cnn.stage_partitions=0", "cnn.stage_partitions"),
    ("cnn.seed=-1", "cnn.seed"),
    ("spark.image_partitions_per_core=0", "spark.image_partitions_per_core"),
    ("store.rows_per_file=0", "store.rows_per_file"),
    ("model.embed_dim=0", "model.embed_dim"),
    ("model.dropout=1.0", "model.dropout"),
    ("train.learning_rate=0", "train.learning_rate"),
    ("train.learning_rate=.nan", "train.learning_rate"),
    ("train.epochs=0", "train.epochs"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.grad_clip=-1", "train.grad_clip"),
    ("predict.min_score=.nan", "predict.min_score"),
    # Spark settings are checked while the configuration loads, so submit.sh refuses them before spark-submit.
    ("spark.conf.spark.executor.memory=lots", "spark.conf.spark.executor.memory"),
    ("spark.conf.spark.driver.memory=0", "spark.conf.spark.driver.memory"),
    ("spark.conf.spark.task.cpus=abc", "spark.conf.spark.task.cpus"),
])
def test_values_that_cannot_work_are_rejected_with_their_name(setting: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides=[setting])


def test_working_edge_values_are_accepted() -> None:
    config = load_config(overrides=["fetch.backoff_s=0", "fetch.max_retries=0", "fetch.max_redirects=0",
                                    "fetch.read_timeout_s=604800", "spark.progress_interval_s=0",
                                    "imaging.ocr_min_side=2400", "ocr.min_confidence=100",
                                    "predict.min_score=0.5", "train.patience=0"])
    assert config.imaging.ocr_min_side == config.imaging.ocr_max_side == 2400
    for name in ("default.yaml", "local.yaml", "cluster.yaml"):
        load_config([REPO / "conf" / name])


def test_conf_file_that_is_not_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("fetch:\n  user_agent: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config([bad])


@pytest.mark.parametrize("settings", [
    {"spark.executor.memory": "lots"},
    {"spark.driver.memory": "2 gigs"},
    {"spark.executor.memoryOverhead": "-1g"},
    {"spark.sql.shuffle.partitions": "-1"},
    {"spark.sql.shuffle.partitions": "abc"},
    {"spark.sql.shuffle.partitions": "0"},
    {"spark.executor.cores": "1.5"},
    {"spark.default.parallelism": "99999999999"},
])
def test_spark_values_the_jvm_would_refuse(settings: dict[str, str]) -> None:
    key = next(iter(settings))
    with pytest.raises(UsageError, match=f"spark.conf.{key}".replace(".", r"\.")):
        check_spark_settings(settings)


def test_spark_values_that_work() -> None:
    check_spark_settings({"spark.executor.memory": "4g", "spark.driver.memory": "2048m", "spark.executor.memory"
                          "Overhead": "512", "spark.sql.shuffle.partitions": "8", "spark.executor.instances": "0",
                          "spark.sql.autoBroadcastJoinThreshold": "-1", "spark.sql.execution.arrow."
                          "maxRecordsPerBatch": "-1", "spark.ui.enabled": "false"})


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cat") / "test.csv"
    path.write_text("index,image_link,group_id,entity_name\n0,https://img.test/a.jpg,1,width\n")
    return path


def _extract(catalog: Path, store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "jobs" / "extract_features.py"), "--catalog", str(catalog), "--store", str(store),
         "--set", "spark.master=local[1]", "--set", "spark.conf.spark.ui.enabled=false", *args],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )


def _one_error_line(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    for text in expected:
        assert text in errors[0], errors[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("setting", "expected"), [
    ("spark.conf.spark.executor.memory=lots", "spark.conf.spark.executor.memory"),
    ("spark.conf.spark.sql.shuffle.partitions=-1", "spark.conf.spark.sql.shuffle.partitions"),
    ("spark.conf.spark.sql.shuffle.partitions=abc", "spark.conf.spark.sql.shuffle.partitions"),
    ("fetch.read_timeout_s=-1", "fetch.read_timeout_s"),
    ("imaging.cnn_size=0", "imaging.cnn_size"),
])
def test_extract_job_exits_2_with_one_error_line(catalog: Path, tmp_path: Path, setting: str, expected: str) -> None:
    _one_error_line(_extract(catalog, tmp_path / "store", "--set", setting), expected)


@pytest.mark.parametrize(("content", "expected"), [
    (b"ocr:\n  engine: \xff\xfe\n", "not UTF-8"),
    # PyYAML's own message spans several lines; the job's is one, with where the problem is.
    (b"ocr: [1, 2\n", "not valid YAML: expected ',' or ']', but got '<stream end>' at line 2, column 1"),
])
def test_extract_job_rejects_a_conf_file_it_cannot_read(catalog: Path, tmp_path: Path, content: bytes,
                                                        expected: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    _one_error_line(_extract(catalog, tmp_path / "store", "--conf", str(bad)), expected, str(bad))


@pytest.mark.parametrize(("setting", "expected"), [
    # Refused by the JVM while the SparkContext starts.
    ("spark.conf.spark.scheduler.mode=SOMETIMES", "spark.conf.spark.scheduler.mode"),
    # Refused by Spark SQL only when the session state is built.
    ("spark.conf.spark.sql.ansi.enabled=maybe", "spark.conf.spark.sql.ansi.enabled"),
])
def test_extract_job_turns_a_jvm_refusal_into_one_error_line(catalog: Path, tmp_path: Path, setting: str,
                                                             expected: str) -> None:
    _one_error_line(_extract(catalog, tmp_path / "store", "--set", setting), expected)


def _submit(catalog: Path, store: Path, setting: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "submit.sh"), "extract_features", "--catalog", str(catalog), "--store", str(store),
         "--master", "local[1]", "--set", "spark.conf.spark.ui.enabled=false", "--set", setting],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )


@pytest.mark.parametrize(("setting", "expected"), [
    # spark-submit's own JVM refuses it before Python starts, unless submit.sh's check comes first.
    ("spark.conf.spark.executor.memory=lots", "spark.conf.spark.executor.memory"),
    # Refused while the SparkContext starts: Spark's message stays in the log, its Java stack trace does not.
    ("spark.conf.spark.scheduler.mode=SOMETIMES", "spark.conf.spark.scheduler.mode"),
])
def test_submit_turns_a_refused_spark_setting_into_one_error_line(catalog: Path, tmp_path: Path, setting: str,
                                                                  expected: str) -> None:
    done = _submit(catalog, tmp_path / "store", setting)
    # spark-submit hands the Python driver's stderr on through its stdout: read both as one console.
    console = subprocess.CompletedProcess(done.args, done.returncode, "", done.stderr + done.stdout)
    _one_error_line(console, expected)
    assert "Exception in thread" not in console.stderr and not any(
        line.lstrip().startswith("at org.apache.") for line in console.stderr.splitlines()), console.stderr[-3000:]
