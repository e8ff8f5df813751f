"""Measure an OCR engine on a labeled catalog of local images: candidate recall, number recall, seconds.

    python jobs/measure_ocr.py --labels ../shared/realdev/labels.csv --images-dir ../shared/realdev/images \
        --engine rapidocr --workers 2 --out bench/results/ocr_rapidocr.md

Writes the markdown table to --out and a JSON file with the same stem next to it. ``--set`` takes the
configuration overrides every job takes (``ocr.tesseract.psm=3``); ``--tune`` sets engine knobs that are not
configuration keys yet (see imagequant.ocr.OcrTuning). ``--tokens-out`` keeps every image's tokens, and
``--from-tokens`` scores such a file again without running OCR (e.g. after the candidate extractor changed).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

try:
    import imagequant  # noqa: F401
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imagequant.config import load_config
from imagequant.errors import UsageError
from imagequant.ocr_eval import (
    load_labels,
    parse_tuning,
    read_tokens,
    render_markdown,
    run_ocr,
    score,
    write_report,
    write_tokens,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", required=True, help="CSV with image_file (or image_link), entity_name, entity_value")
    ap.add_argument("--images-dir", required=True, help="folder holding the images named in the labels")
    ap.add_argument("--engine", choices=["tesseract", "rapidocr", "both"], help="overrides ocr.engine")
    ap.add_argument("--config", action="append", default=[], help="extra YAML configuration file(s)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--tune", action="append", default=[], metavar="KEY=VALUE", help="OcrTuning knob")
    ap.add_argument("--limit", type=int, default=0, help="only the first N distinct images")
    ap.add_argument("--every", type=int, default=1, help="only every Nth distinct image (a spread-out subset)")
    ap.add_argument("--workers", type=int, default=2, help="processes; each one times its own images")
    ap.add_argument("--out", required=True, help="markdown table path (a .json is written next to it)")
    ap.add_argument("--tokens-out", help="JSON lines file keeping each image's tokens")
    ap.add_argument("--from-tokens", help="score a --tokens-out file instead of running OCR")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    try:
        overrides = list(args.overrides) + ([f"ocr.engine={args.engine}"] if args.engine else [])
        cfg = load_config(args.config, overrides)
        tuning = parse_tuning(args.tune)
        rows = load_labels(args.labels)
    except (UsageError, ValueError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    images = list(dict.fromkeys(r.image_file for r in rows))
    if args.every > 1 or args.limit:
        images = images[:: max(1, args.every)]
        images = images[: args.limit] if args.limit else images
        keep = set(images)
        rows = [r for r in rows if r.image_file in keep]

    if args.from_tokens:
        results = read_tokens(args.from_tokens)
        done = {r.image_file for r in results}
        rows = [r for r in rows if r.image_file in done]
    else:
        if not Path(args.images_dir).is_dir():
            print(f"error: images folder {args.images_dir} does not exist", file=sys.stderr)
            return 2
        if not args.quiet:
            print(f"OCR of {len(images)} images with {cfg.ocr.engine}, {args.workers} worker(s)", flush=True)
        results = run_ocr(images, args.images_dir, cfg, tuning, workers=args.workers, progress=not args.quiet)
        if args.tokens_out:
            write_tokens(results, args.tokens_out)

    from imagequant.ocr import resolve_tuning

    settings = {
        "ocr": dataclasses.asdict(cfg.ocr),
        "imaging": dataclasses.asdict(cfg.imaging),
        "tuning": dataclasses.asdict(resolve_tuning(cfg.ocr, tuning)),
    }
    report = score(rows, results, cfg.ocr.engine, settings)
    md, js = write_report(report, args.out)
    if not args.quiet:
        print(render_markdown(report))
        print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
