"""Training through Petastorm on a feature store, batch prediction in Spark, and the submission check."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imagequant.catalog import image_id, read_catalog
from imagequant.config import load_config
from imagequant.core.schema import IMAGES, tokens_to_columns
from imagequant.submission import check_submission, read_submission
from tests.model.test_model import ENTITIES, synthetic_row

REPO = Path(__file__).resolve().parents[2]
LINK = "https://images.example.com/train/{}.jpg"

IMAGES_ARROW_SCHEMA = IMAGES.arrow_schema()


def _image_record(link: str, tokens: list, size: tuple[int, int], rng: random.Random, status: str = "ok",
                  with_cnn: bool = True) -> dict[str, Any]:
    ok = status == "ok"
    return {
        "image_id": image_id(link), "image_link": link, "status": status,
        "error": "" if ok else "HTTP 404 Not Found", "source": "http" if ok else "",
        "width": size[0] if ok else 0, "height": size[1] if ok else 0, "ocr_engine": "synthetic",
        **tokens_to_columns(tokens if ok else []),
        "ocr_text": " ".join(t.text for t in tokens) if ok else "", "cnn_weights": "random(seed=0)",
        "cnn_features": [rng.random() for _ in range(2048)] if ok and with_cnn else [],
        "seconds_fetch": 0.0, "seconds_decode": 0.0, "seconds_ocr": 0.0, "seconds_cnn": 0.0,
        "run_id": "test", "processed_at": "2024-01-01T00:00:00Z",
    }


def make_store(root: Path, n: int, seed: int) -> tuple[Path, Path, Path]:
    """A feature store of ``n`` synthetic images (written directly with pyarrow, as the extract job would)
    plus a labeled catalog of them, and an unlabeled catalog with every kind of failing row added."""
    rng = random.Random(seed)
    records, rows = [], []
    for i in range(n):
        entity = ENTITIES[i % len(ENTITIES)]
        tokens, size, label = synthetic_row(rng, entity, rng.random() > 0.1)
        link = LINK.format(f"{seed}-{i}")
        # a few images without CNN features (cnn disabled in one run): still trainable
        records.append(_image_record(link, tokens, size, rng, with_cnn=i % 17 != 0))
        rows.append({"image_link": link, "group_id": str(i // 3), "entity_name": entity, "entity_value": label})
    failed_link = LINK.format(f"{seed}-failed")
    records.append(_image_record(failed_link, [], (0, 0), rng, status="http_status"))
    store = root / "store"
    part = store / "images" / "batch=test"
    part.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(records, IMAGES_ARROW_SCHEMA), part / "part-00000.parquet")
    labeled = pd.DataFrame(rows + [
        {"image_link": failed_link, "group_id": "x", "entity_name": "voltage", "entity_value": "12.0 volt"},
        {"image_link": LINK.format("not-extracted"), "group_id": "y", "entity_name": "voltage",
         "entity_value": "5.0 volt"},
        {"image_link": rows[0]["image_link"], "group_id": "0", "entity_name": rows[0]["entity_name"],
         "entity_value": "[1.0, 2.0] gram"},
    ])
    labeled_path = root / "labeled.csv"
    labeled.to_csv(labeled_path, index=False)
    catalog = labeled.drop(columns=["entity_value"])
    extra = pd.DataFrame([
        {"image_link": "", "group_id": "z", "entity_name": "width"},
        {"image_link": rows[1]["image_link"], "group_id": "z", "entity_name": "colour"},
    ])
    catalog = pd.concat([catalog, extra], ignore_index=True)
    catalog.insert(0, "index", range(100, 100 + len(catalog)))
    catalog_path = root / "catalog.csv"
    catalog.to_csv(catalog_path, index=False)
    return store, labeled_path, catalog_path


def _config(tmp: Path, *overrides: str) -> Any:
    return load_config(overrides=[
        "model.embed_dim=16", "model.hidden_dim=24", "model.cnn_proj_dim=8", "model.max_tokens=64",
        "model.max_candidates=16", "train.epochs=4", "train.batch_size=16", "train.seed=5", *overrides,
    ])


@pytest.fixture(scope="module")
def trained(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from imagequant.spark.training_table import prepare_training_table
    from imagequant.training.fit import train_from_table

    root = tmp_path_factory.mktemp("trainpredict")
    store, labeled, catalog = make_store(root, 150, seed=8)
    table = prepare_training_table(spark, [labeled], store)
    config = _config(root)
    result = train_from_table(table, root / "model", config, progress=False)
    return {"root": root, "store": store, "labeled": labeled, "catalog": catalog, "table": table,
            "result": result, "config": config}


def test_training_through_petastorm(trained: dict[str, Any]) -> None:
    table, result = trained["table"], trained["result"]
    assert table.uri.rsplit("/", 1)[0] == (trained["store"] / "_training").resolve().as_uri()
    assert table.rows == 153 and table.usable_rows == 151
    assert (table.missing_images, table.failed_images) == (1, 1)
    metrics = json.loads((result.model_dir / "metrics.json").read_text())
    assert metrics["loader"] == "petastorm"
    assert metrics["skipped"] == {"image_missing": 1, "image_failed": 1}
    assert metrics["labels_never_matched"] == 1  # the range label
    assert metrics["train_rows"] + metrics["val_rows"] == 151
    assert metrics["validation"]["f1"] >= 0.85, metrics["history"]
    assert {"weights.pt", "vocab.json", "config.json", "threshold.json", "model.pt2"} <= {
        p.name for p in result.model_dir.iterdir()}


def test_pyarrow_loader_reads_the_same_records(trained: dict[str, Any]) -> None:
    from imagequant.training.examples import examples_from_records
    from imagequant.training.reader import iter_training_records

    path = trained["table"].uri
    by_loader = {}
    for loader in ("petastorm", "pyarrow"):
        records = sorted(iter_training_records(path, loader), key=lambda r: (r["source"], r["index"]))
        by_loader[loader] = records
    a, b = by_loader["petastorm"], by_loader["pyarrow"]
    assert len(a) == len(b) == 153
    for ra, rb in zip(a, b, strict=True):
        assert ra["index"] == rb["index"] and ra["tokens_json"] == rb["tokens_json"]
        assert ra["entity_value"] == rb["entity_value"] and bool(ra["has_cnn"]) == bool(rb["has_cnn"])
        np.testing.assert_array_equal(np.asarray(ra["cnn_features"]), np.asarray(rb["cnn_features"]))
    ea, _ = examples_from_records(a)
    eb, _ = examples_from_records(b)
    assert [(e.index, e.label, len(e.candidates)) for e in ea] == [(e.index, e.label, len(e.candidates)) for e in eb]
    assert sum(e.cnn is None for e in ea) == 10  # rows of the 9 images written without CNN features


def test_predict_writes_statuses_and_a_valid_submission(spark: Any, trained: dict[str, Any]) -> None:
    from imagequant.spark.inference import run_predict

    out = trained["root"] / "pred"
    summary = run_predict(spark, trained["catalog"], trained["store"], str(trained["result"].model_dir), out,
                          exported=True)
    assert summary.problems == []
    frame = pd.read_parquet(out / "predictions.parquet")
    assert list(frame.columns) == ["index", "image_link", "entity_name", "prediction", "value", "unit", "score", "confidence", "n_candidates",
                                   "status", "error", "ocr_reader", "in_training",
                                   "evidence_text", "evidence_left", "evidence_top", "evidence_width",
                                   "evidence_height", "evidence_angle", "reasons"]
    catalog = pd.read_csv(trained["catalog"])
    assert sorted(frame["index"]) == sorted(catalog["index"])
    # every row, the bad link and the unknown entity too, names its catalog row
    named = frame.set_index("index")
    assert list(named.loc[catalog["index"], "image_link"]) == list(catalog["image_link"].fillna(""))
    assert list(named.loc[catalog["index"], "entity_name"]) == list(catalog["entity_name"])
    status = dict(zip(frame["index"], frame["status"], strict=True))
    n = len(catalog)
    assert status[100 + n - 5] == "http_status"
    assert status[100 + n - 4] == "image_missing"
    assert status[100 + n - 2] == "bad_link" and status[100 + n - 1] == "unknown_entity"
    assert (frame["status"] == "ok").sum() == n - 4
    failed = frame[frame["status"] != "ok"]
    assert (failed["prediction"] == "").all() and failed["error"].str.len().gt(0).all()
    # scored against the labels the rows came from, the predictions are mostly right
    from imagequant.core.metrics import score

    labels = pd.read_csv(trained["labeled"])["entity_value"].tolist()
    answers = frame.sort_values("index")["prediction"].tolist()[: len(labels)]
    assert score(answers, labels)["f1"] >= 0.85
    sub = read_submission(out / "submission.csv")
    assert list(sub.columns) == ["index", "prediction"] and len(sub) == n
    # every row of an image the model was fitted on is marked (the other entity asked of a training image too);
    # the images that never reached training are not
    assert set(frame.loc[~frame["in_training"], "status"]) == {"http_status", "image_missing", "bad_link"}
    assert summary.in_training == n - 3 and f"images the model was fitted on: {n - 3} rows" in summary.line()

    # the rule baseline runs through the same UDF (eager vs exported agreement: test_model.py)
    rules_summary = run_predict(spark, trained["catalog"], trained["store"], "rules", trained["root"] / "pred_rules")
    assert rules_summary.problems == [] and rules_summary.answered > 0
    rules_frame = pd.read_parquet(trained["root"] / "pred_rules" / "predictions.parquet")
    assert rules_frame["in_training"].isna().all() and rules_summary.in_training is None
    assert "confidence: none (the rule baseline has no confidence model)" in rules_summary.line()


def test_training_learns_a_calibrated_confidence_and_predict_writes_it(spark: Any, trained: dict[str, Any]) -> None:
    from imagequant.scoring.confidence import load_confidence
    from imagequant.spark.inference import run_predict

    model_dir = trained["result"].model_dir
    model = load_confidence(model_dir)
    assert model is not None and model.scorer == "network"
    report = json.loads((model_dir / "metrics.json").read_text())["confidence"]
    assert report["rows"] == 151 and report["answered"] > 100 and 0.0 <= report["ece"] <= 0.2
    thresholds = [p["threshold"] for p in model.operating]
    assert thresholds and thresholds == sorted(thresholds, reverse=True)
    out = trained["root"] / "pred_confidence"
    summary = run_predict(spark, trained["catalog"], trained["store"], str(model_dir), out, min_confidence=0.9)
    frame = pd.read_parquet(out / "predictions.parquet")
    ok = frame[frame["status"].isin(["ok", "low_confidence"])]
    with_candidate = ok[ok["n_candidates"] > 0]
    assert with_candidate["confidence"].between(0, 1).all() and summary.with_confidence == len(with_candidate)
    held = frame[frame["status"] == "low_confidence"]
    assert (held["confidence"] < 0.9).all() and (held["prediction"] == "").all()
    assert held["error"].str.contains("below the minimum confidence 0.900").all()
    answered = frame[frame["prediction"] != ""]
    assert (answered["confidence"] >= 0.9).all()
    assert "held back below 0.900" in summary.line()


def test_a_rules_only_model_directory_gives_the_rules_answers_with_a_confidence(
        spark: Any, trained: dict[str, Any]) -> None:
    from imagequant.spark.inference import run_predict
    from imagequant.training.fit import train_from_table

    config = _config(trained["root"], "train.scorer=rules")
    model_dir = trained["root"] / "rules_model"
    result = train_from_table(trained["table"], model_dir, config, progress=False)
    assert {p.name for p in model_dir.iterdir()} == {"scorer.json", "confidence.json", "metrics.json",
                                                     "training_images.txt", "ocr_readers.json"}
    assert json.loads((model_dir / "ocr_readers.json").read_text()) == {"ocr_engine": trained["table"].ocr_readers}
    assert result.metrics["confidence"]["rows"] == 151
    with_model = run_predict(spark, trained["catalog"], trained["store"], str(model_dir), trained["root"] / "pr")
    plain = run_predict(spark, trained["catalog"], trained["store"], "rules", trained["root"] / "pr_plain")
    a = pd.read_parquet(with_model.out_dir / "predictions.parquet")
    b = pd.read_parquet(plain.out_dir / "predictions.parquet")
    # the same answers; only the directory's predictions carry a confidence
    assert a["prediction"].tolist() == b["prediction"].tolist()
    assert a["confidence"].notna().sum() > 0 and b["confidence"].isna().all()
    # a directory written before the training images were recorded: nothing is marked
    (model_dir / "training_images.txt").unlink()
    older = run_predict(spark, trained["catalog"], trained["store"], str(model_dir), trained["root"] / "pr_old")
    c = pd.read_parquet(older.out_dir / "predictions.parquet")
    assert older.in_training is None and c["in_training"].isna().all()
    assert c["prediction"].tolist() == a["prediction"].tolist()


def test_too_few_product_groups_train_without_a_confidence_and_say_so(
        spark: Any, trained: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from imagequant.spark.training_table import prepare_training_table
    from imagequant.training.fit import train_from_table

    labeled = pd.read_csv(trained["labeled"])
    few = tmp_path / "few.csv"
    labeled[labeled["group_id"].isin(["0", "1", "2"])].to_csv(few, index=False)  # 3 groups, 5 folds asked
    table = prepare_training_table(spark, [few], trained["store"])
    for scorer in ("network", "rules"):
        model_dir = tmp_path / scorer
        train_from_table(table, model_dir, _config(tmp_path, f"train.scorer={scorer}"), progress=False)
        assert not (model_dir / "confidence.json").exists()
        assert "warning: no confidence model learned" in capsys.readouterr().err


def test_confidence_options_refuse_without_a_confidence_model_and_bad_values(trained: dict[str, Any],
                                                                            tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old_model"  # a model directory written before confidence existed
    shutil.copytree(trained["result"].model_dir, old)
    (old / "confidence.json").unlink()
    base = ["--catalog", str(trained["catalog"]), "--store", str(trained["store"]), "--out", str(tmp_path / "o")]
    cases = [
        (["--model", str(old), "--target-precision", "0.9"], "needs a calibrated confidence"),
        (["--model", "rules", "--min-confidence", "0.5"], "needs a calibrated confidence"),
        (["--model", str(trained["result"].model_dir), "--min-confidence", "1.5"], "--min-confidence must be"),
        (["--model", str(trained["result"].model_dir), "--target-precision", "0"], "--target-precision must be"),
        (["--model", str(trained["result"].model_dir), "--target-precision", "nan"], "--target-precision must be"),
        (["--model", str(trained["result"].model_dir), "--set", "predict.min_confidence=2"], "predict.min_confidence"),
    ]
    for args, fragment in cases:
        done = _job("predict", *base, *args)
        assert done.returncode == 2 and "Traceback" not in done.stderr, (args, done.stderr)
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and fragment in last, (args, done.stderr)
    (old / "confidence.json").write_text("{not json")
    done = _job("predict", *base, "--model", str(old))
    assert done.returncode == 2 and "confidence.json cannot be used" in done.stderr.strip().splitlines()[-1]
    # the model's own training catalog: it predicts, and says that those rows are in-sample
    done = _job("predict", *base, "--model", str(trained["result"].model_dir))
    assert done.returncode == 0, done.stderr
    n = len(pd.read_csv(trained["catalog"]))
    model = trained["result"].model_dir
    assert f"warning: {n - 3} of {n} rows are of images model {model} was fitted on" in done.stderr


def test_an_old_model_directory_still_predicts_with_a_null_confidence(spark: Any, trained: dict[str, Any],
                                                                      tmp_path: Path) -> None:
    import shutil

    from imagequant.spark.inference import run_predict

    old = tmp_path / "old_model"
    shutil.copytree(trained["result"].model_dir, old)
    (old / "confidence.json").unlink()
    summary = run_predict(spark, trained["catalog"], trained["store"], str(old), tmp_path / "out")
    frame = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert frame["confidence"].isna().all() and summary.answered > 0
    assert "confidence: none (the model directory has no confidence model)" in summary.line()


def test_an_old_model_meeting_an_entity_it_was_not_trained_on_gives_those_rows_a_status(
        spark: Any, trained: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from imagequant.spark.inference import run_predict

    old = tmp_path / "old_model"  # as if trained before "voltage" existed: its slot held another entity
    shutil.copytree(trained["result"].model_dir, old)
    config = json.loads((old / "config.json").read_text())
    config["entities"] = ["retired_entity" if e == "voltage" else e for e in config["entities"]]
    (old / "config.json").write_text(json.dumps(config))
    summary = run_predict(spark, trained["catalog"], trained["store"], str(old), tmp_path / "out", exported=False)
    frame = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    catalog = pd.read_csv(trained["catalog"])
    voltage = set(catalog.loc[catalog["entity_name"] == "voltage", "index"])
    statuses = dict(zip(frame["index"], frame["status"], strict=True))
    # every voltage row whose image is in the store gets the status; the others are scored as before
    untrained = {i for i, s in statuses.items() if s == "entity_not_trained"}
    assert untrained and untrained <= voltage
    assert frame.loc[frame["status"] == "entity_not_trained", "error"].str.contains("retrain").all()
    assert summary.answered > 0 and summary.problems == []
    assert "warning: model" in capsys.readouterr().err


def test_the_model_directory_records_what_made_its_rows_and_predict_says_when_rows_were_made_otherwise(
        spark: Any, trained: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CNN weights of the network's features and the readers of the rows' images: recorded by train; rows made
    otherwise are counted and warned about by predict, their answers unchanged."""
    import shutil

    from imagequant.spark.inference import SCORED_STATUSES, run_predict, untrained_readers

    table = trained["table"]
    assert table.cnn_weights == {"random(seed=0)": table.usable_rows}
    assert table.ocr_readers == {"synthetic": table.usable_rows}
    model = trained["result"].model_dir
    assert json.loads((model / "cnn_weights.json").read_text()) == {"cnn_weights": table.cnn_weights}
    assert json.loads((model / "ocr_readers.json").read_text()) == {"ocr_engine": table.ocr_readers}
    same = run_predict(spark, trained["catalog"], trained["store"], str(model), tmp_path / "same")
    assert same.untrained_cnn_weights == {} and same.untrained_readers == {}
    err = capsys.readouterr().err
    for said in ("not trained on", "not fitted on"):
        assert said not in same.line() and said not in err

    other = tmp_path / "other_model"  # as if trained on ImageNet features of images another reader read
    shutil.copytree(model, other)
    (other / "cnn_weights.json").write_text(json.dumps({"cnn_weights": {"imagenet": 150}}))
    (other / "ocr_readers.json").write_text(json.dumps({"ocr_engine": {"rapidocr:ppocrv4": 150}}))
    summary = run_predict(spark, trained["catalog"], trained["store"], str(other), tmp_path / "other")
    frame = pd.read_parquet(tmp_path / "other" / "predictions.parquet")
    images = pq.ParquetDataset(str(trained["store"] / "images")).read().to_pandas()
    ok_images = set(images.loc[images["status"] == "ok", "image_id"])
    links = pd.read_csv(trained["catalog"], keep_default_na=False)["image_link"]
    with_image = sum(1 for link in links if link and image_id(link) in ok_images)
    scored = int(frame["status"].isin(SCORED_STATUSES).sum())
    assert summary.untrained_cnn_weights == {"random(seed=0)": with_image}
    assert 0 < scored <= with_image and summary.untrained_readers == {"synthetic": scored}
    assert f"rows with CNN features the network was not trained on: {with_image}" in summary.line()
    assert f"rows read by a reader the model was not fitted on: {scored}" in summary.line()
    err = capsys.readouterr().err
    assert f"warning: {with_image} rows have CNN features made with weights" in err
    assert f"warning: {scored} rows were read by a reader the model directory" in err
    # the answers themselves are the network's as before: the warnings change nothing
    assert frame["prediction"].tolist() == pd.read_parquet(tmp_path / "same" / "predictions.parquet")["prediction"].tolist()
    # a directory written before the readers were recorded: nothing to compare with
    assert untrained_readers({"synthetic": 3}, str(other), None) == {}


