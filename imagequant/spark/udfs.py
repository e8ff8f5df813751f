"""The Python functions Spark runs in the extract job (mapInPandas for fetch/decode/OCR, mapInArrow for the
CNN). Each wraps library functions of imagequant.pipeline.images.

Per-worker state (the HTTP session, the OCR engine, the CNN) is cached at module level in the libraries, so
it is built once per Python worker, which Spark reuses across tasks (spark.python.worker.reuse).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import types as T

from imagequant.config import Config
from imagequant.pipeline.images import embed_crops, process_frame
from imagequant.spark.schema import IMAGE_SCHEMA, OCR_STAGE_SCHEMA

CNN_OUTPUT_FIELDS = [IMAGE_SCHEMA["cnn_features"], IMAGE_SCHEMA["seconds_cnn"]]


def fetch_ocr_function(config: Config, images_dir: str | None) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """mapInPandas function: distinct images (image_id, image_link) -> stage-one records (OCR_STAGE_SCHEMA)."""
    names = OCR_STAGE_SCHEMA.fieldNames()

    def fetch_decode_ocr(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield process_frame(batch, config, images_dir)[names]

    return fetch_decode_ocr


def cnn_stage_schema(input_schema: T.StructType) -> T.StructType:
    """The CNN stage's output: its input's columns without ``cnn_input``, plus cnn_features and seconds_cnn."""
    return T.StructType([f for f in input_schema.fields if f.name != "cnn_input"] + CNN_OUTPUT_FIELDS)


def crops_from_arrow(column: pa.Array, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The (size, size, 3) uint8 crops of a binary Arrow column and the row numbers that hold one.

    Rows of another length (a failed image's empty input, nulls) hold none. The crops are read from the Arrow
    data buffer: a view when they lie back to back (the usual case), else one gathered copy. Never a Python
    bytes object per row, which is what made the pandas UDF cost more than the GPU itself.
    """
    expected = size * size * 3
    offset_type = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    _validity, offsets_buf, data_buf = column.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=offset_type)[column.offset : column.offset + len(column) + 1]
    lengths = np.diff(offsets)
    if column.null_count:
        lengths = np.where(column.is_null().to_numpy(zero_copy_only=False), 0, lengths)
    present = np.flatnonzero(lengths == expected)
    if present.size == 0 or data_buf is None:
        return np.zeros((0, size, size, 3), dtype=np.uint8), present[:0]
    data = np.frombuffer(data_buf, dtype=np.uint8)
    starts = offsets[present].astype(np.int64)
    if np.all(np.diff(starts) == expected):
        flat = data[starts[0] : starts[0] + present.size * expected]
    else:
        flat = np.concatenate([data[start : start + expected] for start in starts])
    return flat.reshape(present.size, size, size, 3), present


def cnn_features_function(config: Config) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """mapInArrow function: rows with a binary ``cnn_input`` -> the same rows without it, plus cnn_features
    (float32 x 2048; zeros where there is no crop) and seconds_cnn (the batch's CNN time shared among its crops).

    Arrow batches are gathered until they hold ``cnn.batch_size`` rows and embedded together, so the network
    sees full batches even though spark.sql.execution.arrow.maxRecordsPerBatch is kept small for the fetch/OCR
    stage; each comes back as its own batch, its features one Arrow list column over a float32 matrix.
    """
    size = config.imaging.cnn_size
    wanted = max(1, config.cnn.batch_size)

    def embed_together(batches: list[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        found = [crops_from_arrow(batch.column(batch.schema.get_field_index("cnn_input")), size) for batch in batches]
        embedded, seconds = embed_crops([crops for crops, _present in found], config)
        share = seconds / max(1, len(embedded))
        row = 0
        for batch, (_crops, present) in zip(batches, found, strict=True):
            yield _with_features(batch, present, embedded[row : row + present.size], share)
            row += present.size

    def cnn_features(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        gathered: list[pa.RecordBatch] = []
        rows = 0
        for batch in batches:
            gathered.append(batch)
            rows += batch.num_rows
            if rows >= wanted:
                yield from embed_together(gathered)
                gathered, rows = [], 0
        if gathered:
            yield from embed_together(gathered)

    return cnn_features


def _with_features(batch: pa.RecordBatch, present: np.ndarray, embedded: np.ndarray, share: float) -> pa.RecordBatch:
    """The batch without cnn_input, plus cnn_features (zeros where there was no crop) and seconds_cnn."""
    dim = embedded.shape[1]
    features = np.zeros((batch.num_rows, dim), dtype=np.float32)
    features[present] = embedded
    seconds = np.zeros(batch.num_rows, dtype=np.float64)
    seconds[present] = share
    offsets = pa.array(np.arange(0, (batch.num_rows + 1) * dim, dim, dtype=np.int32))
    kept = [i for i, name in enumerate(batch.schema.names) if name != "cnn_input"]
    return pa.RecordBatch.from_arrays(
        [*(batch.column(i) for i in kept), pa.ListArray.from_arrays(offsets, pa.array(features.reshape(-1))),
         pa.array(seconds)],
        names=[*(batch.schema.names[i] for i in kept), "cnn_features", "seconds_cnn"],
    )
