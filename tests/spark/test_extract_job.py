"""End to end: the extract job over a loopback server with every fault, shared images and a rerun."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from imagequant.catalog import image_id
from imagequant.config import load_config
from imagequant.core.units import parse_label
from imagequant.spark.extract import run_extract
from tests.httpserver import pixel_bomb_png, truncated_jpeg

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

TEST_SETTINGS = [
    "fetch.allow_loopback=true", "fetch.read_timeout_s=1.0", "fetch.connect_timeout_s=1.0",
    "fetch.max_retries=2", "fetch.backoff_s=0.05", "fetch.max_backoff_s=0.2", "fetch.max_retry_after_s=2",
    "fetch.max_bytes=3000000", "imaging.max_pixels=40000000", "ocr.engine=tesseract", "cnn.batch_size=8",
    "spark.image_partitions_per_core=2",
]

# (path, fault, expected image status)
FAULTS = [
    ("/faults/missing.jpg", {"kind": "status", "status": 404}, "http_status"),
    ("/faults/flaky.jpg", {"kind": "fail_then_ok", "failures": 1, "status": 500}, "ok"),
    ("/faults/busy.jpg", {"kind": "retry_after", "failures": 1, "retry_after": "1"}, "ok"),
    ("/faults/slow.jpg", {"kind": "slow", "delay": 5.0}, "timeout"),
    ("/faults/page.jpg", {"kind": "status", "status": 200, "content_type": "text/html"}, "not_image"),
    ("/faults/loop-a.jpg", {"kind": "redirect", "location": "/faults/loop-b.jpg"}, "redirect_loop"),
]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    from imagequant.synthetic import generate_sample

    out = tmp_path_factory.mktemp("sample")
    labels = generate_sample(out, n_images=18, seed=1234, difficulty="easy")
    labels.attrs["dir"] = out
    return labels


@pytest.fixture(scope="module")
def catalog(sample: pd.DataFrame, image_server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Registers every sample image and every fault on the server; writes a labeled catalog CSV."""
    images_dir = Path(sample.attrs["dir"]) / "images"
    rows = []
    for record in sample.to_dict("records"):
        name = Path(record["image_link"]).name
        url = image_server.add(f"/img/{name}", (images_dir / name).read_bytes())
        rows.append({**record, "image_link": url, "expected": "ok"})
    body = (images_dir / Path(sample["image_link"].iloc[0]).name).read_bytes()
    for path, fault, expected in FAULTS:
        params = dict(fault)
        kind = params.pop("kind")
        content_type = params.pop("content_type", "image/jpeg")
        payload = b"<html><body>not an image</body></html>" if expected == "not_image" else body
        url = image_server.add_fault(path, kind, body=payload, content_type=content_type, **params)
        rows.append({"image_link": url, "group_id": "9", "entity_name": "item_weight", "entity_value": "",
                     "expected": expected})
    image_server.add_fault("/faults/loop-b.jpg", "redirect", location="/faults/loop-a.jpg")
    for path, payload, expected in [
        ("/faults/truncated.jpg", truncated_jpeg(), "truncated"),
        ("/faults/bomb.png", pixel_bomb_png(), "pixel_bomb"),
        ("/faults/huge.jpg", b"\xff\xd8\xff\xe0" + bytes(3_500_000), "too_large"),
    ]:
        url = image_server.add(path, payload)
        rows.append({"image_link": url, "group_id": "9", "entity_name": "item_weight", "entity_value": "",
                     "expected": expected})
    # Bad rows are kept and marked, never dropped.
    rows.append({"image_link": "", "group_id": "9", "entity_name": "item_weight", "entity_value": "",
                 "expected": "bad_link"})
    rows.append({"image_link": rows[0]["image_link"], "group_id": "9", "entity_name": "colour",
                 "entity_value": "", "expected": "unknown_entity"})
    frame = pd.DataFrame(rows)
    path = tmp_path_factory.mktemp("catalog") / "catalog.csv"
    frame.drop(columns=["expected"]).to_csv(path, index=False)
    return {"path": path, "frame": frame}


@pytest.fixture(scope="module")
def first_run(spark, catalog, tmp_path_factory: pytest.TempPathFactory, image_server) -> dict[str, object]:
    store = tmp_path_factory.mktemp("store")
    images_dir = tmp_path_factory.mktemp("downloads")
    config = load_config(overrides=TEST_SETTINGS)
    summary = run_extract(spark, config, str(catalog["path"]), str(store), str(images_dir))
    return {"store": store, "images_dir": images_dir, "summary": summary, "config": config}


