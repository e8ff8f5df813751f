"""The training table: the labeled rows of some catalogs joined with their images in the store (Spark).

Written as Parquet under ``STORE/_training/<catalogs-hash>/`` and read back by
:func:`imagequant.training.reader.iter_training_records` (Petastorm or pyarrow).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from imagequant.catalog import CATALOG_FILE_ATTR, ROW_COLUMNS, read_catalog, require_labels
from imagequant.core import locations
from imagequant.core.schema import CNN_FEATURE_DIM, READINGS_JSON, TRAINING, TRAINING_DIR
from imagequant.errors import UsageError
from imagequant.spark.schema import spark_schema
from imagequant.spark.session import catalog_frame, job_step
from imagequant.spark.store import read_images, reporting_damage, rows_by_maker
from imagequant.training.examples import left_out_rows
from imagequant.training.reader import TrainingTable

# A labeled catalog: a file, or rows already read (an extract run's rows, imagequant.spark.store.read_rows).
CatalogSource = str | Path | pd.DataFrame


def catalogs_hash(sources: Sequence[CatalogSource]) -> str:
    """First 16 hex of a SHA-1 over the catalogs' bytes (a frame read_catalog made: its file's; another frame:
    its rows' values), in the order given (their training table's name)."""
    digest = hashlib.sha1()
    for source in sources:
        if isinstance(source, pd.DataFrame) and CATALOG_FILE_ATTR in source.attrs:
            source = source.attrs[CATALOG_FILE_ATTR]
        if isinstance(source, pd.DataFrame):
            values = pd.util.hash_pandas_object(source[list(ROW_COLUMNS)].astype(str), index=False).to_numpy()
            digest.update(f"rows:{len(source)}\n".encode())
            digest.update(values.tobytes())
            continue
        p = Path(source)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        digest.update(f"catalog:{len(files)}\n".encode())
        for f in files:
            digest.update(f.relative_to(p).as_posix().encode() if p.is_dir() else b"")
            with f.open("rb") as handle:
                for chunk in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


def build_training_table(spark: SparkSession, catalogs: Sequence[CatalogSource], store: str | Path) -> TrainingTable:
    """Joins the labeled rows of ``catalogs`` with the store's canonical images view and writes the join
    (:data:`imagequant.core.schema.TRAINING`) under ``STORE/_training/<catalogs-hash>/``, replacing an
    earlier one."""
    frames = []
    for source, path in enumerate(catalogs):
        frame = path if isinstance(path, pd.DataFrame) else read_catalog(path)
        require_labels(frame, frame.attrs.get("path", str(path)) if isinstance(path, pd.DataFrame) else str(path))
        frame = frame[["index", "group_id", "entity_name", "entity_value", "image_id", "row_status"]].copy()
        frame["source"] = source
        frames.append(frame)
    rows_pd = pd.concat(frames, ignore_index=True)
    left_out = left_out_rows(rows_pd)
    rows_pd = rows_pd[(rows_pd["row_status"] == "ok") & rows_pd["entity_value"].notna()]
    row_columns = TRAINING.select("index", "group_id", "entity_name", "entity_value", "image_id", "source")
    rows = catalog_frame(spark, rows_pd[row_columns.names()].astype({"source": "int32"}),
                         spark_schema(row_columns, nullable=True))
    images = read_images(spark, store)
    if images is None:
        raise UsageError(f"store {store} holds no images table; run jobs/extract_features.py on the catalog first")
    stored = images  # the canonical view; ``images`` becomes the join's columns of it
    zeros = F.array_repeat(F.lit(0.0).cast("float"), CNN_FEATURE_DIM)
    has_cnn = F.coalesce(F.size("cnn_features") == CNN_FEATURE_DIM, F.lit(False))
    images = images.select(
        "image_id", "status", "width", "height",
        # the JVM side of the column's codec (READINGS_JSON.encode gives the same object)
        F.to_json(F.struct(*[F.col(name) for name in READINGS_JSON.fields])).alias("tokens_json"),
        has_cnn.alias("has_cnn"),
        F.when(has_cnn, F.col("cnn_features")).otherwise(zeros).alias("cnn_features"),
    )
    image_defaults = {"status": F.lit("image_missing"), "width": F.lit(0), "height": F.lit(0),
                      "tokens_json": F.lit("{}"), "has_cnn": F.lit(False), "cnn_features": zeros}
    joined = rows.join(images, on="image_id", how="left").select(*[
        F.coalesce(name, image_defaults[name]).alias(name) if name in image_defaults else F.col(name)
        for name in TRAINING.names()
    ])
    out = locations.join(store, TRAINING_DIR, catalogs_hash(catalogs))
    with reporting_damage(store), job_step(spark, "joining the labeled rows with the store's images"):
        joined.coalesce(max(1, min(8, len(rows_pd) // 5000 + 1))).write.mode("overwrite").parquet(out)
        made = rows_by_maker(rows, stored, "cnn_weights", "ocr_engine")
    counts = spark.read.parquet(out).groupBy("status").count().collect()
    by_status = {r["status"]: int(r["count"]) for r in counts}
    total = sum(by_status.values())
    return TrainingTable(out, total, by_status.get("ok", 0), by_status.get("image_missing", 0),
                         total - by_status.get("ok", 0) - by_status.get("image_missing", 0),
                         made["cnn_weights"], made["ocr_engine"], left_out)


def prepare_training_table(spark: SparkSession, catalogs: Sequence[CatalogSource], store: str | Path) -> TrainingTable:
    """:func:`build_training_table`, refusing (UsageError) a join in which no row has a usable image."""
    table = build_training_table(spark, catalogs, store)
    if table.usable_rows == 0:
        raise UsageError(
            f"none of the {table.rows} labeled rows has a usable image in store {store} "
            f"({table.missing_images} missing, {table.failed_images} failed); run jobs/extract_features.py "
            "on these catalogs with this store first"
        )
    return table

