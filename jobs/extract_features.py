"""Extract features: catalog -> fetch, decode, OCR, CNN features -> Parquet feature store.

    spark-submit jobs/extract_features.py --catalog PATH --store DIR [--images-dir DIR] [--conf FILE] [--set k=v]
        [--reprocess-made-otherwise]
    ./submit.sh extract_features --catalog PATH --store DIR ...
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from imagequant.catalog import read_catalog  # noqa: E402
from imagequant.cli import EXIT_FAILED, config_from_args, job_parser, output_folder, run_job  # noqa: E402
from imagequant.errors import UsageError  # noqa: E402


def check_run_date(text: str) -> None:
    """A run date names a calendar day: ``YYYY-MM-DD`` that exists (not 2026-13-45)."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise UsageError(f"--run-date must be YYYY-MM-DD, got {text!r}")
    try:
        date.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"--run-date {text} is not a calendar date ({exc})") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = job_parser("extract_features", __doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True, help="catalog CSV (.csv/.csv.gz) or Parquet, challenge format")
    parser.add_argument("--store", required=True, help="feature store directory (created if missing)")
    parser.add_argument("--images-dir", help="local image folder: receives every downloaded image (named by "
                        "the link and its hash); a file named by the link's file name is used when none was saved")
    parser.add_argument("--run-date", help="YYYY-MM-DD: partition this run's output by date; a rerun of the "
                        "date replaces its partition")
    parser.add_argument("--reprocess-made-otherwise", action="store_true",
                        help="read and embed again the catalog's images that the store holds ok but read or embedded "
                        "with other settings (another OCR reader or CNN weights); without it they are kept and counted")
    parser.add_argument("--max-failure-ratio", type=float, default=None,
                        help="exit 1 (after writing everything) when more than this share of images failed")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    catalog = read_catalog(args.catalog)  # every row checked (columns, index values) before Spark starts
    if args.run_date is not None:
        check_run_date(args.run_date)
    if args.max_failure_ratio is not None and not 0.0 <= args.max_failure_ratio <= 1.0:
        raise UsageError("--max-failure-ratio must be between 0 and 1")
    if args.images_dir:
        args.images_dir = str(output_folder(args.images_dir, "--images-dir"))

    from imagequant.spark.extract import run_extract
    from imagequant.spark.session import build_session
    from imagequant.spark.store import check_store_target

    check_store_target(args.store)
    spark = build_session(config, "imagequant-extract-features")
    try:
        summary = run_extract(spark, config, catalog, args.store, args.images_dir, args.run_date,
                              args.reprocess_made_otherwise)
    finally:
        spark.stop()
    print(summary.line(), flush=True)
    if args.max_failure_ratio is not None and summary.failure_ratio > args.max_failure_ratio:
        print(f"error: {summary.failure_ratio:.1%} of images failed, above --max-failure-ratio "
              f"{args.max_failure_ratio:.1%} (everything that succeeded was written)", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    run_job(main)