def test_model_cache_loads_once_per_process(trained: dict[str, Any]) -> None:
    from imagequant.scoring.zoo import load_scorer

    model_dir = str(trained["result"].model_dir)
    first = load_scorer(model_dir, exported=False)
    assert load_scorer(model_dir + "/", exported=False) is first
    assert load_scorer(model_dir, exported=True) is not first


# --- the submission check ----------------------------------------------------------------------------------


def _catalog() -> pd.DataFrame:
    return pd.DataFrame({"index": [0, 1, 2, 3], "entity_name": ["item_weight", "voltage", "width", "item_volume"]})


def _write(tmp_path: Path, text: str) -> pd.DataFrame:
    path = tmp_path / "submission.csv"
    path.write_text(text)
    return read_submission(path)


def test_check_submission_accepts_a_valid_file(tmp_path: Path) -> None:
    sub = _write(tmp_path, "index,prediction\n0,500.0 gram\n1,\n3,12.5 fluid ounce\n2,0.0005 metre\n")
    assert check_submission(sub, _catalog()) == []


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("index,prediction\n0,500.0 gram\n1,\n2,\n3,\n0,\n", "more than once: 0"),
        ("index,prediction\n0,500.0 gram\n1,\n3,\n", "have no row: 2"),
        ("index,prediction\n0,2 gms\n1,\n2,\n3,\n", "'2 gms'"),
        ("index,prediction\n0,2.2e2 gram\n1,\n2,\n3,\n", "'2.2e2 gram'"),
        ("index,prediction\n0,500.0  gram\n1,\n2,\n3,\n", "malformed"),
        ("index,prediction\n0,5.0 volt\n1,\n2,\n3,\n", "allowed for item_weight"),
        ("index,prediction\n0,\n1,\n2,\n3,\n9,\n", "not in the catalog: 9"),
        ("index,prediction\n0,\n1,\n2,\nx,\n", "not integers"),
        ("id,prediction\n0,\n1,\n2,\n3,\n", "columns must be exactly index,prediction"),
    ],
)
def test_check_submission_rejects_broken_files(tmp_path: Path, text: str, fragment: str) -> None:
    problems = check_submission(_write(tmp_path, text), _catalog())
    assert problems and any(fragment in p for p in problems), problems


