"""The store's tables declared once, the canonical images view, store locations and the format version."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imagequant.core import locations
from imagequant.core.schema import (
    IMAGES,
    OCR_STAGE,
    PREDICTIONS,
    ROWS,
    STORE_FORMAT,
    TOKEN_COLUMN_NAMES,
    StoreFormatError,
    canonical_images,
    check_manifest,
    tokens_from_record,
    tokens_to_columns,
)
from imagequant.core.tokens import OcrToken
from imagequant.evaluation.evaluate import read_store_images


def test_every_form_of_a_table_comes_from_its_declaration() -> None:
    assert IMAGES.arrow_schema().names == IMAGES.names()
    assert set(TOKEN_COLUMN_NAMES) < set(IMAGES.names())
    assert OCR_STAGE.names()[-1] == "cnn_input" and "cnn_features" not in OCR_STAGE
    assert ROWS.partition == "run_date" and IMAGES.partition == "batch"
    failed = IMAGES.empty_record(image_id="x", status="timeout")
    assert failed["tok_text"] == [] and failed["width"] == 0 and failed["error"] == "" and failed["status"] == "timeout"
    assert PREDICTIONS["value"].nullable and not PREDICTIONS["index"].nullable


def test_tokens_round_trip_through_the_columns() -> None:
    tokens = [OcrToken("500g", 91.5, 1, 2, 3, 4, block=0, line=1, word=0, angle=90)]
    assert tokens_from_record(tokens_to_columns(tokens)) == tokens


def test_canonical_view_keeps_the_ok_row_then_the_newest() -> None:
    frame = pd.DataFrame({
        "image_id": ["a", "a", "b", "b", "c"],
        "status": ["ok", "timeout", "timeout", "http_status", "ok"],
        "processed_at": ["2024-01-01", "2024-02-01", "2024-01-01", "2024-03-01", "2024-01-01"],
    })
    view = canonical_images(frame).set_index("image_id")
    assert view.loc["a", "status"] == "ok" and view.loc["b", "status"] == "http_status" and len(view) == 3


def test_locations_turn_paths_into_uris(tmp_path: Path) -> None:
    uri = locations.store_uri(tmp_path)
    assert uri == tmp_path.resolve().as_uri() and locations.store_uri(uri + "/") == uri
    assert locations.join(tmp_path, "images", "batch=1") == f"{uri}/images/batch=1"
    assert locations.local_path(uri) == tmp_path.resolve() and locations.local_path("hdfs://nn/store") is None
    (tmp_path / "note.txt").write_text("hi")
    assert locations.read_text(locations.join(uri, "note.txt")) == "hi"
    assert locations.read_text(locations.join(uri, "absent.txt")) is None


def _store(root: Path, manifest: dict | None) -> Path:
    part = root / "images" / "batch=1"
    part.mkdir(parents=True)
    record = IMAGES.empty_record(image_id="a", image_link="https://x.example/a.jpg", status="ok",
                                 processed_at="2024-01-01")
    pq.write_table(pa.Table.from_pylist([record], IMAGES.arrow_schema()), part / "part-0.parquet")
    if manifest is not None:
        (root / "_manifest.json").write_text(json.dumps(manifest))
    return root


def test_readers_refuse_a_store_of_another_format(tmp_path: Path) -> None:
    assert len(read_store_images(_store(tmp_path / "old", None))) == 1  # before formats were recorded: format 1
    assert len(read_store_images(_store(tmp_path / "now", {"format": STORE_FORMAT, "runs": []}))) == 1
    future = _store(tmp_path / "future", {"format": STORE_FORMAT + 1, "runs": []})
    with pytest.raises(StoreFormatError, match=f"format {STORE_FORMAT + 1}.*reads format {STORE_FORMAT}"):
        read_store_images(locations.store_uri(future))
    with pytest.raises(StoreFormatError):
        check_manifest({"format": "2"}, "somewhere")


def test_the_readings_codec_round_trips_an_images_record_and_reads_a_failed_image_as_empty() -> None:
    from imagequant.core.schema import READING_COLUMN_NAMES, READINGS_JSON, TRAINING

    tokens = [OcrToken("500", 91.5, 10, 20, 30, 12, 1, 1, 0, 0), OcrToken("g", 88.0, 42, 20, 9, 12, 1, 1, 1, 90)]
    record = {**tokens_to_columns(tokens), "line_segments": [1.0, 2.0, 3.0, 4.0], "status": "ok"}
    assert TRAINING["tokens_json"].codec is READINGS_JSON
    assert READINGS_JSON.fields == READING_COLUMN_NAMES
    decoded = READINGS_JSON.decode(READINGS_JSON.encode(record))
    assert tokens_from_record(decoded) == tokens
    assert decoded["line_segments"] == [1.0, 2.0, 3.0, 4.0]
    # a store written before line segments existed: null segments read as none
    assert READINGS_JSON.decode(READINGS_JSON.encode({**record, "line_segments": None}))["line_segments"] == []
    # the training table's cell for a row whose image failed (or is missing)
    for cell in ("{}", "", None):
        assert READINGS_JSON.decode(cell) == {name: [] for name in READING_COLUMN_NAMES}
