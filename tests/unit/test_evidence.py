"""Evidence with every answer and a confidence to act on: the chosen mention travels with the prediction,
its reasons, the predictions' evidence columns, precision against coverage, and the annotated thumbnails."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageFont

from imagequant.catalog import read_catalog
from imagequant.config import ImagingConfig, OcrConfig, load_config
from imagequant.core.schema import EVIDENCE_COLUMN_NAMES, PREDICTIONS, tokens_to_columns
from imagequant.core.tokens import OcrToken
from imagequant.errors import ConfigError
from imagequant.evaluation.evaluate import (
    BOX_HELD,
    BOX_RIGHT,
    BOX_TRUTH,
    BOX_WRONG,
    _thumbnail,
    coverage_curve,
    evaluate,
    thumbnail_boxes,
    write_evaluation_report,
)
from imagequant.pipeline.rows import evidence_fields, row_evidence
from imagequant.scoring.decode import decode
from imagequant.scoring.encode import ModelParams, Vocab, encode_example
from imagequant.scoring.rules import REASONS, choose, reasons
from imagequant.scoring.zoo import RuleScorer
from imagequant.synthetic import font_dir
from imagequant.text.candidates import extract_candidates

REPO = Path(__file__).resolve().parents[2]
IMAGE = (1000, 1000)


def _line(words: list[str], y: int = 100, h: int = 20, line_no: int = 0, x: int = 10,
          angle: int = 0) -> list[OcrToken]:
    out = []
    for i, word in enumerate(words):
        out.append(OcrToken(word, 90.0, x, y, 10 * len(word), h, 1, line_no, i, angle))
        x += 10 * len(word) + 8
    return out


def _vocabulary(name: str) -> bool:
    return name in REASONS or (name.startswith("dim_letter:") and "dim_letter:<letter>" in REASONS)


# --- the scorer carries its choice, and says why ----------------------------------------------------------


def test_rule_scorer_returns_the_chosen_mention_with_unchanged_scores() -> None:
    tokens = (_line(["Serving", "size", "30g", "per", "day"], y=50, line_no=0)
              + _line(["Net", "Weight", "500g"], y=300, h=60, line_no=1))
    candidates = extract_candidates(tokens, "item_weight", IMAGE)
    best, conf = choose(candidates, "item_weight")
    [pred] = RuleScorer().predict([_row(tokens, candidates)])
    assert pred.candidate is best and pred.score == conf and pred.prediction == "500.0 gram"
    assert (pred.candidate.text, pred.candidate.left, pred.candidate.top) == ("500g", tokens[7].left, 300)
    why = reasons(best, "item_weight")
    assert why[:2] == ["keyword", "keyword_line"] and "prominent" in why and "unit_prior" in why
    assert all(_vocabulary(r) for r in why)
    # abstaining keeps the mention: thresholds are studied on it
    [held] = RuleScorer().predict([_row(tokens, candidates)], threshold=0.99)
    assert held.prediction == "" and held.candidate is best
    [nothing] = RuleScorer().predict([_row([], [])])
    assert nothing.candidate is None and evidence_fields(None) == dict.fromkeys(EVIDENCE_COLUMN_NAMES)


def _row(tokens: list[OcrToken], candidates: list) -> object:
    from imagequant.scoring.base import ScoringRow

    return ScoringRow("item_weight", tokens, IMAGE, candidates)


@pytest.mark.parametrize(("tokens", "entity", "expected"), [
    (_line(["W30xH20cm"]), "width", ["dim_letter:w"]),
    (_line(["30", "x", "20", "x", "10", "cm"]), "height", ["xgroup:last"]),
    (_line(["30", "x", "20", "x", "10", "cm"]), "width", ["xgroup:first"]),
    (_line(["Input:", "AC100-240V"]), "voltage", ["keyword", "range_high"]),
    (_line(["6.7in/17cm"]), "height", ["dual_primary"]),
    (_line(["25cm"], angle=90), "height", ["drawing:vertical"]),
    (_line(["12V"]) + _line(["12V"], y=400, line_no=1), "voltage", ["recurrence"]),
])
def test_reasons_name_the_evidence_that_won(tokens: list[OcrToken], entity: str, expected: list[str]) -> None:
    best, _ = choose(extract_candidates(tokens, entity, IMAGE), entity)
    assert best is not None
    why = reasons(best, entity)
    assert set(expected) <= set(why), why
    assert all(_vocabulary(r) for r in why)
    order = [next(i for i, v in enumerate(REASONS) if v == r or (v.endswith("<letter>") and r.startswith(v[:11])))
             for r in why]
    assert order == sorted(order)  # listed in the vocabulary's order: stable for machines


def test_model_decode_carries_the_first_mention_of_the_best_quantity() -> None:
    params = ModelParams(max_tokens=64, max_candidates=16)
    tokens = [OcrToken(t, 90.0, 10 + 60 * i, 10, 50, 20, 1, 1, i) for i, t in enumerate(["20", "g", "500", "g", "500", "g"])]
    vocab = Vocab.build([t.text for t in tokens], min_count=1)
    enc = encode_example(tokens, (400, 100), "item_weight", None, vocab, params)
    pred = decode(enc, np.array([0.35, 0.3, 0.3, 0.05]), threshold=0.5)
    assert pred.prediction == "500.0 gram" and pred.candidate is enc.candidates[1]
    assert pred.candidate.left == tokens[2].left
    held = decode(enc, np.array([0.1, 0.2, 0.2, 0.5]), 0.5)  # below the threshold: the mention stays
    assert held.prediction == "" and held.candidate is enc.candidates[1]


# --- a printed value's box, through real OCR --------------------------------------------------------------


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_dir() / "DejaVuSans.ttf"), size)


def render_label(path: Path | None = None) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A label with a distractor and the headline weight; returns the image and the box (l, t, r, b) where
    "500g" was printed."""
    img = Image.new("RGB", (900, 500), "white")
    draw = ImageDraw.Draw(img)
    font = _font(56)
    draw.text((60, 60), "Serving 30 g", fill="black", font=font)
    origin = (300, 300)
    draw.text(origin, "Net Wt 500g", fill="black", font=font)
    prefix = draw.textlength("Net Wt ", font=font)
    left, top, right, bottom = draw.textbbox((origin[0] + prefix, origin[1]), "500g", font=font)
    if path is not None:
        img.save(path)
    return img, (int(left), int(top), int(right), int(bottom))


