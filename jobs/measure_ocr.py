"""Measure an OCR engine on a labeled catalog of local images: candidate recall, number recall, seconds.

    python jobs/measure_ocr.py --labels ../shared/realdev/labels.csv --images-dir ../shared/realdev/images \
        --engine rapidocr --workers 2 --out bench/results/ocr_rapidocr.md

Writes the markdown table to --out and a JSON file with the same stem next to it. ``--conf`` and ``--set``
are those of every job (any OCR knob is a configuration key: ``--set ocr.rapidocr.det_max_side=960``).
``--tokens-out`` keeps every image's tokens, and ``--from-tokens`` scores such a file again without running
OCR (e.g. after the candidate extractor changed). ``--reuse-first`` measures a second-look setting on the
images that take the second look only, the others taken from a run with the same first reading.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from imagequant.cli import job_parser, output_file, run_job  # noqa: E402
from imagequant.config import load_config  # noqa: E402
from imagequant.errors import UsageError  # noqa: E402
from imagequant.ocr.zoo import ENGINE_NAMES, ENGINES  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = job_parser("measure_ocr", __doc__.splitlines()[0])
    parser.add_argument("--labels", required=True,
                        help="CSV with image_file (or image_link), entity_name, entity_value")
    parser.add_argument("--images-dir", required=True, help="folder holding the images named in the labels")
    parser.add_argument("--engine", choices=ENGINE_NAMES, help="overrides ocr.engine; "
                        + "; ".join(f"{e.name}: {e.summary}" for e in ENGINES.values()))
    parser.add_argument("--limit", type=int, default=0, help="only the first N distinct images")
    parser.add_argument("--every", type=int, default=1, help="only every Nth distinct image (a spread-out subset)")
    parser.add_argument("--workers", type=int, default=2, help="processes; each one times its own images")
    parser.add_argument("--out", required=True, help="markdown table path (a .json is written next to it)")
    parser.add_argument("--tokens-out", help="JSON lines file keeping each image's tokens")
    parser.add_argument("--from-tokens", help="score a --tokens-out file instead of running OCR")
    parser.add_argument("--reuse-first", metavar="TOKENS",
                        help="a --tokens-out file of a run whose first reading was the same (settings that change only "
                             "the second look, e.g. ocr.rapidocr.second_look_models): its images that took no second "
                             "look are taken from it as they are, only the others are read again")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    cfg = load_config(args.conf, list(args.overrides) + ([f"ocr.engine={args.engine}"] if args.engine else []))
    if args.limit < 0 or args.every < 1 or args.workers < 1:
        raise UsageError("--limit must be >= 0, --every and --workers >= 1")
    args.out = output_file(args.out, "--out")
    if args.tokens_out:
        args.tokens_out = output_file(args.tokens_out, "--tokens-out")

    from imagequant.catalog import read_labels
    from imagequant.evaluation.ocr_recall import (
        add_segments,
        read_tokens,
        render_markdown,
        run_ocr,
        score,
        write_report,
        write_tokens,
    )

    rows = read_labels(args.labels)
    images = list(dict.fromkeys(r.image_file for r in rows))
    if args.every > 1 or args.limit:
        images = images[:: args.every]
        images = images[: args.limit] if args.limit else images
        keep = set(images)
        rows = [r for r in rows if r.image_file in keep]
    if args.from_tokens:
        results = read_tokens(args.from_tokens)
        if Path(args.images_dir).is_dir():  # older token files hold no line segments: found here for the rules F1
            add_segments(results, args.images_dir, cfg.imaging.max_pixels)
        done = {r.image_file for r in results}
        rows = [r for r in rows if r.image_file in done]
    else:
        if not Path(args.images_dir).is_dir():
            raise UsageError(f"images folder {args.images_dir} does not exist")
        from imagequant.ocr.zoo import check_device

        # ocr.device=cuda without a GPU stops here, before worker processes that could not start
        where = check_device(cfg.ocr)
        if not args.quiet:
            print(f"OCR of {len(images)} images with {cfg.ocr.engine} on {where}, {args.workers} worker(s)",
                  flush=True)
        asked: dict[str, list[str]] = {}
        for r in rows:
            asked.setdefault(r.image_file, []).append(r.entity)
        reused = []
        if args.reuse_first:
            # the same first reading, and no second look there: nothing the second look's settings change
            wanted = set(images)
            reused = [r for r in read_tokens(args.reuse_first) if r.image_file in wanted and r.error is None
                      and not r.second_look]
            taken = {r.image_file for r in reused}
            images = [f for f in images if f not in taken]
            if not args.quiet:
                print(f"{len(reused)} images without a second look taken from {args.reuse_first}", flush=True)
        results = run_ocr(images, args.images_dir, cfg, workers=args.workers, progress=not args.quiet,
                          entities=asked)
        if reused:
            add_segments(reused, args.images_dir, cfg.imaging.max_pixels)  # token files of older runs lack them
            order = {f: i for i, f in enumerate(dict.fromkeys(r.image_file for r in rows))}
            results = sorted([*results, *reused], key=lambda r: order[r.image_file])
        if args.tokens_out:
            write_tokens(results, args.tokens_out)
    settings = {"ocr": dataclasses.asdict(cfg.ocr), "imaging": dataclasses.asdict(cfg.imaging)}
    report = score(rows, results, cfg.ocr.engine, settings)
    md, js = write_report(report, args.out)
    if not args.quiet:
        print(render_markdown(report))
        print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    run_job(main)
