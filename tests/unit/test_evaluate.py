"""Evaluation: challenge F1 via metrics, error kinds, candidate recall from a store, the HTML report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from imagequant.catalog import image_id, read_catalog
from imagequant.core.schema import tokens_to_columns
from imagequant.core.tokens import OcrToken
from imagequant.errors import UsageError
from imagequant.evaluation.evaluate import (
    evaluate,
    read_predictions,
    read_store_images,
    write_evaluation_report,
)

REPO = Path(__file__).resolve().parents[2]
LINK = "https://img.test/images/I/{}.jpg"

# No index column: rows are numbered 0..8 in file order, as predict numbers them.
TRUTH_CSV = f"""image_link,group_id,entity_name,entity_value
{LINK.format("a")},1,item_weight,500.0 gram
{LINK.format("b")},1,item_weight,250 gram
{LINK.format("c")},2,width,10 centimetre
{LINK.format("d")},3,voltage,"[100.0, 240.0] volt"
{LINK.format("e")},4,wattage,60 watt
{LINK.format("f")},1,item_weight,1 kilogram
{LINK.format("g")},3,voltage,12 volt
{LINK.format("h")},5,item_volume,330 millilitre
{LINK.format("a")},1,width,5 centimetre
"""
# index 4 is missing, index 99 is not in the truth
SUBMISSION_CSV = """index,prediction
0,500 gram
1,
2,10.0 inch
3,100.0 volt
5,2.0 kilogram
6,
7,500.0 millilitre
8,
99,1.0 gram
"""
# what each image's OCR read: lines of words
IMAGE_TEXT = {
    "a": ["Net Wt 500 g", "Width 10 cm"],
    "b": ["250 g"],
    "c": ["10 cm"],
    "d": ["100-240V"],
    "f": ["2 kg"],
    "h": ["330 ml", "500 ml"],
}


def _tokens(lines: list[str]) -> list[OcrToken]:
    tokens = []
    for li, line in enumerate(lines):
        x = 20
        for wi, word in enumerate(line.split()):
            tokens.append(OcrToken(word, 95.0, x, 40 + li * 60, 22 * len(word), 40, 1, li + 1, wi + 1))
            x += 22 * len(word) + 20
    return tokens


def _image_record(name: str, status: str, processed_at: str, lines: list[str] | None = None) -> dict[str, Any]:
    tokens = _tokens(lines or []) if status == "ok" else []
    return {
        "image_id": image_id(LINK.format(name)), "image_link": LINK.format(name), "status": status,
        "error": "" if status == "ok" else "HTTP 404", "source": "cache", "width": 800 if tokens else 0,
        "height": 600 if tokens else 0, "ocr_engine": "tesseract", **tokens_to_columns(tokens),
        "ocr_text": "\n".join(lines or []), "cnn_weights": "random(seed=0)", "cnn_features": [],
        "seconds_fetch": 0.0, "seconds_decode": 0.0, "seconds_ocr": 0.0, "seconds_cnn": 0.0,
        "run_id": "test", "processed_at": processed_at,
    }


def _write_batch(store: Path, batch: str, records: list[dict[str, Any]]) -> None:
    folder = store / "images" / f"batch={batch}"
    folder.mkdir(parents=True)
    table = pa.Table.from_pylist(records)
    table = table.set_column(table.schema.get_field_index("tok_conf"), "tok_conf",
                             table.column("tok_conf").cast(pa.list_(pa.float32())))
    pq.write_table(table, folder / "part-00000.parquet")


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    truth = tmp_path / "truth.csv"
    truth.write_text(TRUTH_CSV)
    submission = tmp_path / "submission.csv"
    submission.write_text(SUBMISSION_CSV)
    store = tmp_path / "store"
    # batch 1: b and g failed; batch 2 (later): b succeeded. e was never extracted.
    _write_batch(store, "1", [
        *[_image_record(n, "ok", "2026-01-01T00:00:00Z", IMAGE_TEXT[n]) for n in ("a", "c", "d", "f", "h")],
        _image_record("b", "http_status", "2026-01-01T00:00:00Z"),
        _image_record("g", "http_status", "2026-01-01T00:00:00Z"),
    ])
    _write_batch(store, "2", [_image_record("b", "ok", "2026-01-02T00:00:00Z", IMAGE_TEXT["b"])])
    images = tmp_path / "images"
    images.mkdir()
    for n, colour in (("a", "red"), ("c", "blue"), ("f", "green"), ("h", "orange")):
        Image.new("RGB", (640, 480), colour).save(images / f"{n}.jpg")
    return {"truth": truth, "submission": submission, "store": store, "images": images}


def test_scores_and_error_kinds_with_a_store(files: dict[str, Path], tmp_path: Path) -> None:
    result, rows = evaluate(files["submission"], read_catalog(files["truth"]), files["store"])
    # tp: row 0 (500 gram == 500.0 gram); fp: rows 2, 3 (range truth), 5, 7; fn: rows 1, 4 (missing), 6, 8
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (1, 4, 4, 0)
    assert result["precision"] == pytest.approx(0.2)
    assert result["recall"] == pytest.approx(0.2)
    assert result["f1"] == pytest.approx(0.2)
    assert result["accuracy"] == pytest.approx(1 / 9)
    assert result["missing_predictions"] == 1 and result["missing_indexes"] == [4]
    assert result["extra_predictions"] == 1 and result["extra_indexes"] == [99]
    assert result["invalid_predictions"] == 0
    kinds = dict(zip(rows["index"], rows["kind"], strict=True))
    assert kinds == {
        0: "correct", 1: "abstained", 2: "wrong_unit", 3: "bad_truth", 4: "missing",
        5: "no_candidate", 6: "image_failed", 7: "wrong_candidate", 8: "no_candidate",
    }
    assert result["error_kinds"] == {
        "correct": 1, "wrong_unit": 1, "wrong_candidate": 1, "no_candidate": 2, "abstained": 1, "missing": 1,
        "image_failed": 1, "bad_truth": 1,
    }
    # the truth is among the candidates for rows 0, 1 (b's later ok batch), 2 and 7: 4 of 9 labeled rows
    assert result["candidate_recall"] == pytest.approx(4 / 9)
    assert result["candidate_recall_per_entity"]["item_volume"] == 1.0
    assert result["image_status"] == {"ok": 7, "http_status": 1, "not_in_store": 1}
    assert result["per_entity"]["item_weight"]["n"] == 3
    assert result["per_entity"]["item_weight"]["f1"] == pytest.approx(0.5)  # tp 1, fp 1, fn 1
    confusion = result["unit_confusion"]
    assert confusion["counts"][confusion["true_units"].index("centimetre")][
        confusion["predicted_units"].index("inch")] == 1
    assert result["best_threshold"] is None  # a submission CSV has no scores

    page = write_evaluation_report(result, rows, tmp_path / "report", images_dir=files["images"])
    html = page.read_text()
    for png in ("f1_per_entity.png", "error_kinds.png", "unit_confusion.png"):
        assert (tmp_path / "report" / png).stat().st_size > 5000
        assert f'src="{png}"' in html
    written = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert written["f1"] == pytest.approx(0.2) and written["error_kinds"]["missing"] == 1
    per_row = pd.read_csv(tmp_path / "report" / "rows.csv", keep_default_na=False)
    assert list(per_row["kind"]) == [kinds[i] for i in range(9)]
    assert per_row.loc[7, "candidates"] == "330.0 millilitre; 500.0 millilitre"
    assert list(per_row["outcome"]) == ["tp", "fn", "fp", "fp", "fn", "fp", "fn", "fp", "fn"]
    thumbs = sorted(p.name for p in (tmp_path / "report" / "thumbs").iterdir())
    assert thumbs == ["2.png", "5.png", "7.png", "8.png"]  # worst errors whose image is in --images-dir
    assert Image.open(tmp_path / "report" / "thumbs" / "2.png").size == (260, 195)
    assert "330 ml" in html and "330.0 millilitre, 500.0 millilitre" in html
    assert "count as empty predictions (indexes 4)" in html


def test_without_store_candidates_are_unknown(files: dict[str, Path], tmp_path: Path) -> None:
    result, rows = evaluate(files["submission"], read_catalog(files["truth"]))
    assert result["f1"] == pytest.approx(0.2)  # the score never depends on the store
    kinds = dict(zip(rows["index"], rows["kind"], strict=True))
    assert kinds[5] == "wrong_value" and kinds[7] == "wrong_value"
    assert kinds[6] == "abstained" and kinds[8] == "abstained"  # no image status without store or Parquet
    assert result["candidate_recall"] is None
    html = write_evaluation_report(result, rows, tmp_path / "r").read_text()
    assert "without thumbnails" in html and "candidate-recall ceiling is not measured" in html
    assert not (tmp_path / "r" / "thumbs").exists()


def test_predictions_parquet_with_status_and_scores(files: dict[str, Path], tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "index": [0, 1, 2, 3, 4, 5, 6, 7, 8],
        "prediction": ["500.0 gram", "", "10.0 inch", "100.0 volt", "60.0 watt", "2.0 kilogram", "", "", ""],
        "value": [500.0, 250.0, 10.0, 100.0, 60.0, 2.0, None, 330.0, None],
        "unit": ["gram", "gram", "inch", "volt", "watt", "kilogram", None, "millilitre", None],
        "score": [0.9, 0.3, 0.25, 0.15, 0.95, 0.1, 0.0, 0.2, 0.0],
        "n_candidates": [1, 1, 1, 2, 1, 1, 0, 2, 0],
        "status": ["ok", "ok", "ok", "ok", "ok", "ok", "http_status", "ok", "ok"],
        "error": ["", "", "", "", "", "", "HTTP 404", "", ""],
    })
    path = tmp_path / "predictions.parquet"
    frame.to_parquet(path)
    result, rows = evaluate(path, read_catalog(files["truth"]))
    assert (result["tp"], result["fp"], result["fn"]) == (2, 3, 4)
    assert result["missing_predictions"] == 0
    assert dict(zip(rows["index"], rows["kind"], strict=True))[6] == "image_failed"
    best = result["best_threshold"]
    # the best candidates by score: 60 W .95 ok, 500 g .9 ok, 250 g .3 ok, 330 ml .2 ok, 10 inch .25 wrong,
    # the range .15 and 2 kg .1 wrong: keeping scores >= 0.2 gives tp 4, fp 1 (10 inch), fn 4 (rows left
    # empty); keeping all seven ties it (tp 4, fp 3, fn 2), and ties go to keeping the answers: below the
    # last correct one an answer to a non-empty truth costs nothing and may be right on other rows
    assert best["threshold"] == -math.inf
    assert (best["tp"], best["fp"], best["fn"]) == (4, 3, 2)
    assert best["f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 4))
    page = write_evaluation_report(result, rows, tmp_path / "r")
    assert "keeping every answer would give F1 0.6154" in page.read_text()


def test_rows_the_model_was_fitted_on_are_counted_and_scored_apart(files: dict[str, Path], tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "index": list(range(9)),
        "prediction": ["500.0 gram", "250.0 gram", "10.0 centimetre", "", "", "", "", "", ""],
        # predict's column: the first three rows' images were in the model directory's training rows
        "in_training": pd.array([True, True, True] + [False] * 6, dtype="boolean"),
    })
    path = tmp_path / "predictions.parquet"
    frame.to_parquet(path)
    result, rows = evaluate(path, read_catalog(files["truth"]))
    assert result["tp"] == 3 and result["in_training_rows"] == 3
    # the six others alone answer nothing: F1 0, whatever the in-sample rows scored
    assert result["out_of_training"]["rows"] == 6 and result["out_of_training"]["f1"] == 0.0
    page = write_evaluation_report(result, rows, tmp_path / "r")
    assert "3 of 9 rows are of images the model directory was fitted on" in page.read_text()
    assert "in_training" in (tmp_path / "r" / "rows.csv").read_text().splitlines()[0]
    # predictions that do not say (the rules, an older model directory, a submission CSV): nothing reported
    frame["in_training"] = pd.array([None] * 9, dtype="boolean")
    frame.to_parquet(path)
    result, _ = evaluate(path, read_catalog(files["truth"]))
    assert result["in_training_rows"] is None and result["out_of_training"] is None


def test_read_predictions_rejects_bad_files(tmp_path: Path) -> None:
    duplicated = tmp_path / "dup.csv"
    duplicated.write_text("index,prediction\n1,2.0 gram\n1,\n")
    with pytest.raises(UsageError, match="index 1 appears more than once"):
        read_predictions(duplicated)
    no_column = tmp_path / "cols.csv"
    no_column.write_text("index,value\n1,2.0 gram\n")
    with pytest.raises(UsageError, match="lack column"):
        read_predictions(no_column)
    with pytest.raises(UsageError, match="do not exist"):
        read_predictions(tmp_path / "absent.csv")


def test_store_view_prefers_ok_then_newest(files: dict[str, Path]) -> None:
    images = read_store_images(files["store"], [image_id(LINK.format(n)) for n in ("b", "g", "e")])
    status = dict(zip(images["image_link"], images["status"], strict=True))
    assert status == {LINK.format("b"): "ok", LINK.format("g"): "http_status"}


def test_job_prints_f1_and_writes_the_report(files: dict[str, Path], tmp_path: Path) -> None:
    report_dir = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "evaluate.py"), "--predictions", str(files["submission"]),
         "--truth", str(files["truth"]), "--report", str(report_dir), "--store", str(files["store"]),
         "--images-dir", str(files["images"])],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "F1 0.2000 (precision 0.2000, recall 0.2000) over 9 rows; candidate recall 0.4444" in result.stdout
    assert f"report: {report_dir / 'report.html'}" in result.stdout
    assert "1 rows have no prediction" in result.stderr
    assert json.loads((report_dir / "metrics.json").read_text())["truth_file"] == str(files["truth"])


def test_job_exits_2_on_unlabeled_truth(files: dict[str, Path], tmp_path: Path) -> None:
    unlabeled = tmp_path / "test.csv"
    unlabeled.write_text(f"index,image_link,group_id,entity_name\n0,{LINK.format('a')},1,width\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "evaluate.py"), "--predictions", str(files["submission"]),
         "--truth", str(unlabeled), "--report", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: the truth catalog has no labels " \
        "(entity_value column missing or empty)"


def test_job_refuses_to_write_its_report_into_a_model_directory(files: dict[str, Path], tmp_path: Path) -> None:
    from imagequant.scoring.zoo import write_rules_directory

    model = write_rules_directory(tmp_path / "model")
    kept = (model / "scorer.json").read_text()
    result = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "evaluate.py"), "--predictions", str(files["submission"]),
         "--truth", str(files["truth"]), "--report", str(model)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: --report {model} is a model directory (it holds scorer.json): the report's metrics.json would "
        "replace the model's; give another folder"]
    assert sorted(p.name for p in model.iterdir()) == ["scorer.json"] and (model / "scorer.json").read_text() == kept


def test_job_takes_conf_and_set_like_every_job(files: dict[str, Path], tmp_path: Path) -> None:
    base = [sys.executable, str(REPO / "jobs" / "evaluate.py"), "--predictions", str(files["submission"]),
            "--truth", str(files["truth"]), "--report", str(tmp_path / "out")]
    # submit.sh passes its --conf files to every job.
    done = subprocess.run([*base, "--conf", str(REPO / "conf" / "local.yaml"), "--set", "ocr.engine=tesseract"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    bad = subprocess.run([*base, "--set", "fetch.read_timeout_s=-1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: fetch.read_timeout_s")


def test_rows_without_a_prediction_count_as_outside_training_without_a_pandas_warning() -> None:
    """Truth rows that no prediction row matches have no in_training (an object column with None)."""
    import warnings

    from imagequant.evaluation.evaluate import in_training_analysis

    rows = pd.DataFrame({"prediction": ["5.0 volt", "", "2.0 gram"], "truth": ["5.0 volt", "3.0 volt", "2.0 gram"],
                         "in_training": pd.Series([True, None, False], dtype=object)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = in_training_analysis(rows)
    assert found["in_training_rows"] == 1
    assert found["out_of_training"]["rows"] == 2 and found["out_of_training"]["tp"] == 1


def test_predictions_that_do_not_line_up_with_the_truth_are_warned_of(files: dict[str, Path], tmp_path: Path) -> None:
    """Answers in a unit the truth row's entity does not allow are the sign of predictions made for another
    catalog or row order: evaluate names them, with the rows missing and the predictions the truth lacks."""
    from imagequant.evaluation.evaluate import alignment_warnings

    shifted = tmp_path / "shifted.csv"
    shifted.write_text("index,prediction\n0,10.0 centimetre\n1,100.0 volt\n2,500.0 gram\n3,\n5,\n6,\n7,\n8,\n99,\n")
    result, _ = evaluate(shifted, read_catalog(files["truth"], unique_index=True))
    assert result["invalid_predictions"] == 3 and result["invalid_indexes"] == [0, 1, 2]
    assert alignment_warnings(result) == [
        "1 rows have no prediction (scored as empty; indexes 4)",
        "1 predictions have an index the truth lacks (ignored; indexes 99)",
        "3 answers are not a value in a unit their truth row's entity allows (indexes 0, 1, 2): are the "
        "predictions of the truth's catalog, in its row order?",
    ]
    result, _ = evaluate(files["submission"], read_catalog(files["truth"], unique_index=True))
    assert result["invalid_predictions"] == 0 and not any("answers are not" in w for w in alignment_warnings(result))


def test_predictions_naming_another_row_than_the_truth_are_warned_of(tmp_path: Path) -> None:
    """predictions.parquet names each row's image_link and entity_name: two rows of one entity in another order
    (answers every unit check passes) are caught, and a submission CSV, which names neither, never is."""
    from imagequant.evaluation.evaluate import alignment_warnings

    truth_csv = tmp_path / "truth.csv"
    truth_csv.write_text(TRUTH_CSV)
    truth = read_catalog(truth_csv, unique_index=True)
    links, entities = list(truth["image_link"]), list(truth["entity_name"])
    links[0], links[1] = links[1], links[0]  # rows 0 and 1 are both item_weight
    entities[8] = "height"
    predictions = pd.DataFrame({"index": truth["index"], "image_link": links, "entity_name": entities,
                                "prediction": ["250.0 gram", "500.0 gram", *[""] * 7]})
    predictions.to_parquet(tmp_path / "predictions.parquet")
    result, _ = evaluate(tmp_path / "predictions.parquet", truth)
    assert result["mismatched_predictions"] == 3 and result["mismatched_indexes"] == [0, 1, 8]
    assert result["invalid_predictions"] == 0
    assert alignment_warnings(result) == [
        "3 predictions name another image_link or entity_name than their index's truth row (indexes 0, 1, 8): "
        "are the predictions of the truth's catalog?"]
    predictions[["index", "prediction"]].to_csv(tmp_path / "submission.csv", index=False)
    assert evaluate(tmp_path / "submission.csv", truth)[0]["mismatched_predictions"] == 0
