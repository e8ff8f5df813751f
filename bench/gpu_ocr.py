"""GPU: RapidOCR on onnxruntime's CUDA provider (``ocr.device=cuda``; the lines of each batch of images
recognised together, ``ocr.rapidocr.rec_batch_lines`` per model call) against the CPU path the project
measured (one image at a time, 6 lines per call), on the same images.

    .venv/bin/python bench/gpu_ocr.py    # BENCH_GPU_OCR_IMAGES=256 BENCH_GPU_OCR_BATCH=16 BENCH_GPU_OCR_REC_BATCH=64

* bare loop: decoded images in host memory, ``OcrEngine.read_many`` over groups of BENCH_GPU_OCR_BATCH images
  (16: conf/cluster.yaml's Arrow batch, what one call of the extract's OCR function gets), images/s; and one
  image at a time (``read``) on the same device, which is what batching across images buys;
* Spark stage: the extract's fetch/decode/OCR function (``imagequant.spark.udfs.fetch_ocr_function``) over the
  same images read from a local folder. ``spark`` mode (pyspark and Java here): a ``local[N]`` job, N =
  BENCH_GPU_OCR_TASKS (4: conf/cluster.yaml runs 4 tasks per executor sharing its GPU), mapInPandas forced
  with the noop sink, timed after a warm-up job. ``worker`` mode (pyspark's Python package only): the function
  fed pandas batches as Spark's Python worker feeds it, one process, no JVM;
* candidate recall of the GPU run's tokens against the CPU path's on the same images (the CPU path in
  BENCH_WORKERS processes, engine threads 1: also its CPU seconds per image), and the share of lines read alike;
* the whole extract (``run_extract``, ``local[N]``, the OCR and CNN on the GPU, the separate CNN stage of
  conf/cluster.yaml), images/s; ``spark`` mode only.
Every run reads every image with every second-look step (``ocr.second_pass_targeted=false``), so all of them
do the same work per image; the extract itself spends the second look only where it is needed (faster).

Measuring needs onnxruntime-gpu (the ``gpu`` extra, swapped for onnxruntime: docs/cluster.md "OCR on GPU executors")
and a GPU, e.g. inside the GPU workers' image. Without the CUDA provider or a GPU it prints "not measured on
GPU": it exits 75 (KEPT_STORED_EXIT) and leaves a stored GPU result (bench/results/gpu_ocr.json) when there is
one, else writes "skipped" and exits 0. BENCH_GPU_ALLOW_CPU=1 runs the same code on the CPU at a tiny size into
gpu_ocr_dryrun.json (a dry run of the code path, not a measurement). Not in ``make bench``'s list: the lent
GPU machines cannot carry onnxruntime-gpu (290 MB).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    KEPT_STORED_EXIT,
    REPO,
    OcrRun,
    Result,
    candidate_recall,
    env_int,
    link_images,
    load_image_set,
    log,
    make_engine,
    run_ocr_pool,
    run_script,
    stored_gpu_result,
    timed_runs,
    udf_mode,
    work_dir,
    write_catalog,
)


def gpu_available() -> tuple[bool, str]:
    """Whether onnxruntime offers the CUDA provider and a GPU is visible, and the GPU's name."""
    from imagequant.devices import CUDA_PROVIDER, onnxruntime_providers, visible_gpu_count

    if CUDA_PROVIDER not in onnxruntime_providers():
        return False, f"onnxruntime has no {CUDA_PROVIDER} (the CPU build is installed)"
    if visible_gpu_count() == 0:
        return False, "no GPU visible to this process"
    name = "GPU 0"
    try:
        import torch

        name = torch.cuda.get_device_name(0)
    except Exception:  # torch absent or without CUDA: the ordinal is enough
        pass
    return True, name


def ocr_overrides(device: str, rec_batch: int) -> list[str]:
    # Second look untargeted: every run here (bare loops, the CPU path, the Spark stage) then does the same work
    # per image; the extract spends it only where the catalog's entities lack a candidate, which the bare
    # loops would not know.
    return ["ocr.engine=rapidocr", f"ocr.device={device}", f"ocr.rapidocr.rec_batch_lines={rec_batch}",
            "ocr.second_pass_targeted=false"]


