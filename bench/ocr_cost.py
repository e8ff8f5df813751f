"""OCR cost: pytesseract (a new Tesseract process per pass) against an in-process Tesseract API kept alive
per worker (tesserocr), same settings and passes, same images; and the effect of the OCR image size
(imaging.ocr_min_side / ocr_max_side) on time and on candidate recall.

    .venv/bin/python bench/ocr_cost.py   # BENCH_OCR_IMAGES=100 BENCH_OCR_SIZE_IMAGES=30 BENCH_WORKERS=2
                                         # BENCH_OCR_SIZES=700:1600,1300:3000 (min_side:max_side)

Candidate recall: the share of labeled rows whose label (value and unit) is among the candidates that
imagequant.text.candidates extracts from the tokens. Times are CPU seconds per image on one core (the process
plus its Tesseract children), engines pinned to one thread; wall medians are given too.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    Clock,
    OcrRun,
    Result,
    candidate_recall,
    env_int,
    env_str,
    load_image_set,
    log,
    make_engine,
    ocr_runs_cached,
    run_ocr_pool,
    run_script,
    stats,
)


def summarize(images: list[Any], runs: list[OcrRun]) -> dict[str, Any]:
    ok = [r for r in runs if r.error is None]
    return {
        "images": len(runs), "errors": len(runs) - len(ok),
        "cpu_s": stats([r.cpu for r in ok]), "wall_s": stats([r.wall for r in ok]),
        "tokens": stats([len(r.tokens) for r in ok], digits=1),
        "candidate_recall": candidate_recall(images, runs),
    }


def per_call_cost(pytess: Any, inproc: Any, calls: int = 15) -> dict[str, Any]:
    """Median CPU seconds of one Tesseract call (psm 11) on a small one-word image, both ways: the per-call
    cost that does not depend on the image."""
    import statistics

    from PIL import Image, ImageDraw

    from imagequant.ocr.base import Deadline

    img = Image.new("L", (320, 96), 255)
    ImageDraw.Draw(img).text((20, 30), "500 g", fill=0)
    out: dict[str, Any] = {"calls": calls}
    for name, engine in (("pytesseract", pytess), ("tesserocr", inproc)):
        engine._run(img, engine._args, Deadline(60.0))  # warm-up (the resident API loads its model here)
        seconds = []
        for _ in range(calls):
            clock = Clock()
            engine._run(img, engine._args, Deadline(60.0))
            seconds.append(clock.cpu())
        out[name] = round(statistics.median(seconds), 4)
    return out


def same_tokens(a: list[OcrRun], b: list[OcrRun]) -> float:
    """Share of images whose two token lists read the same words in the same order."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x.error is None and y.error is None]
    same = sum([t.text for t in x.tokens] == [t.text for t in y.tokens] for x, y in pairs)
    return same / len(pairs) if pairs else 0.0


