"""Train the candidate scorer: labeled catalog rows joined with the feature store -> a model directory.

    spark-submit jobs/train.py (--catalog LABELED | --run-date RUN) [... repeated] --store DIR --model OUT
                               [--conf FILE] [--set k=v] [--no-progress]
                               [--cross-validate K] [--scorer network|rules]

Every catalog's images must already be in the one ``--store`` (run jobs/extract_features.py on each
catalog with that store first; rows whose image is missing or failed are skipped and counted). Spark joins
the labeled rows (of the catalogs, and of the extract runs ``--run-date`` names, read from the store's
rows table) with STORE/images and writes the join to STORE/_training/<catalogs-hash>/; the trainer
reads it back with Petastorm (train.loader=petastorm) or pyarrow (train.loader=pyarrow). The model
directory gets weights.pt, vocab.json, config.json, threshold.json, metrics.json and model.pt2, and
confidence.json: the calibrated probability that an answer is right, learned on out-of-fold predictions
(group K-fold by product group; train.confidence=false skips it). ``--scorer rules`` trains no network:
the directory then holds the rules and the confidence model of their answers.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from imagequant.catalog import inspect_catalog, read_catalog, require_labels  # noqa: E402
from imagequant.cli import config_from_args, job_parser, output_folder, run_job  # noqa: E402
from imagequant.errors import UsageError  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = job_parser("train", __doc__.splitlines()[0])
    parser.add_argument("--catalog", action="append", default=[], metavar="PATH",
                        help="labeled catalog (image_link,group_id,entity_name,entity_value); repeatable, "
                        "e.g. synthetic plus real rows")
    parser.add_argument("--run-date", action="append", default=[], metavar="RUN",
                        help="the labeled rows the extract run of this --run-date (or run id) stored in --store; "
                             "repeatable, and may be given with --catalog")
    parser.add_argument("--store", required=True, help="feature store holding the images of every --catalog")
    parser.add_argument("--model", required=True, metavar="OUT", help="model directory to write")
    parser.add_argument("--no-progress", action="store_true",
                        help="no per-epoch progress on stderr (its lines, and on a terminal its bars)")
    parser.add_argument("--cross-validate", type=int, default=0, metavar="K",
                        help="first run a group K-fold cross-validation (model vs rule baseline per entity, "
                        "candidate-recall ceiling); the table goes to stdout and MODEL/cross_validation.md")
    parser.add_argument("--scorer", choices=("network", "rules"),
                        help="what chooses the answers: a trained network (default, train.scorer) or the rules "
                             "(no network; the directory holds the rules' confidence model)")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    if args.scorer:
        config.train.scorer = args.scorer
    if config.train.scorer == "rules" and args.cross_validate:
        raise UsageError("--cross-validate compares a trained network with the rules; --scorer rules trains "
                         "no network")
    if not args.catalog and not args.run_date:
        raise UsageError("give the labeled rows: --catalog PATH or --run-date RUN (repeatable)")
    if len(set(args.run_date)) != len(args.run_date):
        raise UsageError("the same --run-date is given twice")
    if len(set(args.catalog)) != len(args.catalog):
        raise UsageError("the same --catalog is given twice")
    if args.cross_validate == 1 or args.cross_validate < 0:
        raise UsageError(f"--cross-validate takes K >= 2 folds, got {args.cross_validate}")
    for path in args.catalog:
        if not inspect_catalog(path).labeled:
            raise UsageError(f"catalog {path} has no entity_value column; training needs labeled rows")
    catalogs = [read_catalog(path) for path in args.catalog]  # every row checked before Spark starts
    for path, frame in zip(args.catalog, catalogs, strict=True):
        require_labels(frame, path)

    from imagequant.spark.session import build_session
    from imagequant.spark.store import read_rows, require_store
    from imagequant.spark.training_table import prepare_training_table
    from imagequant.training.fit import check_model_target, train_from_table

    require_store(args.store)
    check_model_target(args.model)
    args.model = output_folder(args.model, "--model")  # the last check: a refused run leaves no folder behind
    spark = build_session(config, "imagequant-train")
    try:
        runs = [read_rows(spark, args.store, run) for run in args.run_date]
        table = prepare_training_table(spark, [*catalogs, *runs], args.store)
    finally:
        spark.stop()  # training needs no Spark: free its memory first
    result = train_from_table(table, args.model, config, progress=not args.no_progress, folds=args.cross_validate)
    print(result.line(), flush=True)
    if "confidence" in result.metrics:
        from imagequant.training.confidence import describe_report

        print(describe_report(result.metrics["confidence"]), flush=True)
    return 0


if __name__ == "__main__":
    run_job(main)
