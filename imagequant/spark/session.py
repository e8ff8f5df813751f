"""Builds the SparkSession: every Spark setting of the configuration is applied here and only here."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pyarrow as pa
from pyspark import SparkConf, SparkContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from imagequant.config import Config, check_spark_settings
from imagequant.console import spark_console_is_terminal
from imagequant.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd

# Settings the pipeline relies on; the YAML's spark.conf may override any of them.
BASE_SPARK_CONF: dict[str, str] = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Image bytes make rows large: a few images per Arrow batch, not Spark's default 10,000 rows.
    "spark.sql.execution.arrow.maxRecordsPerBatch": "8",
    "spark.python.worker.reuse": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.adaptive.enabled": "true",
    # Image partitions are sized by the job itself; coalescing them would serialise OCR on fewer cores.
    "spark.sql.adaptive.coalescePartitions.enabled": "false",
}


PROGRESS_SETTING = "spark.ui.showConsoleProgress"


JOB_GROUP_KEY = "spark.jobGroup.id"
JOB_DESCRIPTION_KEY = "spark.job.description"
# setJobGroup sets this one as well.
JOB_INTERRUPT_KEY = "spark.job.interruptOnCancel"


def _job_steps(context: SparkContext) -> dict[str, str]:
    """The job groups :func:`job_step` opened on this context, each with the step it names: one group per step
    name, so a long-lived session running many jobs keeps a handful, and a progress tick asks about each."""
    steps = getattr(context, "_imagequant_steps", None)
    if steps is None:
        steps = {}
        context._imagequant_steps = steps  # type: ignore[attr-defined]
    return steps


@contextmanager
def job_step(spark: SparkSession, step: str) -> Iterator[None]:
    """Spark jobs this thread starts inside are one job group named ``step`` (``scoring the rows``), so the
    progress log and Spark's UI say which step of the job a stage belongs to; the group before is restored."""
    context = spark.sparkContext
    steps = _job_steps(context)
    group = next((known for known, name in steps.items() if name == step), f"imagequant-step-{len(steps) + 1}")
    steps[group] = step
    before = {key: context.getLocalProperty(key) for key in (JOB_GROUP_KEY, JOB_DESCRIPTION_KEY, JOB_INTERRUPT_KEY)}
    context.setJobGroup(group, step)
    try:
        yield
    finally:
        for key, value in before.items():
            context.setLocalProperty(key, value)  # type: ignore[arg-type]  # None removes it


def _stage_steps(context: SparkContext) -> dict[int, str]:
    """The running stages that belong to a :func:`job_step`, each with its step."""
    tracker = context.statusTracker()
    active = set(tracker.getActiveJobsIds())
    named: dict[int, str] = {}
    for group, step in list(_job_steps(context).items()):
        for job_id in active.intersection(tracker.getJobIdsForGroup(group)):
            info = tracker.getJobInfo(job_id)
            named.update((stage_id, step) for stage_id in (info.stageIds if info else []))
    return named


def stage_progress(spark: SparkSession) -> str:
    """The running stages' progress as one line, under the :func:`job_step` they belong to where they have one
    (``scoring the rows: stage 7: 37 of 64 tasks done, 2 running; stage 8: ...``); "" when none runs."""
    context = spark.sparkContext
    tracker = context.statusTracker()
    steps = _stage_steps(context)
    by_step: dict[str | None, list[str]] = {}
    for stage_id in sorted(tracker.getActiveStageIds()):
        info = tracker.getStageInfo(stage_id)
        if info is None:
            continue
        failed = f", {info.numFailedTasks} failed" if info.numFailedTasks else ""
        by_step.setdefault(steps.get(stage_id), []).append(
            f"stage {stage_id}: {info.numCompletedTasks} of {info.numTasks} tasks done, {info.numActiveTasks} "
            f"running{failed}")
    return "; ".join((f"{step}: " if step else "") + "; ".join(stages) for step, stages in by_step.items())


