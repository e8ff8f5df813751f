"""The Python functions Spark runs in the extract job (mapInPandas for fetch/decode/OCR, mapInArrow for the
CNN). Each wraps library functions of imagequant.pipeline.images.

Per-worker state (the HTTP session, the OCR engine, the CNN) is cached at module level in the libraries, so
it is built once per Python worker, which Spark reuses across tasks (spark.python.worker.reuse). The OCR and
the CNN functions run in separate pools of workers (:func:`worker_pool`), so no worker holds both.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Generator, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.accumulators import Accumulator, AccumulatorParam
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from imagequant.config import Config
from imagequant.fetch import image_file_name
from imagequant.pipeline.images import (
    CNN_ERROR,
    NeedsSecondLook,
    cnn_device,
    embed_crops_or_failure,
    ocr_device,
    process_frame,
)
from imagequant.spark.schema import IMAGE_SCHEMA, OCR_STAGE_SCHEMA
from imagequant.spark.session import gathered_batches

CNN_OUTPUT_FIELDS = [IMAGE_SCHEMA["cnn_features"], IMAGE_SCHEMA["seconds_cnn"]]


class SetParam(AccumulatorParam[set[str]]):
    """An accumulator of a set of strings: where each worker ran its OCR or CNN, gathered on the driver (a
    union, so a retried task adds nothing twice)."""

    def zero(self, value: set[str]) -> set[str]:
        return set()

    def addInPlace(self, value1: set[str], value2: set[str]) -> set[str]:
        value1 |= value2
        return value1


_LOGGED_DEVICES: set[tuple[int, str]] = set()

# Set in the Python workers of each pool (worker_pool): its name.
WORKER_POOL_VARIABLE = "IMAGEQUANT_WORKER_POOL"


@contextlib.contextmanager
def worker_pool(spark: SparkSession, name: str) -> Iterator[None]:
    """Python functions that Spark plans inside this block (``mapInPandas``, ``mapInArrow``), or that are made
    into columns inside it (``pandas_udf``), run in Python workers of a pool of their own.

    Spark keeps one pool of reusable Python workers per set of worker environment variables, and a function
    takes the variables of ``SparkContext.environment`` when its DataFrame operation is planned (a column
    function: when it is applied to its column). Without this, a worker that ran an OCR task is reused for a
    CNN task and keeps both runtimes, their models and their buffers, so the largest worker is the sum of the
    two (README "Benchmarks")."""
    environment = spark.sparkContext.environment
    previous = environment.get(WORKER_POOL_VARIABLE)
    environment[WORKER_POOL_VARIABLE] = name
    try:
        yield
    finally:
        if previous is None:
            environment.pop(WORKER_POOL_VARIABLE, None)
        else:
            environment[WORKER_POOL_VARIABLE] = previous


def _report_ocr_device(config: Config, devices: Accumulator[set[str]] | None) -> None:
    """Logs where this worker's OCR models run (once per Python worker, in the executor's log) and adds it to
    the job's accumulator (once per task)."""
    try:
        device = ocr_device(config)
    except Exception as exc:  # the engine could not be built: every image already records why
        device = f"unavailable ({type(exc).__name__})"
    _report_device(f"OCR {config.ocr.engine}", device, devices)


def _report_device(what: str, device: str, devices: Accumulator[set[str]] | None) -> None:
    """Logs where ``what`` runs (once per Python worker, in the executor's log) and adds it to the job's
    accumulator."""
    if (os.getpid(), device) not in _LOGGED_DEVICES:
        _LOGGED_DEVICES.add((os.getpid(), device))
        print(f"[imagequant] {what} runs on {device} (Python worker {os.getpid()})", file=sys.stderr, flush=True)
    if devices is not None:
        devices.add({device})


