"""A scale run with a projection: the extract job over ~1,000 real-sized images from a loopback HTTP
server, then an incremental run with 10% new images, and what 100k and 1M images would take.

    .venv/bin/python bench/scale.py      # BENCH_SCALE_IMAGES=1000 BENCH_SCALE_NEW_PERCENT=10

Images are synthetic (imagequant.synthetic at 1000-2000 px on the longer side, like product images),
generated once into ``$BENCH_WORK/scale`` and served by a loopback HTTP server (``benchlib.FileServer``,
``fetch.allow_loopback=true``). The catalog has one row per value an image states, so several rows with
different entities share an image, as in the challenge. Each run is ``jobs/extract_features.py`` as a user
runs it (a fresh process: Python driver, Spark's JVM, pyspark workers) with ``conf/local.yaml``
(``local[2]``, ``cnn.device=cpu``), into one store:

1. first run: the catalog of N images (every image fetched, decoded, OCR'd, embedded);
2. incremental run: the catalog grown by 10% new images (only those are processed);
3. no-op rerun of that catalog (nothing to process: the job's fixed cost, and the driver at a small catalog);
4. no-op run of a big catalog (BENCH_SCALE_BIG_ROWS rows, all pointing at images already done): the
   driver's memory against the catalog's size.

While a run goes, a thread samples the job's process tree every 0.5 s from /proc: CPU seconds and peak
resident memory of each process (Python driver, JVM, pyspark daemon and workers). Per-stage seconds per
image come from the store's images table (``seconds_fetch/decode/ocr/cnn``, measured inside the tasks).

Below 1,000 images (the issue's minimum) the figures go to ``bench/results/scale_dryrun.json``, and with
``BENCH_SCALE_SET`` to ``scale_<setting>-<value>.json`` (``scale_precision-int8.json``), never to ``scale.json``
(the shipped settings' figures); then the script exits 75 so ``run_all.py`` keeps the stored result.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    KEPT_STORED_EXIT,
    REPO,
    RESULTS,
    FileServer,
    ProcessTreeMonitor,
    Result,
    cached_sample,
    env_int,
    env_str,
    log,
    percentile,
    run_script,
    work_dir,
)

LOCAL_CONF = REPO / "conf" / "local.yaml"
JOB = REPO / "jobs" / "extract_features.py"
MIN_IMAGES = 1000  # the "at least 1,000 distinct images"; fewer is a dry run
LINK_BASE = "http://127.0.0.1/images/"  # rewritten to the server's port when the catalogs are written
PROJECT_IMAGES = (100_000, 1_000_000)
PROJECT_CORES = (16, 64, 256)
WINDOW_HOURS = 8.0  # a nightly back-fill window
MIB = 2**20


# --- images and catalogs -------------------------------------------------------------------------------


def generate_images(total: int, seed: int, sides: tuple[int, int]) -> tuple[Path, Any]:
    """``total`` labeled synthetic images at real product-image sizes, cached in the work folder. Image i
    depends only on (seed, i), so the first N are the same whatever ``total`` is."""
    import pandas as pd

    out = work_dir("scale") / f"images-n{total}-seed{seed}-{sides[0]}-{sides[1]}"
    labels = cached_sample(out, total, seed, link_base=LINK_BASE, image_size=sides)
    return out, pd.read_csv(labels, dtype=str, keep_default_na=False)


def image_sizes(folder: Path, names: list[str]) -> dict[str, Any]:
    from PIL import Image

    dims, sizes = [], []
    for name in names:
        path = folder / name
        with Image.open(path) as handle:
            dims.append(handle.size)
        sizes.append(path.stat().st_size)
    longer = [max(d) for d in dims]
    return {
        "median_width": int(statistics.median(w for w, _ in dims)),
        "median_height": int(statistics.median(h for _, h in dims)),
        "longer_side_min_max": [min(longer), max(longer)],
        "median_megapixels": round(statistics.median(w * h / 1e6 for w, h in dims), 3),
        "jpeg_bytes_median": int(statistics.median(sizes)),
        "jpeg_bytes_mean": int(statistics.fmean(sizes)),
    }


def write_catalog(rows: Any, path: Path) -> Path:
    """An unlabeled challenge-format catalog (index = row number)."""
    out = rows[["image_link", "group_id", "entity_name"]].copy()
    out.insert(0, "index", range(len(out)))
    out.to_csv(path, index=False, lineterminator="\n")
    return path


def big_catalog(rows: Any, n_rows: int) -> Any:
    """``n_rows`` rows over the images of ``rows`` (all already in the store), each image asked about a
    different entity in each round, as a large catalog asks several things of one image."""
    import pandas as pd

    from imagequant.core.units import ENTITIES

    links = rows.drop_duplicates("image_link")[["image_link", "group_id"]].reset_index(drop=True)
    picks = [i % len(links) for i in range(n_rows)]
    out = links.iloc[picks].reset_index(drop=True)
    rounds = [i // len(links) for i in range(n_rows)]
    out["entity_name"] = [ENTITIES[(r + j) % len(ENTITIES)] for j, r in enumerate(rounds)]
    return pd.DataFrame(out)


# --- one run of the job ---------------------------------------------------------------------------------


def changed_settings() -> list[str]:
    """The settings ``BENCH_SCALE_SET`` changes (``key=value``, comma-separated)."""
    return [s for s in env_str("BENCH_SCALE_SET", "").split(",") if s]


def job_settings() -> list[str]:
    master = env_str("BENCH_SCALE_MASTER", "local[2]")
    return [f"spark.master={master}", "cnn.device=cpu", "fetch.allow_loopback=true", *changed_settings()]


def variant_name(overrides: list[str]) -> str:
    """The result name of a run with changed settings: ``ocr.rapidocr.precision=int8`` -> ``scale_precision-int8``."""
    parts = []
    for item in overrides:
        key, _, value = item.partition("=")
        parts.append(re.sub(r"[^a-z0-9]+", "-", f"{key.rsplit('.', 1)[-1]}-{value}".lower()).strip("-"))
    return "scale_" + "_".join(parts)


def run_job(label: str, catalog: Path, store: Path, logs: Path, interval: float) -> dict[str, Any]:
    """``jobs/extract_features.py`` in a fresh process, its process tree sampled; the run's summary from the
    store's manifest."""
    cmd = [sys.executable, str(JOB), "--catalog", str(catalog), "--store", str(store), "--conf", str(LOCAL_CONF)]
    gc_log = logs / f"{label}-gc.log"
    # The JVM's GC log says what its heap holds after each collection; its RSS only says how far the heap
    # grew, and a JVM grows its heap towards spark.driver.memory rather than collect early.
    for setting in [*job_settings(), f"spark.conf.spark.driver.extraJavaOptions=-Xlog:gc:file={gc_log}"]:
        cmd += ["--set", setting]
    env = dict(os.environ)
    env.setdefault("OMP_THREAD_LIMIT", "1")
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("IMAGEQUANT_SPARK_LOG_LEVEL", "ERROR")
    env["PYTHONUNBUFFERED"] = "1"
    log_path = logs / f"{label}.log"
    log(f"{label}: {catalog.name} -> {store.name} (log {log_path})")
    children0, self0 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with log_path.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
        with ProcessTreeMonitor(proc.pid, interval) as monitor:
            rc = proc.wait()
    wall = time.perf_counter() - started
    children1, self1 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    if rc != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"{label}: extract_features exited {rc}; last lines of {log_path}:\n{tail}")
    manifest = json.loads((store / "_manifest.json").read_text())
    summary = manifest["runs"][-1]
    line = next((s for s in log_path.read_text(errors="replace").splitlines() if s.startswith("extract_features:")), "")
    report = monitor.report()
    reaped = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    result = {
        "label": label, "catalog": str(catalog), "wall_s": round(wall, 2), "summary": summary, "summary_line": line,
        "tree": report, "jvm_heap": jvm_heap(gc_log),
        # Cross-check of the sampled CPU: what the bench's waited-for children accumulated (a process whose
        # parent never waits for it, or that outlives its parent, is missing here but not in the samples).
        "reaped_children_cpu_s": round(reaped, 2),
        # The bench's own CPU over the run: the HTTP server and the sampler (not the job's, but it shares the cores).
        "bench_process_cpu_s": round((self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime), 2),
    }
    log(f"{label}: {line or summary}; wall {wall:.1f} s, tree CPU {report['cpu_s']:.1f} s")
    return result


