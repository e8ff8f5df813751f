"""Runs into one store are serialised by a lock, undated runs keep their own rows, a damaged store file is
reported or quarantined, and a store that cannot be written is refused before any image is fetched."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from imagequant.config import load_config
from imagequant.spark.extract import run_extract
from imagequant.spark.store import StoreDamaged, StoreFs, StoreInUse, store_lock

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SETTINGS = ["fetch.allow_loopback=true", "ocr.engine=tesseract", "ocr.rotated_pass=false",
            "ocr.second_pass=false", "cnn.enabled=false", "spark.image_partitions_per_core=1"]


@pytest.fixture(scope="module")
def catalogs(image_server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small unlabeled catalogs of loopback images (the second shares one image with the first)."""
    from imagequant.synthetic import generate_sample

    out = tmp_path_factory.mktemp("guard")
    labels = generate_sample(out / "sample", n_images=5, seed=77, difficulty="easy")
    links = []
    for link in dict.fromkeys(labels["image_link"]):
        name = Path(link).name
        links.append(image_server.add(f"/guard/{name}", (out / "sample" / "images" / name).read_bytes()))
    paths = {}
    for key, chosen in (("first", links[:3]), ("second", links[2:])):
        frame = pd.DataFrame({"index": range(len(chosen)), "image_link": chosen, "group_id": "1",
                              "entity_name": "item_weight"})
        paths[key] = out / f"{key}.csv"
        frame.to_csv(paths[key], index=False)
    return paths


def _extract(spark: Any, catalog: Path, store: Path, run_date: str | None = None) -> Any:
    return run_extract(spark, load_config(overrides=SETTINGS), str(catalog), str(store), run_date=run_date)


def test_a_second_run_into_a_held_store_is_refused(spark: Any, catalogs: dict[str, Path], tmp_path: Path) -> None:
    store = tmp_path / "store"
    fs = StoreFs(spark, store)
    with store_lock(fs, "20240101T000000-1"), pytest.raises(StoreInUse) as refused:
        _extract(spark, catalogs["first"], store)
    message = str(refused.value)
    assert "in use by extract run 20240101T000000-1" in message and f"pid {os.getpid()}" in message
    assert not (store / "images").exists()  # nothing was fetched or written
    assert not (store / "_lock.json").exists()  # the holder released it; the refused run never took it
    summary = _extract(spark, catalogs["first"], store)
    assert summary.store_ok == 3 and not (store / "_lock.json").exists()


