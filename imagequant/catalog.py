"""Catalog reading: challenge-format CSV or Parquet, labeled or unlabeled, validated before any Spark work.

Labeled rows: ``image_link,group_id,entity_name,entity_value``; unlabeled: ``index,image_link,group_id,
entity_name``. Extra columns are kept and ignored. Rows without ``index`` are numbered in file order. A bad
row (empty link, unknown entity) is kept and marked, never dropped.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pyarrow.parquet as pq

from imagequant.core.schema import ROWS
from imagequant.core.units import ENTITY_UNITS
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
    has_index: bool


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
        raise CatalogError(
            f"catalog {path} lacks column(s) {', '.join(missing)}; found: {', '.join(columns)}. Expected "
            "image_link,group_id,entity_name,entity_value (labeled) or index,image_link,group_id,entity_name"
        )
    return CatalogInfo(path, fmt, columns, "entity_value" in columns, "index" in columns)


def classify_row(link: object, entity: object) -> tuple[str, str]:
    """(row_status, row_error) of one catalog row before any fetching: ``ok`` or why it cannot be served."""
    link_text = "" if link is None or (isinstance(link, float) and pd.isna(link)) else str(link).strip()
    entity_text = "" if entity is None or (isinstance(entity, float) and pd.isna(entity)) else str(entity).strip()
    if not link_text:
        return "bad_link", "image_link is empty"
    scheme = urlsplit(link_text).scheme.lower()
    if scheme not in ("http", "https"):
        return "bad_link", f"image_link is not an http(s) URL: {link_text[:200]!r}"
    if entity_text not in ENTITY_UNITS:
        return "unknown_entity", f"entity_name {entity_text!r} is not one of {', '.join(sorted(ENTITY_UNITS))}"
    return "ok", ""


def normalize_rows(frame: pd.DataFrame, start_index: int = 0) -> pd.DataFrame:
    """Pure pandas transform to the rows contract (ROW_COLUMNS plus any extra columns, kept at the end).

    ``start_index`` numbers rows that have no ``index`` column, so chunks read in file order get
    consecutive numbers.
    """
    out = frame.copy()
    if "index" not in out.columns:
        out.insert(0, "index", range(start_index, start_index + len(out)))
    if "entity_value" not in out.columns:
        out["entity_value"] = None
    for column in ("image_link", "group_id", "entity_name"):
        out[column] = out[column].where(out[column].notna(), "").astype(str).str.strip()
    out["entity_value"] = out["entity_value"].where(out["entity_value"].notna(), None)
    index_numbers = pd.to_numeric(out["index"], errors="coerce")
    if index_numbers.isna().any():
        bad = out.loc[index_numbers.isna(), "index"].iloc[0]
        raise CatalogError(f"catalog column index must hold integers; found {bad!r}")
    out["index"] = index_numbers.astype("int64")
    statuses = [classify_row(link, entity) for link, entity in zip(out["image_link"], out["entity_name"], strict=True)]
    out["row_status"] = [s for s, _ in statuses]
    out["row_error"] = [e for _, e in statuses]
    out["image_id"] = [image_id(link) if link else "" for link in out["image_link"]]
    extras = [c for c in out.columns if c not in ROW_COLUMNS]
    return out[list(ROW_COLUMNS) + extras]


def read_catalog(path: str | Path) -> pd.DataFrame:
    """Reads a whole catalog into pandas (library use, tests, profiling of catalogs that fit in memory)."""
    info = inspect_catalog(path)
    try:
        if info.format == "parquet":
            frame = pq.read_table(str(info.path)).to_pandas()
            frame = frame.astype({c: "string" for c in frame.columns if c != "index"}).astype(object)
        else:
            frame = pd.read_csv(info.path, dtype=str, keep_default_na=False, na_values=[], encoding="utf-8-sig")
    except Exception as exc:
        raise CatalogError(f"catalog {info.path} cannot be read: {exc}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.replace({"": None}) if len(frame) else frame
    if "index" in frame.columns and frame["index"].isna().any():
        raise CatalogError(f"catalog {info.path}: column index has empty values")
    return normalize_rows(frame)
