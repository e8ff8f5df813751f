"""Catalog reading: challenge-format CSV or Parquet, labeled or unlabeled, validated before any Spark work.

Labeled rows: ``image_link,group_id,entity_name,entity_value``; unlabeled: ``index,image_link,group_id,
entity_name``. Extra columns are kept and ignored. Rows without ``index`` are numbered in file order. A bad
row (empty link, unknown entity) is kept and marked, never dropped.
"""

from __future__ import annotations

import csv
import decimal
import gzip
import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from imagequant.core.entities import canonical_entity_name
from imagequant.core.schema import ROWS
from imagequant.core.units import ENTITY_UNITS, parse_label
from imagequant.errors import CatalogError

REQUIRED_COLUMNS = ("image_link", "group_id", "entity_name")
# The rows table without what the extract run adds (its run id).
ROW_COLUMNS = tuple(name for name in ROWS.names() if name != "run_id")


@dataclass(frozen=True)
class CatalogInfo:
    path: Path
    format: str  # "csv" or "parquet"
    columns: tuple[str, ...]
    labeled: bool


def image_id(link: str) -> str:
    """A stable id of an image link: the first 16 hex digits of its SHA-1 (same link, same id, everywhere)."""
    return hashlib.sha1(link.strip().encode("utf-8")).hexdigest()[:16]


def _format_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")) or (path.is_dir() and any(path.glob("*.parquet"))):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".tsv", ".txt", ".gz")):
        return "csv"
    raise CatalogError(f"catalog {path}: unknown format (expected .csv, .csv.gz or .parquet)")


