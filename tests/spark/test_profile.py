"""Catalog profile: the Spark transforms and the figures they give on a small catalog of known counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from imagequant.catalog import read_catalog
from imagequant.errors import CatalogError
from imagequant.spark.profile import (
    key_sizes,
    label_rows,
    label_summary,
    profile_catalog,
    read_catalog_frame,
    summarize_keys,
    write_profile_report,
)

REPO = Path(__file__).resolve().parents[2]

# 12 rows: image a carries 3 rows (two ask item_weight: one repeated pair), one row has no link, one asks
# an unknown entity; labels include a range, a disallowed unit, an unparseable text and a zero value.
LABELED_CSV = """image_link,group_id,entity_name,entity_value
https://img.test/a.jpg,1,item_weight,500.0 gram
https://img.test/a.jpg,1,width,10 centimetre
https://img.test/a.jpg,1,item_weight,500 gram
https://img.test/b.jpg,1,item_weight,"[10.0, 20.0] gram"
https://img.test/c.jpg,2,wattage,5 horsepower
https://img.test/d.jpg,2,voltage,about twelve volts
https://img.test/e.jpg,2,voltage,12 volt
https://img.test/f.jpg,3,width,0.5 metre
,3,width,2 inch
https://img.test/h.jpg,3,colour,red
https://img.test/i.jpg,3,item_weight,1500 gram
https://img.test/j.jpg,4,item_weight,0 gram
"""

UNLABELED_CSV = """index,image_link,group_id,entity_name
10,https://img.test/a.jpg,1,height
11,https://img.test/a.jpg,1,width
12,https://img.test/b.jpg,2,height
13,https://img.test/c.jpg,2,voltage
"""


@pytest.fixture(scope="module")
def labeled_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "labeled.csv"
    path.write_text(LABELED_CSV)
    return path


def _profile(spark: Any, path: Path) -> dict[str, Any]:
    return profile_catalog(spark, path, bins_per_decade=4)


@pytest.fixture(scope="module")
def labeled_profile(spark: Any, labeled_csv: Path) -> dict[str, Any]:
    """The labeled catalog profiled once for the tests that read its figures."""
    return _profile(spark, labeled_csv)


def test_label_rows_classifies_each_row_with_the_catalog_and_unit_parsers(spark: Any, labeled_csv: Path) -> None:
    rows = label_rows(read_catalog_frame(spark, labeled_csv)).collect()
    by_label = {r["entity_value"]: r for r in rows}
    assert len(rows) == 12
    assert by_label["[10.0, 20.0] gram"]["label_kind"] == "range"
    assert by_label["5 horsepower"]["label_kind"] == "unit_not_allowed"
    assert by_label["5 horsepower"]["unit"] == "horsepower"
    assert by_label["about twelve volts"]["label_kind"] == "unparseable"
    assert by_label["0.5 metre"]["label_kind"] == "plain"
    assert by_label["0.5 metre"]["value"] == pytest.approx(0.5)
    assert by_label["2 inch"]["row_status"] == "bad_link"
    assert by_label["red"]["row_status"] == "unknown_entity"
    # the same statuses read_catalog gives (one code path)
    pandas_status = dict(zip(read_catalog(labeled_csv)["entity_value"], read_catalog(labeled_csv)["row_status"],
                             strict=True))
    assert {r["entity_value"]: r["row_status"] for r in rows} == pandas_status


def test_label_summary_bins_plain_values_by_log10(spark: Any, labeled_csv: Path) -> None:
    summary = label_summary(label_rows(read_catalog_frame(spark, labeled_csv)), bins_per_decade=4).collect()
    weight_bins = {(r["unit"], r["value_bin"]): r["rows"] for r in summary
                   if r["entity_name"] == "item_weight" and r["label_kind"] == "plain"}
    # 500 g -> floor(2.699*4) = 10 (twice), 1500 g -> floor(3.176*4) = 12, 0 g has no bin
    assert weight_bins == {("gram", 10): 2, ("gram", 12): 1, ("gram", None): 1}


def test_key_sizes_folds_images_and_keeps_group_ids(spark: Any, labeled_csv: Path) -> None:
    rows = [r.asDict() for r in key_sizes(read_catalog_frame(spark, labeled_csv)).collect()]
    images = sorted((r["rows"], r["entities"], r["keys"]) for r in rows if r["key_kind"] == "image")
    groups = sorted((r["key"], r["rows"]) for r in rows if r["key_kind"] == "group")
    assert images == [(1, 1, 8), (3, 2, 1)]
    assert [(r["rows"], r["keys"]) for r in rows if r["key_kind"] == "no_link"] == [(1, 1)]
    assert groups == [("1", 4), ("2", 3), ("3", 4), ("4", 1)]
    keys = summarize_keys(rows)
    assert keys["duplicate_links"] == {
        "images_with_several_rows": 1, "rows_on_shared_images": 3, "repeated_image_entity_rows": 1,
    }
    assert keys["groups"]["size_classes"] == {"1": 1, "2-3": 1, "4-7": 2}


def test_profile_figures_of_a_labeled_catalog(labeled_profile: dict[str, Any], tmp_path: Path) -> None:
    profile = labeled_profile
    assert profile["labeled"] is True
    assert profile["rows"] == 12
    assert profile["distinct_images"] == 9  # a..j without g (no link)
    assert (profile["rows_without_link"], profile["distinct_link_values"]) == (1, 10)
    assert profile["distinct_groups"] == 4
    assert profile["rows_per_image"] == {"1": 8, "3": 1}
    assert profile["row_status"] == {"ok": 10, "bad_link": 1, "unknown_entity": 1}
    assert profile["label_kinds"] == {"plain": 8, "range": 1, "unit_not_allowed": 1, "unparseable": 2}
    groups = profile["groups"]
    assert (groups["min_rows"], groups["median_rows"], groups["max_rows"]) == (1, 3.0, 4)
    assert groups["largest"][:2] == [{"group_id": "1", "rows": 4}, {"group_id": "3", "rows": 4}]

    entities = profile["entities"]
    assert list(entities) == ["width", "item_weight", "voltage", "wattage", "colour"]
    weight = entities["item_weight"]
    assert weight["rows"] == 5
    assert weight["label_kinds"] == {"plain": 4, "range": 1}
    assert weight["units"] == {"gram": 4}
    assert weight["range_units"] == {"gram": 1}
    assert weight["nonpositive_values"] == 1
    assert weight["value_histograms"] == {"gram": {"log10_left_edges": [2.5, 2.75, 3.0], "counts": [2, 0, 1]}}
    width = entities["width"]
    assert width["units"] == {"centimetre": 1, "inch": 1, "metre": 1}
    assert width["value_histograms"]["metre"] == {"log10_left_edges": [-0.5], "counts": [1]}
    assert width["value_histograms"]["centimetre"] == {"log10_left_edges": [1.0], "counts": [1]}
    assert entities["wattage"]["units_not_allowed"] == {"horsepower": 1}
    assert entities["voltage"]["label_kinds"] == {"plain": 1, "unparseable": 1}
    assert entities["colour"]["label_kinds"] == {"unparseable": 1}

    page = write_profile_report(profile, tmp_path / "report")
    written = json.loads((tmp_path / "report" / "profile.json").read_text())
    assert written["entities"]["item_weight"]["units"] == {"gram": 4}
    html = page.read_text()
    for png in ("rows_per_image.png", "group_sizes.png", "entity_rows.png", "label_kinds.png", "units.png",
                "value_spread.png"):
        assert (tmp_path / "report" / png).stat().st_size > 5000
        assert f'src="{png}"' in html
    assert "horsepower 1" in html


def test_profile_of_an_unlabeled_catalog(spark: Any, tmp_path: Path) -> None:
    path = tmp_path / "test.csv"
    path.write_text(UNLABELED_CSV)
    batch_key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(batch_key)
    profile = _profile(spark, path)
    assert spark.conf.get(batch_key) == before  # the job's larger Arrow batches do not leak into the session
    assert profile["labeled"] is False
    assert (profile["rows"], profile["distinct_images"], profile["distinct_groups"]) == (4, 3, 2)
    assert (profile["rows_without_link"], profile["distinct_link_values"]) == (0, 3)
    assert profile["label_kinds"] == {"unlabeled": 4}
    assert profile["entities"]["height"]["units"] == {}
    html = write_profile_report(profile, tmp_path / "r").read_text()
    assert "no entity_value column" in html
    assert not (tmp_path / "r" / "value_spread.png").exists()


def test_byte_order_mark_does_not_hide_the_first_column(spark: Any, tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_text("\ufeff" + LABELED_CSV.splitlines()[0] + "\n" + LABELED_CSV.splitlines()[1] + "\n")
    row = read_catalog_frame(spark, path).first()
    assert row is not None and row["image_link"] == "https://img.test/a.jpg"


def test_parquet_catalog_gives_the_same_figures(
    spark: Any, labeled_csv: Path, labeled_profile: dict[str, Any], tmp_path: Path
) -> None:
    parquet = tmp_path / "labeled.parquet"
    read_catalog(labeled_csv)[["image_link", "group_id", "entity_name", "entity_value"]].to_parquet(parquet)
    from_csv, from_parquet = labeled_profile, _profile(spark, parquet)
    assert from_parquet["format"] == "parquet"
    for key in ("rows", "distinct_images", "rows_per_image", "label_kinds", "entities", "groups"):
        assert from_parquet[key] == from_csv[key], key


def test_missing_column_fails_before_spark(spark: Any, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("image_link,entity_name\nhttps://img.test/a.jpg,width\n")
    with pytest.raises(CatalogError, match="group_id"):
        profile_catalog(spark, path)


def test_job_exits_2_on_a_bad_catalog(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "profile_catalog.py"), "--catalog", str(tmp_path / "nope.csv"),
         "--report", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: catalog")
    assert "does not exist" in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_job_writes_the_report(labeled_csv: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "profile_catalog.py"), "--catalog", str(labeled_csv),
         "--report", str(tmp_path / "r"), "--set", "spark.master=local[2]",
         "--set", "spark.conf.spark.ui.enabled=false"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "12 rows, 9 distinct images (+1 row(s) without a link: 10 distinct link values), 4 groups" \
        in result.stdout
    assert f"report: {tmp_path / 'r' / 'report.html'}" in result.stdout
    assert json.loads((tmp_path / "r" / "profile.json").read_text())["rows"] == 12
