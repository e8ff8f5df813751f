"""Arguments a job cannot work with end it before any Spark work: one ``error:`` line and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "test.csv"
    path.write_text("index,image_link,group_id,entity_name\n0,https://img.test/a.jpg,1,width\n")
    return path


def _extract(catalog: Path, store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "jobs" / "extract_features.py"), "--catalog", str(catalog),
                           "--store", str(store), *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def _one_error_line(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("value", ["2026-13-45", "2025-02-29", "2024-04-31", "0000-01-01"])
def test_a_run_date_must_be_a_calendar_date(catalog: Path, tmp_path: Path, value: str) -> None:
    done = _extract(catalog, tmp_path / "store", "--run-date", value)
    _one_error_line(done, f"--run-date {value} is not a calendar date")
    assert not (tmp_path / "store").exists()  # refused before Spark started


def test_images_dir_naming_a_file_is_refused(catalog: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "images.txt"
    a_file.write_text("not a folder")
    _one_error_line(_extract(catalog, tmp_path / "store", "--images-dir", str(a_file)),
                    f"--images-dir {a_file} exists and is not a folder")
    _one_error_line(_extract(catalog, tmp_path / "store", "--images-dir", str(a_file / "below")),
                    f"--images-dir {a_file / 'below'} cannot be created")
    assert not (tmp_path / "store").exists()


def test_train_and_predict_need_their_rows_from_a_catalog_or_a_stored_run(tmp_path: Path) -> None:
    def job(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(REPO / "jobs" / f"{name}.py"), "--store", str(tmp_path / "s"),
                               *args], capture_output=True, text=True, timeout=120, cwd=REPO)

    _one_error_line(job("train", "--model", str(tmp_path / "m")), "--catalog PATH or --run-date RUN")
    _one_error_line(job("train", "--model", str(tmp_path / "m"), "--run-date", "d", "--run-date", "d"),
                    "the same --run-date is given twice")
    both = job("predict", "--model", "rules", "--out", str(tmp_path / "o"), "--catalog", "c.csv", "--run-date", "d")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr  # one or the other


def test_an_output_place_that_cannot_be_written_is_refused_before_any_work(catalog: Path, tmp_path: Path) -> None:
    """Every job's output folder or file is made ready first: a path below a file (which even root cannot
    create) or a folder where a file is wanted is one error line, not a traceback after the work."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    below = a_file / "out"

    def job(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(REPO / "jobs" / f"{name}.py"), *args], capture_output=True,
                              text=True, timeout=120, cwd=REPO)

    labels = tmp_path / "labels.csv"
    labels.write_text("image_link,group_id,entity_name,entity_value\nhttps://img.test/a.jpg,1,width,2.0 centimetre\n")
    predictions = tmp_path / "submission.csv"
    predictions.write_text("index,prediction\n0,\n")
    _one_error_line(job("evaluate", "--predictions", str(predictions), "--truth", str(labels), "--report", str(below)),
                    f"--report {below} cannot be created")
    _one_error_line(job("profile_catalog", "--catalog", str(catalog), "--report", str(a_file)),
                    f"--report {a_file} exists and is not a folder")
    _one_error_line(job("measure_ocr", "--labels", str(labels), "--images-dir", str(tmp_path), "--out",
                        str(below / "ocr.md")), "--out's folder")
    _one_error_line(job("measure_ocr", "--labels", str(labels), "--images-dir", str(tmp_path), "--out",
                        str(tmp_path)), f"--out {tmp_path} is a folder, not a file")
    _one_error_line(job("make_sample", "--images", "1", "--out", str(below)), f"--out {below} cannot be created")
    assert not (tmp_path / "ocr.json").exists()


def test_a_master_spark_cannot_start_is_refused_by_name(catalog: Path, tmp_path: Path) -> None:
    _one_error_line(_extract(catalog, tmp_path / "store", "--set", "spark.master=bogus"),
                    "spark.master must be local, local[N] (N at least 1), local[*], spark://HOST:PORT, yarn or "
                    "k8s://URL, got 'bogus'")
    # Spark would refuse these only after its JVM started, with a stack trace
    for master in ("local[0]", "local[x]", "local[]"):
        _one_error_line(_extract(catalog, tmp_path / "store", "--set", f"spark.master={master}"),
                        f"got '{master}'")
    assert not (tmp_path / "store").exists()


def test_a_job_that_fails_removes_the_output_folders_it_made_and_left_empty(tmp_path: Path) -> None:
    from imagequant.cli import EXIT_FAILED, EXIT_USAGE, output_folder, run_job
    from imagequant.errors import UsageError

    (tmp_path / "kept").mkdir()

    def refused(argv: object) -> int:
        output_folder(tmp_path / "kept" / "a" / "b", "--out")
        raise UsageError("the store is not a store")

    with pytest.raises(SystemExit) as exit_info:
        run_job(refused, [])
    assert exit_info.value.code == EXIT_USAGE
    assert (tmp_path / "kept").is_dir() and not (tmp_path / "kept" / "a").exists()  # only what it made

    def failed_after_writing(argv: object) -> int:
        out = output_folder(tmp_path / "out" / "report", "--report")
        output_folder(tmp_path / "empty", "--model")
        (out / "partial.csv").write_text("index,prediction\n")
        return EXIT_FAILED

    with pytest.raises(SystemExit) as exit_info:
        run_job(failed_after_writing, [])
    assert exit_info.value.code == EXIT_FAILED
    assert (tmp_path / "out" / "report" / "partial.csv").is_file() and not (tmp_path / "empty").exists()

    def succeeded(argv: object) -> int:
        output_folder(tmp_path / "fine", "--out")
        return 0

    with pytest.raises(SystemExit) as exit_info:
        run_job(succeeded, [])
    assert exit_info.value.code == 0 and (tmp_path / "fine").is_dir()  # an empty result of a good run stays


def test_an_output_place_is_local_a_file_uri_included(catalog: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Only --store may be remote: an output folder named by another URI would be written as a local folder
    called 's3:'; a file:// URI is its local path."""
    from imagequant.cli import output_file, output_folder
    from imagequant.errors import UsageError

    with pytest.raises(UsageError, match=r"--out s3://bucket/predictions is not on this machine's file system"):
        output_folder("s3://bucket/predictions", "--out")
    with pytest.raises(UsageError, match=r"--out hdfs://nn/ocr\.md is not on this machine's file system: give a "
                                         r"local file"):
        output_file("hdfs://nn/ocr.md", "--out")
    assert output_folder((tmp_path / "r").as_uri(), "--report") == tmp_path / "r" and (tmp_path / "r").is_dir()
    monkeypatch.chdir(tmp_path)
    assert output_folder("relative/kept", "--out").parts == ("relative", "kept")  # as given, for the messages
    _one_error_line(_extract(catalog, tmp_path / "store", "--images-dir", "s3://bucket/images"),
                    "--images-dir s3://bucket/images is not on this machine's file system")
    assert not (tmp_path / "store").exists()
