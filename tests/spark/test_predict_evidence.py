"""predict's evidence columns and minimum score, through Spark, on an image record built from real OCR."""

from __future__ import annotations

import random
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imagequant.config import ImagingConfig
from imagequant.core.schema import EVIDENCE_COLUMN_NAMES, PREDICTIONS
from imagequant.core.tokens import OcrToken
from tests.spark.test_train_predict import IMAGES_ARROW_SCHEMA, _image_record
from tests.unit.test_evidence import needs_tesseract, ocr_config, render_label

LINK = "https://images.example.com/evidence/{}.png"


def _ocr_tokens() -> tuple[list[OcrToken], tuple[int, int], tuple[int, int, int, int]]:
    from imagequant.ocr.zoo import get_engine

    image, printed = render_label()
    cfg, _ = ocr_config()
    return get_engine(cfg, ImagingConfig(ocr_min_side=300)).read(image), image.size, printed


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("evidence")
    tokens, size, printed = _ocr_tokens()
    rng = random.Random(1)
    weak = [OcrToken("approx", 40.0, 10, 10, 60, 12, 1, 1, 0), OcrToken("7", 40.0, 80, 10, 10, 12, 1, 1, 1),
            OcrToken("mg", 40.0, 95, 10, 20, 12, 1, 1, 2)]
    records = [_image_record(LINK.format("label"), tokens, size, rng, with_cnn=False),
               _image_record(LINK.format("weak"), weak, (800, 600), rng, with_cnn=False),
               _image_record(LINK.format("blank"), [], (800, 600), rng, with_cnn=False)]
    part = root / "store" / "images" / "batch=test"
    part.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(records, IMAGES_ARROW_SCHEMA), part / "part-00000.parquet")
    catalog = root / "catalog.csv"
    pd.DataFrame({"index": [0, 1, 2, 3], "image_link": [LINK.format(n) for n in ("label", "weak", "blank", "gone")],
                  "group_id": "1", "entity_name": "item_weight"}).to_csv(catalog, index=False)
    return {"root": root, "store": root / "store", "catalog": catalog, "printed": printed}


@needs_tesseract
def test_predictions_carry_the_evidence(spark: Any, store: dict[str, Any]) -> None:
    from imagequant.spark.inference import run_predict

    out = store["root"] / "rules"
    run_predict(spark, store["catalog"], store["store"], "rules", out)
    table = pq.read_table(out / "predictions.parquet")
    assert table.column_names == PREDICTIONS.names()
    for name in ("evidence_left", "evidence_top", "evidence_width", "evidence_height", "evidence_angle"):
        assert str(table.schema.field(name).type) == "int32", name  # not floats: Spark's nulls are kept as nulls
    frame = table.to_pandas().set_index("index")
    row = frame.loc[0]
    assert row["prediction"] == "500.0 gram" and "500" in row["evidence_text"] and row["evidence_angle"] == 0
    printed = store["printed"]
    left, top = row["evidence_left"], row["evidence_top"]
    assert left - 8 <= printed[0] and printed[2] <= left + row["evidence_width"] + 8
    assert top - 8 <= printed[1] and printed[3] <= top + row["evidence_height"] + 8
    assert row["reasons"].split(",")[:2] == ["keyword", "keyword_line"]
    # no candidate (blank image) and no image (not extracted): no evidence at all
    for index in (2, 3):
        assert frame.loc[index, list(EVIDENCE_COLUMN_NAMES)].isna().all(), frame.loc[index]
    assert frame.loc[3, "status"] == "image_missing"
    # which reader read each image, from the images table; none for an image the store does not hold
    assert list(frame["ocr_reader"].iloc[:3]) == ["synthetic"] * 3  # what _image_record writes
    assert pd.isna(frame.loc[3, "ocr_reader"])
    # every row names its catalog row, the failed ones too
    assert list(frame["image_link"]) == [LINK.format(n) for n in ("label", "weak", "blank", "gone")]
    assert set(frame["entity_name"]) == {"item_weight"}
    submission = pd.read_csv(out / "submission.csv", keep_default_na=False)
    assert list(submission.columns) == ["index", "prediction"]
    store["scores"] = dict(zip(frame.index, frame["score"], strict=True))


@needs_tesseract
def test_min_score_empties_rows_but_keeps_their_evidence(spark: Any, store: dict[str, Any]) -> None:
    from imagequant.spark.inference import run_predict

    out = store["root"] / "strict"
    scores = store.get("scores") or {}
    run_predict(spark, store["catalog"], store["store"], "rules", out, threshold=0.5)
    frame = pd.read_parquet(out / "predictions.parquet").set_index("index")
    assert frame.loc[0, "prediction"] == "500.0 gram"  # the headline scores well above 0.5
    weak = frame.loc[1]
    assert weak["score"] < 0.5 and weak["prediction"] == ""
    assert (weak["value"], weak["unit"], weak["evidence_text"]) == (7.0, "milligram", "7 mg")
    assert weak["evidence_left"] == 80
    if scores:
        assert weak["score"] == scores[1]  # the threshold empties rows; it never changes scores
    submission = pd.read_csv(out / "submission.csv", keep_default_na=False).set_index("index")
    assert submission.loc[1, "prediction"] == "" and submission.loc[0, "prediction"] == "500.0 gram"
