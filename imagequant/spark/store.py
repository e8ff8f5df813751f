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
import logging
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from imagequant.cli import foreign_entries, refuse_foreign_folder
from imagequant.core import locations
from imagequant.core.schema import (
    IMAGES,
    LOCK_FILE,
    MANIFEST_FILE,
    QUARANTINE_DIR,
    ROWS,
    STAGING_DIR,
    STORE_FORMAT,
    TRAINING_DIR,
    Table,
    check_manifest,
)
from imagequant.errors import UsageError
from imagequant.spark.schema import IMAGE_SCHEMA, ROW_SCHEMA, spark_schema

log = logging.getLogger(__name__)


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

    def size(self, path: str) -> int:
        """Bytes under ``path`` (0 when it does not exist)."""
        return int(self._fs.getContentSummary(self._Path(path)).getLength()) if self.exists(path) else 0

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

    def create_new(self, path: str, text: str) -> bool:
        """Writes a small file only when none is there: False when one already is (an atomic test-and-set
        on HDFS and local file systems)."""
        try:
            stream = self._fs.create(self._Path(path), False)
        except Exception:
            if self.exists(path):
                return False
            raise
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()
        return True

    def write_bytes(self, path: str, data: bytes, chunk: int = 8 << 20) -> None:
        """Writes a file, replacing one that is there; in chunks, as py4j copies each call's bytes whole."""
        stream = self._fs.create(self._Path(path), True)
        try:
            view = memoryview(data)
            for start in range(0, len(view), chunk):
                stream.write(bytearray(view[start:start + chunk]))
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


class StoreInUse(UsageError):
    """Another run (an extract or a compaction) holds the store."""


class StoreDamaged(UsageError):
    """A file of the store cannot be read as Parquet."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "java_exception", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


@contextmanager
def store_lock(fs: StoreFs, run_id: str, job: str = "extract") -> Iterator[None]:
    """Holds ``STORE/_lock.json`` for one run of ``job`` (``extract``, ``compaction``), so two runs never
    write one store at once: a second run is refused (StoreInUse, naming the job and run that hold it). A lock
    left by a run of this host whose process is gone is taken over. Creating the lock is also the first
    write, so a store that cannot be written is found here, before any image is fetched."""
    path = fs.path(LOCK_FILE)
    holder = {"job": job, "run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
              "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        fs.mkdirs(fs.root)
        taken = fs.create_new(path, json.dumps(holder))
        if not taken and _holder_is_gone(fs.read_text(path)):
            log.warning("taking over %s: the run that held it is gone", path)
            fs.delete(path)
            taken = fs.create_new(path, json.dumps(holder))
    except Exception as exc:  # Hadoop reports permissions and missing mounts as Java exceptions
        undone = "nothing was fetched" if job == "extract" else "nothing was changed"
        raise UsageError(f"store {fs.root} cannot be written ({_first_line(exc)}); {undone}") from None
    if not taken:
        other = _read_holder(fs.read_text(path))
        # A lock written before the job was recorded names no job: say only that a run holds it.
        holder_job = f"{other['job']} " if isinstance(other.get("job"), str) and other["job"] else ""
        raise StoreInUse(
            f"store {fs.root} is in use by {holder_job}run {other.get('run_id', '?')} (host {other.get('host', '?')}, "
            f"pid {other.get('pid', '?')}, since {other.get('started_at', '?')}); wait for it to finish, or "
            f"remove {path} if that run is dead"
        )
    try:
        yield
    finally:
        if _read_holder(fs.read_text(path)).get("run_id") == run_id:
            fs.delete(path)


def _read_holder(text: str | None) -> dict[str, Any]:
    try:
        holder = json.loads(text or "{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _holder_is_gone(text: str | None) -> bool:
    """Whether the lock's run was on this host and its process no longer exists."""
    holder = _read_holder(text)
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


