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
