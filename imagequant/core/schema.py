"""The feature store's tables, declared once.

Every other form is derived from these declarations: the Spark schemas (``imagequant.spark.schema``), the
Arrow schemas (:meth:`Table.arrow_schema`), the pandas column lists (:meth:`Table.names`) and the empty
record of a failed image (:meth:`Table.empty_record`). Adding a column of the store is one line here, plus
the code that fills it.

Layout of a store (``STORE`` is a local path or any URI that Spark and pyarrow can open)::

    STORE/images/batch=<key>/part-*.parquet   IMAGES: one row per distinct image processed in that batch
    STORE/rows/run_date=<key>/part-*.parquet  ROWS: one row per catalog row of that run
    STORE/_manifest.json                      {"format": STORE_FORMAT, "runs": [one summary per run]}
    STORE/_training/<catalogs-hash>/          TRAINING: labeled rows joined with their images
    STORE/_staging/<run_id>/...               work in progress, invisible to readers
    STORE/_lock.json                          the extract run writing the store now (one at a time)
    STORE/_quarantine/<table>/...             damaged Parquet files moved out of the tables
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imagequant.core.tokens import OcrToken
from imagequant.errors import UsageError

# Bumped whenever a reader of the old layout would misread the new one; readers refuse other formats.
STORE_FORMAT = 1
MANIFEST_FILE = "_manifest.json"
TRAINING_DIR = "_training"
STAGING_DIR = "_staging"
LOCK_FILE = "_lock.json"
QUARANTINE_DIR = "_quarantine"

# ResNet-50's pooled feature length. Every images row holds exactly this many floats (zeros when the image
# failed), so the column is fixed-size.
CNN_FEATURE_DIM = 2048

# Column kinds: scalars, and "list<scalar>" for arrays.
_SCALAR_KINDS = ("string", "int", "long", "float", "double", "binary", "bool")


@dataclass(frozen=True)
class JsonFieldsCodec:
    """A string column holding several columns of a record as one JSON object. Spark writes it with
    ``to_json(struct(*fields))`` (:mod:`imagequant.spark.training_table`), which gives the object
    :meth:`encode` gives; readers use :meth:`decode`."""

    fields: tuple[str, ...]

    def encode(self, record: Mapping[str, Any]) -> str:
        return json.dumps({name: record.get(name) for name in self.fields}, separators=(",", ":"))

    def decode(self, text: object) -> dict[str, Any]:
        """The fields, each a list; all empty for an empty or null cell, or one without readings (a failed
        image is written as ``{}`` and its array fields as null)."""
        columns = json.loads(text) if isinstance(text, str) and text else {}
        present = bool(columns) and columns.get(self.fields[0]) is not None
        return {name: (columns.get(name) or []) if present else [] for name in self.fields}


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    nullable: bool = False
    codec: JsonFieldsCodec | None = None  # how a value is encoded, for columns that pack others

    def __post_init__(self) -> None:
        inner = self.kind[5:-1] if self.kind.startswith("list<") and self.kind.endswith(">") else self.kind
        if inner not in _SCALAR_KINDS:
            raise ValueError(f"column {self.name}: unknown kind {self.kind!r}")

    @property
    def element_kind(self) -> str | None:
        """The element kind of a list column, None for a scalar one."""
        return self.kind[5:-1] if self.kind.startswith("list<") else None

    def empty_value(self) -> Any:
        """What a record holds in this column when there is nothing to say (a failed image)."""
        if self.element_kind is not None:
            return []
        return {"string": "", "binary": b"", "bool": False, "float": 0.0, "double": 0.0}.get(self.kind, 0)


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    partition: str | None = None  # the hive partition column of the folders, when the table has one

    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def __getitem__(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name} has no column {name!r}")

    def __contains__(self, name: object) -> bool:
        return any(c.name == name for c in self.columns)

    def select(self, *names: str, name: str | None = None) -> Table:
        """A table of the named columns, in the order given."""
        return Table(name or self.name, tuple(self[n] for n in names))

    def without(self, *names: str, name: str | None = None) -> Table:
        return Table(name or self.name, tuple(c for c in self.columns if c.name not in names))

    def plus(self, *columns: Column, name: str | None = None) -> Table:
        return Table(name or self.name, (*self.columns, *columns))

    def empty_record(self, **values: Any) -> dict[str, Any]:
        """A record with every column empty, then ``values``."""
        record = {c.name: c.empty_value() for c in self.columns}
        record.update(values)
        return record

    def arrow_schema(self) -> Any:
        import pyarrow as pa

        scalars = {"string": pa.string(), "int": pa.int32(), "long": pa.int64(), "float": pa.float32(),
                   "double": pa.float64(), "binary": pa.binary(), "bool": pa.bool_()}
        fields = []
        for c in self.columns:
            kind = scalars[c.element_kind] if c.element_kind else None
            fields.append(pa.field(c.name, pa.list_(kind) if kind is not None else scalars[c.kind], c.nullable))
        return pa.schema(fields)


# --- OCR tokens: stored as parallel arrays, one per OcrToken field ------------------------------------------

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
TOKEN_COLUMNS = tuple(Column(f"tok_{name}", f"list<{kind}>") for name, kind in TOKEN_FIELDS)
TOKEN_COLUMN_NAMES = tuple(c.name for c in TOKEN_COLUMNS)

# The drawn line segments of the image (flat x1, y1, x2, y2, ... in original pixels): dimension drawings are
# read by which line a measure labels (imagequant.core.geometry). Null in stores written before it existed.
LINE_SEGMENTS = Column("line_segments", "list<float>", nullable=True)
# What a row's candidates are computed from, besides the image size: the tokens and the line segments.
READING_COLUMNS = (*TOKEN_COLUMNS, LINE_SEGMENTS)
READING_COLUMN_NAMES = tuple(c.name for c in READING_COLUMNS)
# The reading columns of an image in one JSON string: the training table's ``tokens_json`` (Petastorm stacks
# list columns into rectangular arrays; ragged token lists travel as text).
READINGS_JSON = JsonFieldsCodec(READING_COLUMN_NAMES)


def tokens_to_columns(tokens: Sequence[OcrToken]) -> dict[str, list[Any]]:
    """The image's tokens as the parallel ``tok_*`` arrays of the images table."""
    return {f"tok_{name}": [getattr(t, name) for t in tokens] for name, _ in TOKEN_FIELDS}