def main() -> int:
    n = env_int("BENCH_OCR_IMAGES", 100)
    n_sizes = env_int("BENCH_OCR_SIZE_IMAGES", 30)
    workers = env_int("BENCH_WORKERS", 2)
    raw_sizes = env_str("BENCH_OCR_SIZES", "700:1600,1300:3000")  # "none" skips the size study
    sizes = [tuple(int(x) for x in s.split(":")) for s in raw_sizes.split(",") if s and raw_sizes != "none"]
    if n_sizes <= 0:
        sizes = []
    result = Result("ocr_cost", "OCR cost: pytesseract against in-process tesserocr; OCR image size")
    image_set = load_image_set(n)
    images = image_set.images
    paths = [im.path for im in images]
    from imagequant.config import load_config

    cfg = load_config(overrides=["ocr.engine=tesseract"])
    result.params = {"images": len(images), "size_images": min(n_sizes, len(images)), "source": image_set.source,
                     "workers": workers, "psm": cfg.ocr.tesseract.psm, "oem": cfg.ocr.tesseract.oem,
                     "rotated_pass": cfg.ocr.rotated_pass, "second_pass": cfg.ocr.second_pass,
                     "ocr_min_side": cfg.imaging.ocr_min_side, "ocr_max_side": cfg.imaging.ocr_max_side,
                     "sizes": [list(s) for s in sizes], **image_set.sizes()}
    log(f"ocr_cost: {image_set.describe()}")

    asked = [[r.entity for r in im.rows] for im in images]  # the second look targeted as in the extract job
    base_runs, reused = ocr_runs_cached(paths, "tesseract", (), functools.partial(make_engine, "tesseract"),
                                        workers, "pytesseract", asked)
    base = summarize(images, base_runs)
    base["reused_from_earlier_run"] = reused
    result.details["pytesseract"] = base
    result.add("ocr", "pytesseract, median CPU s/image", base["cpu_s"]["median"], "s",
               note=f"p90 {base['cpu_s']['p90']:.2f} s, wall median {base['wall_s']['median']:.2f} s, "
                    f"{'runs of stages.py reused, ' if reused else ''}candidate recall {base['candidate_recall']['recall']:.3f} ({base['candidate_recall']['rows']} rows)")

    try:
        import tesserocr

        version = tesserocr.tesseract_version().splitlines()[0]
    except ImportError as exc:
        version = None
        result.details["tesserocr"] = {"skipped": f"tesserocr is not importable ({exc}); "
                                                  "`pip install tesserocr` (manylinux wheels bundle libtesseract)"}
        result.add("ocr", "tesserocr: not installed, skipped", None)
    if version:
        calls = per_call_cost(make_engine("tesseract"), make_engine("tesserocr"))
        result.details["per_call_fixed_cost_s"] = calls
        result.add("ocr", "fixed cost of one Tesseract call, pytesseract vs tesserocr", calls["pytesseract"] * 1000, "ms",
                   note=f"tesserocr {calls['tesserocr'] * 1000:.1f} ms; median CPU of {calls['calls']} calls on a "
                        "small one-word image (process start + model load vs a resident API); an image takes 3-7 calls")
        t_runs = run_ocr_pool(paths, functools.partial(make_engine, "tesserocr"), workers, "tesserocr", asked)
        t = summarize(images, t_runs)
        t["library"] = version
        t["same_words_share"] = round(same_tokens(base_runs, t_runs), 3)
        result.details["tesserocr"] = t
        result.add("ocr", "tesserocr (in-process API), median CPU s/image", t["cpu_s"]["median"], "s",
                   note=f"p90 {t['cpu_s']['p90']:.2f} s, wall median {t['wall_s']['median']:.2f} s; {version}")
        speedup_total = base["cpu_s"]["total"] / t["cpu_s"]["total"] if t["cpu_s"]["total"] else None
        result.add("ocr", "pytesseract / tesserocr CPU seconds (all images)", speedup_total, "x",
                   note=f"median ratio {base['cpu_s']['median'] / max(1e-9, t['cpu_s']['median']):.2f}x; "
                        f"same words on {100 * t['same_words_share']:.0f}% of images")
        delta = 100 * (t["candidate_recall"]["recall"] - base["candidate_recall"]["recall"])
        result.add("ocr", "candidate recall, tesserocr - pytesseract", delta, "points", goal=(">=", -1.0),
                   note=f"{t['candidate_recall']['recall']:.3f} vs {base['candidate_recall']['recall']:.3f}; "
                        f"library {version} vs CLI {result.machine.get('tesseract')}")

    # OCR image size: the same engine on the first n_sizes images, against the default size on those images.
    subset = images[: min(n_sizes, len(images))]
    base_subset = summarize(subset, base_runs[: len(subset)])
    if sizes:
        result.details["sizes"] = {f"{cfg.imaging.ocr_min_side}:{cfg.imaging.ocr_max_side} (default)": base_subset}
    for lo, hi in sizes:
        overrides = (f"imaging.ocr_min_side={lo}", f"imaging.ocr_max_side={hi}")
        runs = run_ocr_pool([im.path for im in subset], functools.partial(make_engine, "tesseract", overrides),
                            workers, f"size {lo}:{hi}", asked[: len(subset)])
        s = summarize(subset, runs)
        result.details["sizes"][f"{lo}:{hi}"] = s
        time_ratio = s["cpu_s"]["total"] / base_subset["cpu_s"]["total"] if base_subset["cpu_s"]["total"] else None
        delta = 100 * (s["candidate_recall"]["recall"] - base_subset["candidate_recall"]["recall"])
        result.add("ocr size", f"min/max side {lo}/{hi} vs {cfg.imaging.ocr_min_side}/{cfg.imaging.ocr_max_side}: CPU time",
                   time_ratio, "x", note=f"{len(subset)} images; recall {delta:+.1f} points "
                                         f"({s['candidate_recall']['recall']:.3f} vs {base_subset['candidate_recall']['recall']:.3f})")
    result.write()
    return 0


if __name__ == "__main__":
    run_script(main)
