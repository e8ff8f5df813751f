"""Evaluate predictions against a labeled catalog: challenge F1, per-entity table, error kinds, a report.

    python jobs/evaluate.py --predictions submission.csv --truth labeled.csv --report out/eval
        [--store STORE] [--images-dir DIR] [--conf FILE] [--set k=v]

--predictions takes a submission CSV (index,prediction) or a predictions Parquet; --truth a labeled
catalog (rows without an index column are numbered in file order, as predict numbers them). With --store
the OCR tokens of the feature store give the candidate-recall ceiling and the OCR text of the worst
errors; with --images-dir those errors get thumbnails. Writes DIR/metrics.json and DIR/report.html.
No Spark is needed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from imagequant.catalog import read_catalog  # noqa: E402
from imagequant.cli import config_from_args, job_parser, output_folder, run_job  # noqa: E402
from imagequant.core import locations  # noqa: E402
from imagequant.errors import UsageError  # noqa: E402
from imagequant.scoring.zoo import model_directory_marker  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = job_parser("evaluate", __doc__.splitlines()[0])
    parser.add_argument("--predictions", required=True, help="submission CSV (index,prediction) or predictions Parquet")
    parser.add_argument("--truth", required=True, help="labeled catalog (CSV/.csv.gz/Parquet) with entity_value")
    parser.add_argument("--report", required=True, help="output folder for metrics.json and report.html")
    parser.add_argument("--store", help="feature store: OCR tokens for the candidate-recall ceiling")
    parser.add_argument("--images-dir", help="folder of images named by the link's file name, for thumbnails")
    parser.add_argument("--worst", type=int, default=12, help="how many of the worst errors to show (default 12)")
    args = parser.parse_args(argv)
    # Nothing here reads a setting yet, but the configuration is checked like every job's: submit.sh passes
    # its --conf files to every job, and a bad one must not pass silently.
    config_from_args(args)
    local_store = locations.local_path(args.store) if args.store else None
    if local_store is not None and not local_store.is_dir():
        raise UsageError(f"feature store {args.store} is not a folder")
    if args.images_dir and not Path(args.images_dir).is_dir():
        raise UsageError(f"--images-dir {args.images_dir} is not a folder")
    if args.worst < 0:
        raise UsageError("--worst must be 0 or more")
    marker = model_directory_marker(args.report)
    if marker is not None:
        raise UsageError(f"--report {args.report} is a model directory (it holds {marker}): the report's "
                         "metrics.json would replace the model's; give another folder")
    args.report = output_folder(args.report, "--report")

    from imagequant.evaluation.evaluate import (
        alignment_warnings,
        evaluate,
        in_training_warning,
        write_evaluation_report,
    )

    truth = read_catalog(args.truth, unique_index=True)  # each truth row is scored by its index
    result, rows = evaluate(args.predictions, truth, args.store)
    result["predictions_file"] = str(args.predictions)
    result["truth_file"] = str(args.truth)
    result["store"] = str(args.store) if args.store else None
    page = write_evaluation_report(
        result, rows, args.report, images_dir=args.images_dir, worst=args.worst,
        title_note=f"{args.predictions} against {args.truth}",
    )
    ceiling = result["candidate_recall"]
    print(f"F1 {result['f1']:.4f} (precision {result['precision']:.4f}, recall {result['recall']:.4f}) over "
          f"{result['rows']:,} rows" + (f"; candidate recall {ceiling:.4f}" if ceiling is not None else ""),
          flush=True)
    in_sample = in_training_warning(result)
    if in_sample:
        print(f"warning: {in_sample}", file=sys.stderr, flush=True)
    for line in alignment_warnings(result):
        print(f"warning: {line}", file=sys.stderr, flush=True)
    confidence = result.get("confidence")
    if confidence:
        reached = confidence["coverage_at_precision"]
        points = ", ".join(f"{float(p):.0%}: {v['coverage']:.1%}" if v else f"{float(p):.0%}: none"
                           for p, v in reached.items())
        print(f"confidence: expected calibration error {confidence['ece']:.3f} over {confidence['answered']:,} "
              f"answered rows; coverage at precision {points}; review queue: {Path(args.report) / 'review_queue.csv'}",
              flush=True)
    print(f"report: {page}", flush=True)
    return 0


if __name__ == "__main__":
    run_job(main)