def tokens_from_record(record: Mapping[str, Any]) -> list[OcrToken]:
    """Rebuilds the OcrToken list from one record holding the ``tok_*`` arrays (dict, pandas row, Spark Row)."""
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


# --- the tables ---------------------------------------------------------------------------------------------

IMAGES = Table(
    "images",
    (
        Column("image_id", "string"),
        Column("image_link", "string"),
        Column("status", "string"),
        Column("error", "string"),
        Column("source", "string"),
        Column("width", "int"),
        Column("height", "int"),
        Column("ocr_engine", "string"),
        *READING_COLUMNS,
        Column("ocr_text", "string"),
        # the OCR passes run on the image, "+"-joined (upright, regions, detail, rotated): a second look
        # shows here; empty in stores written before it existed
        Column("ocr_passes", "string", nullable=True),
        Column("cnn_weights", "string"),
        Column("cnn_features", "list<float>"),
        Column("seconds_fetch", "double"),
        Column("seconds_decode", "double"),
        Column("seconds_ocr", "double"),
        Column("seconds_cnn", "double"),
        Column("run_id", "string"),
        Column("processed_at", "string"),
    ),
    partition="batch",
)

ROWS = Table(
    "rows",
    (
        Column("index", "long"),
        Column("image_link", "string"),
        Column("group_id", "string"),
        Column("entity_name", "string"),
        Column("entity_value", "string", nullable=True),
        Column("image_id", "string"),
        Column("row_status", "string"),
        Column("row_error", "string"),
        Column("run_id", "string"),
    ),
    partition="run_date",
)

# The extract job's intermediate between the fetch/OCR stage and the CNN stage: the CNN stage turns
# ``cnn_input`` (the preprocessed crop's bytes) into the CNN columns.
CNN_STAGE_COLUMNS = ("cnn_weights", "cnn_features", "seconds_cnn", "run_id", "processed_at")
OCR_STAGE = IMAGES.without(*CNN_STAGE_COLUMNS, name="ocr_stage").plus(Column("cnn_input", "binary"))

