"""Where an image's CPU goes: each OCR model (detector, direction classifier, recogniser of each reader), the
Python steps between them, the second look, and ResNet-50, per image; and the same for each runtime the OCR
models can run on (``ocr.rapidocr.runtime`` / ``precision``) and each CNN precision (``cnn.cpu_precision``).

    .venv/bin/python bench/ocr_breakdown.py    # BENCH_BREAKDOWN_IMAGES=60 BENCH_WORKERS=2

Images: real product images from ../shared/realdev when present, else synthetic ones. OCR runs in worker
processes on one thread each, its second look targeted at the entities each image is asked (as the extract
job does); model CPU seconds are counted by the engine around each model call (the reading thread's CPU
clock). The second look's cost is the default reader's CPU minus that of the same reader without it
(``ocr.second_pass=false``). Candidate recall says whether a runtime reads as well as the default.
"""

from __future__ import annotations

import functools
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    OcrRun,
    Result,
    candidate_recall,
    env_int,
    load_image_set,
    log,
    make_engine,
    run_ocr_pool,
    run_script,
)

# (label, --set overrides); the first is the default reader, the one the breakdown is of
RUNTIMES = (
    ("onnxruntime f32", ()),
    ("openvino f32", ("ocr.rapidocr.runtime=openvino",)),
    ("openvino bf16", ("ocr.rapidocr.runtime=openvino", "ocr.rapidocr.precision=bf16")),
)
NO_SECOND_LOOK = ("ocr.second_pass=false",)
CNN_CROPS = 64


def per_image(runs: list[OcrRun]) -> dict[str, Any]:
    """Mean CPU seconds per image: in all, in each model, and between the model calls (Python, OpenCV)."""
    ok = [r for r in runs if r.error is None]
    models: dict[str, float] = defaultdict(float)
    for run in ok:
        for name, cpu in run.model_cpu.items():
            models[name] += cpu
    n = max(1, len(ok))
    total = sum(r.cpu for r in ok) / n
    in_models = {name: round(cpu / n, 4) for name, cpu in sorted(models.items(), key=lambda kv: -kv[1])}
    second = [r for r in ok if len(r.passes) > 1]
    return {
        "images": len(runs), "errors": len(runs) - len(ok),
        "cpu_mean_s": round(total, 4), "cpu_median_s": round(statistics.median(r.cpu for r in ok), 4) if ok else None,
        "models_s": in_models, "between_models_s": round(total - sum(in_models.values()), 4),
        "second_look_share": round(len(second) / n, 3),
    }


def cnn_cost(paths: list[Path]) -> dict[str, Any]:
    """ms per image of ResNet-50 (batch 32, one thread) on the images' crops, for each CPU runtime and precision,
    with each one's smallest cosine to torch's f32 features."""
    import numpy as np

    from imagequant.cnn_runtime import get_extractor
    from imagequant.config import load_config
    from imagequant.imaging import decode_image, prepare_for_cnn

    crops = np.stack([prepare_for_cnn(decode_image(p.read_bytes())) for p in paths[:CNN_CROPS]])
    out: dict[str, Any] = {"crops": len(crops)}
    reference = None
    for runtime, precision in (("torch", "f32"), ("torch", "auto"), ("openvino", "f32"), ("openvino", "auto")):
        cfg = load_config(overrides=["cnn.device=cpu", "cnn.torch_threads=1", f"cnn.cpu_runtime={runtime}",
                                     f"cnn.cpu_precision={precision}"])
        extractor = get_extractor(cfg.cnn, crops.shape[1])
        extractor.embed(crops[:4])  # first-call costs are not per-image costs
        started = time.process_time()
        features = np.concatenate([extractor.embed(crops[i:i + 32]) for i in range(0, len(crops), 32)])
        key = f"{runtime}/{precision}"
        out[key] = {"ran": extractor.describe(), "ms_per_image": round(1000 * (time.process_time() - started)
                                                                         / len(crops), 1)}
        if reference is None:
            reference = features
        else:
            cosine = (features * reference).sum(1) / (np.linalg.norm(features, axis=1) * np.linalg.norm(reference, axis=1))
            out[key]["min_cosine_to_f32"] = round(float(cosine.min()), 6)
    return out


def main() -> int:
    n = env_int("BENCH_BREAKDOWN_IMAGES", 60)
    workers = env_int("BENCH_WORKERS", 2)
    image_set = load_image_set(n)
    images = image_set.images
    paths = [im.path for im in images]
    asked = [[r.entity for r in im.rows] for im in images]
    result = Result("ocr_breakdown", "Where an image's CPU goes: OCR models, second look, CNN; runtimes")
    result.params = {"images": len(images), "source": image_set.source, "workers": workers, **image_set.sizes()}
    log(f"ocr_breakdown: {image_set.describe()}")

    measured: dict[str, dict[str, Any]] = {}
    for label, overrides in (*RUNTIMES, ("onnxruntime f32, no second look", NO_SECOND_LOOK)):
        runs = run_ocr_pool(paths, functools.partial(make_engine, "rapidocr", overrides), workers, label, asked)
        measured[label] = {**per_image(runs), "candidate_recall": candidate_recall(images, runs)}
    result.details["ocr"] = measured

    base = measured[RUNTIMES[0][0]]
    for name, cpu in base["models_s"].items():
        result.add("ocr", f"{name} (default runtime): CPU s per image", cpu, "s",
                   note=f"{100 * cpu / base['cpu_mean_s']:.0f}% of the OCR's {base['cpu_mean_s']:.3f} s mean")
    result.add("ocr", "between model calls (crops, resizes, post-processing): CPU s per image",
               base["between_models_s"], "s", note=f"{100 * base['between_models_s'] / base['cpu_mean_s']:.0f}% of the OCR")
    second = base["cpu_mean_s"] - measured["onnxruntime f32, no second look"]["cpu_mean_s"]
    result.add("ocr", "the second look: CPU s per image (all images)", second, "s",
               note=f"{100 * second / base['cpu_mean_s']:.0f}% of the OCR; {100 * base['second_look_share']:.0f}% of "
                    "the images take it")
    base_recall = base["candidate_recall"]["recall"]
    for label, _ in RUNTIMES[1:]:
        m = measured[label]
        result.add("runtime", f"{label}: OCR CPU per image / onnxruntime f32", m["cpu_mean_s"] / base["cpu_mean_s"], "x",
                   note=f"mean {m['cpu_mean_s']:.3f} vs {base['cpu_mean_s']:.3f} s, median {m['cpu_median_s']:.3f} vs "
                        f"{base['cpu_median_s']:.3f} s; candidate recall {m['candidate_recall']['recall']:.3f} vs "
                        f"{base_recall:.3f}")

    cnn = cnn_cost(paths)
    result.details["cnn"] = cnn
    for key, c in cnn.items():
        if key == "crops":
            continue
        runtime, precision = key.split("/")
        result.add("cnn", f"ResNet-50, cnn.cpu_runtime={runtime} cpu_precision={precision}: ms per image",
                   c["ms_per_image"], "ms", note=f"ran {c['ran']}, batch 32, one thread, {cnn['crops']} crops"
                   + (f"; min cosine to torch f32 {c['min_cosine_to_f32']}" if "min_cosine_to_f32" in c else ""))
    result.write()
    return 0


if __name__ == "__main__":
    run_script(main)
