"""Builds the SparkSession: every Spark setting of the configuration is applied here and only here."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from pyspark import SparkConf
from pyspark.sql import SparkSession

from imagequant.config import Config

# Settings the pipeline relies on; the YAML's spark.conf may override any of them.
BASE_SPARK_CONF: dict[str, str] = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Image bytes make rows large: a few images per Arrow batch, not Spark's default 10,000 rows.
    "spark.sql.execution.arrow.maxRecordsPerBatch": "8",
    "spark.python.worker.reuse": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "true",
    "spark.sql.adaptive.enabled": "true",
    # Image partitions are sized by the job itself; coalescing them would serialise OCR on fewer cores.
    "spark.sql.adaptive.coalescePartitions.enabled": "false",
}


def effective_master(conf: SparkConf, config: Config) -> str:
    """spark-submit's --master wins; then the YAML's spark.master; then local mode on every core."""
    if conf.contains("spark.master"):
        return conf.get("spark.master")  # type: ignore[return-value]
    return config.spark.master or "local[*]"


def build_session(config: Config, app_name: str | None = None) -> SparkSession:
    """Creates (or reuses) the session with the configuration's Spark settings applied.

    A master set in code would silently override spark-submit's ``--master``, so the configured master is
    used only when none was given on the command line.
    """
    conf = SparkConf()
    # Under spark-submit (PYSPARK_GATEWAY_PORT set) the JVM already holds --master; a SparkConf made before
    # the context cannot see it, and setting one here would override spark-submit's.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        conf.setMaster(effective_master(conf, config))
    conf.setAppName(app_name or config.spark.app_name)
    for key, value in {**BASE_SPARK_CONF, **config.spark.conf}.items():
        conf.set(key, value)
    # Workers must run the interpreter that has our packages (the project's .venv), not the system one.
    python = os.environ.get("PYSPARK_PYTHON") or sys.executable
    if not conf.contains("spark.pyspark.python"):
        conf.set("spark.pyspark.python", python)
    os.environ.setdefault("PYSPARK_PYTHON", python)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    spark = SparkSession.builder.config(conf=conf).getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("IMAGEQUANT_SPARK_LOG_LEVEL", "WARN"))
    return spark


def default_parallelism(spark: SparkSession) -> int:
    return max(1, spark.sparkContext.defaultParallelism)


# Catalog rows are small: Arrow conversions of whole catalogs use large batches, not the image-sized ones.
CATALOG_ARROW_BATCH = {"spark.sql.execution.arrow.maxRecordsPerBatch": "10000"}


@contextmanager
def runtime_conf(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """Sets Spark SQL runtime settings for the actions inside the block, then restores them.

    The session's Arrow batch is a few rows because rows carry image bytes; a 200,000-row catalog would
    become 25,000 batches, so catalog-sized conversions raise it while they run.
    """
    previous = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
