"""The pandas UDFs of the extract job. Each wraps library functions of imagequant.process.

Per-worker state (the HTTP session, the OCR engine, the CNN) is cached at module level in the libraries, so
it is built once per Python worker, which Spark reuses across tasks (spark.python.worker.reuse).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from imagequant.config import Config
from imagequant.process import embed_inputs, process_frame
from imagequant.spark.store import IMAGE_SCHEMA

_CNN_FIELDS = {"cnn_weights", "cnn_features", "seconds_cnn", "run_id", "processed_at"}
STAGE1_SCHEMA = T.StructType(
    [f for f in IMAGE_SCHEMA.fields if f.name not in _CNN_FIELDS and f.name != "seconds_ocr"]
    + [T.StructField("seconds_ocr", T.DoubleType(), False), T.StructField("cnn_input", T.BinaryType(), False)]
)
CNN_RESULT = T.StructType(
    [T.StructField("features", T.ArrayType(T.FloatType()), True), T.StructField("seconds", T.DoubleType(), True)]
)


def fetch_ocr_function(config: Config, images_dir: str | None) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """mapInPandas function: distinct images (image_id, image_link) -> stage-one records (STAGE1_SCHEMA)."""
    names = STAGE1_SCHEMA.fieldNames()

    def fetch_decode_ocr(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield process_frame(batch, config, images_dir)[names]

    return fetch_decode_ocr


def cnn_features_udf(config: Config) -> Callable[[Column], Column]:
    """Iterator pandas UDF: crop bytes -> struct(features, seconds); the model loads once per worker."""

    @F.pandas_udf(CNN_RESULT)  # type: ignore[call-overload]
    def cnn_features(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        for inputs in batches:
            features, seconds = embed_inputs(inputs.reset_index(drop=True), config)
            embedded = [data is not None and len(data) > 0 for data in inputs]
            share = seconds / max(1, sum(embedded))
            yield pd.DataFrame({"features": features, "seconds": [share if e else 0.0 for e in embedded]})

    return cnn_features
