"""Compaction after nightly back-fills: read times of the training table and of predict's image join after
30 simulated nightly runs, before and after ``jobs/compact_store.py``'s compaction.

    .venv/bin/python bench/compaction.py

Each simulated night adds one images batch the way an extract run lays it out: new images, plus images
retried from earlier nights (some failures, then successes) so the canonical view has work to do. The
batches are written with pyarrow (no OCR: only the store's reading cost is measured). Timed, each the best
of BENCH_COMPACT_REPEATS runs on one local[2] session: the canonical images view counted, predict's join of
catalog rows with it (rules scorer, the whole predict job's Spark part), and building the training table.
"""

from __future__ import annotations

import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import REPO, Result, env_int, log, run_script, work_dir  # noqa: E402


def write_nights(store: Path, nights: int, per_night: int, seed: int) -> tuple[list[dict[str, Any]], int]:
    """``nights`` images batches; returns the catalog rows and the number of stored image rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from imagequant.catalog import image_id
    from imagequant.core.schema import IMAGES, tokens_to_columns
    from imagequant.core.tokens import OcrToken

    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    stored = 0
    links: list[str] = []
    for night in range(nights):
        records = []
        fresh = [f"https://images.example.com/n{night}/{i}.jpg" for i in range(per_night)]
        retried = rng.sample(links, min(len(links), per_night // 5))
        for link in fresh + retried:
            ok = link in retried or rng.random() > 0.1
            value = rng.randint(5, 900)
            tokens = [OcrToken("Net", 90, 40, 40, 60, 30, 0, 0, 0), OcrToken("Wt", 90, 110, 40, 40, 30, 0, 0, 1),
                      OcrToken(f"{value}g", 90, 160, 40, 80, 30, 0, 0, 2)] if ok else []
            record = IMAGES.empty_record(
                image_id=image_id(link), image_link=link, status="ok" if ok else "timeout",
                error="" if ok else "read timed out", width=640 if ok else 0, height=480 if ok else 0,
                ocr_engine="bench", cnn_weights="random(seed=0)",
                cnn_features=[rng.random() for _ in range(8)] * 256 if ok else [],
                run_id=f"night-{night}", processed_at=f"2024-01-{night + 1:02d}T02:00:00",
                **tokens_to_columns(tokens))
            records.append(record)
            if link in fresh:
                rows.append({"image_link": link, "group_id": str(len(rows) // 4), "entity_name": "item_weight",
                             "entity_value": f"{value}.0 gram"})
        links += fresh
        part = store / "images" / f"batch=2024-01-{night + 1:02d}"
        part.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(records, IMAGES.arrow_schema()), part / "part-00000.parquet")
        stored += len(records)
    return rows, stored


def best_of(repeats: int, fn: Any) -> float:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return min(seconds)


def main() -> int:
    nights = env_int("BENCH_COMPACT_NIGHTS", 30)
    per_night = env_int("BENCH_COMPACT_IMAGES", 200)
    repeats = env_int("BENCH_COMPACT_REPEATS", 3)
    result = Result("compaction", f"Compaction after {nights} nightly runs: reading the store before and after")
    result.params = {"nights": nights, "images_per_night": per_night, "repeats": repeats}
    root = work_dir("compaction")
    shutil.rmtree(root, ignore_errors=True)
    store = root / "store"
    rows, stored = write_nights(store, nights, per_night, seed=3)
    import pandas as pd

    from imagequant.synthetic import write_catalogs

    labeled, catalog = write_catalogs(pd.DataFrame(rows), root)
    log(f"compaction: {nights} batches, {stored} image rows, {len(rows)} catalog rows in {store}")

    from imagequant.config import load_config
    from imagequant.spark.compact import run_compact
    from imagequant.spark.inference import run_predict
    from imagequant.spark.session import build_session
    from imagequant.spark.store import read_images
    from imagequant.spark.training_table import prepare_training_table

    config = load_config([REPO / "conf" / "local.yaml"], ["spark.conf.spark.ui.enabled=false"])
    spark = build_session(config, "imagequant-bench-compaction")
    timings: dict[str, dict[str, float]] = {}
    outputs: dict[str, Any] = {}
    try:
        for phase in ("before", "after"):
            if phase == "after":
                summary = run_compact(spark, config, str(store))
                result.details["compaction"] = summary.to_json()
                log(summary.line())
            timings[phase] = {
                "view": best_of(repeats, lambda: read_images(spark, store).count()),
                "predict": best_of(repeats, lambda p=phase: run_predict(spark, catalog, store, "rules",
                                                                        root / f"pred-{p}")),
                "training_table": best_of(repeats, lambda: prepare_training_table(spark, [labeled], store)),
            }
            outputs[phase] = pd.read_parquet(root / f"pred-{phase}" / "predictions.parquet")
    finally:
        spark.stop()
    identical = outputs["before"].equals(outputs["after"])
    result.details["timings_s"] = timings
    result.details["predictions_identical"] = identical
    for key, label in (("view", "canonical images view count"), ("predict", "predict (rules), whole Spark part"),
                       ("training_table", "training table build")):
        b, a = timings["before"][key], timings["after"][key]
        result.add("store", f"{label}: before / after compaction", b / a if a else None, "x",
                   note=f"{b:.2f} s -> {a:.2f} s")
    compacted = result.details["compaction"]
    result.add("store", "batches after compaction", compacted["batches_after"], "",
               note=f"{compacted['batches_before']} batches, {compacted['rows_before']} rows -> "
                    f"{compacted['rows_after']} rows; predictions identical: {identical}")
    result.write()
    return 0 if identical else 1


if __name__ == "__main__":
    run_script(main)