_GC_LINE = re.compile(r"GC\(\d+\) Pause .*? (\d+)([KMG])->(\d+)([KMG])\((\d+)([KMG])\)")


def jvm_heap(gc_log: Path) -> dict[str, Any]:
    """From the JVM's GC log (-Xlog:gc): collections, the largest heap in use after one (what the JVM
    really kept), the largest before one, and the largest heap committed, in MiB."""
    scale = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}
    after, before, committed = [], [], []
    with contextlib.suppress(OSError):
        for line in gc_log.read_text(errors="replace").splitlines():
            found = _GC_LINE.search(line)
            if found:
                before.append(int(found.group(1)) * scale[found.group(2)])
                after.append(int(found.group(3)) * scale[found.group(4)])
                committed.append(int(found.group(5)) * scale[found.group(6)])
    return {"collections": len(after), "max_after_gc_mib": round(max(after), 1) if after else None,
            "max_before_gc_mib": round(max(before), 1) if before else None,
            "max_committed_mib": round(max(committed), 1) if committed else None}


def role(run: dict[str, Any], name: str, key: str, default: float = 0.0) -> float:
    return run["tree"]["roles"].get(name, {}).get(key, default)


# --- the store ------------------------------------------------------------------------------------------


def images_table(store: Path) -> Any:
    import pyarrow.dataset as ds

    columns = ["image_id", "status", "run_id", "width", "height",
               "seconds_fetch", "seconds_decode", "seconds_ocr", "seconds_cnn"]
    return ds.dataset(store / "images", format="parquet", partitioning="hive").to_table(columns=columns).to_pandas()


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


