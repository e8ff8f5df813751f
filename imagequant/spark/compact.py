"""Compaction: the images table's batches folded into one, so a year of nightly runs reads as fast as one.

The images table is a log of batches that readers reduce to one row per image (the canonical view: the
``ok`` row first, then the newest). Compaction writes that view as one new batch, through staging and a
rename like every other write, and only then retires the old batches (through ``_trash``). At every moment
a reader sees the same canonical view: before the new batch lands it reads the old batches; after, the new
batch holds exactly the rows the view keeps, so the old batches add only rows the view drops again. A crash
anywhere leaves a readable store: the next run's recovery puts half-retired batches back, and a later
compaction finishes the job. It runs under the store's lock, so no extract run writes meanwhile.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from pyspark.sql import SparkSession

from imagequant.config import Config
from imagequant.core.schema import IMAGES
from imagequant.spark.session import job_step
from imagequant.spark.store import (
    StoreFs,
    append_manifest,
    list_partitions,
    new_run_id,
    read_images,
    recover,
    reporting_damage,
    store_lock,
    write_partition,
)

# The batch key of a compacted batch; a later compaction folds it in like any other.
COMPACTED_PREFIX = "compacted-"


@dataclass
class CompactSummary:
    run_id: str
    batch: str
    batches_before: int = 0
    batches_after: int = 0
    rows_before: int = 0
    rows_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    retired: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        if not self.retired:
            return (f"compact_store: nothing to do ({self.batches_before} batch of {self.rows_before} rows) "
                    f"seconds={self.seconds:.1f}")
        return (f"compact_store: {self.batches_before} batches ({self.rows_before} rows, {self.bytes_before} bytes) "
                f"-> 1 batch {self.batch} ({self.rows_after} rows, {self.bytes_after} bytes) "
                f"seconds={self.seconds:.1f}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = "compaction"
        data["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return data


def run_compact(spark: SparkSession, config: Config, store: str) -> CompactSummary:
    """Folds every batch of the images table into one holding the canonical view; returns the summary."""
    started = time.perf_counter()
    run_id = new_run_id()
    summary = CompactSummary(run_id=run_id, batch=f"{COMPACTED_PREFIX}{run_id}")
    fs = StoreFs(spark, store)
    with store_lock(fs, run_id, job="compaction"):
        recover(fs)
        batches = list_partitions(fs, IMAGES.name)
        summary.batches_before = summary.batches_after = len(batches)
        summary.bytes_before = summary.bytes_after = sum(fs.size(fs.path(IMAGES.name, b)) for b in batches)
        with reporting_damage(store):
            if batches:
                summary.rows_before = spark.read.parquet(*[fs.path(IMAGES.name, b) for b in batches]).count()
            if len(batches) <= 1:
                summary.rows_after = summary.rows_before
                summary.seconds = time.perf_counter() - started
                return summary
            with job_step(spark, "folding the images table's batches into one"):
                canonical = read_images(spark, store).select(*IMAGES.names()).cache()  # type: ignore[union-attr]
                summary.rows_after = canonical.count()
                compression = "uncompressed" if config.store.compression == "none" else config.store.compression
                files = max(1, summary.rows_after // max(1, config.store.rows_per_file) + 1)
                partition = f"{IMAGES.partition}={summary.batch}"
                # The new batch lands whole (one rename) before any old one leaves.
                write_partition(fs, canonical, IMAGES.name, partition, run_id, compression, files)
                canonical.unpersist()
        written = spark.read.parquet(fs.path(IMAGES.name, partition)).count()
        if written != summary.rows_after:
            raise RuntimeError(f"compaction wrote {written} rows where the canonical view has {summary.rows_after}; "
                               f"the old batches are kept")
        for name in batches:
            retire_partition(fs, IMAGES.name, name)
            summary.retired.append(name)
        summary.batches_after = len(list_partitions(fs, IMAGES.name))
        summary.bytes_after = fs.size(fs.path(IMAGES.name, partition))
        summary.seconds = time.perf_counter() - started
        append_manifest(fs, summary.to_json())
    return summary


def retire_partition(fs: StoreFs, table: str, partition: str) -> None:
    """Removes a partition through ``_trash``: a crash in between leaves it in ``_trash``, from where the
    next run's recovery puts it back (harmless after a compaction: the view drops its rows again)."""
    fs.mkdirs(fs.path("_trash", table))
    fs.rename(fs.path(table, partition), fs.path("_trash", table, partition))
    fs.delete(fs.path("_trash", table, partition))