# --- the job entry points: usage errors exit 2 before any Spark work --------------------------------------------


def _job(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "jobs" / f"{name}.py"), *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO)


def test_jobs_reject_bad_arguments(tmp_path: Path) -> None:
    unlabeled = tmp_path / "unlabeled.csv"
    unlabeled.write_text("index,image_link,group_id,entity_name\n0,https://x.example/a.jpg,1,voltage\n")
    sample = tmp_path / "sample"
    (sample / "images").mkdir(parents=True)
    (sample / "images" / "a.jpg").write_bytes(b"")
    repeated = tmp_path / "repeated.csv"  # labeled, so read alone it may repeat an index; predicted, it may not
    repeated.write_text("index,image_link,group_id,entity_name,entity_value\n"
                        "7,https://x.example/a.jpg,1,voltage,12 volt\n7,https://x.example/b.jpg,1,voltage,\n")
    cases = [
        ("train", ["--store", str(tmp_path), "--model", str(tmp_path / "m")], "--catalog"),
        ("predict", ["--catalog", str(repeated), "--store", str(tmp_path), "--model", "rules",
                     "--out", str(tmp_path / "o")], "index 7 appears more than once (line 2 and line 3)"),
        ("train", ["--catalog", str(tmp_path / "none.csv"), "--store", str(tmp_path), "--model", "m"], "does not exist"),
        ("train", ["--catalog", str(unlabeled), "--store", str(tmp_path), "--model", "m"], "entity_value"),
        ("train", ["--catalog", str(unlabeled), "--store", "s", "--model", "m", "--set", "train.loader=x"],
         "train.loader"),
        ("predict", ["--catalog", str(unlabeled), "--store", str(tmp_path), "--model", str(tmp_path / "nomodel"),
                     "--out", str(tmp_path / "o")], "does not exist"),
        ("predict", ["--catalog", str(unlabeled), "--store", str(tmp_path / "nostore"), "--model", "rules",
                     "--out", str(tmp_path / "o")], "store"),
        # A mistyped --store that names an existing file or folder would otherwise answer every row
        # image_missing.
        ("predict", ["--catalog", str(unlabeled), "--store", str(unlabeled), "--model", "rules",
                     "--out", str(tmp_path / "o")], "is a file, not a store's folder"),
        ("predict", ["--catalog", str(unlabeled), "--store", str(tmp_path), "--model", "rules",
                     "--out", str(tmp_path / "o")], "is a folder but not a store (it has no _manifest.json"),
        ("compact_store", ["--store", str(tmp_path)], "is a folder but not a store"),
        # a sample's folder: its images folder of image files has the images table's name
        ("predict", ["--catalog", str(unlabeled), "--store", str(sample), "--model", "rules",
                     "--out", str(tmp_path / "o")], "is a folder but not a store"),
    ]
    for name, args, fragment in cases:
        done = _job(name, *args)
        assert done.returncode == 2, (name, args, done.stderr)
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and fragment in last, done.stderr


