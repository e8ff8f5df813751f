"""Stage cost per image: fetch (loopback HTTP), decode, resize for OCR, CNN crop, OCR, CNN features,
candidates and scoring (rules and the learned model). Medians and p90 over real images when
../shared/realdev is present, synthetic images otherwise.

    .venv/bin/python bench/stages.py            # BENCH_IMAGES=100 BENCH_WORKERS=2 BENCH_CNN_BATCHES=3

OCR runs in BENCH_WORKERS processes, each timing its own images with its engine pinned to one thread
(CPU seconds = the cost on one core, which other load does not inflate); the CNN runs alone in a fresh
process, once with one torch thread (what an extract worker uses) and once with every core.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    REPO,
    Clock,
    Result,
    candidate_recall,
    env_int,
    env_str,
    load_image_set,
    log,
    make_engine,
    ocr_runs_cached,
    quick_model,
    run_json_subprocess,
    stats,
    work_dir,
)

CNN_BATCH = 32


def cnn_worker(crops_file: str, threads: int, batches: int) -> dict[str, Any]:
    """Seconds per image of ResNet-50 features on CPU at ``threads`` threads (batch of 32), on the default CPU
    runtime (cnn.cpu_runtime)."""
    import numpy as np

    from imagequant.cnn_runtime import get_extractor
    from imagequant.config import load_config

    crops = np.load(crops_file)
    cfg = load_config(overrides=["cnn.device=cpu", f"cnn.torch_threads={threads}", f"cnn.batch_size={CNN_BATCH}"])
    clock = Clock()
    extractor = get_extractor(cfg.cnn, crops.shape[1])
    load_s = clock.wall()
    extractor.embed(crops[:CNN_BATCH])  # first call allocates and picks kernels
    per_image = []
    for b in range(batches):
        batch = crops[(b * CNN_BATCH) % len(crops):][:CNN_BATCH]
        if len(batch) < CNN_BATCH:
            batch = np.concatenate([batch, crops[: CNN_BATCH - len(batch)]])
        started = time.perf_counter()
        extractor.embed(batch)
        per_image.append((time.perf_counter() - started) / len(batch))
    return {"threads": threads, "model_load_s": round(load_s, 3), "cnn_device": extractor.describe(),
            "seconds_per_image": per_image}


def measure_fetch(images: list[Any]) -> dict[str, Any]:
    """Fetch every image once from a loopback HTTP server (ImageServer) through imagequant.fetch."""
    from imagequant.config import load_config
    from imagequant.fetch import fetch_image, get_session
    from tests.httpserver import ImageServer

    cfg = load_config(overrides=["fetch.allow_loopback=true"]).fetch
    seconds: list[float] = []
    failed = 0
    with ImageServer() as server:
        urls = [server.add(f"/images/{im.name}", im.path.read_bytes()) for im in images]
        session = get_session(cfg)
        fetch_image(urls[0], cfg, session)  # opens the pooled connection
        for url in urls:
            started = time.perf_counter()
            res = fetch_image(url, cfg, session)
            seconds.append(time.perf_counter() - started)
            failed += int(not res.ok)
    return {"seconds": seconds, "failed": failed}


def measure_decode(images: list[Any]) -> tuple[dict[str, list[float]], Any]:
    """Decode, resize-for-OCR and CNN-crop seconds per image; returns them and the stacked crops."""
    import numpy as np

    from imagequant.config import load_config
    from imagequant.imaging import decode_image, prepare_for_cnn, prepare_for_ocr
    cfg = load_config()
    upscale = cfg.imaging.ocr_max_upscale
    out: dict[str, list[float]] = {"decode": [], "ocr_resize": [], "cnn_crop": []}
    crops = []
    for im in images:
        data = im.path.read_bytes()
        t0 = time.perf_counter()
        img = decode_image(data, cfg.imaging.max_pixels)
        t1 = time.perf_counter()
        prepare_for_ocr(img, cfg.imaging.ocr_min_side, cfg.imaging.ocr_max_side, upscale)
        t2 = time.perf_counter()
        crops.append(prepare_for_cnn(img, cfg.imaging.cnn_size))
        t3 = time.perf_counter()
        out["decode"].append(t1 - t0)
        out["ocr_resize"].append(t2 - t1)
        out["cnn_crop"].append(t3 - t2)
    return out, np.stack(crops)


def measure_scoring(images: list[Any], runs: list[Any]) -> dict[str, Any]:
    """Candidates, the rule choice and the learned model's scoring, per labeled row."""
    from imagequant.config import load_config
    from imagequant.core.units import ENTITY_UNITS
    from imagequant.scoring import rules
    from imagequant.scoring.checkpoint import load_model
    from imagequant.text.candidates import extract_candidates

    by_name = {r.name: r for r in runs}
    rows = [(by_name[im.name], row.entity) for im in images for row in im.rows
            if im.name in by_name and by_name[im.name].error is None and row.entity in ENTITY_UNITS]
    cand_s, rule_s, cands_per_row = [], [], []
    found = []
    for run, entity in rows:
        t0 = time.perf_counter()
        cands = extract_candidates(run.tokens, entity, run.size)
        t1 = time.perf_counter()
        rules.choose(cands, entity)
        t2 = time.perf_counter()
        cand_s.append(t1 - t0)
        rule_s.append(t2 - t1)
        cands_per_row.append(len(cands))
        found.append(cands)
    out: dict[str, Any] = {"rows": len(rows), "candidates_per_row": stats(cands_per_row, digits=2),
                           "candidates_s": cand_s, "rules_s": rule_s}
    try:
        model_dir = quick_model()
        exported = load_config().predict.use_exported
        model = load_model(model_dir, exported=exported)
        t0 = time.perf_counter()
        encoded = [model.encode(run.tokens, run.size, entity, None, cands)
                   for (run, entity), cands in zip(rows, found, strict=True)]
        t1 = time.perf_counter()
        model.probabilities(encoded)
        t2 = time.perf_counter()
    except Exception as exc:  # the model code may be mid-change: the other stages' figures still stand
        log(f"learned model not measured: {type(exc).__name__}: {exc}")
        out["model"] = {"error": f"{type(exc).__name__}: {exc}"}
        return out
    out["model"] = {"dir": str(model_dir), "exported": exported, "encode_s_per_row": (t1 - t0) / max(1, len(rows)),
                    "forward_s_per_row": (t2 - t1) / max(1, len(rows))}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cnn-worker", nargs=3, metavar=("CROPS", "THREADS", "BATCHES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cnn_worker:
        crops, threads, batches = args.cnn_worker
        print(json.dumps(cnn_worker(crops, int(threads), int(batches))))
        return 0

    n = env_int("BENCH_IMAGES", 100)
    workers = env_int("BENCH_WORKERS", 2)
    cnn_batches = env_int("BENCH_CNN_BATCHES", 3)
    from imagequant.config import load_config

    default_engine = load_config().ocr.engine
    extra = [e for e in env_str("BENCH_STAGE_ENGINES", "").split(",") if e]
    engines = list(dict.fromkeys([default_engine, "tesseract", *extra]))

    result = Result("stages", "Stage cost per image")
    image_set = load_image_set(n)
    images = image_set.images
    sizes = image_set.sizes()
    result.params = {"images": len(images), "source": image_set.source, "workers": workers, "engines": engines,
                     "cnn_batch": CNN_BATCH, "cnn_batches": cnn_batches, **sizes}
    log(f"stages: {image_set.describe()}")
    size_note = f"{image_set.source}, median {sizes['median_width']}x{sizes['median_height']} px"

    fetched = measure_fetch(images)
    s = stats(fetched["seconds"], 1000)
    result.add("fetch", "loopback HTTP fetch, median ms/image", s["median"], "ms",
               note=f"p90 {s['p90']:.1f} ms, {sizes['bytes_median'] / 1000:.0f} kB median, {fetched['failed']} failed")
    result.details["fetch_ms"] = s

    decode, crops = measure_decode(images)
    for key, label in (("decode", "decode to RGB"), ("ocr_resize", "resize for OCR"), ("cnn_crop", "resize+crop for CNN")):
        s = stats(decode[key], 1000)
        result.details[f"{key}_ms"] = s
        result.add("decode", f"{label}, median ms/image", s["median"], "ms", note=f"p90 {s['p90']:.1f} ms; {size_note}")

    ocr_cpu: dict[str, float] = {}
    runs_by_engine = {}
    for engine in engines:
        runs, reused = ocr_runs_cached([im.path for im in images], engine, (), functools.partial(make_engine, engine),
                                       workers, engine, [[r.entity for r in im.rows] for im in images])
        runs_by_engine[engine] = runs
        ok = [r for r in runs if r.error is None]
        cpu, wall = stats([r.cpu for r in ok]), stats([r.wall for r in ok])
        tokens = stats([len(r.tokens) for r in ok], digits=1)
        recall = candidate_recall(images, runs)
        ocr_cpu[engine] = cpu["median"]
        result.details[f"ocr_{engine}"] = {"cpu_s": cpu, "wall_s": wall, "tokens": tokens,
                                           "errors": len(runs) - len(ok), "candidate_recall": recall,
                                           "reused_from_earlier_run": reused}
        result.add("ocr", f"OCR {engine}, median CPU s/image (one core)", cpu["median"], "s",
                   note=f"p90 {cpu['p90']:.2f} s, wall median {wall['median']:.2f} s, "
                        f"candidate recall {recall['recall']:.3f} of {recall['rows']} rows")

    crops_file = work_dir("stages") / "crops.npy"
    import numpy as np

    np.save(crops_file, crops)
    cnn = {}
    for threads in (1, os.cpu_count() or 1):
        if threads in cnn:
            continue
        # OMP_THREAD_LIMIT (set to 1 for Tesseract) would cap torch's or OpenVINO's thread pool: unset it here.
        out = run_json_subprocess([str(Path(__file__)), "--cnn-worker", str(crops_file), str(threads), str(cnn_batches)],
                                  env={"OMP_THREAD_LIMIT": ""}, timeout=1200)
        cnn[threads] = out
        s = stats(out["seconds_per_image"], 1000)
        result.details[f"cnn_{threads}_threads"] = {**out, "ms_per_image": s}
        result.add("cnn", f"ResNet-50 CPU, batch {CNN_BATCH}, {threads} thread(s), ms/image", s["median"], "ms",
                   note=f"{out['cnn_device']} (cnn.cpu_precision=auto), over {cnn_batches} batches; "
                        f"model load {out['model_load_s']:.1f} s")

    scoring = measure_scoring(images, runs_by_engine[default_engine])
    c, r = stats(scoring["candidates_s"], 1000), stats(scoring["rules_s"], 1000)
    result.details["scoring"] = {**{k: v for k, v in scoring.items() if not k.endswith("_s")},
                                 "candidates_ms": c, "rules_ms": r}
    result.add("candidates", "extract candidates, median ms/row", c["median"], "ms",
               note=f"p90 {c['p90']:.2f} ms over {scoring['rows']} rows")
    result.add("scoring", "rules choice, median ms/row", r["median"], "ms", note=f"p90 {r['p90']:.3f} ms")
    m = scoring["model"]
    if "error" in m:
        result.add("scoring", "learned model: not measured", None, note=m["error"][:200])
    else:
        result.add("scoring", f"learned model ({'exported' if m['exported'] else 'eager'}) encode+forward, ms/row",
                   (m["encode_s_per_row"] + m["forward_s_per_row"]) * 1000, "ms",
                   note=f"encode {m['encode_s_per_row'] * 1000:.2f} + forward {m['forward_s_per_row'] * 1000:.2f} ms")

    # Where one image's time goes on one core (the extract worker's view).
    parts = {
        "fetch": result.details["fetch_ms"]["median"] / 1000,
        "decode": result.details["decode_ms"]["median"] / 1000,
        "ocr_resize": result.details["ocr_resize_ms"]["median"] / 1000,
        "cnn_crop": result.details["cnn_crop_ms"]["median"] / 1000,
        "ocr": ocr_cpu[default_engine],
        "cnn": result.details["cnn_1_threads"]["ms_per_image"]["median"] / 1000,
    }
    total = sum(parts.values())
    result.details["per_image_seconds_one_core"] = {k: round(v, 4) for k, v in parts.items()} | {"total": round(total, 4)}
    result.add("summary", f"OCR ({default_engine}) share of one image's time on one core", 100 * parts["ocr"] / total, "%",
               digits=1, note=f"of {total:.2f} s median-sum: " + ", ".join(f"{k} {v:.3f}" for k, v in parts.items()))
    result.write()
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
