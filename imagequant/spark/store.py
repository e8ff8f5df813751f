"""The Parquet feature store: an images table and a rows table, committed atomically per batch.

Layout (documented in the README)::

    STORE/images/batch=<key>/part-*.parquet   one row per distinct image processed in that batch
    STORE/rows/run_date=<key>/part-*.parquet  one row per catalog row of that run
    STORE/_manifest.json                      one summary per committed run
    STORE/_staging/<run_id>/...               work in progress, invisible to readers

A batch key is the ``--run-date`` when given (a rerun of that date replaces its partitions) and a fresh
run id otherwise. Each partition is written to ``_staging`` first and renamed into place, so a crash never
leaves a half-written partition visible. The images table is a log of batches: an image that failed in an
earlier batch and succeeded later appears in both, and ``read_images`` keeps one row per image (``ok``
first, then the newest batch).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from imagequant.ocr import OcrToken

# ResNet-50's pooled feature length (imagequant.cnn.FEATURE_DIM; kept here so readers need no torch).
# Every images row holds exactly this many floats (zeros when the image failed), so the column is fixed-size.
CNN_FEATURE_DIM = 2048

TOKEN_FIELDS: tuple[tuple[str, str], ...] = (
    ("text", "string"),
    ("conf", "float"),
    ("left", "int"),
    ("top", "int"),
    ("width", "int"),
    ("height", "int"),
    ("block", "int"),
    ("line", "int"),
    ("word", "int"),
    ("angle", "int"),
)
_SPARK_TYPES = {"string": T.StringType(), "float": T.FloatType(), "int": T.IntegerType()}

IMAGE_SCHEMA = T.StructType(
    [
        T.StructField("image_id", T.StringType(), False),
        T.StructField("image_link", T.StringType(), False),
        T.StructField("status", T.StringType(), False),
        T.StructField("error", T.StringType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("width", T.IntegerType(), False),
        T.StructField("height", T.IntegerType(), False),
        T.StructField("ocr_engine", T.StringType(), False),
        *[T.StructField(f"tok_{name}", T.ArrayType(_SPARK_TYPES[kind]), False) for name, kind in TOKEN_FIELDS],
        T.StructField("ocr_text", T.StringType(), False),
        T.StructField("cnn_weights", T.StringType(), False),
        T.StructField("cnn_features", T.ArrayType(T.FloatType()), False),
        T.StructField("seconds_fetch", T.DoubleType(), False),
        T.StructField("seconds_decode", T.DoubleType(), False),
        T.StructField("seconds_ocr", T.DoubleType(), False),
        T.StructField("seconds_cnn", T.DoubleType(), False),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("processed_at", T.StringType(), False),
    ]
)

ROW_SCHEMA = T.StructType(
    [
        T.StructField("index", T.LongType(), False),
        T.StructField("image_link", T.StringType(), False),
        T.StructField("group_id", T.StringType(), False),
        T.StructField("entity_name", T.StringType(), False),
        T.StructField("entity_value", T.StringType(), True),
        T.StructField("image_id", T.StringType(), False),
        T.StructField("row_status", T.StringType(), False),
        T.StructField("row_error", T.StringType(), False),
        T.StructField("run_id", T.StringType(), False),
    ]
)


def tokens_to_columns(tokens: Sequence[OcrToken]) -> dict[str, list[Any]]:
    """The image's tokens as the parallel ``tok_*`` arrays of the images table."""
    return {f"tok_{name}": [getattr(t, name) for t in tokens] for name, _ in TOKEN_FIELDS}


def tokens_from_record(record: Mapping[str, Any]) -> list[OcrToken]:
    """Rebuilds the OcrToken list from one images-table record (dict, pandas row or Spark Row)."""
    columns = [record[f"tok_{name}"] for name, _ in TOKEN_FIELDS]
    if columns[0] is None:
        return []
    names = [name for name, _ in TOKEN_FIELDS]
    tokens = []
    for values in zip(*columns, strict=True):
        fields = dict(zip(names, values, strict=True))
        tokens.append(
            OcrToken(
                text=str(fields["text"]),
                conf=float(fields["conf"]),
                **{k: int(fields[k]) for k in names if k not in ("text", "conf")},
            )
        )
    return tokens


def ocr_text(tokens: Sequence[OcrToken]) -> str:
    """Tokens joined by spaces within a line and newlines between lines, in reading order."""
    lines: list[str] = []
    current_line: int | None = None
    for token in tokens:
        if current_line is not None and token.line == current_line:
            lines[-1] += " " + token.text
        else:
            lines.append(token.text)
        current_line = token.line
    return "\n".join(lines)


def _uri(path: str | Path) -> str:
    text = str(path)
    return text if "://" in text else Path(text).resolve().as_uri()


def images_path(store: str | Path) -> str:
    return _uri(Path(store) / "images") if "://" not in str(store) else f"{str(store).rstrip('/')}/images"


def rows_path(store: str | Path) -> str:
    return _uri(Path(store) / "rows") if "://" not in str(store) else f"{str(store).rstrip('/')}/rows"


class StoreFs:
    """Directory operations through Hadoop's FileSystem API, so the store works on HDFS/S3 as locally."""

    def __init__(self, spark: SparkSession, store: str | Path):
        self.root = _uri(store).rstrip("/")
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
    for table in ("images", "rows"):
        trash_root = fs.path("_trash", table)
        for name in fs.list_dirs(trash_root):
            target = fs.path(table, name)
            if not fs.exists(target):  # crashed between moving the old partition out and the new one in
                fs.mkdirs(fs.path(table))
                fs.rename(fs.path("_trash", table, name), target)
        fs.delete(trash_root)
    fs.delete(fs.path("_staging"))


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
    staged = fs.path("_staging", run_id, table, partition)
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


def read_images(spark: SparkSession, store: str | Path, exclude_batch: str | None = None) -> DataFrame | None:
    """The canonical images view: one row per image_id, an ``ok`` row first, then the newest batch.

    ``exclude_batch`` leaves out one batch (the one a rerun is about to replace).
    """
    fs = StoreFs(spark, store)
    batches = [p for p in list_partitions(fs, "images") if p != f"batch={exclude_batch}"]
    if not batches:
        return None
    paths = [fs.path("images", b) for b in batches]
    frame = spark.read.option("basePath", fs.path("images")).schema(
        T.StructType([*IMAGE_SCHEMA.fields, T.StructField("batch", T.StringType())])
    ).parquet(*paths)
    order = Window.partitionBy("image_id").orderBy(
        F.when(F.col("status") == "ok", 0).otherwise(1), F.col("processed_at").desc()
    )
    return frame.withColumn("_rank", F.row_number().over(order)).where("_rank = 1").drop("_rank")


def read_rows(spark: SparkSession, store: str | Path) -> DataFrame | None:
    fs = StoreFs(spark, store)
    if not list_partitions(fs, "rows"):
        return None
    return spark.read.parquet(fs.path("rows"))


def append_manifest(fs: StoreFs, entry: Mapping[str, Any]) -> None:
    """Adds one run summary to ``_manifest.json`` (replacing an earlier entry of the same batch)."""
    text = fs.read_text(fs.path("_manifest.json"))
    runs = json.loads(text)["runs"] if text else []
    runs = [r for r in runs if r.get("batch") != entry.get("batch")] + [dict(entry)]
    fs.write_text(fs.path("_manifest.json"), json.dumps({"runs": runs}, indent=2))


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid()}"