def fetch_ocr_function(
    config: Config, images_dir: str | None, devices: Accumulator[set[str]] | None = None,
    *, needs_second_look: NeedsSecondLook,
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """mapInPandas function: distinct images (image_id, image_link) -> stage-one records (OCR_STAGE_SCHEMA).
    Each batch's images are OCR'd together (RapidOCR recognises their lines in shared model calls); where the
    OCR ran is added to ``devices`` (an accumulator of :class:`SetParam`). ``needs_second_look`` decides which
    images are read again (the extract job passes those whose asked-for entities lack a plausible candidate); it is
    pickled with the function, so it must be importable on the workers (a module-level function)."""
    names = OCR_STAGE_SCHEMA.fieldNames()

    def fetch_decode_ocr(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        reported = False
        for batch in batches:
            frame = process_frame(batch, config, images_dir, needs_second_look=needs_second_look)
            if not reported:  # after the first batch: the engine is built by then
                _report_ocr_device(config, devices)
                reported = True
            yield frame[names]

    return fetch_decode_ocr


def plain_file_names(links: Column) -> Column:
    """Each link's plain file name (``image_file_name``), by the same Python function the fetcher looks it
    up with, so the catalog-wide count of links per name and the lookup never disagree."""

    def names(batch: pd.Series) -> pd.Series:
        return batch.map(image_file_name)

    return F.pandas_udf(names, T.StringType())(links)  # type: ignore[call-overload]


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


def cnn_features_function(
    config: Config, devices: Accumulator[set[str]] | None = None,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """mapInArrow function: rows with a binary ``cnn_input`` -> the same rows without it, plus cnn_features
    (float32 x 2048; zeros where there is no crop) and seconds_cnn (the batch's CNN time shared among its crops).
    Where and in which precision the network ran (e.g. ``cpu/bf16``) is added to ``devices`` (an accumulator of
    :class:`SetParam`) once a task has embedded crops.

    A CNN stage that fails in this worker (torch cannot be imported under a memory cap) gives the batch's
    images status cnn_error instead of failing the task. Arrow batches are gathered until they hold
    ``cnn.batch_size`` rows and embedded together, so the network
    sees full batches even though spark.sql.execution.arrow.maxRecordsPerBatch is kept small for the fetch/OCR
    stage; each comes back as its own batch, its features one Arrow list column over a float32 matrix.
    """
    size = config.imaging.cnn_size
    wanted = max(1, config.cnn.batch_size)

    def embed_together(batches: list[pa.RecordBatch]) -> Generator[pa.RecordBatch, None, bool]:
        """Yields the batches with their features; returns whether the network embedded crops."""
        found = [crops_from_arrow(batch.column(batch.schema.get_field_index("cnn_input")), size) for batch in batches]
        embedded, seconds, failure = embed_crops_or_failure([crops for crops, _present in found], config)
        share = seconds / max(1, len(embedded))
        row = 0
        for batch, (_crops, present) in zip(batches, found, strict=True):
            yield _with_features(batch, present, embedded[row : row + present.size], share, failure)
            row += present.size
        return failure is None and len(embedded) > 0 and config.cnn.enabled

    def cnn_features(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        reported = False
        for group in gathered_batches(batches, wanted):
            ran = yield from embed_together(group)
            if ran and not reported:  # the network is built by now: describing it costs nothing
                _report_device("CNN", cnn_device(config), devices)
                reported = True

    return cnn_features


def _with_features(batch: pa.RecordBatch, present: np.ndarray, embedded: np.ndarray, share: float,
                   failure: str | None = None) -> pa.RecordBatch:
    """The batch without cnn_input, plus cnn_features (zeros where there was no crop) and seconds_cnn; with
    ``failure`` (the CNN stage failed in this worker) the rows that had a crop get status cnn_error and that
    message, so the job goes on and those images are processed again by the next run."""
    if failure is not None and present.size:
        columns = dict(zip(batch.schema.names, batch.columns, strict=True))
        status, error = columns["status"].to_pylist(), columns["error"].to_pylist()
        for row in present.tolist():
            status[row], error[row] = CNN_ERROR, failure
        columns["status"] = pa.array(status, type=columns["status"].type)
        columns["error"] = pa.array(error, type=columns["error"].type)
        batch = pa.RecordBatch.from_arrays(list(columns.values()), schema=batch.schema)
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
