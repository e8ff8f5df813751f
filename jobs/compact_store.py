"""Compact a feature store: fold the images table's batches into one holding the canonical view.

    spark-submit jobs/compact_store.py --store DIR [--conf FILE] [--set k=v]
    ./submit.sh compact_store --store DIR

Run it after a back-fill or on a schedule: every nightly run adds a batch, and readers (train, predict)
slow down with their number. What readers see does not change; the failed attempts the view already hides
are dropped. It takes the store's lock: it waits for no one and refuses (exit 2) while an extract runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from imagequant.cli import config_from_args, job_parser, run_job  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = job_parser("compact_store", __doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="feature store to compact")
    args = parser.parse_args(argv)
    config = config_from_args(args)

    from imagequant.spark.compact import run_compact
    from imagequant.spark.session import build_session
    from imagequant.spark.store import require_store

    require_store(args.store)
    spark = build_session(config, "imagequant-compact-store")
    try:
        summary = run_compact(spark, config, args.store)
    finally:
        spark.stop()
    print(summary.line(), flush=True)
    return 0


if __name__ == "__main__":
    run_job(main)