STAGES = ("fetch", "decode", "ocr", "cnn")


def stage_seconds(frame: Any) -> dict[str, dict[str, float]]:
    out = {}
    for stage in STAGES:
        vals = [float(v) for v in frame[f"seconds_{stage}"]]
        out[stage] = {"mean": round(statistics.fmean(vals), 4) if vals else 0.0,
                      "median": round(statistics.median(vals), 4) if vals else 0.0,
                      "p90": round(percentile(vals, 0.9), 4), "total": round(sum(vals), 2)}
    return out


# --- projection -----------------------------------------------------------------------------------------


def stored_figure(name: str, wanted_unit: str, prefer: str) -> dict[str, Any] | None:
    """A measured throughput from another benchmark's stored result (the first figure in ``wanted_unit``
    whose name holds ``prefer``, else the first in that unit): value, figure name, device and date."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return None
    if data.get("status") != "ok":
        return None
    figures = [f for f in data.get("figures", []) if f.get("unit") == wanted_unit and f.get("value")]
    chosen = next((f for f in figures if prefer.lower() in f["figure"].lower()), figures[0] if figures else None)
    if chosen is None:
        return None
    return {"images_per_s": float(chosen["value"]), "figure": chosen["figure"],
            "device": data.get("params", {}).get("device"), "date": data.get("machine", {}).get("date"),
            "result": f"bench/results/{name}.json"}


def projection(core_s_per_image: float, cpu_s_per_image: float, cnn_share: float, ocr_share: float
               ) -> dict[str, Any]:
    """Cores and hours for 100k and 1M images, from the measured core-seconds per image (job time x cores /
    images: what a core really delivered in Spark, idle ends and overheads included), assuming it holds at
    any number of executors (perfect scaling; fetches as fast as from loopback)."""
    gpu_cnn = stored_figure("gpu_cnn", "img/s", "UDF")
    gpu_ocr = stored_figure("gpu_ocr", "img/s", "UDF")
    scenarios: list[dict[str, Any]] = []
    for images in PROJECT_IMAGES:
        core_h = images * core_s_per_image / 3600
        scenarios.append({
            "executors": "CPU", "images": images, "core_hours": round(core_h, 1),
            "core_hours_at_full_use": round(images * cpu_s_per_image / 3600, 1),
            "hours_on": {str(c): round(core_h / c, 2) for c in PROJECT_CORES},
            "cores_for_window": math.ceil(core_h / WINDOW_HOURS), "gpu_hours": None,
        })
        if gpu_cnn:
            # The CNN leaves the cores for the GPU; OCR stays on them unless a GPU OCR figure was measured.
            cpu_share = 1.0 - cnn_share - (ocr_share if gpu_ocr else 0.0)
            core_h_gpu = core_h * cpu_share
            gpu_h = images / gpu_cnn["images_per_s"] / 3600 + (images / gpu_ocr["images_per_s"] / 3600 if gpu_ocr else 0.0)
            scenarios.append({
                "executors": "GPU (CNN" + (", OCR" if gpu_ocr else "") + " on GPU)", "images": images,
                "core_hours": round(core_h_gpu, 1), "core_hours_at_full_use": None,
                "hours_on": {str(c): round(core_h_gpu / c, 2) for c in PROJECT_CORES},
                "cores_for_window": math.ceil(core_h_gpu / WINDOW_HOURS), "gpu_hours": round(gpu_h, 3),
            })
    return {
        "assumption": (f"perfect scaling at the measured {core_s_per_image:.2f} core-seconds per image (first run: "
                       "job time x cores / images, so Spark's measured efficiency on this machine is included); "
                       "fetch from loopback (a real CDN adds its latency to each task); fixed costs per run "
                       "(JVM start, catalog stage) left out; core_hours_at_full_use: the measured CPU seconds "
                       "per image with every core busy all the time; GPU rows: the cores' time less the CNN's share of the "
                       "stages' task seconds (an upper bound of what the GPU frees: each task's CNN worker shares the "
                       "cores with the OCR workers)"),
        "window_hours": WINDOW_HOURS,
        "gpu_cnn": gpu_cnn or "not measured",
        "gpu_ocr": gpu_ocr or "not measured",
        "cnn_share_of_task_seconds": round(cnn_share, 4), "ocr_share_of_task_seconds": round(ocr_share, 4),
        "scenarios": scenarios,
    }


def print_projection(proj: dict[str, Any]) -> None:
    cores = "  ".join(f"h on {c:>3}" for c in PROJECT_CORES)
    print(f"\n== Projection ({proj['assumption']})")
    print(f"  {'executors':<24} {'images':>9} {'core-h':>9}  {cores}  {'cores for 8 h':>13} {'GPU-h':>8}")
    for s in proj["scenarios"]:
        hours = "  ".join(f"{s['hours_on'][str(c)]:>8.2f}" for c in PROJECT_CORES)
        gpu = f"{s['gpu_hours']:.3f}" if s["gpu_hours"] is not None else "-"
        print(f"  {s['executors']:<24} {s['images']:>9} {s['core_hours']:>9.1f}  {hours}  {s['cores_for_window']:>13} "
              f"{gpu:>8}")
    print(f"  GPU CNN: {proj['gpu_cnn']}; GPU OCR: {proj['gpu_ocr']}")
    sys.stdout.flush()


# --- main -----------------------------------------------------------------------------------------------


def cores_of(master: str) -> int:
    found = re.fullmatch(r"local\[(\d+|\*)(?:,\d+)?\]", master.strip())
    if found and found.group(1) != "*":
        return int(found.group(1))
    return os.cpu_count() or 1


def catalog_memory(path: Path) -> int:
    """Bytes the catalog takes as the driver holds it (read_catalog's DataFrame, strings included)."""
    from imagequant.catalog import read_catalog

    return int(read_catalog(path).memory_usage(deep=True).sum())


def main() -> int:
    n = env_int("BENCH_SCALE_IMAGES", MIN_IMAGES)
    new_percent = env_int("BENCH_SCALE_NEW_PERCENT", 10)
    big_rows = env_int("BENCH_SCALE_BIG_ROWS", 150_000)
    sides = (env_int("BENCH_SCALE_MIN_SIDE", 1000), env_int("BENCH_SCALE_MAX_SIDE", 2000))
    seed = env_int("BENCH_SCALE_SEED", 11)
    interval = float(env_str("BENCH_SCALE_SAMPLE_S", "0.5"))
    master = env_str("BENCH_SCALE_MASTER", "local[2]")
    cores = cores_of(master)
    new = max(1, math.ceil(n * new_percent / 100))
    dry = n < MIN_IMAGES
    overrides = changed_settings()
    result = Result("scale", f"Scale: {n} + {new} images through extract_features on {master}, and a projection")
    if dry:
        result.name = "scale_dryrun"  # never overwrites a full-size result
        log(f"{n} images is below the issue's {MIN_IMAGES}: a dry run, written to {result.name}.json")
    elif overrides:
        result.name = variant_name(overrides)  # scale.json keeps the shipped settings' figures
        log(f"settings changed ({','.join(overrides)}): written to {result.name}.json")

    work = work_dir("scale")
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / "logs").mkdir(parents=True)
    folder, labels = generate_images(n + new, seed, sides)
    names = sorted({link.rsplit("/", 1)[-1] for link in labels["image_link"]})
    order = list(dict.fromkeys(labels["image_link"]))  # images in generation order
    first_links = set(order[:n])
    sizes = image_sizes(folder / "images", names)

    with FileServer(folder) as server:
        rows = labels.copy()
        rows["image_link"] = [server.url("images/" + link[len(LINK_BASE):]) for link in rows["image_link"]]
        first_rows = rows[labels["image_link"].isin(first_links)]
        cat1 = write_catalog(first_rows, run_dir / "catalog-first.csv")
        cat2 = write_catalog(rows, run_dir / "catalog-grown.csv")
        cat_big = write_catalog(big_catalog(rows, big_rows), run_dir / "catalog-big.csv")
        from imagequant.config import load_config

        config = load_config([LOCAL_CONF], job_settings())
        result.params = {
            "images": n, "new_images": new, "source": "synthetic", "catalog_rows": len(first_rows),
            "grown_catalog_rows": len(rows), "big_catalog_rows": big_rows, **sizes,
            "sides": list(sides), "seed": seed, "master": master, "cores": cores,
            "ocr_engine": config.ocr.engine, "rotated_pass": config.ocr.rotated_pass,
            "second_pass": config.ocr.second_pass, "cnn_device": config.cnn.device,
            "cnn_batch": config.cnn.batch_size, "partitions_per_core": config.spark.image_partitions_per_core,
            "overrides": overrides, "sample_interval_s": interval,
        }
        log(f"scale: {n} + {new} synthetic images, median {sizes['median_width']}x{sizes['median_height']} px, "
            f"{sizes['jpeg_bytes_median'] / 1000:.0f} kB; catalogs of {len(first_rows)}, {len(rows)} and {big_rows} rows; "
            f"served from {server.url('')}")
        store = run_dir / "store"
        runs = {
            "first": run_job("first", cat1, store, run_dir / "logs", interval),
            "incremental": run_job("incremental", cat2, store, run_dir / "logs", interval),
        }
        images = images_table(store)
        store_images_bytes = folder_bytes(store / "images")
        runs["noop"] = run_job("noop", cat2, store, run_dir / "logs", interval)
        runs["noop_big"] = run_job("noop_big", cat_big, store, run_dir / "logs", interval)
    cat_mem = {"small": catalog_memory(cat2), "big": catalog_memory(cat_big)}

    first, incr, noop, noop_big = runs["first"], runs["incremental"], runs["noop"], runs["noop_big"]
    s1, s2 = first["summary"], incr["summary"]
    by_run = {label: images[images["run_id"] == r["summary"]["run_id"]] for label, r in runs.items()}
    stages1 = stage_seconds(by_run["first"])
    stages2 = stage_seconds(by_run["incremental"])
    statuses = images["status"].value_counts().to_dict()
    result.details = {"runs": runs, "stage_seconds": {"first": stages1, "incremental": stages2},
                      "statuses": statuses, "store_images_bytes": store_images_bytes,
                      "store_image_rows": len(images), "catalog_memory_bytes": cat_mem}

    # -- throughput
    for label, run in (("first", first), ("incremental", incr)):
        s = run["summary"]
        result.add("scale", f"{label} run: images/s (job time)", s["images_per_second"], "img/s",
                   note=(f"{s['processed']} images in {s['seconds']:.1f} s; ok in the store {s['store_ok']}, "
                         f"failed {sum((s['failed'] or {}).values())} {s['failed'] or ''}").rstrip())
        result.add("scale", f"{label} run: images/s incl. JVM start (wall)",
                   s["processed"] / run["wall_s"] if run["wall_s"] else None, "img/s",
                   note=f"{run['wall_s']:.1f} s from the command to its exit")
    ratio = s2["seconds"] / s1["seconds"] if s1["seconds"] else None
    result.add("scale", "incremental run time / first run time", ratio, "x",
               note=(f"{s2['processed']} new of {s2['distinct_images']} images ({s2['already_ok']} skipped): "
                     f"{s2['seconds']:.1f} s vs {s1['seconds']:.1f} s; wall {incr['wall_s']:.1f} vs "
                     f"{first['wall_s']:.1f} s; a rerun with nothing new: {noop['summary']['seconds']:.1f} s "
                     f"(wall {noop['wall_s']:.1f} s)"))

    # -- CPU per image
    processed = max(1, s1["processed"])
    stage_total = sum(stages1[s]["mean"] for s in STAGES)
    for stage in STAGES:
        st = stages1[stage]
        result.add("scale", f"{stage}: task seconds per image (mean)", st["mean"], "s",
                   note=(f"median {st['median']:.3f}, p90 {st['p90']:.3f}; "
                         f"{100 * st['mean'] / stage_total:.1f}% of the stages' time" if stage_total else ""))
    job_cpu = first["tree"]["cpu_s"]
    fixed_cpu = noop["tree"]["cpu_s"]
    marginal = (job_cpu - fixed_cpu) / processed
    result.add("scale", "whole job: CPU seconds per image (all processes)", job_cpu / processed, "s",
               note=(f"{job_cpu:.0f} CPU s over {processed} images: Python workers {role(first, 'python_worker', 'cpu_s'):.0f}, "
                     f"JVM {role(first, 'jvm', 'cpu_s'):.0f}, Python driver {role(first, 'python_driver', 'cpu_s'):.0f}, "
                     f"daemon {role(first, 'pyspark_daemon', 'cpu_s'):.0f}; a run with nothing to do costs "
                     f"{fixed_cpu:.0f} CPU s, so {marginal:.3f} s per image beyond it"))
    core_s = s1["seconds"] * cores / processed
    utilisation = (job_cpu / (first["wall_s"] * cores)) if first["wall_s"] else 0.0
    result.add("scale", f"core-seconds per image delivered ({cores} cores x job time / images)", core_s, "s",
               note=f"cores busy {100 * utilisation:.0f}% of the run's wall time (tree CPU / wall / cores)")
    # Others on the machine slow the job's tasks (their seconds, the wall times) but not its CPU seconds.
    machine = first["tree"]["machine_cpu_s"]
    others = machine.get("busy", 0.0) - job_cpu - first["bench_process_cpu_s"]
    if machine.get("all"):
        result.add("scale", "other processes' share of the machine during the first run",
                   100 * max(0.0, others) / machine["all"], "%", digits=1,
                   note=(f"{max(0.0, others):.0f} of the machine's {machine['all']:.0f} core-s, leaving out the job's "
                         f"{job_cpu:.0f} and this bench's server and sampler's {first['bench_process_cpu_s']:.0f}; "
                         "hypervisor steal "
                         f"{100 * machine.get('steal', 0.0) / machine['all']:.1f}%; above a few % the task "
                         "seconds, images/s and core-seconds per image are inflated, CPU seconds are not"))

    # -- memory
    workers = first["tree"]["roles"].get("python_worker", {})
    # Each worker's peak with the libraries it had mapped: which stage's code made it that large.
    held = sorted(((p["rss_peak_mib"], "+".join(sorted(p["libraries"])) or "none")
                   for p in first["tree"]["processes"] if p["role"] == "python_worker"), reverse=True)
    result.add("memory", "peak RSS per Python worker (largest)", workers.get("rss_peak_max_mib"), "MiB", digits=0,
               note=(f"{len(held)} workers, peaks {', '.join(f'{p:.0f} ({libs})' for p, libs in held[:6])} MiB; "
                     f"PSS peak {workers.get('pss_peak_max_mib', 0):.0f} MiB (read every 5 s); pyspark daemon "
                     f"{role(first, 'pyspark_daemon', 'rss_peak_max_mib'):.0f} MiB"))
    heap = first["jvm_heap"]
    result.add("memory", "driver JVM peak RSS (the executor too, in local mode)", role(first, "jvm", "rss_peak_max_mib"),
               "MiB", digits=0,
               note=(f"spark.driver.memory {config.spark.conf.get('spark.driver.memory', '?')}; heap in use after a "
                     f"collection at most {heap['max_after_gc_mib']} MiB, committed at most {heap['max_committed_mib']} "
                     f"MiB ({heap['collections']} collections)"))
    result.add("memory", "Python driver peak RSS", role(first, "python_driver", "rss_peak_max_mib"), "MiB", digits=0,
               note=(f"{role(incr, 'python_driver', 'rss_peak_max_mib'):.0f} MiB in the incremental run "
                     f"({s2['processed']} images); job's process tree peak {first['tree']['peak_rss_total_mib']:.0f} MiB "
                     f"RSS, {first['tree']['peak_pss_total_mib']:.0f} MiB PSS"))
    # The driver against the catalog: two runs with nothing to process, a small and a big catalog.
    grow_cat = (cat_mem["big"] - cat_mem["small"]) / MIB
    small_rows, big_n = noop["summary"]["rows"], noop_big["summary"]["rows"]
    for name, key in (("Python driver", "python_driver"), ("driver JVM", "jvm")):
        a, b = role(noop, key, "rss_peak_max_mib"), role(noop_big, key, "rss_peak_max_mib")
        result.add("memory", f"{name} peak RSS growth / catalog growth ({small_rows} -> {big_n} rows)",
                   (b - a) / grow_cat if grow_cat > 0 else None, "x",
                   note=(f"{a:.0f} -> {b:.0f} MiB while the catalog as read_catalog holds it grew "
                         f"{cat_mem['small'] / MIB:.1f} -> {cat_mem['big'] / MIB:.1f} MiB (no image processed in either run)"))
    ha, hb = noop["jvm_heap"]["max_after_gc_mib"], noop_big["jvm_heap"]["max_after_gc_mib"]
    result.add("memory", f"driver JVM heap kept (most in use after a collection) growth / catalog growth ({small_rows} -> {big_n} rows)",
               (hb - ha) / grow_cat if ha is not None and hb is not None and grow_cat > 0 else None, "x",
               note=(f"{ha} -> {hb} MiB ({noop['jvm_heap']['collections']} and {noop_big['jvm_heap']['collections']} "
                     "collections); RSS grows further because the JVM enlarges its heap towards spark.driver.memory "
                     "before it collects"))

    # -- store
    result.add("store", "images table bytes per image", store_images_bytes / max(1, len(images)), "B", digits=0,
               note=(f"{store_images_bytes / MIB:.1f} MiB for {len(images)} images ({config.store.compression}); "
                     f"the JPEGs served: {sizes['jpeg_bytes_mean'] / 1000:.0f} kB mean"))

    # -- projection
    ocr_share = stages1["ocr"]["mean"] / stage_total if stage_total else 0.0
    cnn_share = stages1["cnn"]["mean"] / stage_total if stage_total else 0.0
    proj = projection(core_s, marginal, cnn_share, ocr_share)
    result.details["projection"] = proj
    for sc in proj["scenarios"]:
        label = f"{sc['images'] // 1000}k" if sc["images"] < 1_000_000 else f"{sc['images'] // 1_000_000}M"
        hours = ", ".join(f"{h} h on {c} cores" for c, h in sc["hours_on"].items())
        gpu = f"; {sc['gpu_hours']} GPU-hours" if sc["gpu_hours"] is not None else ""
        full = (f"; {sc['core_hours_at_full_use']} core-h if every core were busy all the time"
                if sc["core_hours_at_full_use"] is not None else "")
        result.add("projection", f"{label} images, {sc['executors']} executors: core-hours", sc["core_hours"], "core-h",
                   digits=1, note=f"{hours}{gpu}{full}")
        result.add("projection", f"{label} images, {sc['executors']} executors: cores to finish in {WINDOW_HOURS:g} h",
                   sc["cores_for_window"], "cores", digits=0, note=gpu.lstrip("; "))
    if not isinstance(proj["gpu_cnn"], dict):
        result.add("projection", "GPU executors", None, note="no measured GPU CNN figure (bench/results/gpu_cnn.json)")
    if not isinstance(proj["gpu_ocr"], dict):
        result.add("projection", "OCR on GPU", None, note="not measured: OCR stays on CPU cores in the GPU rows")

    result.write()
    print_projection(proj)
    return KEPT_STORED_EXIT if dry or overrides else 0


if __name__ == "__main__":
    run_script(main)