def test_an_empty_catalog_predicts_no_rows_and_says_so(spark: Any, trained: dict[str, Any], tmp_path: Path) -> None:
    """A nightly batch with no rows is a run that answers nothing, not an error."""
    from imagequant.spark.inference import run_predict

    empty = tmp_path / "empty.csv"
    empty.write_text("index,image_link,group_id,entity_name\n")
    summary = run_predict(spark, empty, trained["store"], "rules", tmp_path / "out")
    assert (summary.rows, summary.answered, summary.problems) == (0, 0, [])
    assert "predicted 0 rows with rules: 0 answered, status: none; " in summary.line(), summary.line()
    assert pd.read_csv(summary.out_dir / "submission.csv").columns.tolist() == ["index", "prediction"]
    assert pd.read_parquet(summary.out_dir / "predictions.parquet").empty


def test_train_refuses_a_model_folder_of_other_files(trained: dict[str, Any], tmp_path: Path) -> None:
    """A mistyped --model (a project folder with its own config.json) is refused before any work and left as it
    was: training replaces and removes files of the model directory's names. A new or empty folder and a model
    directory of either kind are taken (dot files are the file system's own)."""
    from imagequant.errors import UsageError
    from imagequant.training.fit import check_model_target

    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text('{"mine": true}')
    (project / "notes.txt").write_text("kept")
    done = _job("train", "--catalog", str(trained["labeled"]), "--store", str(trained["store"]), "--model",
                str(project))
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --model {project} is a folder of other files (notes.txt) and holds no model "
                      "directory; give a new or empty folder, or a model directory jobs/train.py wrote"], done.stderr
    assert sorted(p.name for p in project.iterdir()) == ["config.json", "notes.txt"]
    assert (project / "config.json").read_text() == '{"mine": true}'
    (tmp_path / "empty" / ".ipynb_checkpoints").mkdir(parents=True)
    for fine in (tmp_path / "new", tmp_path / "empty", trained["result"].model_dir):
        check_model_target(fine)
    with pytest.raises(UsageError, match=r"\(a, b, c and 1 more\)"):
        for name in "abcd":
            (tmp_path / "four" / name).mkdir(parents=True)
        check_model_target(tmp_path / "four")