# What inference and evaluation read of an image: its status, size and tokens (and the features).
IMAGE_EVIDENCE = IMAGES.select("image_id", "status", "error", "width", "height", "ocr_engine", *READING_COLUMN_NAMES,
                               "cnn_features", name="image_evidence")

# The training table: labeled rows joined with their image. Token arrays travel as one JSON column and
# the CNN features as a fixed-length array (zeros when absent), because Petastorm stacks list columns
# into rectangular arrays.
TRAINING = Table(
    "training",
    (
        Column("index", "long"),
        Column("source", "int"),
        Column("group_id", "string"),
        Column("entity_name", "string"),
        Column("entity_value", "string"),
        Column("image_id", "string"),
        Column("status", "string"),
        Column("width", "int"),
        Column("height", "int"),
        Column("tokens_json", "string", codec=READINGS_JSON),
        Column("has_cnn", "bool"),
        Column("cnn_features", "list<float>"),
    ),
)

# What predict says about the chosen mention; null on rows without one.
EVIDENCE_COLUMNS = (
    Column("evidence_text", "string", nullable=True),
    Column("evidence_left", "int", nullable=True),
    Column("evidence_top", "int", nullable=True),
    Column("evidence_width", "int", nullable=True),
    Column("evidence_height", "int", nullable=True),
    Column("evidence_angle", "int", nullable=True),
    Column("reasons", "string", nullable=True),
)
EVIDENCE_COLUMN_NAMES = tuple(c.name for c in EVIDENCE_COLUMNS)

# predict's output, one row per catalog row.
PREDICTIONS = Table(
    "predictions",
    (
        Column("index", "long"),
        # the catalog row's own image_link and entity_name, so the file says which row it answers and
        # evaluate can tell predictions of another catalog or row order
        Column("image_link", "string"),
        Column("entity_name", "string"),
        Column("prediction", "string"),
        Column("value", "double", nullable=True),
        Column("unit", "string", nullable=True),
        Column("score", "double"),
        # the calibrated probability that the answer (value, unit) is right; null when the model directory
        # has no confidence model or the row no candidate
        Column("confidence", "double", nullable=True),
        Column("n_candidates", "int"),
        Column("status", "string"),
        Column("error", "string"),
        # which reader read the row's image (the images table's ocr_engine, e.g.
        # rapidocr:ppocrv6_small+fallback=ppocrv4 r2); null when the store holds no record of the image
        Column("ocr_reader", "string", nullable=True),
        # whether the row's image was among those the model directory was fitted on (its answer and confidence
        # are then in-sample); null for the rule baseline and model directories that do not record them
        Column("in_training", "bool", nullable=True),
        # the mention the value was read from (null without one): its text, its box in original-image
        # pixels, the rotation of the OCR pass that read it, and the rules' reasons (comma-separated, the
        # vocabulary of imagequant.scoring.rules.REASONS)
        *EVIDENCE_COLUMNS,
    ),
)


CANONICAL_KEY = "image_id"


def canonical_images(frame: Any) -> Any:
    """The canonical images view of a pandas frame of images rows: of each image's rows, the ``ok`` one
    first, then the newest (``processed_at``). Spark's reader (``imagequant.spark.store.read_images``)
    orders by the same two keys."""
    failed = frame["status"] != "ok"
    ranked = frame.assign(_failed=failed).sort_values(["_failed", "processed_at"], ascending=[True, False],
                                                      kind="stable")
    return ranked.drop_duplicates(CANONICAL_KEY).drop(columns="_failed").reset_index(drop=True)


class StoreFormatError(UsageError):
    """A store written in a format this code cannot read."""


def check_manifest(manifest: Mapping[str, Any] | None, where: str) -> None:
    """Refuses a manifest of another store format. A manifest without a format is format 1 (the layout
    before the format was recorded, which format 1 reads unchanged)."""
    if manifest is None:
        return
    found = manifest.get("format", 1)
    if found != STORE_FORMAT:
        raise StoreFormatError(
            f"store {where} has format {found!r}, this version of imagequant reads format {STORE_FORMAT}; "
            "extract the catalog into a new store (or use the imagequant version that wrote it)"
        )
