"""predict's output path: rows brought to the driver a chunk at a time, in order, and written under partial
names until every row is in."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from imagequant.spark.inference import (
    OUTPUT_COLUMNS,
    PREDICTIONS_FILE,
    SUBMISSION_FILE,
    PredictionFiles,
    typed,
)
from imagequant.submission import read_submission


def test_arrow_chunks_bring_every_row_in_order_a_chunk_at_a_time(spark) -> None:
    from imagequant.spark.session import arrow_chunks

    frame = spark.range(0, 3000, numPartitions=5).selectExpr("(id * 7919) % 3000 AS index", "id AS source")
    ordered = frame.repartition(3).orderBy("index")
    chunks = list(arrow_chunks(ordered, 250))
    batch = int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch"))
    assert len(chunks) >= 3000 // (250 + batch)
    assert all(c.num_rows <= 250 + batch for c in chunks)
    assert [v for c in chunks for v in c.column("index").to_pylist()] == list(range(3000))


def test_arrow_chunks_of_an_empty_frame_are_none(spark) -> None:
    from imagequant.spark.session import arrow_chunks

    assert list(arrow_chunks(spark.range(0).selectExpr("id AS index"), 10)) == []


def _predictions(indices: range, answered: bool = True) -> pd.DataFrame:
    rows = [{"index": i, "image_link": f"https://example.com/{i}.jpg", "entity_name": "item_weight",
             "prediction": f"{i}.0 gram" if answered else "", "value": float(i) if answered else None,
             "unit": "gram" if answered else None, "score": 0.5, "confidence": None, "n_candidates": 1,
             "status": "ok", "error": "", "ocr_reader": "rapidocr", "in_training": None, "evidence_text": None,
             "evidence_left": None, "evidence_top": 3 if answered else None, "evidence_width": None,
             "evidence_height": None, "evidence_angle": None, "reasons": None} for i in indices]
    return typed(pd.DataFrame(rows, columns=OUTPUT_COLUMNS))


def test_prediction_files_hold_every_chunk_with_the_declared_types(tmp_path: Path) -> None:
    with PredictionFiles(tmp_path) as files:
        files.write(_predictions(range(0, 3)))
        files.write(_predictions(range(3, 5), answered=False))
    read = pd.read_parquet(tmp_path / PREDICTIONS_FILE)
    assert list(read["index"]) == [0, 1, 2, 3, 4]
    # nullable integers and booleans read back as such, not as floats and objects
    assert str(read["evidence_top"].dtype) == "Int32" and str(read["in_training"].dtype) == "boolean"
    assert pq.ParquetFile(tmp_path / PREDICTIONS_FILE).metadata.num_row_groups == 2
    submission = read_submission(tmp_path / SUBMISSION_FILE)
    assert list(submission.columns) == ["index", "prediction"]
    assert list(submission["prediction"]) == ["0.0 gram", "1.0 gram", "2.0 gram", "", ""]
    assert sorted(p.name for p in tmp_path.iterdir()) == [PREDICTIONS_FILE, SUBMISSION_FILE]


def test_prediction_files_of_no_rows_are_a_header_and_an_empty_table(tmp_path: Path) -> None:
    with PredictionFiles(tmp_path):
        pass
    assert (tmp_path / SUBMISSION_FILE).read_text() == "index,prediction\n"
    assert list(pd.read_parquet(tmp_path / PREDICTIONS_FILE).columns) == OUTPUT_COLUMNS


def test_a_failure_midway_leaves_the_earlier_files(tmp_path: Path) -> None:
    with PredictionFiles(tmp_path) as files:
        files.write(_predictions(range(0, 2)))
    earlier = (tmp_path / SUBMISSION_FILE).read_text()
    with pytest.raises(RuntimeError), PredictionFiles(tmp_path) as files:
        files.write(_predictions(range(0, 4)))
        raise RuntimeError("the store went away")
    assert (tmp_path / SUBMISSION_FILE).read_text() == earlier
    assert len(pd.read_parquet(tmp_path / PREDICTIONS_FILE)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [PREDICTIONS_FILE, SUBMISSION_FILE]