def test_train_predict_and_evaluate_accept_a_store_uri(spark: Any, trained: dict[str, Any]) -> None:
    """Every job takes the store locations extract takes: here a file:// URI instead of a path."""
    from imagequant.evaluation.evaluate import evaluate
    from imagequant.spark.inference import run_predict
    from imagequant.spark.store import require_store
    from imagequant.spark.training_table import prepare_training_table
    from imagequant.training.reader import iter_training_records

    uri = trained["store"].resolve().as_uri()
    require_store(uri)
    table = prepare_training_table(spark, [trained["labeled"]], uri)
    assert table.uri.startswith(uri + "/_training/") and table.usable_rows == 151
    assert len(list(iter_training_records(table.uri, "pyarrow"))) == 153
    out = trained["root"] / "pred_uri"
    summary = run_predict(spark, trained["catalog"], uri, "rules", out)
    assert summary.problems == [] and summary.answered > 0
    by_path = run_predict(spark, trained["catalog"], trained["store"], "rules", trained["root"] / "pred_path")
    assert (pd.read_csv(out / "submission.csv").equals(pd.read_csv(by_path.out_dir / "submission.csv")))
    result, rows = evaluate(out / "submission.csv", read_catalog(trained["labeled"]), uri)
    assert result["rows"] > 0 and rows["candidate_count"].sum() > 0