def ocr_config() -> tuple[OcrConfig, ImagingConfig]:
    # one Tesseract pass over large clean text: quick, and what every engine must get right
    return (OcrConfig(engine="tesseract", rotated_pass=False, second_pass=False, timeout_s=60.0),
            ImagingConfig(ocr_min_side=300))


needs_tesseract = pytest.mark.skipif(
    subprocess.run(["which", "tesseract"], capture_output=True).returncode != 0, reason="tesseract not installed")


@needs_tesseract
def test_evidence_box_contains_the_printed_value() -> None:
    from imagequant.ocr.zoo import get_engine

    image, printed = render_label()
    tokens = get_engine(*ocr_config()).read(image)
    record = {"width": image.width, "height": image.height, **tokens_to_columns(tokens)}
    evidence = row_evidence(record, "item_weight")  # as predict reads the stored image record
    [pred] = RuleScorer().predict([_row(evidence.tokens, evidence.candidates)])
    assert pred.prediction == "500.0 gram"
    fields = evidence_fields(pred.candidate, reasons=reasons(pred.candidate, "item_weight"))
    assert set(fields) == set(EVIDENCE_COLUMN_NAMES) and set(fields) <= set(PREDICTIONS.names())
    assert "500" in fields["evidence_text"] and fields["evidence_angle"] == 0
    assert "keyword" in fields["reasons"].split(",")
    left, top = fields["evidence_left"], fields["evidence_top"]
    right, bottom = left + fields["evidence_width"], top + fields["evidence_height"]
    slack = 8  # OCR boxes hug the ink; the drawn box includes the font's bearings
    assert left - slack <= printed[0] and printed[2] <= right + slack, (fields, printed)
    assert top - slack <= printed[1] and printed[3] <= bottom + slack, (fields, printed)
    # and the box is that mention's, not the line's or the image's
    assert fields["evidence_width"] < 2 * (printed[2] - printed[0])


# --- min score --------------------------------------------------------------------------------------------