def test_a_lock_left_by_a_dead_run_of_this_host_is_taken_over(spark: Any, catalogs: dict[str, Path],
                                                              tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (store / "_lock.json").write_text(json.dumps({"run_id": "old", "host": socket.gethostname(),
                                                  "pid": int(dead.stdout), "started_at": "2024-01-01T00:00:00Z"}))
    assert _extract(spark, catalogs["first"], store).store_ok == 3


def test_the_job_refuses_a_held_store_with_one_error_line(catalogs: dict[str, Path], tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    holder = {"run_id": "20240101T000000-7", "host": socket.gethostname(), "pid": os.getpid(),
              "started_at": "2024-01-01T00:00:00Z"}
    (store / "_lock.json").write_text(json.dumps(holder))
    done = subprocess.run([sys.executable, str(REPO / "jobs" / "extract_features.py"), "--catalog",
                           str(catalogs["first"]), "--store", str(store), *sum((["--set", s] for s in SETTINGS), [])],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: store ") and "20240101T000000-7" in last and "Traceback" not in done.stderr


def test_undated_runs_keep_their_own_rows(spark: Any, catalogs: dict[str, Path], tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = _extract(spark, catalogs["first"], store)
    second = _extract(spark, catalogs["second"], store)
    partitions = sorted(p.name for p in (store / "rows").iterdir())
    assert partitions == sorted([f"run_date={first.batch}", f"run_date={second.batch}"])
    rows = pd.read_parquet(store / "rows")
    assert len(rows) == 6 and set(rows["run_id"]) == {first.run_id, second.run_id}
    assert second.already_ok == 1  # the shared image was not processed again


def test_a_damaged_images_file_is_quarantined_and_its_images_redone(spark: Any, catalogs: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    from imagequant.spark.inference import run_predict

    store = tmp_path / "store"
    _extract(spark, catalogs["first"], store)
    [damaged] = sorted((store / "images").rglob("*.parquet"))
    damaged.write_bytes(b"this is no parquet file" * 40)
    with pytest.raises(StoreDamaged, match=r"is not a readable Parquet file.*_quarantine"):
        run_predict(spark, catalogs["first"], store, "rules", tmp_path / "pred")
    summary = _extract(spark, catalogs["first"], store)
    assert summary.processed == 3 and summary.processed_ok == 3 and len(summary.quarantined) == 1
    assert "quarantined=1" in summary.line()
    moved = store / "_quarantine" / damaged.relative_to(store)
    assert moved.is_file() and not damaged.exists()
    assert run_predict(spark, catalogs["first"], store, "rules", tmp_path / "pred").problems == []


def test_a_store_that_cannot_be_written_is_refused_before_fetching(spark: Any, catalogs: dict[str, Path],
                                                                   image_server: Any, tmp_path: Path) -> None:
    from imagequant.errors import UsageError

    if os.geteuid() == 0:
        blocker = tmp_path / "a-file"  # root writes anywhere: a path below a regular file cannot be created
        blocker.write_text("")
        store = blocker / "store"
    else:
        parent = tmp_path / "readonly"
        parent.mkdir()
        parent.chmod(0o555)
        store = parent / "store"
    hits = sum(image_server.hits.values())
    with pytest.raises(UsageError, match="cannot be written.*nothing was fetched"):
        _extract(spark, catalogs["first"], store)
    assert sum(image_server.hits.values()) == hits


def _job(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "jobs" / "extract_features.py"), *args,
                           *sum((["--set", s] for s in [*SETTINGS, "spark.master=local[2]",
                                                        "spark.conf.spark.ui.enabled=false"]), [])],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


def test_one_job_run_quarantines_a_damaged_images_file_and_completes(catalogs: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    # Two batches, the first one's file cut short: the run that finds it moves it aside and completes.
    store = tmp_path / "store"
    for key in ("first", "second"):
        assert _job("--catalog", str(catalogs[key]), "--store", str(store)).returncode == 0
    damaged = sorted((store / "images").glob("batch=*/*.parquet"), key=lambda p: p.stat().st_mtime)[0]
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    done = _job("--catalog", str(catalogs["first"]), "--store", str(store))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "quarantined=1" in done.stdout and "Traceback" not in done.stderr, done.stdout
    assert (store / "_quarantine" / damaged.relative_to(store)).is_file() and not damaged.exists()
    again = _job("--catalog", str(catalogs["first"]), "--store", str(store))
    assert again.returncode == 0 and "quarantined" not in again.stdout, again.stderr[-3000:]


def test_the_summary_line_tells_this_runs_work_from_what_the_store_holds(spark: Any, catalogs: dict[str, Path],
                                                                          image_server: Any, tmp_path: Path) -> None:
    store = tmp_path / "store"
    _extract(spark, catalogs["first"], store)
    grown = pd.read_csv(catalogs["first"])
    grown.loc[len(grown)] = [len(grown), image_server.url("/guard/never-there.jpg"), "1", "item_weight"]
    grown.to_csv(tmp_path / "grown.csv", index=False)
    summary = _extract(spark, tmp_path / "grown.csv", store)
    # This run processed one image, which failed; the store holds the three earlier ones ok and this one not.
    assert (summary.processed, summary.processed_ok, summary.store_ok, summary.store_not_ok) == (1, 0, 3, 1)
    assert ("distinct_images=4 already_ok=3 processed=1 processed_ok=0 processed_failed=1 (http_status=1) "
            "store_ok=3 store_not_ok=1 ") in summary.line(), summary.line()
    assert " ok=" not in summary.line()  # no bare ok= that mixes the two


def test_a_folder_of_other_files_is_refused_as_a_new_store(catalogs: dict[str, Path], tmp_path: Path) -> None:
    """A sample's folder (catalogs beside an images folder of .jpg files) given as --store is refused before
    Spark starts, and nothing is written among its files; what a failed first run leaves is a store's folder."""
    from imagequant.errors import UsageError
    from imagequant.spark.store import check_store_target

    sample = catalogs["first"].parent / "sample"
    before = sorted(p.relative_to(sample) for p in sample.rglob("*"))
    done = _job("--catalog", str(catalogs["first"]), "--store", str(sample))
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is a folder of other files" in errors[0] and "images/" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.relative_to(sample) for p in sample.rglob("*")) == before
    only_images = tmp_path / "only-images"
    (only_images / "images").mkdir(parents=True)
    (only_images / "images" / "a.jpg").write_bytes(b"")
    with pytest.raises(UsageError, match=r"\(images/a.jpg\)"):
        check_store_target(only_images)
    left = tmp_path / "failed-first-run"
    (left / "_staging" / "run").mkdir(parents=True)
    (left / "_lock.json").write_text("{}")
    (left / ".DS_Store").write_text("")
    for fine in (tmp_path / "new", tmp_path / "empty", left):
        (tmp_path / "empty").mkdir(exist_ok=True)
        check_store_target(fine)


def test_a_store_that_is_a_file_or_under_one_is_refused_before_spark(catalogs: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    from imagequant.errors import UsageError
    from imagequant.spark.store import check_store_target

    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a store")
    done = _job("--catalog", str(catalogs["first"]), "--store", str(a_file))
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [f"error: store {a_file} is a file, not a store's folder"]
    with pytest.raises(UsageError, match=r"cannot be created: .*notes.txt is a file"):
        check_store_target(a_file / "store")
    assert a_file.read_text() == "not a store"
