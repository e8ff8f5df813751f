"""Predict: catalog rows + their images in the feature store -> predictions.parquet and submission.csv.

    spark-submit jobs/predict.py (--catalog PATH | --run-date RUN) --store DIR --model DIR|rules --out DIR
                                 [--eager] [--min-score S] [--min-confidence P | --target-precision P]
                                 [--conf FILE] [--set k=v]

The store must already hold the catalog's images (jobs/extract_features.py); rows whose image is not
there get status image_missing and an empty prediction. ``--run-date RUN`` predicts the rows an extract run
stored (its ``--run-date``, or the run id of an undated run): a nightly back-fill needs no catalog file again. ``--model rules`` uses the rule baseline. The
submission is checked (every index once, plain-decimal values, one space, allowed units); the job exits 1
and lists the offending rows when the check fails.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from imagequant.catalog import read_catalog  # noqa: E402
from imagequant.cli import EXIT_FAILED, config_from_args, job_parser, output_folder, run_job  # noqa: E402
from imagequant.errors import UsageError  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = job_parser("predict", __doc__.splitlines()[0])
    rows = parser.add_mutually_exclusive_group(required=True)
    rows.add_argument("--catalog", help="catalog CSV or Parquet (labeled or not)")
    rows.add_argument("--run-date", metavar="RUN",
                      help="predict the catalog rows the extract run of this --run-date (or run id) stored")
    parser.add_argument("--store", required=True, help="feature store holding the catalog's images")
    parser.add_argument("--model", required=True, metavar="DIR|rules",
                        help="model directory written by jobs/train.py, or 'rules' for the rule baseline")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--eager", action="store_true",
                        help="score with the eager PyTorch module instead of the exported program (model.pt2)")
    parser.add_argument("--min-score", type=float, metavar="S",
                        help="leave rows scoring below S (0..1) empty, for catalog use; overrides "
                             "predict.min_score (default: the scorer's own F1-best threshold)")
    wanted = parser.add_mutually_exclusive_group()
    wanted.add_argument("--min-confidence", type=float, metavar="P",
                        help="leave answers whose calibrated confidence is below P (0..1) empty, with status "
                             "low_confidence; needs a model directory with a confidence model")
    wanted.add_argument("--target-precision", type=float, metavar="P",
                        help="the minimum confidence that gave precision P (0..1] on the model directory's "
                             "out-of-fold rows; prints the coverage it expects")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    for option, value, low_open in (("--min-score", args.min_score, False),
                                    ("--min-confidence", args.min_confidence, False),
                                    ("--target-precision", args.target_precision, True)):
        # also refuses nan
        if value is not None and not ((value > 0.0 if low_open else value >= 0.0) and value <= 1.0):
            raise UsageError(f"{option} must be between 0 and 1, got {value!r}")
    cut = args.min_score if args.min_score is not None else config.predict.min_score
    min_confidence, target_precision = args.min_confidence, args.target_precision
    if min_confidence is None and target_precision is None:
        min_confidence, target_precision = config.predict.min_confidence, config.predict.target_precision
    # every row checked (columns, index values, each index once: a submission names a row by it) before Spark
    catalog = None if args.catalog is None else read_catalog(args.catalog, unique_index=True)
    exported = bool(config.predict.use_exported) and not args.eager

    from imagequant.spark.inference import resolve_min_confidence, run_predict
    from imagequant.spark.session import build_session
    from imagequant.spark.store import read_rows, require_store

    min_confidence, expected = resolve_min_confidence(args.model, exported, min_confidence, target_precision)
    if expected:
        print(expected, flush=True)
    require_store(args.store)
    args.out = output_folder(args.out, "--out")  # the last check: a refused run leaves no folder behind
    spark = build_session(config, "imagequant-predict")
    try:
        if catalog is None:
            catalog = read_rows(spark, args.store, args.run_date)
        summary = run_predict(spark, catalog, args.store, args.model, args.out, exported, cut, min_confidence)
    finally:
        spark.stop()
    print(summary.line(), flush=True)
    if summary.in_training:
        print(f"warning: {summary.in_training} of {summary.rows} rows are of images model {args.model} was fitted on: "
              "their answers and confidence are in-sample, better than on new images (column in_training)",
              file=sys.stderr, flush=True)
    if summary.problems:
        for problem in summary.problems:
            print(f"error: submission check: {problem}", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    run_job(main)