def bare_loop(images: list[Any], names: list[str], overrides: list[str], batch: int, repeats: int) -> dict[str, Any]:
    """images/s of read_many over groups of ``batch`` decoded images, and of read one at a time (best of
    ``repeats`` passes each, after a warm-up batch); the last batched pass's tokens as OcrRuns."""
    engine = make_engine("rapidocr", overrides)
    engine.read_many(images[:batch])  # model loading, CUDA kernels and allocator warm-up
    passes, runs = [], []
    for _ in range(repeats):
        runs = []
        t0 = time.perf_counter()
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            for name, img, out in zip(names[start : start + batch], chunk, engine.read_many(chunk), strict=True):
                runs.append(OcrRun(name, out.seconds, out.seconds, img.size, out.tokens or [],
                                   getattr(out.error, "kind", None) if out.error else None))
        passes.append(time.perf_counter() - t0)
    single = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for img in images:
            with contextlib.suppress(Exception):  # counted in the batched pass's errors already
                engine.read(img)
        single.append(time.perf_counter() - t0)
    return {
        "device": engine.describe_device(), "batch": batch,
        "seconds": [round(p, 3) for p in passes], "images_per_s": round(len(images) / min(passes), 2),
        "single_seconds": [round(p, 3) for p in single], "single_images_per_s": round(len(images) / min(single), 2),
        "errors": sum(1 for r in runs if r.error), "runs": runs,
    }


def _lines(tokens: list[Any]) -> dict[tuple[int, int, int, int], str]:
    words: dict[int, list[Any]] = defaultdict(list)
    for t in tokens:
        words[t.line].append(t)
    return {(min(t.left for t in ws), min(t.top for t in ws), max(t.left + t.width for t in ws),
             max(t.top + t.height for t in ws)): "".join(t.text for t in sorted(ws, key=lambda t: t.word))
            for ws in words.values()}


def lines_alike(a: list[OcrRun], b: list[OcrRun]) -> dict[str, Any]:
    """Share of the lines of ``a`` found in ``b`` with the same box and text."""
    by_name = {r.name: r for r in b}
    total = same = 0
    for run in a:
        other = _lines(by_name[run.name].tokens) if run.name in by_name else {}
        for box, text in _lines(run.tokens).items():
            total += 1
            same += other.get(box) == text
    return {"lines": total, "alike": same, "share": round(same / total, 4) if total else 0.0}


def stage_frames(images: list[Any], batch: int) -> list[Any]:
    import pandas as pd

    from imagequant.catalog import image_id

    return [pd.DataFrame({"image_id": [image_id(im.link) for im in images[s : s + batch]],
                          "image_link": [im.link for im in images[s : s + batch]]})
            for s in range(0, len(images), batch)]


def stage_worker_run(images: list[Any], folder: Path, overrides: list[str], batch: int, repeats: int) -> dict[str, Any]:
    """The OCR stage's mapInPandas function fed pandas batches of ``batch`` links, as Spark's Python worker does
    (no JVM: for machines with pyspark's Python package only)."""
    from imagequant.config import load_config
    from imagequant.scoring.second_look import lacks_plausible_candidate
    from imagequant.spark.udfs import fetch_ocr_function

    config = load_config(overrides=[*overrides, "cnn.enabled=false"])
    fn = fetch_ocr_function(config, str(folder), needs_second_look=lacks_plausible_candidate)
    frames = stage_frames(images, batch)
    (warm,), _ = timed_runs(lambda: list(fn(iter(frames[:1]))), 1)  # the worker's first batch: engine and models
    passes, ok = timed_runs(lambda: sum(int((out["status"] == "ok").sum()) for out in fn(iter(frames))), repeats)
    return {"mode": "worker", "first_batch_s": round(warm, 3), "seconds": [round(p, 3) for p in passes],
            "images_per_s": round(len(images) / min(passes), 2), "ok": ok}


