"""Scaling: the extract job (run_extract) in local[2] and local[1] against the plain single-process loop
(imagequant.pipeline.images.process_all_locally) over the same images, doing the same per-image work.

    .venv/bin/python bench/scaling.py     # BENCH_SCALING_IMAGES=48 BENCH_SCALING_LOCAL1_IMAGES=32

Images are local files (--images-dir), so a fetch is a file read for both. Each run is a fresh process:
the loop; Spark local[2]; Spark local[1] (over the first BENCH_SCALING_LOCAL1_IMAGES images, compared with
the loop's time for those same images, which it processed as its first batches). Three ratios are reported:

* job: loop seconds / run_extract seconds (catalog read, the small counting jobs, processing, the Parquet
  write and the commit; what extract_features reports as images_per_second);
* with session start: the job plus building the SparkSession (JVM start);
* processing stage only: loop seconds / wall time of the Spark stage that fetches, OCRs, embeds and
  writes (from the Spark UI's REST API on loopback: submission to completion of the longest stage).

The loop's seconds include its own one-off costs (OCR engine, torch import, ResNet-50 build), as each
Spark Python worker pays them too, inside the processing stage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    REPO,
    Result,
    env_int,
    env_str,
    link_images,
    load_image_set,
    log,
    run_json_subprocess,
    spark_stage_times,
    work_dir,
    write_catalog,
)

LOCAL_CONF = REPO / "conf" / "local.yaml"


def bench_config(master: str) -> Any:
    """conf/default.yaml + conf/local.yaml + the master + BENCH_SCALING_SET (comma-separated key=value)."""
    from imagequant.config import load_config

    extra = [s for s in env_str("BENCH_SCALING_SET", "").split(",") if s]
    # The UI's REST API on loopback gives the processing stage's own time.
    return load_config([LOCAL_CONF], [f"spark.master={master}", "cnn.device=cpu", "spark.conf.spark.ui.enabled=true",
                                      *extra])


def loop_worker(catalog: str, images_dir: str, out_dir: str) -> dict[str, Any]:
    """The single-process loop over the catalog's distinct images; writes the records as Parquet."""
    import pandas as pd

    from imagequant.catalog import read_catalog
    from imagequant.pipeline.images import process_all_locally
    from imagequant.scoring.second_look import lacks_plausible_candidate

    config = bench_config("local[1]")
    started = time.perf_counter()
    rows = read_catalog(catalog)
    todo = rows[rows["row_status"] == "ok"].drop_duplicates("image_id")
    items = list(zip(todo["image_id"], todo["image_link"], strict=True))
    frames, batches = [], []
    last = time.perf_counter()
    for frame in process_all_locally(items, config, images_dir, needs_second_look=lacks_plausible_candidate):
        now = time.perf_counter()
        batches.append({"images": len(frame), "seconds": round(now - last, 3),
                        "seconds_ocr": round(float(frame["seconds_ocr"].sum()), 3)})
        last = now
        frames.append(frame)
    records = pd.concat(frames, ignore_index=True)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    records.to_parquet(Path(out_dir) / "images.parquet", compression="zstd")
    total = time.perf_counter() - started
    return {
        "mode": "loop", "seconds": round(total, 3), "images": len(records), "batches": batches,
        "statuses": records["status"].value_counts().to_dict(),
        "work_seconds": _work(records),
    }


def _work(records: Any) -> dict[str, float]:
    """Sum over images of the per-stage seconds the records carry (the work, whoever did it)."""
    return {c: round(float(records[c].sum()), 3) for c in ("seconds_fetch", "seconds_decode", "seconds_ocr", "seconds_cnn")}