def inspect_catalog(path: str | Path) -> CatalogInfo:
    """Reads only the header: checks the file exists, is readable and has the required columns."""
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"catalog {path} does not exist")
    fmt = _format_of(path)
    try:
        if fmt == "parquet":
            columns = tuple(pq.ParquetDataset(str(path)).schema.names)
        else:
            opener = gzip.open if path.name.lower().endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:  # type: ignore[operator]
                header = next(csv.reader(handle), None)
            if not header:
                raise CatalogError(f"catalog {path} is empty (no header line)")
            columns = tuple(c.strip() for c in header)
    except CatalogError:
        raise
    except (OSError, UnicodeDecodeError, EOFError, ValueError) as exc:
        raise CatalogError(f"catalog {path} cannot be read: {exc}") from exc
    except Exception as exc:  # pyarrow raises its own error types for broken Parquet
        raise CatalogError(f"catalog {path} cannot be read: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        found = ", ".join(c if c.isprintable() else repr(c) for c in columns)  # no control bytes on a terminal
        other = next((name for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars"))
                      if fmt != "parquet" and len(columns) == 1 and sep in columns[0]), None)
        hint = f" (its header is separated by {other}: a catalog's columns are separated by commas)" if other else ""
        raise CatalogError(
            f"catalog {path} lacks column(s) {', '.join(missing)}; found: {found}{hint}. Expected "
            "image_link,group_id,entity_name,entity_value (labeled) or index,image_link,group_id,entity_name"
        )
    return CatalogInfo(path, fmt, columns, "entity_value" in columns)


_INT_TEXT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def parse_index(value: object) -> int | None:
    """The integer an ``index`` value stands for, or None when it is not exactly an int64 integer.

    Text must be an integer literal ("12", " 12 ", "-3"): "1.5", "1e3", "12.0" and "0x10" are not.
    Numbers from Parquet must be integral and finite; booleans and values beyond int64 are refused.
    """
    if isinstance(value, (bool, np.bool_)) or value is None:
        return None
    if isinstance(value, (int, np.integer)):
        number = int(value)
    elif isinstance(value, (float, np.floating)):
        if not math.isfinite(value) or not float(value).is_integer():
            return None
        number = int(value)
    elif isinstance(value, decimal.Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            return None
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not _INT_TEXT.fullmatch(text):
            return None
        number = int(text)
    else:
        return None
    return number if _INT64_MIN <= number <= _INT64_MAX else None


def parse_index_column(values: Sequence[object], label: str, where: Callable[[int], str]) -> np.ndarray:
    """``values`` as int64, or CatalogError naming ``where(i)`` (a line or row) and the first bad value."""
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        number = parse_index(value)
        if number is None:
            if value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip()):
                raise CatalogError(f"{label}: {where(i)}: column index is empty")
            raise CatalogError(f"{label}: {where(i)}: column index must hold an integer (int64); found {value!r}")
        out[i] = number
    return out


def check_unique_index(index: Sequence[int], label: str, where: Callable[[int], str]) -> None:
    """CatalogError naming the first index value that appears twice and where."""
    first: dict[int, int] = {}
    for i, value in enumerate(index):
        seen = first.setdefault(int(value), i)
        if seen != i:
            raise CatalogError(f"{label}: index {int(value)} appears more than once ({where(seen)} and {where(i)})")


def read_csv_strict(path: Path, label: str) -> tuple[list[str], list[list[str]], list[int]]:
    """(header, rows, line number of each row) of a comma-separated file, every row exactly as wide as the
    header. pandas would take a row with an extra field (a trailing comma) as a sign that the first column
    is the index and shift every column silently; here it is a CatalogError naming the line."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:  # type: ignore[operator]
            reader = csv.reader(handle, strict=True)
            header = next(reader, None)
            if not header:
                raise CatalogError(f"{label} is empty (no header line)")
            header = [c.strip() for c in header]
            width = len(header)
            rows: list[list[str]] = []
            lines: list[int] = []
            end = reader.line_num
            for record in reader:
                start, end = end + 1, reader.line_num
                if not record:
                    continue  # a blank line
                if len(record) != width:
                    raise CatalogError(
                        f"{label}: line {start} has {len(record)} fields but the header has {width} "
                        f"({', '.join(header)}); a stray or missing comma would shift every column"
                    )
                rows.append(record)
                lines.append(start)
    except CatalogError:
        raise
    except (OSError, UnicodeDecodeError, EOFError, ValueError, csv.Error) as exc:
        raise CatalogError(f"{label} cannot be read: {exc}") from exc
    named = [c if c else f"Unnamed: {i}" for i, c in enumerate(header)]
    duplicated = sorted({c for c in named if named.count(c) > 1})
    if duplicated:
        raise CatalogError(f"{label}: column(s) {', '.join(duplicated)} appear more than once in the header")
    return named, rows, lines


def classify_row(link: object, entity: object) -> tuple[str, str]:
    """(row_status, row_error) of one catalog row before any fetching: ``ok`` or why it cannot be served."""
    link_text = "" if link is None or (isinstance(link, float) and pd.isna(link)) else str(link).strip()
    entity_text = canonical_entity_name("" if entity is None or (isinstance(entity, float) and pd.isna(entity))
                                        else str(entity))
    if not link_text:
        return "bad_link", "image_link is empty"
    scheme = urlsplit(link_text).scheme.lower()
    if scheme not in ("http", "https"):
        return "bad_link", f"image_link is not an http(s) URL: {link_text[:200]!r}"
    if entity_text not in ENTITY_UNITS:
        return "unknown_entity", f"entity_name {entity_text!r} is not one of {', '.join(sorted(ENTITY_UNITS))}"
    return "ok", ""


def normalize_rows(
    frame: pd.DataFrame,
    start_index: int = 0,
    *,
    label: str = "catalog",
    where: Callable[[int], str] | None = None,
    unique_index: bool | None = None,
) -> pd.DataFrame:
    """Pure pandas transform to the rows contract (ROW_COLUMNS plus any extra columns, kept at the end).

    ``start_index`` numbers rows that have no ``index`` column, so chunks read in file order get
    consecutive numbers. A given ``index`` must hold int64 integers (CatalogError naming ``where(i)``, by
    default "row i+1", and the value); it must be unique when ``unique_index``, by default when the
    catalog is unlabeled (each of its rows needs its own prediction).
    """
    where = where or (lambda i: f"row {i + 1}")
    out = frame.copy()
    labeled = "entity_value" in out.columns
    given_index = "index" in out.columns
    if not given_index:
        out.insert(0, "index", range(start_index, start_index + len(out)))
    if "entity_value" not in out.columns:
        out["entity_value"] = None
    for column in ("image_link", "group_id", "entity_name"):
        out[column] = out[column].where(out[column].notna(), "").astype(str).str.strip()
    out["entity_name"] = out["entity_name"].map(canonical_entity_name)
    out["entity_value"] = out["entity_value"].where(out["entity_value"].notna(), None)
    if given_index:
        out["index"] = parse_index_column(list(out["index"]), label, where)
        if unique_index if unique_index is not None else not labeled:
            check_unique_index(out["index"].tolist(), label, where)
    out["index"] = out["index"].astype("int64")
    statuses = [classify_row(link, entity) for link, entity in zip(out["image_link"], out["entity_name"], strict=True)]
    out["row_status"] = [s for s, _ in statuses]
    out["row_error"] = [e for _, e in statuses]
    out["image_id"] = [image_id(link) if link else "" for link in out["image_link"]]
    extras = [c for c in out.columns if c not in ROW_COLUMNS]
    return out[list(ROW_COLUMNS) + extras]


def _text_or_none(value: object) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text if text else None


def read_table_strict(path: Path, fmt: str, label: str, *, parquet_as_text: bool = True
                      ) -> tuple[pd.DataFrame, Callable[[int], str]]:
    """A CSV (every row as wide as the header) or Parquet file as a DataFrame of text values (None where
    empty; Parquet columns keep their types unless ``parquet_as_text``) with ``index``, when present, left as
    read; and the description of row i ("line N", "row N")."""
    if fmt == "parquet":
        try:
            table = pq.read_table(str(path))
        except Exception as exc:  # pyarrow raises its own error types for broken Parquet
            raise CatalogError(f"{label} cannot be read: {exc}") from exc
        names = [str(c).strip() for c in table.column_names]
        if len(set(names)) != len(names):
            raise CatalogError(f"{label}: a column name appears more than once: {', '.join(names)}")
        table = table.rename_columns(names)
        frame = table.to_pandas().reset_index(drop=True)
        for name in frame.columns:
            if name == "index":
                # Exact values: to_pandas() turns an int64 column with nulls into floats.
                frame[name] = pd.Series(table.column(name).to_pylist(), index=frame.index, dtype=object)
            elif parquet_as_text:
                frame[name] = pd.Series([_text_or_none(v) for v in frame[name]], index=frame.index, dtype=object)
        return frame, lambda i: f"row {i + 1}"
    header, rows, lines = read_csv_strict(path, label)
    columns = {name: [r[j] if r[j] != "" else None for r in rows] for j, name in enumerate(header)}
    return pd.DataFrame(columns, columns=header, dtype=object), lambda i: f"line {lines[i]}"


def require_labels(frame: pd.DataFrame, name: str) -> None:
    """Training's catalogs must hold labels: one without any ``entity_value`` is a CatalogError naming it."""
    if "entity_value" not in frame or frame["entity_value"].isna().all():
        raise CatalogError(f"catalog {name} has no labels (entity_value); training needs a labeled catalog")


# The attribute of a frame read_catalog made that names the file (or Parquet folder) it holds, unchanged.
CATALOG_FILE_ATTR = "catalog_file"


def read_catalog(path: str | Path, *, unique_index: bool | None = None) -> pd.DataFrame:
    """Reads a whole catalog into pandas (library use, tests, profiling of catalogs that fit in memory).

    Strict where pandas is lenient: a CSV row wider or narrower than the header, an ``index`` that is not
    an int64 integer, and (for unlabeled catalogs, or when ``unique_index``) a repeated ``index`` are
    CatalogErrors naming the line (CSV) or row (Parquet)."""
    info = inspect_catalog(path)
    label = f"catalog {info.path}"
    frame, where = read_table_strict(info.path, info.format, label)
    rows = normalize_rows(frame, label=label, where=where, unique_index=unique_index)
    rows.attrs["path"] = str(info.path)  # for messages about the catalog once it travels as a frame
    rows.attrs[CATALOG_FILE_ATTR] = str(info.path)  # what a name derived from the catalog's bytes hashes
    return rows


@dataclass(frozen=True)
class LabeledRow:
    """One labeled row of a local labels file (the realdev layout: ``image_file`` names the image in a folder)."""

    image_file: str
    entity: str
    label: str
    value: float | None  # the label's value and unit; None for a range or an unreadable label
    unit: str | None


def read_labels(path: str | Path) -> list[LabeledRow]:
    """Rows of a labels CSV or Parquet file with ``entity_name``, ``entity_value`` and ``image_file`` (or
    ``image_link``, whose URL path's basename names the file), read as strictly as a catalog."""
    path = Path(path)
    label = f"labels {path}"
    if not path.exists():
        raise CatalogError(f"{label} does not exist")
    frame, _ = read_table_strict(path, _format_of(path), label)
    missing = [c for c in ("entity_name", "entity_value") if c not in frame.columns]
    if "image_file" not in frame.columns and "image_link" not in frame.columns:
        missing.append("image_file (or image_link)")
    if missing:
        raise CatalogError(f"{label} lacks the column(s) {', '.join(missing)}")
    rows: list[LabeledRow] = []
    for rec in frame.to_dict("records"):
        link = _text_or_none(rec.get("image_link")) or ""
        image_file = _text_or_none(rec.get("image_file")) or Path(urlsplit(link).path).name
        text = _text_or_none(rec.get("entity_value")) or ""
        parsed = parse_label(text)
        known = parsed.kind == "value" and parsed.value is not None and parsed.unit is not None
        rows.append(LabeledRow(image_file, canonical_entity_name(_text_or_none(rec.get("entity_name")) or ""), text,
                               parsed.value if known else None, parsed.unit if known else None))
    return rows
