"""GPU: ResNet-50 features inside the extract job's CNN stage (the mapInArrow function
imagequant.spark.udfs.cnn_features_function over a DataFrame of crops) against a bare torch loop on the same GPU,
from decoded images (uint8 224x224 crops in host memory, copied to the GPU per batch, features copied back),
batch 256.

    .venv/bin/python bench/gpu_cnn.py    # BENCH_GPU_IMAGES=4096 BENCH_GPU_BATCH=256 BENCH_REPEATS=3

* bare loop: the same steps as imagequant.cnn.FeatureExtractor.embed (a page-locked staging copy, normalise on
  the GPU, channels_last), in bf16 autocast (what the pipeline uses on CUDA) and in fp32, images/s;
* UDF: the crops written as Parquet (binary column ``cnn_input``), read by Spark local[1] as ONE partition
  (one task per GPU, as the cluster's separate CNN stage runs it), Arrow batches of BENCH_GPU_ARROW_BATCH rows
  (16, conf/cluster.yaml's spark.sql.execution.arrow.maxRecordsPerBatch), mapInArrow with
  cnn_features_function, cnn.device=cuda and cnn.batch_size=BENCH_GPU_BATCH (the function gathers Arrow
  batches up to it), forced with the noop sink. The job runs once to start the Python worker, import torch
  and load the network, then is timed.
Goals: UDF >= 0.8 of the bare bf16 loop; the bare loop >= 3,000 images/s on an H100.

Without a CUDA device it prints "no CUDA device: skipped": it exits 75 (KEPT_STORED_EXIT) and leaves a stored
GPU result (bench/results/gpu_cnn.json) in the table when there is one, else writes "skipped" and exits 0.
BENCH_GPU_ALLOW_CPU=1 runs the same code on the CPU at a tiny size (a dry run of the code path, not a
measurement).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    KEPT_STORED_EXIT,
    REPO,
    Result,
    env_int,
    load_image_set,
    log,
    run_script,
    stored_gpu_result,
    timed_runs,
    udf_mode,
    work_dir,
)


def decoded_crops(count: int, distinct: int) -> Any:
    """``count`` uint8 crops (N, 224, 224, 3) from ``distinct`` decoded images, tiled."""
    import numpy as np

    from imagequant.imaging import decode_image, prepare_for_cnn

    images = load_image_set(distinct).images
    crops = np.stack([prepare_for_cnn(decode_image(im.path.read_bytes()), 224) for im in images])
    reps = -(-count // len(crops))
    return np.ascontiguousarray(np.concatenate([crops] * reps)[:count])


def bare_loop(crops: Any, batch: int, device: str, dtype: str, repeats: int) -> dict[str, Any]:
    """images/s of ResNet-50 features, FeatureExtractor.embed's steps, best of ``repeats`` passes."""
    import torch

    from imagequant.cnn import _MEAN, _STD, build_model
    from imagequant.config import load_config

    cfg = load_config(overrides=[f"cnn.device={'cuda' if device.startswith('cuda') else 'cpu'}"]).cnn
    dev = torch.device(device)
    model = build_model(cfg).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    mean, std = _MEAN.to(dev), _STD.to(dev)

    staging = torch.empty((batch, *crops.shape[1:]), dtype=torch.uint8, pin_memory=dev.type == "cuda")

    @torch.inference_mode()
    def embed(chunk: Any) -> Any:
        staged = staging[: len(chunk)]
        staged.numpy()[...] = chunk
        x = staged.to(dev, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - mean) / std
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        if dtype == "bf16":
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                out = model(x)
        else:
            out = model(x)
        return out.float().cpu().numpy()

    embed(crops[:batch])  # cuDNN algorithm choice and allocator warm-up
    passes = []
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for start in range(0, len(crops), batch):
            embed(crops[start : start + batch])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        passes.append(time.perf_counter() - t0)
    return {"dtype": dtype, "seconds": [round(p, 3) for p in passes], "images_per_s": round(len(crops) / min(passes), 1)}


def crops_table(crops: Any) -> Any:
    """The crops as the CNN stage receives them: an Arrow table with one binary column ``cnn_input``."""
    import pyarrow as pa

    return pa.table({"cnn_input": pa.array([c.tobytes() for c in crops], type=pa.binary())})


def udf_run(crops: Any, batch: int, arrow_batch: int, device: str, repeats: int) -> dict[str, Any]:
    """images/s of the CNN stage's mapInArrow over a one-partition DataFrame of the crops (after a warm-up job)."""
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from imagequant.config import load_config
    from imagequant.spark.session import build_session
    from imagequant.spark.udfs import cnn_features_function, cnn_stage_schema

    path = work_dir("gpu") / "crops.parquet"
    pq.write_table(crops_table(crops), path, compression="none", row_group_size=batch)
    config = load_config([REPO / "conf" / "local.yaml"], [
        "spark.master=local[1]", "spark.conf.spark.ui.enabled=false",
        f"spark.conf.spark.sql.execution.arrow.maxRecordsPerBatch={arrow_batch}",
        f"cnn.device={'cuda' if device.startswith('cuda') else 'cpu'}", f"cnn.batch_size={batch}",
    ])
    spark = build_session(config, "imagequant-bench-gpu-cnn")
    try:
        frame = spark.read.parquet(str(path)).coalesce(1)
        out = frame.mapInArrow(cnn_features_function(config), cnn_stage_schema(frame.schema)).select(
            F.size("cnn_features").alias("n"), F.col("seconds_cnn").alias("s"))
        (warm,), _ = timed_runs(out.write.format("noop").mode("overwrite").save, 1)
        passes, _ = timed_runs(out.write.format("noop").mode("overwrite").save, repeats)
        inside = out.agg(F.sum("s")).collect()[0][0]
        dims = {r["n"] for r in out.select("n").distinct().collect()}
    finally:
        spark.stop()
    return {"mode": "spark", "first_job_s": round(warm, 3), "seconds": [round(p, 3) for p in passes],
            "images_per_s": round(len(crops) / min(passes), 1), "seconds_inside_embed_last_job": inside,
            "feature_sizes": sorted(dims)}