def start_progress_log(spark: SparkSession, interval_s: float) -> threading.Thread:
    """Logs the running stages every ``interval_s`` seconds to stderr, one plain line each, until the session
    stops: progress a scheduler's log can show, where Spark's bar would write carriage returns. A session
    reused by ``getOrCreate`` keeps the one log it has."""
    started = time.monotonic()
    context = spark.sparkContext
    running = getattr(context, "_imagequant_progress", None)
    if running is not None and running.is_alive():
        return running

    def run() -> None:
        while True:
            time.sleep(interval_s)
            if context._jsc is None:  # stopped
                return
            try:
                line = stage_progress(spark)
            except Exception:  # noqa: BLE001 - the session stopping under us ends the log, nothing else
                return
            if line:
                elapsed = int(time.monotonic() - started)
                print(f"[imagequant] progress after {elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}: "
                      f"{line}", file=sys.stderr, flush=True)

    thread = threading.Thread(target=run, name="imagequant-progress", daemon=True)
    thread.start()
    context._imagequant_progress = thread  # type: ignore[attr-defined]
    return thread


def effective_master(conf: SparkConf, config: Config) -> str:
    """spark-submit's --master wins; then the YAML's spark.master; then local mode on every core."""
    if conf.contains("spark.master"):
        return conf.get("spark.master")  # type: ignore[return-value]
    return config.spark.master or "local[*]"


