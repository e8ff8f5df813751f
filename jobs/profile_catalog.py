"""Profile a catalog: rows, images, groups, label kinds, units and value spreads; no image is fetched.

    spark-submit jobs/profile_catalog.py --catalog PATH --report DIR [--conf FILE] [--set k=v]
    python jobs/profile_catalog.py --catalog train.csv.gz --report out/profile

Writes DIR/profile.json and DIR/report.html (with its PNG figures).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from imagequant.catalog import inspect_catalog  # noqa: E402
from imagequant.cli import config_from_args, job_parser, output_folder, run_job  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = job_parser("profile_catalog", __doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True, help="catalog CSV (.csv/.csv.gz) or Parquet, challenge format")
    parser.add_argument("--report", required=True, help="output folder for profile.json and report.html")
    parser.add_argument("--bins-per-decade", type=int, default=4,
                        help="resolution of the log10 value histograms (bins per factor of ten)")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    inspect_catalog(args.catalog)  # a missing file or column ends the job here, before Spark starts
    if not 1 <= args.bins_per_decade <= 100:
        parser.error("--bins-per-decade must be between 1 and 100")
    args.report = output_folder(args.report, "--report")

    from imagequant.spark.profile import profile_catalog, write_profile_report
    from imagequant.spark.session import build_session

    started = time.monotonic()
    spark = build_session(config, "imagequant-profile-catalog")
    try:
        profile = profile_catalog(spark, args.catalog, args.bins_per_decade)
    finally:
        spark.stop()
    profile["seconds"] = round(time.monotonic() - started, 1)
    page = write_profile_report(profile, args.report)
    no_link = profile["rows_without_link"]
    links = (f" (+{no_link:,} row(s) without a link: {profile['distinct_link_values']:,} distinct link values)"
             if no_link else "")
    print(f"{profile['rows']:,} rows, {profile['distinct_images']:,} distinct images{links}, "
          f"{profile['distinct_groups']:,} groups in {profile['seconds']:.1f} s", flush=True)
    print(f"report: {page}", flush=True)
    return 0


if __name__ == "__main__":
    run_job(main)