def stage_spark_run(images: list[Any], folder: Path, overrides: list[str], batch: int, tasks: int,
                    repeats: int) -> dict[str, Any]:
    """The OCR stage as a local[tasks] Spark job: mapInPandas over the links, noop sink, after a warm-up job."""
    from pyspark.sql import functions as F

    from imagequant.config import load_config
    from imagequant.scoring.second_look import lacks_plausible_candidate
    from imagequant.spark.schema import OCR_STAGE_SCHEMA
    from imagequant.spark.session import build_session
    from imagequant.spark.udfs import SetParam, fetch_ocr_function

    config = load_config([REPO / "conf" / "local.yaml"], [
        *overrides, "cnn.enabled=false", f"spark.master=local[{tasks}]", "spark.conf.spark.ui.enabled=false",
        f"spark.conf.spark.sql.execution.arrow.maxRecordsPerBatch={batch}",
    ])
    spark = build_session(config, "imagequant-bench-gpu-ocr")
    try:
        import pandas as pd

        links = pd.concat(stage_frames(images, len(images)))
        devices = spark.sparkContext.accumulator(set(), SetParam())
        frame = spark.createDataFrame(links).repartition(tasks)
        reading = fetch_ocr_function(config, str(folder), devices, needs_second_look=lacks_plausible_candidate)
        out = frame.mapInPandas(reading, OCR_STAGE_SCHEMA).select(
            F.col("status"), F.col("seconds_ocr"))
        (warm,), _ = timed_runs(out.write.format("noop").mode("overwrite").save, 1)
        passes, _ = timed_runs(out.write.format("noop").mode("overwrite").save, repeats)
        ok = out.where(F.col("status") == "ok").count()
    finally:
        spark.stop()
    return {"mode": "spark", "tasks": tasks, "first_job_s": round(warm, 3), "seconds": [round(p, 3) for p in passes],
            "images_per_s": round(len(images) / min(passes), 2), "ok": ok, "devices": sorted(devices.value)}


def whole_extract(images: list[Any], folder: Path, overrides: list[str], batch: int, tasks: int,
                  cnn_device: str) -> dict[str, Any]:
    """The extract job (run_extract) over the images, local[tasks], cluster-like OCR and CNN settings."""
    from imagequant.config import load_config
    from imagequant.spark.extract import run_extract
    from imagequant.spark.session import build_session

    config = load_config([REPO / "conf" / "local.yaml"], [
        *overrides, f"spark.master=local[{tasks}]", "spark.conf.spark.ui.enabled=false",
        f"spark.conf.spark.sql.execution.arrow.maxRecordsPerBatch={batch}", f"cnn.device={cnn_device}",
        "cnn.batch_size=256", "cnn.separate_stage=true", "spark.image_partitions_per_core=2",
    ])
    catalog = write_catalog(images, work_dir("gpu-ocr") / "catalog.csv")
    store = work_dir("gpu-ocr") / "store"
    shutil.rmtree(store, ignore_errors=True)
    spark = build_session(config, "imagequant-bench-gpu-ocr-extract")
    try:
        summary = run_extract(spark, config, str(catalog), str(store), str(folder))
    finally:
        spark.stop()
    return {"images_per_s": round(summary.images_per_second, 2), "seconds": round(summary.seconds, 2),
            "ok": summary.processed_ok, "processed": summary.processed, "ocr_device": summary.ocr_device, "line": summary.line()}