def _images(store: Path) -> pd.DataFrame:
    return pq.ParquetDataset(str(store / "images")).read().to_pandas()


def _rows(store: Path) -> pd.DataFrame:
    return pq.ParquetDataset(str(store / "rows")).read().to_pandas()


def test_every_row_once_with_its_status(first_run, catalog) -> None:
    frame: pd.DataFrame = catalog["frame"]  # type: ignore[assignment]
    rows = _rows(first_run["store"])
    assert len(rows) == len(frame) >= 30
    assert sorted(rows["index"]) == list(range(len(frame)))
    images = _images(first_run["store"]).set_index("image_id")
    assert images.index.is_unique
    for index, expected in enumerate(frame["expected"]):
        row = rows.loc[rows["index"] == index].iloc[0]
        if expected in ("bad_link", "unknown_entity"):
            assert row["row_status"] == expected and row["row_error"]
            continue
        assert row["row_status"] == "ok"
        image = images.loc[row["image_id"]]
        assert image["status"] == expected, (index, image["image_link"], image["error"])
        assert (image["error"] == "") == (expected == "ok")


def test_shared_images_processed_once(first_run, catalog) -> None:
    frame: pd.DataFrame = catalog["frame"]  # type: ignore[assignment]
    links = frame.loc[frame["expected"] != "bad_link", "image_link"]
    assert links.duplicated().any(), "the sample should have images shared by several rows"
    images = _images(first_run["store"])
    served = frame.loc[frame["expected"].ne("bad_link") & frame["entity_name"].ne("colour"), "image_link"].nunique()
    assert len(images) == served
    summary = first_run["summary"]
    assert summary.processed == served and summary.distinct_images == served
    assert summary.ocr_device == "cpu" and " ocr_device=cpu " in summary.line()  # Tesseract, as the workers said
    from imagequant.cnn import cpu_has_native_bf16  # local[2]: the workers run on this CPU

    expected_cnn = "cpu/openvino-bf16" if cpu_has_native_bf16() else "cpu/openvino-f32"  # cnn.cpu_precision=auto
    assert summary.cnn_device == expected_cnn and summary.line().endswith(f" cnn_device={expected_cnn}")


def test_ocr_reads_printed_values_and_features_have_shape(first_run, catalog) -> None:
    frame: pd.DataFrame = catalog["frame"]  # type: ignore[assignment]
    images = _images(first_run["store"]).set_index("image_id")
    clean = frame[(frame["expected"] == "ok") & frame["entity_value"].astype(bool)]
    read = 0
    for record in clean.to_dict("records"):
        image = images.loc[image_id(record["image_link"])]
        label = parse_label(record["entity_value"], record["entity_name"])
        number = f"{label.value:g}"
        read += number in image["ocr_text"].replace(",", ".")
        assert len(image["cnn_features"]) == 2048
        assert len(image["tok_text"]) == len(image["tok_left"]) > 0
    assert read / len(clean) >= 0.8, f"OCR read {read} of {len(clean)} printed values"
    failed = images[images["status"] != "ok"]
    assert all(len(f) == 2048 and not any(f) for f in failed["cnn_features"])


def test_rerun_fetches_nothing_and_equals_first(spark, first_run, catalog, image_server) -> None:
    image_hits_before = {p: n for p, n in image_server.hits.items() if p.startswith("/img/")}
    store = first_run["store"]
    ok_before = _images(store).query("status == 'ok'").set_index("image_id").sort_index()
    summary = run_extract(spark, first_run["config"], str(catalog["path"]), str(store), str(first_run["images_dir"]))
    failed = sum(1 for e in catalog["frame"]["expected"] if e not in ("ok", "bad_link", "unknown_entity"))
    # Only failed images are tried again; ok ones are served by the store, so no good image is fetched.
    assert summary.processed == failed
    image_hits_after = {p: n for p, n in image_server.hits.items() if p.startswith("/img/")}
    assert image_hits_after == image_hits_before
    from imagequant.spark.store import read_images

    view = read_images(spark, str(store)).toPandas().set_index("image_id").sort_index()
    ok_after = view[view["status"] == "ok"]
    assert list(ok_after.index) == list(ok_before.index)
    assert (ok_after["ocr_text"] == ok_before["ocr_text"]).all()


def test_images_dir_serves_a_fresh_store_without_fetching(spark, first_run, catalog, image_server, tmp_path) -> None:
    image_hits_before = {p: n for p, n in image_server.hits.items() if p.startswith("/img/")}
    summary = run_extract(spark, first_run["config"], str(catalog["path"]), str(tmp_path / "store2"),
                          str(first_run["images_dir"]))
    assert summary.store_ok == first_run["summary"].store_ok
    assert {p: n for p, n in image_server.hits.items() if p.startswith("/img/")} == image_hits_before