# Spark and pyarrow messages of a file that is no Parquet file, or whose footer or pages cannot be read.
_DAMAGE = re.compile(r"not a Parquet file|magic number|magic bytes|read footer|ParquetDecodingException|"
                     r"Corrupt|Invalid: Parquet|Couldn't deserialize thrift|FAILED_READ_FILE\.(?!FILE_NOT_EXIST)",
                     re.IGNORECASE)
_PARQUET_PATH = re.compile(r"(?:[a-z][a-z0-9+.-]*:)?/[^\s'\",;:}\]\[]*?\.parquet")


def damaged_file(exc: BaseException) -> str | None:
    """The store file a read failed on when the failure says the file is no readable Parquet file."""
    text = str(exc)
    if not _DAMAGE.search(text):
        return None
    found = _PARQUET_PATH.search(text)
    return found.group(0) if found else None


@contextmanager
def reporting_damage(store: str | Path) -> Iterator[None]:
    """Turns a read that fails on a damaged store file into one StoreDamaged error naming the file."""
    try:
        yield
    except Exception as exc:
        path = damaged_file(exc)
        if path is None:
            raise
        raise StoreDamaged(
            f"store {store}: {path} is not a readable Parquet file ({_first_line(exc)}); run "
            f"jobs/extract_features.py on this store, which moves a damaged images file to "
            f"{QUARANTINE_DIR}/ and processes its images again, or restore the file from a backup", path,
        ) from None


def images_file(path: str) -> str | None:
    """``images/batch=.../part-....parquet`` when ``path`` is a file of the images table, else None."""
    marker = f"/{IMAGES.name}/{IMAGES.partition}="
    at = path.rfind(marker)
    return path[at + 1 :] if at >= 0 else None


def quarantine(fs: StoreFs, relative: str) -> str:
    """Moves the store file at ``relative`` to ``STORE/_quarantine/<relative>``; returns where it went."""
    target = fs.path(QUARANTINE_DIR, relative)
    fs.mkdirs(target.rsplit("/", 1)[0])
    fs.delete(target)
    fs.rename(fs.path(relative), target)
    return target


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