def _first_line(exc: BaseException, keys: list[str] | None = None) -> str:
    """The message of a (py4j / JVM) failure without its Java stack trace: the first line naming one of
    ``keys`` when there is one, else the first line that is not stack trace."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("at ", "...", "JVM stacktrace",
                                                               "An error occurred while calling"))]
    naming = [line for line in useful if any(k in line for k in keys or [])]
    return (naming or useful or lines or [type(exc).__name__])[0].lstrip(": ")[:300]


def _rejected(exc: BaseException, settings: Mapping[str, str]) -> UsageError:
    """A UsageError naming the settings a JVM failure points at (by key, else by a distinctive value),
    else all of them."""
    message = str(exc)
    named = [k for k in settings if k in message]
    if not named:
        named = [k for k, v in settings.items()
                 if len(str(v).strip()) >= 2 and not str(v).strip().isdigit()
                 and re.search(rf"(?<![\w.-]){re.escape(str(v).strip())}(?![\w.-])", message)]
    shown = ", ".join(f"spark.conf.{k}={settings[k]!r}" for k in named) if named else \
        "one of " + ", ".join(f"spark.conf.{k}" for k in settings)
    return UsageError(f"Spark rejected the configuration ({shown}): {_first_line(exc, named)}")


def _check_sql_settings(spark: SparkSession, settings: Mapping[str, str]) -> None:
    """Setting a SQL option at run time makes Spark check its type and range (a bad one passed at start-up
    would only fail at the first query); options that cannot be changed at run time are left as they are."""
    try:
        spark.conf.get("spark.sql.shuffle.partitions")  # builds the session state, which reads every SQL option
    except Exception as exc:  # noqa: BLE001 - py4j and pyspark raise many types for a refused value
        raise _rejected(exc, settings) from None
    for key, value in settings.items():
        if not key.startswith("spark.sql."):
            continue
        try:
            if spark.conf.isModifiable(key):
                spark.conf.set(key, value)
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"Spark rejected spark.conf.{key}={value!r}: {_first_line(exc, [key])}") from None


def build_session(config: Config, app_name: str | None = None) -> SparkSession:
    """Creates (or reuses) the session with the configuration's Spark settings applied.

    A master set in code would silently override spark-submit's ``--master``, so the configured master is
    used only when none was given on the command line. A setting Spark refuses is a UsageError naming it.
    """
    # Spark's console bar where a person watches; plain progress lines (start_progress_log) in a log file.
    console = {PROGRESS_SETTING: "true" if spark_console_is_terminal() else "false"}
    settings = {key: str(value) for key, value in {**BASE_SPARK_CONF, **console, **config.spark.conf}.items()}
    check_spark_settings(settings)  # Config.validate checks these too; a Config built in code may skip it
    conf = SparkConf()
    # Under spark-submit (PYSPARK_GATEWAY_PORT set) the JVM already holds --master; a SparkConf made before
    # the context cannot see it, and setting one here would override spark-submit's.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        conf.setMaster(effective_master(conf, config))
    conf.setAppName(app_name or config.spark.app_name)
    for key, value in settings.items():
        conf.set(key, value)
    # Workers must run the interpreter that has our packages (the project's .venv), not the system one.
    python = os.environ.get("PYSPARK_PYTHON") or sys.executable
    if not conf.contains("spark.pyspark.python"):
        conf.set("spark.pyspark.python", python)
    os.environ.setdefault("PYSPARK_PYTHON", python)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    try:
        spark = SparkSession.builder.config(conf=conf).getOrCreate()
    except Exception as exc:  # noqa: BLE001 - the JVM's refusal arrives as py4j / pyspark errors of many types
        raise _rejected(exc, config.spark.conf or settings) from None
    try:
        spark.sparkContext.setLogLevel(os.environ.get("IMAGEQUANT_SPARK_LOG_LEVEL", "WARN"))
        _check_sql_settings(spark, settings)
    except UsageError:
        spark.stop()
        raise
    except Exception as exc:  # noqa: BLE001
        spark.stop()
        raise _rejected(exc, config.spark.conf or settings) from None
    if settings[PROGRESS_SETTING].strip().lower() != "true" and config.spark.progress_interval_s > 0:
        start_progress_log(spark, config.spark.progress_interval_s)
    return spark


def default_parallelism(spark: SparkSession) -> int:
    return max(1, spark.sparkContext.defaultParallelism)


# Catalog rows are small: Arrow conversions of whole catalogs use large batches, not the image-sized ones.
_CATALOG_ARROW_BATCH = {"spark.sql.execution.arrow.maxRecordsPerBatch": "10000"}


def catalog_frame(spark: SparkSession, frame: pd.DataFrame, schema: T.StructType) -> DataFrame:
    """A catalog-sized pandas frame as a DataFrame through ``createDataFrame``, converted in large Arrow
    batches (the conversion is eager, so the setting holds only during the call). The driver's JVM keeps these
    rows; :func:`imagequant.spark.store.stage_frame` hands a catalog over as a file instead."""
    with runtime_conf(spark, _CATALOG_ARROW_BATCH):
        return spark.createDataFrame(frame, schema)


def arrow_chunks(frame: DataFrame, rows: int) -> Iterator[pa.Table]:
    """``frame``'s rows on the driver in the frame's order, as Arrow tables of about ``rows`` rows (at most one
    Arrow batch more).

    ``toPandas`` would hold every row in the driver's JVM and again in Python. Here the executors pack each
    partition's Arrow batches into IPC payloads, one binary cell per chunk, and ``toLocalIterator`` brings one
    partition of them to the driver at a time.
    """

    def pack(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for group in gathered_batches(batches, rows):
            yield _ipc_payload(group)

    for row in frame.mapInArrow(pack, "payload binary").toLocalIterator(prefetchPartitions=True):
        yield pa.ipc.open_stream(row["payload"]).read_all()


def gathered_batches(batches: Iterator[pa.RecordBatch], wanted: int) -> Iterator[list[pa.RecordBatch]]:
    """Consecutive batches grouped until a group holds ``wanted`` rows or more (the last group may hold fewer)."""
    group: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        group.append(batch)
        rows += batch.num_rows
        if rows >= wanted:
            yield group
            group, rows = [], 0
    if group:
        yield group


def _ipc_payload(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batches[0].schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return pa.RecordBatch.from_pydict({"payload": [sink.getvalue().to_pybytes()]},
                                      schema=pa.schema([pa.field("payload", pa.binary())]))


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
