"""Reading a written training table back, row by row, with Petastorm (the default) or pyarrow.

Both loaders yield the same dicts (``cnn_features`` a float32 array); the table is opened at any store
location (local path or URI) through :mod:`imagequant.core.locations`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imagequant.core import locations
from imagequant.core.schema import CNN_FEATURE_DIM
from imagequant.errors import UsageError

LOADERS = ("petastorm", "pyarrow")


@dataclass
class TrainingTable:
    """A written training table: where it is (a URI) and what its join found."""

    uri: str
    rows: int
    usable_rows: int
    missing_images: int
    failed_images: int
    # usable rows by the CNN weights their image's features were made with (the images table's cnn_weights)
    cnn_weights: dict[str, int] = field(default_factory=dict)
    # usable rows by the reader that read their image (the images table's ocr_engine)
    ocr_readers: dict[str, int] = field(default_factory=dict)
    # the catalogs' rows left out before the join, by reason: unlabeled, or their row_status (bad_link, ...)
    left_out: dict[str, int] = field(default_factory=dict)


def _row_dicts(columns: Mapping[str, Any], n: int) -> Iterator[dict[str, Any]]:
    names = list(columns)
    for i in range(n):
        yield {name: columns[name][i] for name in names}


def _petastorm_column(name: str, values: Any) -> Any:
    """One column of a Petastorm batch in the types the pyarrow loader yields: the CNN features as one float32
    matrix, every other column a Python list (indexing a numpy array row by row makes a numpy scalar each time,
    which was most of Petastorm's extra cost per row)."""
    if name == "cnn_features":
        if len(values) == 0:
            return np.zeros((0, CNN_FEATURE_DIM), dtype=np.float32)
        if all(v is not None and len(v) == CNN_FEATURE_DIM for v in values):
            return np.stack(values).astype(np.float32, copy=False)
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def iter_training_records(location: str, loader: str = "petastorm", workers: int = 2) -> Iterator[dict[str, Any]]:
    """Rows of the training table at ``location`` (a path or URI) as dicts (``cnn_features`` a float32
    array), via Petastorm or pyarrow."""
    if loader not in LOADERS:
        raise UsageError(f"train.loader must be one of {', '.join(LOADERS)}, not {loader!r}")
    if loader == "petastorm":
        from petastorm import make_batch_reader

        with warnings.catch_warnings():
            # petastorm 0.12 uses pyarrow's legacy dataset API, which warns on every call under pyarrow 14
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            with make_batch_reader(locations.store_uri(location), reader_pool_type="thread", workers_count=workers,
                                   num_epochs=1, shuffle_row_groups=False) as reader:
                for batch in reader:
                    columns = {name: _petastorm_column(name, values) for name, values in batch._asdict().items()}
                    yield from _row_dicts(columns, len(columns["index"]))
        return
    import pyarrow.parquet as pq

    filesystem, path = locations.arrow_filesystem(location)
    table = pq.read_table(path, filesystem=filesystem)
    for record_batch in table.to_batches():
        columns: dict[str, Any] = {}
        for name in record_batch.schema.names:
            column = record_batch.column(name)
            if name == "cnn_features":
                columns[name] = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, CNN_FEATURE_DIM)
            else:
                columns[name] = column.to_pylist()
        yield from _row_dicts(columns, record_batch.num_rows)