def test_a_store_of_another_format_is_refused(spark: Any, trained: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    from imagequant.core.schema import STORE_FORMAT, StoreFormatError
    from imagequant.spark.store import read_images

    store = tmp_path / "future-store"
    shutil.copytree(trained["store"] / "images", store / "images")
    (store / "_manifest.json").write_text(json.dumps({"format": STORE_FORMAT + 1, "runs": []}))
    with pytest.raises(StoreFormatError, match=f"reads format {STORE_FORMAT}"):
        read_images(spark, store)
    done = _job("predict", "--catalog", str(trained["catalog"]), "--store", str(store), "--model", "rules",
                "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: store ")


def test_predict_refuses_a_truncated_model_file_with_one_error_line(trained: dict[str, Any],
                                                                    tmp_path: Path) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(trained["result"].model_dir, model)
    data = (model / "model.pt2").read_bytes()
    (model / "model.pt2").write_bytes(data[: len(data) // 3])
    done = _job("predict", "--catalog", str(trained["catalog"]), "--store", str(trained["store"]), "--model",
                str(model), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "model.pt2 cannot be loaded" in last
    (model / "model.pt2").write_bytes(data)
    (model / "cnn_weights.json").write_text('{"cnn_weights": ')  # a record cut short
    done = _job("predict", "--catalog", str(trained["catalog"]), "--store", str(trained["store"]), "--model",
                str(model), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "cnn_weights.json is not a CNN weights record" in last
    (model / "cnn_weights.json").unlink()
    (model / "ocr_readers.json").write_text('{"ocr_engine": ["synthetic"]}')  # not counts
    done = _job("predict", "--catalog", str(trained["catalog"]), "--store", str(trained["store"]), "--model",
                str(model), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "ocr_readers.json is not a record of the training rows' readers" in last


def test_training_on_an_extract_runs_stored_rows_equals_training_on_its_catalog(spark: Any, trained: dict[str, Any]
                                                                                ) -> None:
    import shutil

    from imagequant.catalog import ROW_COLUMNS, read_catalog
    from imagequant.spark.store import read_rows
    from imagequant.spark.training_table import prepare_training_table
    from imagequant.training.reader import iter_training_records

    store = trained["store"]
    part = store / "rows" / "run_date=2024-06-01"  # what an extract run of the labeled catalog stores
    part.mkdir(parents=True)
    read_catalog(trained["labeled"])[list(ROW_COLUMNS)].assign(run_id="r1").to_parquet(part / "part-0.parquet",
                                                                                        index=False)
    try:
        from_rows = prepare_training_table(spark, [read_rows(spark, store, "2024-06-01")], store)
        from_catalog = prepare_training_table(spark, [trained["labeled"]], store)
    finally:
        shutil.rmtree(store / "rows")
    assert from_rows.uri != from_catalog.uri  # each source has its own training table
    assert (from_rows.rows, from_rows.usable_rows) == (from_catalog.rows, from_catalog.usable_rows)

    def records(uri: str) -> dict[int, tuple[Any, ...]]:
        return {int(r["index"]): (r["entity_name"], r["entity_value"], r["status"], r["tokens_json"])
                for r in iter_training_records(uri, "pyarrow")}

    assert records(from_rows.uri) == records(from_catalog.uri)


def test_a_catalog_read_before_spark_names_the_training_table_its_file_names(trained: dict[str, Any],
                                                                             tmp_path: Path) -> None:
    """jobs/train.py reads its catalogs before Spark starts: the training table is still named by the file's
    bytes, so the table an earlier run wrote for the file is the one replaced."""
    from imagequant.catalog import read_catalog
    from imagequant.spark.training_table import catalogs_hash

    labeled = trained["labeled"]
    frame = read_catalog(labeled)
    assert catalogs_hash([frame]) == catalogs_hash([labeled]) == catalogs_hash([str(labeled)])
    edited = tmp_path / "edited.csv"
    edited.write_bytes(Path(labeled).read_bytes() + b"\n")  # the same rows, other bytes
    assert catalogs_hash([read_catalog(edited)]) == catalogs_hash([edited]) != catalogs_hash([labeled])
    detached = frame.copy()
    detached.attrs = {}  # rows from elsewhere (an extract run's): named by their values
    assert catalogs_hash([detached]) not in (catalogs_hash([labeled]), catalogs_hash([edited]))
