"""The OCR and the CNN functions run in separate pools of Python workers: no worker process serves both."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pandas as pd

from imagequant.spark.udfs import WORKER_POOL_VARIABLE, worker_pool


def _tag(column: str) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A mapInPandas function adding the worker's process id and pool name to each row."""

    def tag(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in batches:
            frame[f"{column}_pid"] = os.getpid()
            frame[f"{column}_pool"] = os.environ.get(WORKER_POOL_VARIABLE, "")
            yield frame

    return tag


def test_functions_planned_in_two_pools_never_share_a_worker(spark) -> None:
    rows = spark.range(64).repartition(8)
    with worker_pool(spark, "ocr"):
        first = rows.mapInPandas(_tag("a"), "id long, a_pid long, a_pool string")
    with worker_pool(spark, "cnn"):
        both = first.mapInPandas(_tag("b"), "id long, a_pid long, a_pool string, b_pid long, b_pool string")
    out = both.toPandas()

    assert len(out) == 64
    assert set(out["a_pool"]) == {"ocr"} and set(out["b_pool"]) == {"cnn"}
    assert not set(out["a_pid"]) & set(out["b_pid"])
    # The driver's environment for later functions is as it was.
    assert WORKER_POOL_VARIABLE not in spark.sparkContext.environment


def test_a_column_function_made_in_a_pool_runs_there(spark) -> None:
    # How the extract job sends its plain-file-name function to the OCR's workers.
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    def pool(ids: pd.Series) -> pd.Series:
        return pd.Series([os.environ.get(WORKER_POOL_VARIABLE, "")] * len(ids))

    with worker_pool(spark, "ocr"):
        in_pool = F.pandas_udf(pool, T.StringType())(F.col("id"))  # type: ignore[call-overload]
    out = spark.range(16).repartition(4).select(in_pool.alias("pool")).toPandas()
    assert set(out["pool"]) == {"ocr"}


def test_a_pool_inside_another_restores_the_outer_one(spark) -> None:
    environment = spark.sparkContext.environment
    with worker_pool(spark, "outer"):
        with worker_pool(spark, "inner"):
            assert environment[WORKER_POOL_VARIABLE] == "inner"
        assert environment[WORKER_POOL_VARIABLE] == "outer"
    assert WORKER_POOL_VARIABLE not in environment