def stage_frame(spark: SparkSession, fs: StoreFs, frame: pd.DataFrame, table: Table, path: str) -> DataFrame:
    """``frame`` (the columns of ``table``) as a DataFrame read back from a Parquet file written at ``path``.

    ``spark.createDataFrame`` would keep every row in the driver's JVM for the DataFrame's whole life
    (about 1.6 kB per catalog row); a file that the executors read keeps the driver flat in the catalog's size.
    """
    data = pa.Table.from_pandas(frame[table.names()], schema=table.arrow_schema(), preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(data, sink, compression="zstd")
    fs.write_bytes(path, sink.getvalue().to_pybytes())
    return spark.read.schema(spark_schema(table)).parquet(path)


def list_partitions(fs: StoreFs, table: str) -> list[str]:
    return sorted(name for name in fs.list_dirs(fs.path(table)) if "=" in name and not name.startswith(("_", ".")))


def require_store(store: str | Path) -> None:
    """A store that does not exist, or a folder that holds none, is a usage error (a store without some images
    is not): a mistyped --store would otherwise answer every row ``image_missing``."""
    path = locations.local_path(store)  # a remote store is checked by Spark when it is read
    if path is None:
        return
    if not path.exists():
        raise UsageError(f"store {store} does not exist; run jobs/extract_features.py on the catalog first")
    _refuse_a_file(store, path)
    if not (path / MANIFEST_FILE).is_file() and not _holds_images_table(path / IMAGES.name):
        raise UsageError(f"store {store} is a folder but not a store (it has no {MANIFEST_FILE} and no "
                         f"{IMAGES.name} table); give the folder jobs/extract_features.py wrote")


def _refuse_a_file(store: str | Path, path: Path) -> None:
    """A store that is a file, or would be made under one, is a usage error before Spark starts: Hadoop's own
    refusal comes later and in Java's words."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"store {store} is a file, not a store's folder")
    above = next((parent for parent in path.parents if parent.exists()), None)
    if above is not None and not above.is_dir():
        raise UsageError(f"store {store} cannot be created: {above} is a file")


# What a store's folder holds (imagequant/core/schema.py's layout). Dot files are the file systems' own, and
# in the images table "_" files Spark's (_SUCCESS): neither makes a folder foreign.
_STORE_ENTRIES = frozenset({MANIFEST_FILE, IMAGES.name, ROWS.name, TRAINING_DIR, STAGING_DIR, LOCK_FILE,
                            QUARANTINE_DIR})


def check_store_target(store: str | Path) -> None:
    """A folder extract may write a store into: a new or empty one, a store, or what a first run that failed
    left (its lock and staging). A folder of other files is a usage error, so that a mistyped --store (a sample
    folder, a folder of images) does not get the store's tables written among them."""
    path = locations.local_path(store)  # a remote store's folder is not listed here
    if path is None:
        return
    _refuse_a_file(store, path)
    if not path.is_dir() or (path / MANIFEST_FILE).is_file():
        return
    foreign = foreign_entries(path, _STORE_ENTRIES)
    images = path / IMAGES.name
    if images.is_dir():
        foreign += [f"{IMAGES.name}/{name}" for name in foreign_entries(images, ())
                    if not name.startswith((f"{IMAGES.partition}=", "_"))]
    refuse_foreign_folder("--store", store, foreign, "feature store", "jobs/extract_features.py")


def _holds_images_table(folder: Path) -> bool:
    """Whether ``folder`` holds an images table's batches, not merely files: a sample's or a download's
    ``images`` folder of image files has the table's name too."""
    return folder.is_dir() and any(p.name.startswith(f"{IMAGES.partition}=") for p in folder.iterdir())


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


def rows_by_maker(rows: DataFrame, images: DataFrame, *columns: str) -> dict[str, dict[str, int]]:
    """How many of ``rows`` (with ``image_id``) have an ok record in ``images`` (:func:`read_images`'s view),
    per what made it, for each of ``columns``: ``cnn_weights`` (the weights of its features), ``ocr_engine`` (its
    reader); one Spark job for them all."""
    made = rows.join(images.where(F.col("status") == "ok").select("image_id", *columns), on="image_id")
    counts: dict[str, dict[str, int]] = {column: {} for column in columns}
    for r in made.groupBy(*columns).count().collect():
        for column in columns:
            counts[column][str(r[column])] = counts[column].get(str(r[column]), 0) + int(r["count"])
    return counts


def read_rows(spark: SparkSession, store: str | Path, batch: str) -> pd.DataFrame:
    """The catalog rows one extract run wrote (``ROWS`` partition ``run_date=<batch>``: its ``--run-date``, or
    its run id for an undated run), in index order, as ``imagequant.catalog.read_catalog`` gives a catalog.
    A UsageError names the batches the store holds when there is no such run."""
    fs = StoreFs(spark, store)
    read_manifest(fs)
    partition = f"{ROWS.partition}={batch}"
    held = list_partitions(fs, ROWS.name)
    if partition not in held:
        known = ", ".join(p.split("=", 1)[1] for p in held[-10:]) or "none"
        raise UsageError(f"store {store} holds no catalog rows of run {batch!r} (the latest runs: {known})")
    columns = [name for name in ROWS.names() if name != "run_id"]
    frame = spark.read.schema(ROW_SCHEMA).parquet(fs.path(ROWS.name, partition)).select(*columns).toPandas()
    frame = frame.sort_values("index", kind="stable").reset_index(drop=True)
    frame.attrs["path"] = f"{store} (rows of run {batch})"
    return frame


def append_manifest(fs: StoreFs, entry: Mapping[str, Any]) -> None:
    """Adds one run summary to ``_manifest.json`` (replacing an earlier entry of the same batch)."""
    manifest = read_manifest(fs) or {}
    runs = [r for r in manifest.get("runs", []) if r.get("batch") != entry.get("batch")] + [dict(entry)]
    fs.write_text(fs.path(MANIFEST_FILE), json.dumps({"format": STORE_FORMAT, "runs": runs}, indent=2))


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid()}"