def udf_worker_run(crops: Any, batch: int, arrow_batch: int, device: str, repeats: int) -> dict[str, Any]:
    """The CNN stage's own mapInArrow function fed as Spark's Python worker feeds it: Arrow record batches of
    ``arrow_batch`` rows in, record batches out. No JVM and no socket: for machines without Java (the lent
    GPU machines have no Spark)."""
    from imagequant.config import load_config
    from imagequant.spark.udfs import cnn_features_function

    config = load_config(overrides=[f"cnn.device={'cuda' if device.startswith('cuda') else 'cpu'}",
                                    f"cnn.batch_size={batch}"])
    fn = cnn_features_function(config)
    batches = crops_table(crops).to_batches(arrow_batch)

    def one_pass() -> float:
        inside = 0.0
        for out in fn(iter(batches)):
            inside += float(out.column(out.schema.get_field_index("seconds_cnn")).to_numpy().sum())
        return inside

    (warm,), _ = timed_runs(one_pass, 1)  # loads the network on the device, as the first batch of a worker does
    passes, inside = timed_runs(one_pass, repeats)
    return {"mode": "worker", "first_pass_s": round(warm, 3), "seconds": [round(p, 3) for p in passes],
            "images_per_s": round(len(crops) / min(passes), 1), "seconds_inside_embed_last_pass": round(inside, 3)}


def main() -> int:
    import torch

    allow_cpu = bool(os.environ.get("BENCH_GPU_ALLOW_CPU"))
    cuda = torch.cuda.is_available()
    result = Result("gpu_cnn", "GPU: ResNet-50 in the iterator UDF against a bare torch loop")
    if not cuda and not allow_cpu:
        stored = stored_gpu_result("gpu_cnn")
        if stored:
            # A GPU is lent only now and then: a run without one keeps the last GPU measurement in the table.
            print(f"no CUDA device: skipped; the table keeps the stored GPU result ({stored})", flush=True)
            return KEPT_STORED_EXIT
        print("no CUDA device: skipped", flush=True)
        result.status, result.reason = "skipped", "no CUDA device"
        result.write()
        return 0
    if not cuda:
        result.name = "gpu_cnn_dryrun"  # never overwrites a real GPU result
    device = "cuda:0" if cuda else "cpu"
    count = env_int("BENCH_GPU_IMAGES", 4096 if cuda else 64)
    batch = env_int("BENCH_GPU_BATCH", 256 if cuda else 16)
    arrow_batch = env_int("BENCH_GPU_ARROW_BATCH", 16)
    repeats = env_int("BENCH_REPEATS", 3 if cuda else 1)
    mode = udf_mode()
    name = torch.cuda.get_device_name(0) if cuda else "cpu (dry run)"
    result.params = {"device": name, "images": count, "batch": batch, "repeats": repeats, "arrow_batch": arrow_batch,
                     "torch": torch.__version__, "torch_cuda": torch.version.cuda, "udf_mode": mode}
    crops = decoded_crops(count, min(env_int("BENCH_GPU_DISTINCT", 64), count))
    log(f"gpu_cnn: {count} crops on {name}, batch {batch}, UDF mode {mode}")

    bare = {dtype: bare_loop(crops, batch, device, dtype, repeats) for dtype in ("bf16", "fp32")}
    result.details = {"bare": bare}
    goal_bare = (">=", 3000.0) if cuda and "H100" in name else None
    result.add("gpu", f"bare loop bf16, images/s ({name})", bare["bf16"]["images_per_s"], "img/s", goal=goal_bare, digits=0)
    result.add("gpu", "bare loop fp32, images/s", bare["fp32"]["images_per_s"], "img/s", digits=0)
    if cuda:
        torch.cuda.empty_cache()
    if mode == "none":
        result.add("gpu", "UDF: pyspark not importable here, skipped", None)
    else:
        runner = udf_run if mode == "spark" else udf_worker_run
        udf = runner(crops, batch, arrow_batch, device, repeats)
        result.details["udf"] = udf
        what = ("Spark local[1] job, one partition" if mode == "spark"
                else "the mapInArrow function on Arrow batches, no JVM (pyspark without Java here)")
        first = udf.get("first_job_s", udf.get("first_pass_s", 0.0))
        result.add("gpu", "UDF (bf16), images/s", udf["images_per_s"], "img/s", digits=0,
                   note=f"{what}; first run (worker start, torch import, model load) {first:.1f} s")
        result.add("gpu", "UDF / bare loop bf16", udf["images_per_s"] / bare["bf16"]["images_per_s"], "x",
                   goal=(">=", 0.8) if cuda else None, note=what)
    if not cuda:
        result.reason = "CPU dry run (BENCH_GPU_ALLOW_CPU): figures are not GPU measurements"
    result.write()
    return 0


if __name__ == "__main__":
    run_script(main)