def test_min_score_setting_is_checked() -> None:
    assert load_config().predict.min_score is None  # the scorer's own F1-best threshold
    assert load_config(overrides=["predict.min_score=0.8"]).predict.min_score == 0.8
    for bad in ("1.5", "-0.1", ".nan", "high"):
        with pytest.raises(ConfigError, match="predict.min_score"):
            load_config(overrides=[f"predict.min_score={bad}"])
    with pytest.raises(ConfigError, match="unknown setting predict.abstain_threshold"):
        load_config(overrides=["predict.abstain_threshold=0.5"])  # the key min_score replaced


@pytest.mark.parametrize("value", ["1.5", "-0.2", "nan"])
def test_predict_refuses_a_min_score_outside_0_1(tmp_path: Path, value: str) -> None:
    catalog = tmp_path / "c.csv"
    catalog.write_text("index,image_link,group_id,entity_name\n0,https://x.test/a.jpg,1,width\n")
    done = subprocess.run([sys.executable, str(REPO / "jobs" / "predict.py"), "--catalog", str(catalog), "--store",
                           str(tmp_path / "s"), "--model", "rules", "--out", str(tmp_path / "o"), "--min-score", value],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: --min-score must be between 0 and 1")


# --- precision against coverage ---------------------------------------------------------------------------

LINK = "https://img.test/images/I/{}.jpg"


def _predictions(tmp_path: Path) -> tuple[Path, Path]:
    """Ten weight rows and two width rows: best answers with scores, some right, some wrong, one without."""
    truth_rows, pred_rows = [], []
    plan = [  # (truth, best answer, score)
        ("500 gram", "500.0 gram", 0.95), ("250 gram", "250.0 gram", 0.9), ("1 kilogram", "1.0 kilogram", 0.9),
        ("2 kilogram", "3.0 kilogram", 0.85), ("30 gram", "30.0 gram", 0.7), ("40 gram", "4.0 gram", 0.6),
        ("12 gram", "12.0 gram", 0.5), ("6 gram", "9.0 gram", 0.3), ("8 gram", None, 0.0), ("", "5.0 gram", 0.2),
    ]
    for i, (truth, answer, score) in enumerate(plan):
        truth_rows.append({"index": i, "image_link": LINK.format(i), "group_id": "1", "entity_name": "item_weight",
                           "entity_value": truth})
        value, unit = (float(answer.split()[0]), answer.split()[1]) if answer else (None, None)
        pred_rows.append({"index": i, "prediction": answer or "", "value": value, "unit": unit, "score": score})
    for i, (truth, answer, score) in enumerate([("10 centimetre", "10.0 centimetre", 0.8),
                                                ("20 centimetre", "2.0 centimetre", 0.9)], start=10):
        truth_rows.append({"index": i, "image_link": LINK.format(i), "group_id": "2", "entity_name": "width",
                           "entity_value": truth})
        pred_rows.append({"index": i, "prediction": answer, "value": float(answer.split()[0]),
                          "unit": answer.split()[1], "score": score})
    truth = tmp_path / "truth.csv"
    pd.DataFrame(truth_rows).to_csv(truth, index=False)
    frame = pd.DataFrame(pred_rows)
    for name in EVIDENCE_COLUMN_NAMES:
        frame[name] = None
    path = tmp_path / "predictions.parquet"
    frame.to_parquet(path)
    return truth, path


def test_coverage_table_and_operating_points(tmp_path: Path) -> None:
    truth, predictions = _predictions(tmp_path)
    result, rows = evaluate(predictions, read_catalog(truth))
    coverage = result["coverage"]
    assert coverage["rows"] == 11  # rows with a truth; the unlabeled one is not counted
    by_threshold = {p["threshold"]: p for p in coverage["table"]}
    # scores >= 0.9: 0.95 ok, 0.9 ok, 0.9 ok, 0.9 (width) wrong -> 4 answered, 3 right
    assert (by_threshold[0.9]["answered"], by_threshold[0.9]["right"]) == (4, 3)
    assert by_threshold[0.9]["coverage"] == pytest.approx(4 / 11)
    # min score 0: every best answer (10 of the 11: one row has no candidate), 6 right
    assert (by_threshold[0.0]["answered"], by_threshold[0.0]["right"]) == (10, 6)
    assert by_threshold[0.0]["precision"] == pytest.approx(0.6)
    assert by_threshold[0.99]["answered"] == 0 and math.isnan(by_threshold[0.99]["precision"])
    # nothing reaches 95% but the single top row (1 of 1 right)
    top = coverage["at_precision"]["0.95"]
    assert (top["threshold"], top["answered"], top["right"]) == (0.95, 1, 1)
    weights = coverage["per_entity"]["item_weight"]
    assert weights["rows"] == 9 and weights["at_precision"]["0.90"]["threshold"] == 0.9  # 3 of 3
    width = coverage["per_entity"]["width"]
    assert width["at_precision"]["0.95"] is None  # the top width answer is wrong
    # the curve itself: coverage grows and every distinct score is a point
    curve = coverage_curve(rows)
    assert list(curve.thresholds) == sorted(set(curve.thresholds), reverse=True)
    assert np.all(np.diff(curve.coverage) > 0)

    page = write_evaluation_report(result, rows, tmp_path / "report")
    html = page.read_text()
    assert "for 95% precision: answering 9% of rows, 100% are right (min score 0.95)" in html
    assert "for 90% precision: answering 9% of rows" in html  # 3 of 4 (75%) at 0.9 is below both targets
    assert 'src="precision_coverage.png"' in html
    assert (tmp_path / "report" / "precision_coverage.png").stat().st_size > 5000
    written = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert written["coverage"]["per_entity"]["width"]["at_precision"]["0.95"] is None
    assert written["coverage"]["table"][-1]["precision"] is None  # nothing answered: no precision


def test_confidence_calibration_coverage_and_review_queue(tmp_path: Path) -> None:
    truth, predictions = _predictions(tmp_path)
    frame = pd.read_parquet(predictions)
    # a confidence per best answer (none for the row without a candidate); ranks differ from the score's
    frame["confidence"] = [0.97, 0.93, 0.91, 0.15, 0.88, 0.35, 0.8, 0.2, None, 0.5, 0.9, 0.25]
    frame["status"] = ["ok"] * 11 + ["low_confidence"]
    frame.to_parquet(predictions)
    result, rows = evaluate(predictions, read_catalog(truth))
    confidence = result["confidence"]
    assert (confidence["rows"], confidence["answered"], confidence["right"]) == (11, 10, 6)
    # the six right answers are the six most confident: 100% precision up to 6 of 11 rows
    top = confidence["coverage_at_precision"]["0.99"]
    assert (top["answered"], top["right"], top["threshold"]) == (6, 6, 0.8)
    assert set(confidence["coverage_at_precision"]) == {"0.80", "0.90", "0.95", "0.99"}
    bins = {round(b["low"], 1): b for b in confidence["reliability"] if b["rows"]}
    assert bins[0.9]["rows"] == 4 and bins[0.9]["accuracy"] == 1.0
    assert 0.0 < confidence["ece"] < 0.3 and confidence["per_entity"]["width"]["rows"] == 2
    # a held-back row is not an image failure
    assert rows.loc[rows["index"] == 11, "kind"].item() == "wrong_value"  # no store: candidates unknown

    page = write_evaluation_report(result, rows, tmp_path / "report")
    html = page.read_text()
    assert 'src="reliability.png"' in html and 'src="precision_coverage_confidence.png"' in html
    assert "Expected calibration error" in html
    queue = pd.read_csv(tmp_path / "report" / "review_queue.csv")
    assert queue["confidence"].is_monotonic_increasing and len(queue) == 11  # the unlabeled row too
    assert queue["index"].tolist()[:3] == [3, 7, 11] and "thumbnail" in queue


def test_a_submission_csv_has_no_coverage(tmp_path: Path) -> None:
    truth, predictions = _predictions(tmp_path)
    csv = tmp_path / "submission.csv"
    pd.read_parquet(predictions)[["index", "prediction"]].to_csv(csv, index=False)
    result, rows = evaluate(csv, read_catalog(truth))
    assert result["coverage"] is None
    html = write_evaluation_report(result, rows, tmp_path / "r").read_text()
    assert "a submission CSV, which has no score" in html


# --- thumbnails with boxes --------------------------------------------------------------------------------


def _near(pixel: tuple[int, ...], colour: str) -> bool:
    want = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return all(abs(a - b) <= 40 for a, b in zip(pixel[:3], want, strict=True))


def test_thumbnail_boxes_for_right_wrong_and_held_rows() -> None:
    box = {"evidence_left": 100, "evidence_top": 50, "evidence_width": 40, "evidence_height": 20}
    assert thumbnail_boxes({**box, "outcome": "tp", "prediction": "5.0 gram", "truth_box": (100, 50, 40, 20)}) \
        == [((100, 50, 40, 20), BOX_RIGHT)]
    assert thumbnail_boxes({**box, "outcome": "fp", "prediction": "6.0 gram", "truth_box": (300, 200, 50, 30)}) \
        == [((100, 50, 40, 20), BOX_WRONG), ((300, 200, 50, 30), BOX_TRUTH)]
    assert thumbnail_boxes({**box, "outcome": "fn", "prediction": "", "truth_box": None}) \
        == [((100, 50, 40, 20), BOX_HELD)]
    no_box = dict.fromkeys(box, float("nan"))
    assert thumbnail_boxes({**no_box, "outcome": "fn", "prediction": "", "truth_box": None}) == []
    # a submission CSV: the candidate equal to the prediction stands in for the evidence columns
    assert thumbnail_boxes({"outcome": "fp", "prediction": "6.0 gram", "prediction_box": (1, 2, 3, 4)}) \
        == [((1, 2, 3, 4), BOX_WRONG)]


def test_thumbnail_draws_boxes_scaled_from_original_pixels(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (1040, 780), "white").save(images / "x.png")
    target = tmp_path / "t.png"
    made = _thumbnail(LINK.replace(".jpg", ".png").format("x"), images, target,
                      boxes=[((400, 400, 200, 100), BOX_WRONG), ((40, 40, 100, 60), BOX_TRUTH)])
    assert made == target
    thumb = Image.open(target).convert("RGB")
    assert thumb.size == (260, 195)  # a quarter: boxes are drawn at a quarter of their pixel positions
    assert _near(thumb.getpixel((99, 125)), BOX_WRONG)  # left edge of the wrong box (2 px out), halfway down
    assert _near(thumb.getpixel((125, 99)), BOX_WRONG)  # its top edge
    assert _near(thumb.getpixel((9, 20)), BOX_TRUTH)
    assert thumb.getpixel((125, 112)) == (255, 255, 255)  # inside the box: the image itself


def test_report_thumbnails_draw_the_chosen_and_the_true_mention(tmp_path: Path) -> None:
    """A wrong row of a predictions Parquet, with a store holding its tokens: the chosen box in red and the
    truth's in blue, where they were printed."""
    from tests.unit.test_evaluate import _image_record, _write_batch

    store = tmp_path / "store"
    _write_batch(store, "1", [_image_record("a", "ok", "2026-01-01T00:00:00Z", ["Serving 30 g", "Net Wt 500 g"])])
    truth = tmp_path / "truth.csv"
    truth.write_text(f"index,image_link,group_id,entity_name,entity_value\n0,{LINK.format('a')},1,item_weight,500 gram\n")
    tokens = _image_record("a", "ok", "x", ["Serving 30 g", "Net Wt 500 g"])
    # the row chose "30 g" (line 0, words 1-2)
    left, top = tokens["tok_left"][1], tokens["tok_top"][1]
    width = tokens["tok_left"][2] + tokens["tok_width"][2] - left
    frame = pd.DataFrame([{"index": 0, "prediction": "30.0 gram", "value": 30.0, "unit": "gram", "score": 0.6,
                           "evidence_text": "30 g", "evidence_left": left, "evidence_top": top,
                           "evidence_width": width, "evidence_height": 40, "evidence_angle": 0,
                           "reasons": "first_mention"}])
    predictions = tmp_path / "p.parquet"
    frame.to_parquet(predictions)
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (800, 600), "white").save(images / "a.jpg", quality=95)
    result, rows = evaluate(predictions, read_catalog(truth), store)
    assert rows.loc[0, "kind"] == "wrong_candidate" and rows.loc[0, "truth_box"][1] == 100  # line 2 at y=100
    html = write_evaluation_report(result, rows, tmp_path / "report", images_dir=images).read_text()
    assert "read from: <code>30 g</code>; reasons: first_mention" in html
    thumb = Image.open(tmp_path / "report" / "thumbs" / "0.png").convert("RGB")
    scale = thumb.width / 800
    y_mid = round((top + 20) * scale)
    assert _near(thumb.getpixel((round(left * scale) - 1, y_mid)), BOX_WRONG)
    truth_left, truth_top, _, truth_height = rows.loc[0, "truth_box"]
    assert _near(thumb.getpixel((round(truth_left * scale) - 1, round((truth_top + truth_height / 2) * scale))),
                 BOX_TRUTH)