def test_petastorm_reads_both_tables(first_run) -> None:
    from petastorm import make_batch_reader

    from imagequant.core.schema import READING_COLUMN_NAMES

    store = first_run["store"]
    # The tok_* arrays and the line segments vary in length per image, which Petastorm's batch reader cannot
    # stack into arrays: it reads every other column (training reads them through its own table, as JSON).
    image_columns = [c for c in pq.ParquetDataset(str(store / "images")).schema.names
                     if c not in READING_COLUMN_NAMES]
    for table, column, fields in (("images", "image_id", image_columns), ("rows", "index", None)):
        seen = 0
        with make_batch_reader((store / table).resolve().as_uri(), num_epochs=1, reader_pool_type="dummy",
                               schema_fields=fields) as reader:
            for batch in reader:
                seen += len(getattr(batch, column))
                if table == "images":
                    assert batch.cnn_features.shape[1:] == (2048,)
        assert seen == len(pq.ParquetDataset(str(store / table)).read())


def test_cli_errors_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("link,entity\nx,y\n")
    cases = [
        ["--catalog", str(tmp_path / "missing.csv"), "--store", str(tmp_path / "s")],
        ["--catalog", str(bad), "--store", str(tmp_path / "s")],
        ["--catalog", str(bad)],
        ["--catalog", str(bad), "--store", "s", "--set", "ocr.engine=nope"],
    ]
    for args in cases:
        done = subprocess.run([sys.executable, str(REPO / "jobs" / "extract_features.py"), *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (args, done.stderr)
        assert "error:" in done.stderr
        assert "Traceback" not in done.stderr


def test_each_image_records_its_passes_and_line_segments(first_run, catalog) -> None:
    images = _images(first_run["store"])
    ok = images[images["status"] == "ok"]
    assert len(ok) and all(p.split("+")[0] == "upright" for p in ok["ocr_passes"])
    # the second look is spent only where the rows asked of an image lack a candidate
    assert all(set(p.split("+")) <= {"upright", "rotated", "regions", "detail"} for p in ok["ocr_passes"])
    assert all(len(s) % 4 == 0 for s in ok["line_segments"])
    assert any(len(s) for s in ok["line_segments"])


def test_images_to_process_carries_the_entities_asked_of_each_image(spark) -> None:
    from imagequant.spark.extract import images_to_process

    rows = spark.createDataFrame(
        [("a", "http://x/a.jpg", "width", "ok"), ("a", "http://x/a.jpg", "height", "ok"),
         ("a", "http://x/a.jpg", "width", "ok"), ("b", "http://x/b.jpg", "voltage", "ok"),
         ("c", "http://x/c.jpg", "voltage", "bad_link")],
        "image_id string, image_link string, entity_name string, row_status string",
    )
    todo = {r["image_id"]: (r["image_link"], list(r["entities"])) for r in images_to_process(rows, None).collect()}
    assert todo == {"a": ("http://x/a.jpg", ["height", "width"]), "b": ("http://x/b.jpg", ["voltage"])}


def test_the_catalog_reaches_spark_as_a_staged_file_not_driver_memory(spark, catalog, tmp_path) -> None:
    """A catalog handed over by createDataFrame stays in the driver's JVM; a staged file is read by executors."""
    from imagequant.spark.extract import load_rows
    from imagequant.spark.store import StoreFs

    fs = StoreFs(spark, tmp_path)
    rows = load_rows(spark, fs, str(catalog["path"]), "run-x")
    plan = rows._jdf.queryExecution().analyzed().toString()
    assert "LocalRelation" not in plan
    assert [Path(f).name for f in rows.inputFiles()] == ["catalog.parquet"]
    staged = rows.toPandas().sort_values("index").reset_index(drop=True)
    assert len(staged) == len(catalog["frame"]) and set(staged["run_id"]) == {"run-x"}
    assert list(staged["row_status"]) == ["ok" if e not in ("bad_link", "unknown_entity") else e
                                          for e in catalog["frame"]["expected"]]
    assert staged["entity_value"].isna().sum() == (catalog["frame"]["entity_value"] == "").sum()


def test_images_made_with_other_settings_are_counted_and_processed_again_only_when_asked(spark) -> None:
    from imagequant.spark.extract import ImageSettings, images_made_otherwise, images_to_process

    rows = spark.createDataFrame(
        [("a", "http://x/a.jpg", "width", "ok"), ("b", "http://x/b.jpg", "voltage", "ok"),
         ("c", "http://x/c.jpg", "height", "ok"), ("d", "http://x/d.jpg", "height", "ok"),
         ("e", "http://x/e.jpg", "voltage", "bad_link")],
        "image_id string, image_link string, entity_name string, row_status string",
    )
    existing = spark.createDataFrame(
        [("a", "ok", "rapidocr:ppocrv6_small", "random(seed=0)"),  # made with this run's settings
         ("b", "ok", "rapidocr:ppocrv4", "random(seed=0)"),  # another reader
         ("c", "ok", "rapidocr:ppocrv6_small", "imagenet"),  # other CNN weights
         ("d", "timeout", "rapidocr:ppocrv4", "random(seed=0)"),  # failed: processed again anyway
         ("e", "ok", "rapidocr:ppocrv4", "random(seed=0)"),  # asked by no servable row
         ("f", "ok", None, None)],  # an older record, in no row of this catalog
        "image_id string, status string, ocr_engine string, cnn_weights string",
    )
    settings = ImageSettings("rapidocr:ppocrv6_small", "random(seed=0)")
    other = {r["image_id"]: (r["ocr_engine"], r["cnn_weights"])
             for r in images_made_otherwise(rows, existing, settings).collect()}
    assert other == {"b": ("rapidocr:ppocrv4", "random(seed=0)"), "c": ("rapidocr:ppocrv6_small", "imagenet")}
    kept = {r["image_id"] for r in images_to_process(rows, existing).collect()}
    assert kept == {"d"}
    again = {r["image_id"] for r in images_to_process(rows, existing, settings).collect()}
    assert again == {"b", "c", "d"}


def test_a_run_with_other_cnn_weights_keeps_the_store_unless_asked(spark, first_run, catalog, tmp_path,
                                                                   capfd) -> None:
    """Another seed makes other features: the store's images are counted and kept; with
    reprocess_made_otherwise they are read and embedded again and the new records are the canonical ones."""
    import shutil

    from imagequant.spark.store import read_images

    store = tmp_path / "store"
    shutil.copytree(first_run["store"], store)
    config = load_config(overrides=[*TEST_SETTINGS, "cnn.seed=7"])
    ok_images = first_run["summary"].store_ok
    failed = sum(1 for e in catalog["frame"]["expected"] if e not in ("ok", "bad_link", "unknown_entity"))

    kept = run_extract(spark, config, str(catalog["path"]), str(store), str(first_run["images_dir"]))
    assert kept.processed == failed
    assert kept.made_otherwise == {"tesseract r2 | random(seed=0)": ok_images}
    assert f"made_otherwise={ok_images} (kept)" in kept.line()
    assert "--reprocess-made-otherwise" in capfd.readouterr().err
    view = read_images(spark, str(store)).where("status = 'ok'").toPandas()
    assert set(view["cnn_weights"]) == {"random(seed=0)"}

    again = run_extract(spark, config, str(catalog["path"]), str(store), str(first_run["images_dir"]),
                        reprocess_made_otherwise=True)
    assert again.processed == failed + ok_images
    assert again.store_ok == ok_images
    assert f"made_otherwise={ok_images} (processed again)" in again.line()
    view = read_images(spark, str(store)).where("status = 'ok'").toPandas()
    assert len(view) == ok_images and set(view["cnn_weights"]) == {"random(seed=7)"}
    assert run_extract(spark, config, str(catalog["path"]), str(store)).made_otherwise == {}


def test_a_run_with_another_reading_setting_counts_the_stores_readings_as_made_otherwise(
        spark, first_run, catalog, tmp_path, capfd) -> None:
    """A setting that changes what an image reads as (here the text height of the second look's regions) makes
    the store's readings another reader's: counted and named, not silently mixed in."""
    import shutil

    store = tmp_path / "store"
    shutil.copytree(first_run["store"], store)
    config = load_config(overrides=[*TEST_SETTINGS, "ocr.second_pass_text_px=40", "ocr.tesseract.thread_limit=2"])
    ok_images = first_run["summary"].store_ok

    kept = run_extract(spark, config, str(catalog["path"]), str(store), str(first_run["images_dir"]))
    assert kept.made_otherwise == {"tesseract r2 | random(seed=0)": ok_images}
    assert kept.ocr_settings == "second_pass_text_px=40"  # a thread count changes no reading
    assert "ocr_settings=(second_pass_text_px=40)" in kept.line()
    assert "this run's are tesseract r2 (second_pass_text_px=40) | random(seed=0)" in capfd.readouterr().err
