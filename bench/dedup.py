"""Deduplication on the challenge's test catalog: one image task per distinct image, and the catalog
stage's time. Images are not fetched: only read_catalog and the images_to_process transform of
imagequant/spark/extract.py on a Spark DataFrame (through load_rows, as run_extract builds it,
with the catalog staged in a scratch store).

    .venv/bin/python bench/dedup.py      # needs ../shared/challenge/test_index.csv.gz, skips cleanly without

Expected for that file: 131,187 rows and 90,667 distinct link texts, one of them empty (the empty link is
a bad_link row, so 90,666 distinct images to process).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import CHALLENGE, REPO, Result, env_str, log, run_script  # noqa: E402


def main() -> int:
    catalog = Path(env_str("BENCH_DEDUP_CATALOG", str(CHALLENGE / "test_index.csv.gz")))
    result = Result("dedup", "Deduplication: image tasks per distinct image (challenge test catalog)")
    result.params = {"catalog": str(catalog)}
    if not catalog.is_file():
        result.status, result.reason = "skipped", f"{catalog} is absent (real data lives beside the checkout)"
        result.write()
        return 0

    import pandas as pd

    from imagequant.catalog import ROW_COLUMNS, read_catalog
    from imagequant.config import load_config
    from imagequant.spark.extract import images_to_process, load_rows
    from imagequant.spark.schema import ROW_SCHEMA
    from imagequant.spark.session import build_session, catalog_frame
    from imagequant.spark.store import StoreFs

    started = time.perf_counter()
    frame = read_catalog(catalog)
    pandas_s = time.perf_counter() - started
    raw = pd.read_csv(catalog, dtype=str, keep_default_na=False)
    distinct_links = raw["image_link"].str.strip().nunique()
    empty_links = int((raw["image_link"].str.strip() == "").sum())
    ok_rows = frame[frame["row_status"] == "ok"]
    expected = ok_rows["image_id"].nunique()
    log(f"dedup: {len(frame)} rows, {distinct_links} distinct link texts, {expected} distinct servable images")

    config = load_config([REPO / "conf" / "local.yaml"], ["spark.conf.spark.ui.enabled=false"])
    t0 = time.perf_counter()
    spark = build_session(config, "imagequant-bench-dedup")
    session_s = time.perf_counter() - t0
    store = Path(tempfile.mkdtemp(prefix="imagequant-dedup-"))
    try:
        spark.createDataFrame(frame.head(100)[["index"]]).count()  # JVM and Python warm-up, not catalog cost
        fs = StoreFs(spark, store)
        t1 = time.perf_counter()
        rows = load_rows(spark, fs, str(catalog), "bench").cache()
        row_count = rows.count()
        t2 = time.perf_counter()
        todo = images_to_process(rows, None)
        tasks = todo.count()
        t3 = time.perf_counter()
        duplicates_in_todo = todo.count() - todo.select("image_link").distinct().count()
        statuses = {r["row_status"]: r["count"] for r in rows.groupBy("row_status").count().collect()}
        rows.unpersist()
        # For comparison: the same rows handed over by createDataFrame, which the driver's JVM then holds.
        held = frame[list(ROW_COLUMNS)].assign(run_id="bench")
        t4 = time.perf_counter()
        rows_held = catalog_frame(spark, held, ROW_SCHEMA).cache()
        rows_held.count()
        t5 = time.perf_counter()
        rows_held.unpersist()
    finally:
        spark.stop()
        shutil.rmtree(store, ignore_errors=True)
    result.details = {
        "rows": len(frame), "distinct_link_texts": int(distinct_links), "empty_links": empty_links,
        "row_status": statuses, "distinct_servable_images": int(expected), "image_tasks": tasks,
        "duplicate_links_among_tasks": duplicates_in_todo, "read_catalog_pandas_s": round(pandas_s, 2),
        "session_start_s": round(session_s, 2), "load_rows_s": round(t2 - t1, 2),
        "images_to_process_s": round(t3 - t2, 2), "spark_row_count": row_count,
        "create_data_frame_s": round(t5 - t4, 2),
    }
    result.add("dedup", "catalog rows", len(frame), "rows", digits=0)
    result.add("dedup", "distinct link texts (incl. empty)", distinct_links, "links", digits=0,
               note=f"{empty_links} row(s) with an empty link")
    result.add("dedup", "image tasks (images_to_process rows)", tasks, "tasks", digits=0,
               note=f"distinct servable images: {expected}; equal: {tasks == expected}")
    result.add("dedup", "image tasks / distinct servable images", tasks / expected if expected else None, "x",
               goal=("==", 1.0), note="1.0 = exactly one task per distinct image")
    result.add("dedup", "read_catalog (pandas)", pandas_s, "s", digits=2)
    result.add("dedup", "catalog stage in Spark (load_rows + images_to_process)", t3 - t1, "s", digits=2,
               note=f"load_rows {t2 - t1:.1f} s (the catalog staged as a Parquet file in the store) + distinct "
                    f"images {t3 - t2:.1f} s; session start {session_s:.1f} s")
    result.add("dedup", "the same rows through spark.createDataFrame (held by the driver)", t5 - t4, "s", digits=2,
               note="what load_rows did before it staged the catalog as a file")
    result.write()
    return 0


if __name__ == "__main__":
    run_script(main)
