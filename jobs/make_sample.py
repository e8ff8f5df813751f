"""Generate a labeled synthetic sample: product images plus challenge-format CSVs, for the demo and tests.

    python jobs/make_sample.py --out DIR --images N [--seed S] [--difficulty easy|mixed|hard]
        [--entities item_weight,voltage,...] [--min-side PX] [--max-side PX] [--link-base URL]

Writes DIR/images/<name>.jpg, DIR/labels.csv (image_link,group_id,entity_name,entity_value)
and DIR/catalog.csv (index,image_link,group_id,entity_name: the same rows unlabeled, whose predictions
evaluate scores against labels.csv). The same seed gives the same bytes. The link's file name is the image's
file name.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from imagequant.cli import ArgumentParser, output_folder, run_job  # noqa: E402
from imagequant.errors import UsageError  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    from imagequant.synthetic import DEFAULT_LINK_BASE, DIFFICULTIES, ENTITIES

    parser = ArgumentParser(prog="make_sample", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (created; existing files of the same name "
                                                     "are overwritten)")
    parser.add_argument("--images", type=int, required=True, help="number of images to draw (>= 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--difficulty", choices=DIFFICULTIES, default="mixed",
                        help="easy: large clear text; mixed (default): large to tiny text, blur, rotation; hard")
    parser.add_argument("--entities", default="",
                        help=f"comma-separated subset of {','.join(ENTITIES)} (default: all)")
    parser.add_argument("--min-side", type=int, default=640, help="smallest image side in px (default 640)")
    parser.add_argument("--max-side", type=int, default=1000, help="largest image side in px (default 1000)")
    parser.add_argument("--link-base", default=DEFAULT_LINK_BASE,
                        help=f"URL prefix of image_link (default {DEFAULT_LINK_BASE})")
    args = parser.parse_args(argv)

    if args.images < 1:
        raise UsageError(f"--images must be at least 1, not {args.images}")
    if not 64 <= args.min_side <= args.max_side:
        raise UsageError(f"need 64 <= --min-side <= --max-side, got {args.min_side} and {args.max_side}")
    if args.max_side > 4000:
        raise UsageError(f"--max-side {args.max_side} is over 4000 px")
    entities = [e.strip() for e in args.entities.split(",") if e.strip()] or None
    unknown = [e for e in entities or () if e not in ENTITIES]
    if unknown:
        raise UsageError(f"unknown --entities {','.join(unknown)}; choose from {','.join(ENTITIES)}")
    out = output_folder(args.out, "--out")

    from imagequant.synthetic import generate_sample

    try:
        labels = generate_sample(out, n_images=args.images, seed=args.seed, link_base=args.link_base,
                                 entities=entities, image_size=(args.min_side, args.max_side),
                                 difficulty=args.difficulty)
    except OSError as exc:
        raise UsageError(f"cannot write the sample under {out}: {exc}") from None
    counts = labels["entity_name"].value_counts()
    per_entity = ", ".join(f"{name} {counts[name]}" for name in ENTITIES if name in counts)
    print(f"wrote {args.images} {args.difficulty} images to {out / 'images'} and {len(labels)} rows "
          f"({per_entity})", flush=True)
    print(f"labels: {out / 'labels.csv'}; catalog: {out / 'catalog.csv'}", flush=True)
    return 0


if __name__ == "__main__":
    run_job(main)
