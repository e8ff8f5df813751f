"""The Parquet feature store on Spark: the images and rows tables (declared in
:mod:`imagequant.core.schema`), committed atomically per batch.

A batch key is the ``--run-date`` when given (a rerun of that date replaces its partitions) and a fresh
run id otherwise. Each partition is written to ``_staging`` first and renamed into place, so a crash never
leaves a half-written partition visible. The images table is a log of batches: an image that failed in an
earlier batch and succeeded later appears in both, and ``read_images`` keeps one row per image (``ok``
first, then the newest batch). Every directory operation goes through :class:`StoreFs` (Hadoop's
FileSystem API), so the store works on HDFS or S3 as locally.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from imagequant.core import locations
from imagequant.core.schema import IMAGES, MANIFEST_FILE, ROWS, STAGING_DIR, STORE_FORMAT, check_manifest
from imagequant.spark.schema import IMAGE_SCHEMA


class StoreFs:
    """Directory operations through Hadoop's FileSystem API, so the store works on HDFS/S3 as locally."""

    def __init__(self, spark: SparkSession, store: str | Path):
        self.root = locations.store_uri(store)
        jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
        self._jvm = jvm
        self._Path = jvm.org.apache.hadoop.fs.Path
        conf = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[attr-defined]
        self._fs = self._Path(self.root).getFileSystem(conf)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def exists(self, path: str) -> bool:
        return bool(self._fs.exists(self._Path(path)))

    def delete(self, path: str) -> None:
        if self.exists(path):
            self._fs.delete(self._Path(path), True)

    def mkdirs(self, path: str) -> None:
        self._fs.mkdirs(self._Path(path))

    def rename(self, source: str, target: str) -> None:
        if not self._fs.rename(self._Path(source), self._Path(target)):
            raise OSError(f"could not rename {source} to {target}")

    def list_dirs(self, path: str) -> list[str]:
        if not self.exists(path):
            return []
        return [str(s.getPath().getName()) for s in self._fs.listStatus(self._Path(path)) if s.isDirectory()]

    def read_text(self, path: str) -> str | None:
        if not self.exists(path):
            return None
        stream = self._fs.open(self._Path(path))
        try:
            reader = self._jvm.java.io.BufferedReader(self._jvm.java.io.InputStreamReader(stream, "UTF-8"))
            lines = []
            while True:
                line = reader.readLine()
                if line is None:
                    break
                lines.append(line)
            return "\n".join(lines)
        finally:
            stream.close()

    def write_text(self, path: str, text: str) -> None:
        """Writes a small file atomically: a temporary file renamed over the target."""
        tmp = path + ".tmp"
        stream = self._fs.create(self._Path(tmp), True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()
        self.delete(path)
        self.rename(tmp, path)


def recover(fs: StoreFs) -> None:
    """Finishes or rolls back a swap that a crash interrupted; drops abandoned staging folders."""
    for table in (IMAGES.name, ROWS.name):
        trash_root = fs.path("_trash", table)
        for name in fs.list_dirs(trash_root):
            target = fs.path(table, name)
            if not fs.exists(target):  # crashed between moving the old partition out and the new one in
                fs.mkdirs(fs.path(table))
                fs.rename(fs.path("_trash", table, name), target)
        fs.delete(trash_root)
    fs.delete(fs.path(STAGING_DIR))


def commit_partition(fs: StoreFs, staged: str, table: str, partition: str) -> None:
    """Moves a fully written staging folder into ``table/partition``, replacing what was there."""
    target = fs.path(table, partition)
    fs.mkdirs(fs.path(table))
    if fs.exists(target):
        fs.mkdirs(fs.path("_trash", table))
        fs.rename(target, fs.path("_trash", table, partition))
    fs.rename(staged, target)
    fs.delete(fs.path("_trash", table, partition))


def write_partition(
    fs: StoreFs, frame: DataFrame, table: str, partition: str, run_id: str, compression: str, files: int
) -> None:
    """Writes ``frame`` to staging, then commits it as ``table/partition`` in one rename."""
    staged = fs.path(STAGING_DIR, run_id, table, partition)
    # A shuffle, not coalesce: coalesce would pull the (expensive) upstream work into ``files`` tasks.
    (
        frame.repartition(max(1, files))
        .write.mode("overwrite")
        .option("compression", compression)
        .parquet(staged)
    )
    commit_partition(fs, staged, table, partition)


def list_partitions(fs: StoreFs, table: str) -> list[str]:
    return sorted(name for name in fs.list_dirs(fs.path(table)) if "=" in name and not name.startswith(("_", ".")))


def read_manifest(fs: StoreFs) -> dict[str, Any] | None:
    """The store's manifest, or None for a new store; a manifest of another store format is refused."""
    text = fs.read_text(fs.path(MANIFEST_FILE))
    if text is None:
        return None
    manifest = json.loads(text)
    check_manifest(manifest, fs.root)
    return manifest


def read_images(spark: SparkSession, store: str | Path, exclude_batch: str | None = None) -> DataFrame | None:
    """The canonical images view: one row per image_id, an ``ok`` row first, then the newest
    (:func:`imagequant.core.schema.canonical_images` is the same rule for pandas readers).

    ``exclude_batch`` leaves out one batch (the one a rerun is about to replace).
    """
    fs = StoreFs(spark, store)
    read_manifest(fs)
    batches = [p for p in list_partitions(fs, IMAGES.name) if p != f"{IMAGES.partition}={exclude_batch}"]
    if not batches:
        return None
    paths = [fs.path(IMAGES.name, b) for b in batches]
    schema = T.StructType([*IMAGE_SCHEMA.fields, T.StructField(str(IMAGES.partition), T.StringType())])
    frame = spark.read.option("basePath", fs.path(IMAGES.name)).schema(schema).parquet(*paths)
    order = Window.partitionBy("image_id").orderBy(
        F.when(F.col("status") == "ok", 0).otherwise(1), F.col("processed_at").desc()
    )
    return frame.withColumn("_rank", F.row_number().over(order)).where("_rank = 1").drop("_rank")


def append_manifest(fs: StoreFs, entry: Mapping[str, Any]) -> None:
    """Adds one run summary to ``_manifest.json`` (replacing an earlier entry of the same batch)."""
    manifest = read_manifest(fs) or {}
    runs = [r for r in manifest.get("runs", []) if r.get("batch") != entry.get("batch")] + [dict(entry)]
    fs.write_text(fs.path(MANIFEST_FILE), json.dumps({"format": STORE_FORMAT, "runs": runs}, indent=2))


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid()}"
