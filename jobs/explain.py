"""Explain one image: the OCR lines, every candidate with its evidence and scores, and the choice.

    ./submit.sh explain --image PATH_OR_URL --entity item_weight [--model DIR|rules] [--out DIR] [--eager]
                        [--conf FILE] [--set k=v]

No Spark and no feature store: the image is read (a local file, or a URL fetched under the configured
safe-fetch rules), decoded, OCR'd with the configured engine and scored as predict would score it. With
--out DIR an annotated PNG (every candidate's box, numbered as printed; the choice highlighted) is
written there. A refused, unreachable or unreadable image is an ``error:`` line and exit 2; an OCR
failure exits 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from imagequant.cli import EXIT_FAILED, config_from_args, job_parser, output_folder, run_job  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = job_parser("explain", __doc__.splitlines()[0])
    parser.add_argument("--image", required=True, metavar="PATH_OR_URL", help="an image file or an http(s) link")
    parser.add_argument("--entity", required=True, help="the entity to read, e.g. item_weight")
    parser.add_argument("--model", default="rules", metavar="DIR|rules",
                        help="model directory written by jobs/train.py, or 'rules' (default)")
    parser.add_argument("--out", metavar="DIR", help="write the annotated PNG into this folder")
    parser.add_argument("--eager", action="store_true",
                        help="score with the eager PyTorch module instead of the exported program (model.pt2)")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    if args.out:
        args.out = output_folder(args.out, "--out")

    from imagequant.imaging import ImageError
    from imagequant.ocr.base import OcrError
    from imagequant.pipeline.explain import run_explain, unusable_image
    from imagequant.scoring.second_look import lacks_plausible_candidate
    from imagequant.scoring.zoo import load_scorer

    exported = bool(config.predict.use_exported) and not args.eager
    scorer = load_scorer(args.model, exported)  # a bad model directory fails before the image is fetched and read
    try:
        # the second look as the extract job spends it, so explain reads the image as the store would hold it
        explanation, written = run_explain(args.image, args.entity, config, scorer, lacks_plausible_candidate,
                                           args.out)
    except ImageError as exc:  # blank, or too large for a reader's resize: the image's own fault
        raise unusable_image(args.image, exc) from None
    except OcrError as exc:  # the image is fine, reading it failed (a timeout, the engine): not a usage error
        print(f"error: OCR of {args.image} failed ({exc.kind}): {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    print(explanation.text(), end="", flush=True)
    if written is not None:
        print(f"annotated: {written}", flush=True)
    return 0


if __name__ == "__main__":
    run_job(main)
