"""Deduplication on the challenge's test catalog: one image task per distinct image, and the catalog
stage's time. Images are not fetched: only read_catalog and the images_to_process transform of
imagequant/spark/extract.py on a Spark DataFrame (through load_rows, as run_extract builds it).

    .venv/bin/python bench/dedup.py      # needs ../shared/challenge/test_index.csv.gz, skips cleanly without

Expected for that file: 131,187 rows and 90,667 distinct link texts, one of them empty (the empty link is
a bad_link row, so 90,666 distinct images to process).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import CHALLENGE, REPO, Result, env_str, log  # noqa: E402


def main() -> int:
    catalog = Path(env_str("BENCH_DEDUP_CATALOG", str(CHALLENGE / "test_index.csv.gz")))
    result = Result("dedup", "Deduplication: image tasks per distinct image (challenge test catalog)")
    result.params = {"catalog": str(catalog)}
    if not catalog.is_file():
        result.status, result.reason = "skipped", f"{catalog} is absent (real data lives beside the checkout)"
        result.write()
        return 0

    import pandas as pd

    from imagequant.catalog import read_catalog
    from imagequant.config import load_config
    from imagequant.spark.extract import images_to_process, load_rows
    from imagequant.spark.session import build_session

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
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    configured = config.spark.conf.get(key, "10000")
    big = env_str("BENCH_DEDUP_BIG_BATCH", "10000")
    try:
        spark.createDataFrame(frame.head(100)[["index"]]).count()  # JVM and Python warm-up, not catalog cost
        t1 = time.perf_counter()
        rows = load_rows(spark, str(catalog), "bench").cache()
        row_count = rows.count()
        t2 = time.perf_counter()
        todo = images_to_process(rows, None)
        tasks = todo.count()
        t3 = time.perf_counter()
        duplicates_in_todo = todo.count() - todo.select("image_link").distinct().count()
        statuses = {r["row_status"]: r["count"] for r in rows.groupBy("row_status").count().collect()}
        rows.unpersist()
        # createDataFrame slices the pandas catalog into Arrow batches of maxRecordsPerBatch rows; the
        # pipeline sets 8 for image rows, which makes a big catalog 16,000+ batches. Same load, larger batches:
        spark.conf.set(key, big)
        t4 = time.perf_counter()
        rows_big = load_rows(spark, str(catalog), "bench").cache()
        rows_big.count()
        t5 = time.perf_counter()
        rows_big.unpersist()
        spark.conf.set(key, configured)
    finally:
        spark.stop()
    result.details = {
        "rows": len(frame), "distinct_link_texts": int(distinct_links), "empty_links": empty_links,
        "row_status": statuses, "distinct_servable_images": int(expected), "image_tasks": tasks,
        "duplicate_links_among_tasks": duplicates_in_todo, "read_catalog_pandas_s": round(pandas_s, 2),
        "session_start_s": round(session_s, 2), "load_rows_s": round(t2 - t1, 2),
        "images_to_process_s": round(t3 - t2, 2), "spark_row_count": row_count,
        "arrow_max_records_per_batch": configured, "load_rows_s_with_big_batches": round(t5 - t4, 2),
        "big_batch": big,
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
               note=f"load_rows {t2 - t1:.1f} s + distinct images {t3 - t2:.1f} s; session start {session_s:.1f} s; "
                    f"Arrow batches of {configured} rows")
    result.add("dedup", f"load_rows with Arrow batches of {big} rows instead of {configured}", t5 - t4, "s", digits=2,
               note=f"{(t2 - t1) / max(1e-9, t5 - t4):.1f}x faster: createDataFrame slices the catalog by "
                    "spark.sql.execution.arrow.maxRecordsPerBatch")
    result.write()
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