def spark_worker(master: str, catalog: str, images_dir: str, store: str) -> dict[str, Any]:
    """run_extract in a fresh session on ``master``; session start, job and stage times."""
    from imagequant.spark.extract import run_extract
    from imagequant.spark.session import build_session

    config = bench_config(master)
    if Path(store).exists():
        shutil.rmtree(store)
    started = time.perf_counter()
    spark = build_session(config, f"imagequant-bench-scaling-{master}")
    session_s = time.perf_counter() - started
    try:
        summary = run_extract(spark, config, catalog, store, images_dir)
        job_s = time.perf_counter() - started - session_s
        stages = spark_stage_times(spark)
        records = spark.read.parquet(str(Path(store) / "images")).toPandas()
    finally:
        spark.stop()
    processing = max(stages, key=lambda s: s["executor_run_s"]) if stages else None
    return {
        "mode": master, "session_s": round(session_s, 3), "job_s": round(job_s, 3),
        "summary_seconds": round(summary.seconds, 3), "images": summary.processed, "ok": summary.processed_ok,
        "failed": summary.failed, "stages": stages, "processing_stage": processing,
        "statuses": records["status"].value_counts().to_dict(), "work_seconds": _work(records),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["loop", "spark"], help=argparse.SUPPRESS)
    ap.add_argument("--master", default="local[2]", help=argparse.SUPPRESS)
    ap.add_argument("--catalog", help=argparse.SUPPRESS)
    ap.add_argument("--images-dir", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "loop":
        print(json.dumps(loop_worker(args.catalog, args.images_dir, args.out), default=str))
        return 0
    if args.worker == "spark":
        print(json.dumps(spark_worker(args.master, args.catalog, args.images_dir, args.out), default=str))
        return 0

    n = env_int("BENCH_SCALING_IMAGES", 48)
    n1 = min(n, env_int("BENCH_SCALING_LOCAL1_IMAGES", 32))
    result = Result("scaling", "Scaling: Spark local[N] against the single-process loop")
    image_set = load_image_set(n)
    images = image_set.images
    n = len(images)
    n1 = min(n1, n)
    work = work_dir("scaling")
    images_dir = link_images(images, work / "images")
    catalog = write_catalog(images, work / "catalog.csv")
    catalog1 = write_catalog(images[:n1], work / "catalog-local1.csv")
    config = bench_config("local[2]")
    result.params = {"images": n, "local1_images": n1, "source": image_set.source, **image_set.sizes(),
                     "ocr_engine": config.ocr.engine, "rotated_pass": config.ocr.rotated_pass,
                     "second_pass": config.ocr.second_pass, "cnn_batch": config.cnn.batch_size,
                     "partitions_per_core": config.spark.image_partitions_per_core,
                     "overrides": env_str("BENCH_SCALING_SET", "")}
    log(f"scaling: {image_set.describe()}; local[1] over the first {n1}")
    me = str(Path(__file__))
    common = ["--images-dir", str(images_dir)]
    log("single-process loop")
    loop = run_json_subprocess([me, "--worker", "loop", "--catalog", str(catalog), "--out", str(work / "loop"), *common])
    log(f"loop: {loop['seconds']:.1f} s for {loop['images']} images")
    runs: dict[str, dict[str, Any]] = {}
    for master, cat, count in (("local[2]", catalog, n), ("local[1]", catalog1, n1)):
        log(f"Spark {master} over {count} images")
        runs[master] = run_json_subprocess(
            [me, "--worker", "spark", "--master", master, "--catalog", str(cat), "--out", str(work / f"store-{master[-2]}"),
             *common])
        r = runs[master]
        log(f"{master}: session {r['session_s']:.1f} s, job {r['job_s']:.1f} s")
    result.details = {"loop": loop, "spark": runs}

    # The loop's seconds for the first n1 images: its first batches, when n1 is a whole number of batches.
    batch = config.cnn.batch_size
    if n1 == n:
        loop_n1, exact = loop["seconds"], True
    elif n1 % batch == 0:
        loop_n1, exact = sum(b["seconds"] for b in loop["batches"][: n1 // batch]), True
    else:
        loop_n1, exact = loop["seconds"] * n1 / n, False
    result.details["loop_seconds_for_local1_images"] = {"seconds": round(loop_n1, 3), "exact": exact}

    goals = {"local[2]": 1.7, "local[1]": 0.9}
    for master, r in runs.items():
        base = loop["seconds"] if master == "local[2]" else loop_n1
        count = n if master == "local[2]" else n1
        stage = r.get("processing_stage") or {}
        job_ratio = _ratio(base, r["job_s"])
        with_session = _ratio(base, r["job_s"] + r["session_s"])
        stage_ratio = _ratio(base, stage.get("wall_s"))
        fixed = r["job_s"] - stage["wall_s"] if stage.get("wall_s") else None
        r["ratios"] = {"job": job_ratio, "with_session_start": with_session, "processing_stage": stage_ratio,
                       "fixed_job_seconds_outside_processing": round(fixed, 3) if fixed is not None else None}
        statuses = ", ".join(f"{k}={v}" for k, v in sorted(r["statuses"].items()))
        if master == "local[2]":
            statuses += f" ({'same as' if r['statuses'] == loop['statuses'] else 'DIFFERENT from'} the loop)"
        note = (f"{count} images: loop {base:.1f} s vs job {r['job_s']:.1f} s"
                f"{'' if exact or master == 'local[2]' else ' (loop time pro rata)'}")
        result.add("scaling", f"{master} / loop throughput, whole job (run_extract)", job_ratio, "x",
                   goal=(">=", goals[master]), note=note)
        result.add("scaling", f"{master} / loop throughput, processing stage only", stage_ratio, "x",
                   note=(f"stage {stage.get('wall_s', 0):.1f} s; {fixed:.1f} s of the job outside it"
                         if fixed is not None else "stage times unavailable (Spark UI off?)"))
        result.add("scaling", f"{master} / loop throughput, incl. session start", with_session, "x",
                   note=f"session start {r['session_s']:.1f} s; statuses {statuses}")
        # Per-image work done under concurrency against the loop's: >1 means the cores slowed each other.
        # For local[1] (one task, like the loop) it is a check on the machine: the host's own load shows as
        # slower images in one run than in the other, and then the throughput ratio is off by as much.
        if master == "local[2]":
            loop_ocr = loop["work_seconds"]["seconds_ocr"]
        elif exact:  # the loop's first batches are exactly local[1]'s images
            loop_ocr = sum(b.get("seconds_ocr", 0.0) for b in loop["batches"][: n1 // batch])
        else:
            loop_ocr = 0.0
        if loop_ocr:
            inflation = r["work_seconds"]["seconds_ocr"] / loop_ocr
            result.add("scaling", f"OCR seconds summed over images, {master} / loop", inflation, "x",
                       note=("per-image OCR cost when two tasks share the machine (1.0 = no interference)"
                             if master == "local[2]" else "same images, one task each (1.0 = same machine speed)"))
    result.write()
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
