"""The extract job as extract -> transform -> load over Spark DataFrames.

Transforms are DataFrame-in, DataFrame-out functions that tests call directly: ``images_to_process``,
``images_made_otherwise``, ``process_images``; ``run_extract`` strings them together and commits the result to
the feature store.
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import pandas as pd
from pyspark import StorageLevel
from pyspark.accumulators import Accumulator
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from imagequant.catalog import ROW_COLUMNS, read_catalog
from imagequant.cnn_weights import check_weights, describe_features
from imagequant.config import Config
from imagequant.core.schema import IMAGES, ROWS, STAGING_DIR
from imagequant.devices import INT8_WITHOUT_VNNI
from imagequant.errors import ConfigError
from imagequant.fetch import PLAIN_FILE_SOURCE
from imagequant.ocr.ppocr_models import models_name
from imagequant.ocr.zoo import changed_reading_settings, check_device, reader_name
from imagequant.scoring.second_look import lacks_plausible_candidate
from imagequant.spark.schema import IMAGE_SCHEMA, OCR_STAGE_SCHEMA
from imagequant.spark.session import default_parallelism, job_step
from imagequant.spark.store import (
    StoreDamaged,
    StoreFs,
    append_manifest,
    images_file,
    new_run_id,
    quarantine,
    read_images,
    recover,
    reporting_damage,
    stage_frame,
    store_lock,
    write_partition,
)
from imagequant.spark.udfs import (
    SetParam,
    cnn_features_function,
    cnn_stage_schema,
    fetch_ocr_function,
    plain_file_names,
    worker_pool,
)
from imagequant.worker_memory import PYSPARK_MEMORY_KEY, check_worker_memory


@dataclass
class ExtractSummary:
    run_id: str
    batch: str
    rows: int = 0
    bad_rows: dict[str, int] = field(default_factory=dict)
    distinct_images: int = 0
    already_ok: int = 0
    # this run's images: those not ok in the store before it, and with reprocess_made_otherwise those made otherwise
    processed: int = 0
    processed_ok: int = 0  # of which ok now
    failed: dict[str, int] = field(default_factory=dict)  # of which failed, by kind
    store_ok: int = 0  # this catalog's distinct images ok in the store after the run (already_ok + processed_ok)
    from_plain_files: int = 0  # this run's images read from a user-placed file named by the link's file name
    quarantined: list[str] = field(default_factory=list)  # damaged images files moved out of the store
    seconds: float = 0.0
    cnn_weights: str = ""
    cnn_device: str = ""  # where and in which precision the CNN ran, as the workers reported it (e.g. cpu/bf16)
    ocr_engine: str = ""
    ocr_device: str = ""  # where the OCR models ran, as the workers reported it (e.g. CPUExecutionProvider)
    ocr_models: str = ""  # which models read (ocr.rapidocr.models ...), e.g. ppocrv4; "" for Tesseract
    # the reading settings that differ from conf/default.yaml's, e.g. "rapidocr.det_max_side=1280"; "" for none
    ocr_settings: str = ""
    # This catalog's images ok in the store but read or embedded with other settings, by "ocr_engine | cnn_weights"
    made_otherwise: dict[str, int] = field(default_factory=dict)
    reprocess_made_otherwise: bool = False  # whether this run read and embedded those again

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def failure_ratio(self) -> float:
        return sum(self.failed.values()) / self.processed if self.processed else 0.0

    @property
    def store_not_ok(self) -> int:
        """This catalog's distinct images the store holds no ok record of (failed; retried by the next run)."""
        return self.distinct_images - self.store_ok

    def line(self) -> str:
        failed = ", ".join(f"{k}={v}" for k, v in sorted(self.failed.items())) or "none"
        bad = ", ".join(f"{k}={v}" for k, v in sorted(self.bad_rows.items()))
        # What this run did (processed_*) and what the store now holds for the catalog (store_*), apart.
        return (
            f"extract_features: rows={self.rows}{f' (bad rows: {bad})' if bad else ''} "
            f"distinct_images={self.distinct_images} already_ok={self.already_ok} processed={self.processed} "
            f"processed_ok={self.processed_ok} processed_failed={sum(self.failed.values())} ({failed}) "
            f"store_ok={self.store_ok} store_not_ok={self.store_not_ok} from_plain_files={self.from_plain_files} "
            f"images_per_second={self.images_per_second:.2f} seconds={self.seconds:.1f} "
            f"ocr={self.ocr_engine}{f' ocr_device={self.ocr_device}' if self.ocr_device else ''} "
            f"{f'ocr_models={self.ocr_models} ' if self.ocr_models else ''}"
            f"{f'ocr_settings=({self.ocr_settings}) ' if self.ocr_settings else ''}"
            f"cnn_weights={self.cnn_weights}{f' cnn_device={self.cnn_device}' if self.cnn_device else ''}"
            + (f" made_otherwise={sum(self.made_otherwise.values())} "
               f"({'processed again' if self.reprocess_made_otherwise else 'kept'})" if self.made_otherwise else "")
            + (f" quarantined={len(self.quarantined)} (damaged files moved to _quarantine/)" if self.quarantined else "")
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["store_not_ok"] = self.store_not_ok
        data["images_per_second"] = round(self.images_per_second, 3)
        data["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return data


def load_rows(spark: SparkSession, fs: StoreFs, catalog: str | pd.DataFrame, run_id: str) -> DataFrame:
    """Extract: the catalog (validated, bad rows marked; a path, or the frame ``read_catalog`` gave) as a
    DataFrame of the rows table, staged in the store as a file for the executors to read (so the driver does
    not hold the catalog)."""
    frame = read_catalog(catalog) if isinstance(catalog, str) else catalog
    rows = frame[list(ROW_COLUMNS)].copy()
    rows["run_id"] = run_id
    rows["entity_value"] = rows["entity_value"].astype(object).where(rows["entity_value"].notna(), None)
    return stage_frame(spark, fs, rows, ROWS, fs.path(STAGING_DIR, run_id, "catalog.parquet"))


@dataclass(frozen=True)
class ImageSettings:
    """What made an image's record, as the images table names it: the reader (``ocr_engine``) and the CNN's
    weights (``cnn_weights``). Records made with other settings stay unless a run asks to process them again:
    a back-fill should not silently redo a store because a setting changed, nor silently mix two readings."""

    ocr_engine: str
    cnn_weights: str

    @classmethod
    def of(cls, config: Config) -> ImageSettings:
        return cls(reader_name(config.ocr, config.imaging), describe_features(config))

    def made_here(self) -> Column:
        """Whether an images-table record was made with these settings (a null, from an older store: not)."""
        return F.col("ocr_engine").eqNullSafe(self.ocr_engine) & F.col("cnn_weights").eqNullSafe(self.cnn_weights)

    def describe(self) -> str:
        return f"{self.ocr_engine} | {self.cnn_weights}"


def images_made_otherwise(rows: DataFrame, existing: DataFrame, settings: ImageSettings) -> DataFrame:
    """Transform: the images of servable rows that are ``ok`` in the store (``existing``, one record per
    image) but were made with other settings than ``settings``: ``image_id, ocr_engine, cnn_weights``."""
    wanted = rows.where(F.col("row_status") == "ok").select("image_id").distinct()
    other = existing.where((F.col("status") == "ok") & ~settings.made_here())
    return other.select("image_id", "ocr_engine", "cnn_weights").join(wanted, on="image_id", how="left_semi")


def images_to_process(rows: DataFrame, existing: DataFrame | None, reprocess: ImageSettings | None = None) -> DataFrame:
    """Transform: the distinct images of servable rows that are not yet ``ok`` in the store (with
    ``reprocess``, also those ok but made with other settings), each with the entities its rows ask for (the
    OCR's second look is spent where those lack a candidate) and ``plain_file``: whether it is the catalog's
    only link of its plain file name, the one case where a user-placed ``--images-dir`` file of that name can be
    its image and no other link's."""
    wanted = rows.where(F.col("row_status") == "ok").groupBy("image_id").agg(
        F.first("image_link").alias("image_link"),
        F.array_sort(F.collect_set("entity_name")).alias("entities"),
    )
    # Counted over the whole catalog, before the images already done are dropped. The names are computed by the
    # OCR's workers: a pool of their own would start more Python processes for this one cheap function.
    with worker_pool(rows.sparkSession, "ocr"):
        plain_name = plain_file_names(F.col("image_link"))
    wanted = (wanted.withColumn("_plain_name", plain_name)
              .withColumn("plain_file", F.count(F.lit(1)).over(Window.partitionBy("_plain_name")) == 1)
              .drop("_plain_name"))
    if existing is None:
        return wanted
    done = existing.where(F.col("status") == "ok")
    if reprocess is not None:
        done = done.where(reprocess.made_here())
    return wanted.join(done.select("image_id"), on="image_id", how="left_anti")


def process_images(
    todo: DataFrame, config: Config, images_dir: str | None, run_id: str, partitions: int, separate_cnn_stage: bool,
    ocr_devices: Accumulator[set[str]] | None = None, cnn_devices: Accumulator[set[str]] | None = None,
) -> DataFrame:
    """Transform: distinct images -> images-table records (fetch, decode, OCR, then CNN features).

    With ``separate_cnn_stage`` the CPU stage is persisted and the CNN runs as its own stage over
    ``config.spark`` GPU-sized partitions, so fetch/OCR use every core while the GPU stage runs one task per GPU.
    The workers add where their OCR ran to ``ocr_devices`` and where and in which precision their CNN ran to
    ``cnn_devices`` (accumulators of :class:`SetParam`).
    """
    # The job knows the rows: each image is read again where the entities its rows ask lack a plausible candidate.
    reading = fetch_ocr_function(config, images_dir, ocr_devices, needs_second_look=lacks_plausible_candidate)
    spark = todo.sparkSession
    with worker_pool(spark, "ocr"):
        stage1 = todo.repartition(partitions).mapInPandas(reading, OCR_STAGE_SCHEMA)
    if separate_cnn_stage:
        stage1 = stage1.persist(StorageLevel.MEMORY_AND_DISK)
        stage1.count()
        stage1 = stage1.coalesce(max(1, config.cnn.stage_partitions))
    with worker_pool(spark, "cnn"):
        with_cnn = stage1.mapInArrow(cnn_features_function(config, cnn_devices), cnn_stage_schema(OCR_STAGE_SCHEMA))
    return with_cnn.select(
        *[F.col(c) for c in OCR_STAGE_SCHEMA.fieldNames() if c != "cnn_input"],
        F.lit(describe_features(config)).alias("cnn_weights"),
        F.col("cnn_features"),
        F.col("seconds_cnn"),
        F.lit(run_id).alias("run_id"),
        F.lit(datetime.now(timezone.utc).isoformat(timespec="seconds")).alias("processed_at"),
    ).select(*IMAGE_SCHEMA.fieldNames())


def _made_otherwise_message(summary: ExtractSummary, settings: ImageSettings) -> str:
    found = sum(summary.made_otherwise.values())
    detail = "; ".join(f"{k}: {v}" for k, v in sorted(summary.made_otherwise.items()))
    head = (f"{found} of this catalog's images are ok in the store but were read or embedded with other settings "
            f"(ocr_engine | cnn_weights: {detail}); this run's are {settings.describe()}")
    if summary.reprocess_made_otherwise:
        return f"{head}: processing them again"
    return (f"warning: {head}. They are kept as they are, so the store mixes both; --reprocess-made-otherwise "
            "reads and embeds them again with this run's settings")


def log(message: str) -> None:
    print(f"[imagequant] {message}", file=sys.stderr, flush=True)


def run_extract(
    spark: SparkSession,
    config: Config,
    catalog: str | pd.DataFrame,
    store: str,
    images_dir: str | None = None,
    run_date: str | None = None,
    reprocess_made_otherwise: bool = False,
) -> ExtractSummary:
    """Runs extract -> transform -> load and commits both tables; returns the run's summary. ``catalog`` is a
    path, or the catalog ``imagequant.catalog.read_catalog`` already read (the job reads it once, before Spark).
    Images ok in the store but read or embedded with other settings (:class:`ImageSettings`) are counted and
    kept, or with ``reprocess_made_otherwise`` processed again.

    A setting that cannot work on the workers (``ocr.device=cuda`` or ``cnn.device=cuda`` without a GPU, a Python
    worker memory cap under what its libraries need) is a ConfigError: checked here first when the workers are this machine (local mode), else raised by the first
    failing task and passed on as the job's own error."""
    check_weights(config.cnn)
    # The cap may come from spark-submit --conf as well as from the YAML (checked with the configuration).
    check_worker_memory(spark.sparkContext.getConf().get(PYSPARK_MEMORY_KEY), config.cnn)
    if spark.sparkContext.master.startswith("local"):
        check_device(config.ocr)
    started = time.perf_counter()
    run_id = new_run_id()
    batch = run_date or run_id
    summary = ExtractSummary(run_id=run_id, batch=batch, cnn_weights=describe_features(config), ocr_engine=config.ocr.engine,
                             ocr_models=models_name(config.ocr),
                             ocr_settings=changed_reading_settings(config.ocr, config.imaging),
                             reprocess_made_otherwise=reprocess_made_otherwise)
    fs = StoreFs(spark, store)
    with store_lock(fs, run_id):
        recover(fs)  # safe: no other run can be writing while this one holds the lock
        try:
            _extract(spark, fs, config, catalog, store, images_dir, run_date, summary, started)
        except Exception as exc:
            reason = worker_config_error(exc)
            if reason is None:
                raise
            raise ConfigError(reason) from None
    return summary


_WORKER_CONFIG_ERROR = re.compile(r"imagequant\.errors\.ConfigError: (.+)")


def worker_config_error(exc: BaseException) -> str | None:
    """The message of a ConfigError raised by a Python worker inside a failed Spark job, if that is why it failed
    (Spark passes the worker's traceback on as text)."""
    found = _WORKER_CONFIG_ERROR.search(str(exc))
    return found.group(1).strip() if found else None


# A damaged images file is moved aside and its images are processed again; past this many the store
# needs a person.
MAX_QUARANTINED_FILES = 20


def _images_to_process(spark: SparkSession, fs: StoreFs, store: str, rows: DataFrame, batch: str,
                       settings: ImageSettings, summary: ExtractSummary) -> tuple[DataFrame, DataFrame | None]:
    """The images of ``rows`` not yet ok in the store (cached and counted) and those ok but made with other
    settings than ``settings`` (counted; among the first with ``summary.reprocess_made_otherwise``); a damaged
    images file met on the way is quarantined (its images are simply processed again)."""
    reprocess = settings if summary.reprocess_made_otherwise else None
    while True:
        todo: DataFrame | None = None
        try:
            with reporting_damage(store):
                existing = read_images(spark, store, exclude_batch=batch)
                todo = images_to_process(rows, existing, reprocess).cache()
                summary.processed = todo.count()
                other = None if existing is None else images_made_otherwise(rows, existing, settings)
                if other is not None:
                    summary.made_otherwise = {
                        f"{r['ocr_engine']} | {r['cnn_weights']}": r["count"]
                        for r in other.groupBy("ocr_engine", "cnn_weights").count().collect()
                    }
            return todo, other
        except StoreDamaged as exc:
            if todo is not None:
                # The next attempt's plan equals this one, so Spark would serve it from this cache entry,
                # built on the listing that still holds the damaged file.
                todo.unpersist()
            relative = images_file(exc.path)
            if relative is None or len(summary.quarantined) >= MAX_QUARANTINED_FILES:
                raise
            moved = quarantine(fs, relative)
            spark.catalog.refreshByPath(fs.path(IMAGES.name))  # no listing of the table may outlive the move
            summary.quarantined.append(moved)
            log(f"warning: {exc.path} is not a readable Parquet file; moved it to {moved} and its images "
                "will be processed again")


def _extract(spark: SparkSession, fs: StoreFs, config: Config, catalog: str | pd.DataFrame, store: str,
             images_dir: str | None, run_date: str | None, summary: ExtractSummary, started: float) -> None:
    run_id, batch = summary.run_id, summary.batch
    with job_step(spark, "reading the catalog"):
        rows = load_rows(spark, fs, catalog, run_id).cache()
        status_counts = {r["row_status"]: r["count"] for r in rows.groupBy("row_status").count().collect()}
        summary.rows = sum(status_counts.values())
        summary.bad_rows = {k: v for k, v in status_counts.items() if k != "ok"}
        summary.distinct_images = rows.where(F.col("row_status") == "ok").select("image_id").distinct().count()

    settings = ImageSettings.of(config)
    with job_step(spark, "finding the images the store lacks"):
        todo, made_otherwise = _images_to_process(spark, fs, store, rows, batch, settings, summary)
    summary.already_ok = summary.distinct_images - summary.processed
    name = catalog if isinstance(catalog, str) else catalog.attrs.get("path", "(a frame)")
    log(f"catalog {name}: {summary.rows} rows, {summary.distinct_images} distinct images, "
        f"{summary.already_ok} already ok in the store, {summary.processed} to process (batch {batch})")
    if summary.made_otherwise:
        log(_made_otherwise_message(summary, settings))

    compression = "uncompressed" if config.store.compression == "none" else config.store.compression
    counts: Counter[str] = Counter()
    # An undated run with nothing new writes no empty batch; a dated rerun always replaces its partition.
    if summary.processed or run_date:
        cores = default_parallelism(spark)
        partitions = max(1, min(summary.processed, cores * config.spark.image_partitions_per_core))
        devices = spark.sparkContext.accumulator(set(), SetParam())
        cnn_devices = spark.sparkContext.accumulator(set(), SetParam())
        files = max(1, summary.processed // max(1, config.store.rows_per_file) + 1)
        partition = f"{IMAGES.partition}={batch}"
        with job_step(spark, "fetching, reading (OCR) and embedding (CNN) images"):
            images = process_images(todo, config, images_dir, run_id, partitions, config.cnn.separate_stage,
                                    devices, cnn_devices)
            write_partition(fs, images, IMAGES.name, partition, run_id, compression, min(files, partitions))
        written = spark.read.parquet(fs.path(IMAGES.name, partition))
        for r in written.groupBy("status", "source").count().collect():
            counts[r["status"]] += r["count"]
            summary.from_plain_files += r["count"] if r["source"] == PLAIN_FILE_SOURCE else 0
        summary.ocr_device = ",".join(sorted(devices.value))
        log(f"OCR ({config.ocr.engine}) ran on {summary.ocr_device or 'nothing (no batch to read)'}")
        if INT8_WITHOUT_VNNI in summary.ocr_device:
            log("warning: ocr.rapidocr.precision=int8 ran on CPUs without VNNI (AVX512-VNNI, AVX-VNNI or AMX): "
                "there onnxruntime's int8 kernels can saturate, so the int8 detectors read worse for little "
                "less CPU; f32, the default, is the better choice on these CPUs (docs/ocr.md)")
        summary.cnn_device = ",".join(sorted(cnn_devices.value))
        if summary.cnn_device:
            log(f"CNN ran on {summary.cnn_device}")
    summary.processed_ok = counts.pop("ok", 0)
    summary.failed = dict(counts)
    summary.store_ok = summary.already_ok + summary.processed_ok
    if summary.reprocess_made_otherwise and made_otherwise is not None and summary.failed:
        # An image made otherwise that failed this time keeps its earlier ok record (the canonical one).
        failed = spark.read.parquet(fs.path(IMAGES.name, f"{IMAGES.partition}={batch}")).where(F.col("status") != "ok")
        summary.store_ok += failed.join(made_otherwise, on="image_id", how="left_semi").count()
    rows_files = max(1, summary.rows // max(1, config.store.rows_per_file) + 1)
    # Keyed by the batch like the images: a dated rerun replaces its rows, undated runs never replace each other's.
    with job_step(spark, "writing the rows table"):
        write_partition(fs, rows, ROWS.name, f"{ROWS.partition}={batch}", run_id, compression, rows_files)
    summary.seconds = time.perf_counter() - started
    append_manifest(fs, summary.to_json())
    fs.delete(fs.path(STAGING_DIR, run_id))
    todo.unpersist()
    rows.unpersist()
