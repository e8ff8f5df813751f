"""Predict: catalog rows + their images in the feature store -> predictions.parquet and submission.csv.

    spark-submit jobs/predict.py --catalog PATH --store DIR --model DIR|rules --out DIR [--eager]
                                 [--min-score S] [--conf FILE] [--set k=v]

The store must already hold the catalog's images (jobs/extract_features.py); rows whose image is not
there get status image_missing and an empty prediction. ``--model rules`` uses the rule baseline. The
submission is checked (every index once, plain-decimal values, one space, allowed units); the job exits 1
and lists the offending rows when the check fails.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from imagequant.catalog import inspect_catalog  # noqa: E402
from imagequant.cli import EXIT_FAILED, config_from_args, job_parser, run_job  # noqa: E402
from imagequant.errors import UsageError  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = job_parser("predict", __doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True, help="catalog CSV or Parquet (labeled or not)")
    parser.add_argument("--store", required=True, help="feature store holding the catalog's images")
    parser.add_argument("--model", required=True, metavar="DIR|rules",
                        help="model directory written by jobs/train.py, or 'rules' for the rule baseline")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--eager", action="store_true",
                        help="score with the eager PyTorch module instead of the exported program (model.pt2)")
    parser.add_argument("--min-score", type=float, metavar="S",
                        help="leave rows scoring below S (0..1) empty, for catalog use; overrides "
                             "predict.min_score (default: the scorer's own F1-best threshold)")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    if args.min_score is not None and not 0.0 <= args.min_score <= 1.0:  # also refuses nan
        raise UsageError(f"--min-score must be between 0 and 1, got {args.min_score!r}")
    cut = args.min_score if args.min_score is not None else config.predict.min_score
    inspect_catalog(args.catalog)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} exists and is not a directory")
    exported = bool(config.predict.use_exported) and not args.eager

    from imagequant.spark.inference import check_model_spec, require_store, run_predict
    from imagequant.spark.session import build_session

    check_model_spec(args.model, exported)
    require_store(args.store)
    spark = build_session(config, "imagequant-predict")
    try:
        summary = run_predict(spark, args.catalog, args.store, args.model, args.out, exported, cut)
    finally:
        spark.stop()
    print(summary.line(), flush=True)
    if summary.problems:
        for problem in summary.problems:
            print(f"error: submission check: {problem}", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    run_job(main)