def main() -> int:
    from imagequant.imaging import decode_image

    allow_cpu = bool(os.environ.get("BENCH_GPU_ALLOW_CPU"))
    gpu, what = gpu_available()
    result = Result("gpu_ocr", "GPU: RapidOCR batched on onnxruntime's CUDA provider against the CPU path")
    if not gpu and not allow_cpu:
        stored = stored_gpu_result("gpu_ocr")
        if stored:
            print(f"not measured on GPU ({what}): skipped; the table keeps the stored GPU result ({stored})", flush=True)
            return KEPT_STORED_EXIT
        print(f"not measured on GPU ({what}): skipped", flush=True)
        result.status, result.reason = "skipped", f"not measured on GPU: {what}"
        result.write()
        return 0
    if not gpu:
        result.name = "gpu_ocr_dryrun"  # never overwrites a real GPU result
        print(f"not measured on GPU ({what}): a CPU dry run of the code path, not a measurement", flush=True)
    device = "cuda" if gpu else "cpu"
    count = env_int("BENCH_GPU_OCR_IMAGES", 256 if gpu else 6)
    batch = env_int("BENCH_GPU_OCR_BATCH", 16 if gpu else 3)
    rec_batch = env_int("BENCH_GPU_OCR_REC_BATCH", 64 if gpu else 6)
    tasks = env_int("BENCH_GPU_OCR_TASKS", 4 if gpu else 2)
    repeats = env_int("BENCH_REPEATS", 2 if gpu else 1)
    workers = env_int("BENCH_WORKERS", os.cpu_count() or 2)
    mode = udf_mode()
    image_set = load_image_set(count)
    items = image_set.images
    names = [im.name for im in items]
    images = [decode_image(im.path.read_bytes()) for im in items]
    result.params = {"device": what if gpu else "cpu (dry run)", "images": len(items), "source": image_set.source,
                     "batch": batch, "rec_batch_lines": rec_batch, "tasks": tasks, "repeats": repeats,
                     "udf_mode": mode, "cpu_workers": workers}
    log(f"gpu_ocr: {image_set.describe()} on {result.params['device']}, batches of {batch} images, "
        f"{rec_batch} lines per recognition call, UDF mode {mode}")

    overrides = ocr_overrides(device, rec_batch)
    bare = bare_loop(images, names, overrides, batch, repeats)
    runs = bare.pop("runs")
    result.details = {"bare": bare}
    label = f"{what}" if gpu else "CPU dry run"
    result.add("gpu ocr", f"bare loop, read_many of {batch} images, images/s ({label}, {bare['device']})",
               bare["images_per_s"], "img/s", digits=1)
    result.add("gpu ocr", "bare loop, one image at a time, images/s", bare["single_images_per_s"], "img/s", digits=1)
    result.add("gpu ocr", "batched / one at a time", bare["images_per_s"] / bare["single_images_per_s"], "x")

    # The CPU path as measured for docs/ocr.md: one image at a time, RapidOCR's own batch of 6, one thread each.
    cpu_runs = run_ocr_pool([im.path for im in items], functools.partial(make_engine, "rapidocr", ocr_overrides("cpu", 6)),
                            workers, "CPU reference")
    cpu_seconds = sorted(r.cpu for r in cpu_runs if r.error is None)
    cpu_recall, gpu_recall = candidate_recall(items, cpu_runs), candidate_recall(items, runs)
    alike = lines_alike(cpu_runs, runs)
    result.details.update({"cpu_recall": cpu_recall, "gpu_recall": gpu_recall, "lines_alike": alike})
    if cpu_seconds:
        median = cpu_seconds[len(cpu_seconds) // 2]
        result.add("gpu ocr", "CPU path, median CPU s/image (one core)", median, "s",
                   note=f"{workers} processes; the bare loop's images/s above is one process on {label}")
    result.add("gpu ocr", "candidate recall, batched run", gpu_recall["recall"], "", digits=3,
               note=f"{gpu_recall['hits']} of {gpu_recall['rows']} labeled rows")
    result.add("gpu ocr", "candidate recall, CPU path", cpu_recall["recall"], "", digits=3)
    result.add("gpu ocr", "candidate recall, batched - CPU path", 100 * (gpu_recall["recall"] - cpu_recall["recall"]),
               "points", goal=(">=", -1.0) if gpu else None, digits=2)
    result.add("gpu ocr", "lines read alike (same box and text), batched vs CPU path", alike["share"], "", digits=3,
               note=f"{alike['alike']} of {alike['lines']} lines")

    folder = link_images(items, work_dir("gpu-ocr") / "images")
    if mode == "none":
        result.add("gpu ocr", "Spark stage: pyspark not importable here, skipped", None)
    else:
        stage = (stage_spark_run(items, folder, overrides, batch, tasks, repeats) if mode == "spark"
                 else stage_worker_run(items, folder, overrides, batch, repeats))
        result.details["stage"] = stage
        where = (f"Spark local[{tasks}] job, mapInPandas (fetch from a local folder, decode, OCR)" if mode == "spark"
                 else "the mapInPandas function on pandas batches, one process, no JVM")
        result.add("gpu ocr", "Spark stage (fetch + decode + OCR), images/s", stage["images_per_s"], "img/s",
                   digits=1, note=where)
        result.add("gpu ocr", "Spark stage / bare loop", stage["images_per_s"] / bare["images_per_s"], "x", note=where)
    if mode == "spark":
        extract = whole_extract(items, folder, overrides, batch, tasks, device)
        result.details["extract"] = extract
        result.add("gpu ocr", "whole extract (run_extract), images/s", extract["images_per_s"], "img/s", digits=2,
                   note=f"local[{tasks}], ocr_device={extract['ocr_device']}, CNN on {device}, separate CNN stage")
    else:
        result.add("gpu ocr", "whole extract: needs Spark and Java here, not measured", None)
    if not gpu:
        result.reason = "not measured on GPU: CPU dry run (BENCH_GPU_ALLOW_CPU), figures are not GPU measurements"
    result.write()
    return 0


if __name__ == "__main__":
    run_script(main)
