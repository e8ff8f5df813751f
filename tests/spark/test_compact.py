"""Compaction folds the images table's batches into one; what every reader sees stays the same, and a crash
in the middle leaves a readable store."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imagequant.config import load_config
from imagequant.core.schema import IMAGES
from imagequant.spark import compact
from imagequant.spark.compact import run_compact
from imagequant.spark.store import StoreFs, StoreInUse, read_images, store_lock
from imagequant.synthetic import write_catalogs
from tests.model.test_model import ENTITIES
from tests.spark.test_train_predict import LINK, _image_record, synthetic_row

pytestmark = pytest.mark.slow
CONFIG = load_config(overrides=["store.rows_per_file=1000"])


def _nightly_store(root: Path) -> tuple[Path, Path, Path]:
    """A store written by three nights: failures later retried, images read again with other tokens, new
    images; plus a labeled catalog and an unlabeled catalog of its images."""
    rng = random.Random(5)
    rows = []
    nights: dict[str, list[dict[str, Any]]] = {"2024-01-01": [], "2024-01-02": [], "2024-01-03": []}
    for i in range(24):
        entity = ENTITIES[i % len(ENTITIES)]
        link = LINK.format(f"night-{i}")
        tokens, size, label = synthetic_row(rng, entity)
        rows.append({"image_link": link, "group_id": str(i // 3), "entity_name": entity, "entity_value": label})
        first = _image_record(link, tokens, size, rng, status="http_status" if i % 4 == 0 else "ok")
        nights["2024-01-01"].append({**first, "processed_at": "2024-01-01T02:00:00"})
        if i < 12:  # read again the next night: the failures now succeed, the others get other tokens
            again, again_size, _ = synthetic_row(rng, entity)
            second = _image_record(link, again if i % 4 else tokens, again_size if i % 4 else size, rng)
            nights["2024-01-02"].append({**second, "processed_at": "2024-01-02T02:00:00"})
    for i in range(24, 30):
        entity = ENTITIES[i % len(ENTITIES)]
        link = LINK.format(f"night-{i}")
        tokens, size, label = synthetic_row(rng, entity)
        rows.append({"image_link": link, "group_id": str(i // 3), "entity_name": entity, "entity_value": label})
        nights["2024-01-03"].append({**_image_record(link, tokens, size, rng), "processed_at": "2024-01-03T02:00:00"})
    store = root / "store"
    for night, records in nights.items():
        part = store / "images" / f"batch={night}"
        part.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(records, IMAGES.arrow_schema()), part / "part-00000.parquet")
    labeled, catalog = write_catalogs(pd.DataFrame(rows), root)
    return store, labeled, catalog


def _what_readers_see(spark: Any, store: Path, catalog: Path, labeled: Path, out: Path) -> dict[str, Any]:
    from imagequant.evaluation.evaluate import read_store_images
    from imagequant.spark.inference import run_predict
    from imagequant.spark.training_table import prepare_training_table
    from imagequant.training.reader import iter_training_records

    view = read_images(spark, store).select(*IMAGES.names()).toPandas()
    view = view.sort_values("image_id").reset_index(drop=True)
    pandas_view = read_store_images(store).sort_values("image_id").reset_index(drop=True)
    run_predict(spark, catalog, store, "rules", out)
    table = prepare_training_table(spark, [labeled], store)
    records = sorted(iter_training_records(table.uri, "pyarrow"), key=lambda r: (r["source"], r["index"]))
    return {
        "view": view.map(lambda v: list(v) if hasattr(v, "__len__") and not isinstance(v, str) else v),
        "pandas_view": pandas_view[["image_id", "status", "processed_at"]],
        "predictions": pd.read_parquet(out / "predictions.parquet"),
        "training": [(r["index"], r["status"], r["tokens_json"]) for r in records],
    }


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    pd.testing.assert_frame_equal(a["view"], b["view"])
    pd.testing.assert_frame_equal(a["pandas_view"], b["pandas_view"])
    pd.testing.assert_frame_equal(a["predictions"], b["predictions"])
    assert a["training"] == b["training"]


@pytest.fixture()
def nightly(tmp_path: Path) -> dict[str, Path]:
    store, labeled, catalog = _nightly_store(tmp_path)
    return {"root": tmp_path, "store": store, "labeled": labeled, "catalog": catalog}


def test_compaction_keeps_what_every_reader_sees(spark: Any, nightly: dict[str, Path]) -> None:
    store = nightly["store"]
    before = _what_readers_see(spark, store, nightly["catalog"], nightly["labeled"], nightly["root"] / "p1")
    summary = run_compact(spark, CONFIG, str(store))
    assert (summary.batches_before, summary.batches_after) == (3, 1)
    assert (summary.rows_before, summary.rows_after) == (42, 30)
    assert sorted(p.name for p in (store / "images").iterdir()) == [f"batch={summary.batch}"]
    assert not (store / "_trash").exists() or not any((store / "_trash").rglob("*.parquet"))
    after = _what_readers_see(spark, store, nightly["catalog"], nightly["labeled"], nightly["root"] / "p2")
    _assert_same(before, after)
    again = run_compact(spark, CONFIG, str(store))
    assert not again.retired and "nothing to do" in again.line()


def test_a_crash_in_the_middle_leaves_the_store_readable(spark: Any, nightly: dict[str, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    store = nightly["store"]
    before = _what_readers_see(spark, store, nightly["catalog"], nightly["labeled"], nightly["root"] / "p1")
    retire = compact.retire_partition
    calls = []

    def crash_after_first(fs: StoreFs, table: str, partition: str) -> None:
        if calls:
            # halfway through moving the second old batch out: it is in _trash, not yet deleted
            fs.mkdirs(fs.path("_trash", table))
            fs.rename(fs.path(table, partition), fs.path("_trash", table, partition))
            raise KeyboardInterrupt("killed")
        calls.append(partition)
        retire(fs, table, partition)

    monkeypatch.setattr(compact, "retire_partition", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        run_compact(spark, CONFIG, str(store))
    monkeypatch.undo()
    assert not (store / "_lock.json").exists()
    _assert_same(before, _what_readers_see(spark, store, nightly["catalog"], nightly["labeled"],
                                           nightly["root"] / "p2"))
    summary = run_compact(spark, CONFIG, str(store))  # recovery first, then a whole compaction
    assert summary.batches_after == 1
    _assert_same(before, _what_readers_see(spark, store, nightly["catalog"], nightly["labeled"],
                                           nightly["root"] / "p3"))


def test_a_crash_while_writing_changes_nothing(spark: Any, nightly: dict[str, Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    store = nightly["store"]
    batches = sorted(p.name for p in (store / "images").iterdir())

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("executor lost")

    monkeypatch.setattr(compact, "write_partition", crash)
    with pytest.raises(RuntimeError, match="executor lost"):
        run_compact(spark, CONFIG, str(store))
    assert sorted(p.name for p in (store / "images").iterdir()) == batches


def test_compaction_waits_for_no_extract_run(spark: Any, nightly: dict[str, Path]) -> None:
    with store_lock(StoreFs(spark, nightly["store"]), "20240103T020000-9"), pytest.raises(StoreInUse):
        run_compact(spark, CONFIG, str(nightly["store"]))


def test_a_refused_compaction_names_the_compaction_that_holds_the_store(spark: Any, nightly: dict[str, Path],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    store = nightly["store"]
    seen: list[Any] = []
    real_write = compact.write_partition

    def second_compaction_meanwhile(*args: Any, **kwargs: Any) -> None:
        # While this compaction holds the lock, another one tries the store.
        with pytest.raises(StoreInUse) as refused:
            run_compact(spark, CONFIG, str(store))
        seen.append(refused.value)
        real_write(*args, **kwargs)

    monkeypatch.setattr(compact, "write_partition", second_compaction_meanwhile)
    first = run_compact(spark, CONFIG, str(store))
    [message] = [str(e) for e in seen]
    assert f"in use by compaction run {first.run_id}" in message and "extract" not in message, message


def test_the_job_compacts_and_refuses_a_missing_store(nightly: dict[str, Path]) -> None:
    import subprocess
    import sys

    job = [sys.executable, str(Path(__file__).resolve().parents[2] / "jobs" / "compact_store.py")]
    missing = subprocess.run([*job, "--store", str(nightly["root"] / "nope")], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith("error: store ")
    done = subprocess.run([*job, "--store", str(nightly["store"]), "--set", "spark.master=local[1]"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "compact_store: 3 batches (42 rows" in done.stdout and "-> 1 batch compacted-" in done.stdout
