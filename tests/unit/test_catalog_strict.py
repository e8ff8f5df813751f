"""Catalog, predictions and truth files are read strictly where pandas is lenient: rows wider or narrower
than the header, index values that are not int64 integers, and repeated indexes are errors naming the line
(CSV) or row (Parquet), and the jobs turn them into one ``error:`` line and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imagequant.catalog import parse_index, read_catalog
from imagequant.errors import CatalogError, UsageError
from imagequant.evaluation.evaluate import read_predictions

REPO = Path(__file__).resolve().parents[2]
HEADER = "index,image_link,group_id,entity_name\n"
LABELED = "image_link,group_id,entity_name,entity_value\n"


def row(i: int) -> str:
    return f"{i},https://img.test/{i}.jpg,{100 + i},item_weight\n"


def write(tmp_path: Path, text: str, name: str = "catalog.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_trailing_comma_on_the_first_row_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + row(0).rstrip("\n") + ",\n" + row(1) + row(2))
    with pytest.raises(CatalogError, match=r"line 2 has 5 fields but the header has 4"):
        read_catalog(path)


@pytest.mark.parametrize(("text", "line"), [
    (HEADER + row(0) + row(1) + "2,https://img.test/2.jpg,102,item_weight,extra\n", 4),  # wider, later
    (HEADER + row(0) + "1,https://img.test/1.jpg,101\n", 3),  # narrower
    (LABELED + "https://img.test/a.jpg,1,item_weight,5 gram,\n", 2),  # labeled, trailing comma
])
def test_rows_of_the_wrong_width_are_errors(tmp_path: Path, text: str, line: int) -> None:
    with pytest.raises(CatalogError, match=rf"line {line} has"):
        read_catalog(write(tmp_path, text))


def test_a_header_of_another_separator_or_of_control_bytes_is_named_plainly(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"found: index;image_link;group_id;entity_name \(its header is "
                                           r"separated by semicolons: a catalog's columns are separated by commas\)"):
        read_catalog(write(tmp_path, HEADER.replace(",", ";") + row(0).replace(",", ";")))
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\x00\x01garbage\n")
    with pytest.raises(CatalogError, match=r"found: '\\x00\\x01garbage'\. Expected"):
        read_catalog(binary)


def test_quoted_fields_blank_lines_and_gzip_still_read(tmp_path: Path) -> None:
    import gzip

    text = HEADER + '0,"https://img.test/0.jpg",100,item_weight\n\n' + '1,https://img.test/1.jpg,"a,\nb",width\n' + row(2)
    frame = read_catalog(write(tmp_path, text))
    assert frame["index"].tolist() == [0, 1, 2] and frame["group_id"].tolist() == ["100", "a,\nb", "102"]
    gz = tmp_path / "c.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    assert read_catalog(gz)["index"].tolist() == [0, 1, 2]
    bad = HEADER + row(0) + '1,https://img.test/1.jpg,"a,\nb",width\n' + row(2).rstrip("\n") + ",\n"
    with pytest.raises(CatalogError, match="line 5 has 5 fields"):  # the line count includes the quoted newline
        read_catalog(write(tmp_path, bad, "bad.csv"))


def test_entity_names_are_matched_regardless_of_case_spaces_and_hyphens(tmp_path: Path) -> None:
    text = (HEADER + "0,https://img.test/0.jpg,100,Item_Weight\n" + "1,https://img.test/1.jpg,100, item weight \n"
            + "2,https://img.test/2.jpg,100,MAXIMUM-WEIGHT-RECOMMENDATION\n" + "3,https://img.test/3.jpg,100,colour\n"
            + "4,https://img.test/4.jpg,100,item__weight\n")
    frame = read_catalog(write(tmp_path, text))
    assert frame["entity_name"].tolist() == ["item_weight", "item_weight", "maximum_weight_recommendation",
                                             "colour", "item_weight"]
    assert frame["row_status"].tolist() == ["ok", "ok", "ok", "unknown_entity", "ok"]
    assert "'colour' is not one of" in frame["row_error"][3]


@pytest.mark.parametrize("value", ["1.5", "1e3", "12.0", "0x10", "9223372036854775808", "-9223372036854775809",
                                   "abc", "1_000", "\u0661"])
def test_index_values_must_be_int64_integers(tmp_path: Path, value: str) -> None:
    text = HEADER + row(0) + row(1).replace("1,", f"{value},", 1)
    with pytest.raises(CatalogError, match=r"line 3: column index must hold an integer") as info:
        read_catalog(write(tmp_path, text))
    assert repr(value) in str(info.value)


def test_index_edge_values_that_are_fine(tmp_path: Path) -> None:
    text = HEADER + row(0).replace("0,", " 7 ,", 1) + row(1).replace("1,", "9223372036854775807,", 1) + row(2).replace("2,", "-3,", 1)
    assert read_catalog(write(tmp_path, text))["index"].tolist() == [7, 2**63 - 1, -3]
    assert [parse_index(v) for v in (True, 2.0, 2.5, float("nan"), None, "")] == [None, 2, None, None, None, None]


def test_empty_index_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="line 3: column index is empty"):
        read_catalog(write(tmp_path, HEADER + row(0) + row(1).replace("1,", ",", 1)))


def test_duplicate_index_in_an_unlabeled_catalog_is_an_error_at_read_time(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"index 1 appears more than once \(line 3 and line 5\)"):
        read_catalog(write(tmp_path, HEADER + row(0) + row(1) + row(2) + row(1)))
    labeled = "index," + LABELED + "1,https://img.test/a.jpg,1,item_weight,5 gram\n1,https://img.test/b.jpg,1,width,2 cm\n"
    path = write(tmp_path, labeled, "labeled.csv")
    assert len(read_catalog(path)) == 2  # labeled training rows may share an index
    with pytest.raises(CatalogError, match="appears more than once"):
        read_catalog(path, unique_index=True)


@pytest.mark.parametrize(("values", "arrow_type", "message"), [
    ([0.0, 1.5], pa.float64(), r"row 2: .*1\.5"),
    ([0, 2**63 + 5], pa.uint64(), r"row 2: .*9223372036854775813"),
    ([0, None], pa.int64(), r"row 2: column index is empty"),
    (["0", "1e3"], pa.string(), r"row 2: .*'1e3'"),
    ([0.0, float("inf")], pa.float64(), r"row 2: .*inf"),
])
def test_parquet_index_values_are_checked(tmp_path: Path, values: list[object], arrow_type: pa.DataType,
                                          message: str) -> None:
    table = pa.table({
        "index": pa.array(values, type=arrow_type),
        "image_link": ["https://img.test/a.jpg", "https://img.test/b.jpg"],
        "group_id": ["1", "2"],
        "entity_name": ["width", "width"],
    })
    path = tmp_path / "catalog.parquet"
    pq.write_table(table, path)
    with pytest.raises(CatalogError, match=message):
        read_catalog(path)


def test_integral_parquet_floats_are_accepted(tmp_path: Path) -> None:
    table = pa.table({"index": [3.0, 4.0], "image_link": ["https://img.test/a.jpg", "https://img.test/b.jpg"],
                      "group_id": [1, 2], "entity_name": ["width", "width"]})
    pq.write_table(table, tmp_path / "c.parquet")
    frame = read_catalog(tmp_path / "c.parquet")
    assert frame["index"].tolist() == [3, 4] and frame["group_id"].tolist() == ["1", "2"]


def test_predictions_are_strict_too(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="line 2 has 3 fields but the header has 2"):
        read_predictions(write(tmp_path, "index,prediction\n1,2.0 gram,\n2,\n", "p.csv"))
    with pytest.raises(UsageError, match=r"line 3: column index must hold an integer.*'2\.5'"):
        read_predictions(write(tmp_path, "index,prediction\n1,2.0 gram\n2.5,\n", "p2.csv"))
    with pytest.raises(UsageError, match=r"index 1 appears more than once \(line 2 and line 3\)"):
        read_predictions(write(tmp_path, "index,prediction\n1,2.0 gram\n1,\n", "p3.csv"))
    pq.write_table(pa.table({"index": [1.0, 2.5], "prediction": ["", ""]}), tmp_path / "p.parquet")
    with pytest.raises(UsageError, match=r"row 2: .*2\.5"):
        read_predictions(tmp_path / "p.parquet")
    good = read_predictions(write(tmp_path, "index,prediction\n1,2.0 gram\n2,\n", "ok.csv"))
    assert good["index"].tolist() == [1, 2] and good["prediction"].tolist() == ["2.0 gram", ""]


def _run(job: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "jobs" / f"{job}.py"), *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO)


def _one_error_line(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_evaluate_job_refuses_a_shifted_truth_or_predictions_file(tmp_path: Path) -> None:
    truth = write(tmp_path, LABELED + "https://img.test/a.jpg,1,item_weight,5 gram,\n"
                  "https://img.test/b.jpg,2,item_weight,7 gram\n", "truth.csv")
    predictions = write(tmp_path, "index,prediction\n0,5 gram\n1,7 gram\n", "p.csv")
    _one_error_line(_run("evaluate", "--predictions", str(predictions), "--truth", str(truth),
                         "--report", str(tmp_path / "out")), "line 2 has 5 fields")
    good_truth = write(tmp_path, LABELED + "https://img.test/a.jpg,1,item_weight,5 gram\n", "truth2.csv")
    bad_predictions = write(tmp_path, "index,prediction\n0,5 gram,\n", "p2.csv")
    _one_error_line(_run("evaluate", "--predictions", str(bad_predictions), "--truth", str(good_truth),
                         "--report", str(tmp_path / "out")), "line 2 has 3 fields")
    dup_truth = write(tmp_path, "index," + LABELED + "0,https://img.test/a.jpg,1,item_weight,5 gram\n"
                      "0,https://img.test/b.jpg,1,item_weight,6 gram\n", "truth3.csv")
    _one_error_line(_run("evaluate", "--predictions", str(predictions), "--truth", str(dup_truth),
                         "--report", str(tmp_path / "out")), "index 0 appears more than once")


def test_extract_job_refuses_before_spark(tmp_path: Path) -> None:
    shifted = write(tmp_path, HEADER + row(0).rstrip("\n") + ",\n" + row(1))
    _one_error_line(_run("extract_features", "--catalog", str(shifted), "--store", str(tmp_path / "s")),
                    "line 2 has 5 fields")
    duplicated = write(tmp_path, HEADER + row(0) + row(0), "dup.csv")
    _one_error_line(_run("extract_features", "--catalog", str(duplicated), "--store", str(tmp_path / "s")),
                    "index 0 appears more than once")
    assert not (tmp_path / "s").exists()


def test_labels_are_read_by_the_catalog_reader_with_image_files_from_the_column_or_the_link(tmp_path: Path) -> None:
    from imagequant.catalog import read_labels
    from imagequant.errors import CatalogError

    path = tmp_path / "labels.csv"
    path.write_text("image_file,image_link,group_id,entity_name,entity_value\n"
                    "a.jpg,https://h/x/a.jpg,1,item_weight,500.0 gram\n"
                    ",https://h/x/b.png?v=2,1,voltage,\"[10.0, 20.0] volt\"\n")
    rows = read_labels(path)
    assert [(r.image_file, r.entity, r.value, r.unit) for r in rows] == [
        ("a.jpg", "item_weight", 500.0, "gram"), ("b.png", "voltage", None, None)]
    assert rows[1].label == "[10.0, 20.0] volt"
    bad = tmp_path / "bad.csv"
    bad.write_text("image_file,entity_name\na.jpg,depth\n")
    with pytest.raises(CatalogError, match="entity_value"):
        read_labels(bad)
    wide = tmp_path / "wide.csv"
    wide.write_text("image_file,entity_name,entity_value\na.jpg,depth,1 cm,extra\n")
    with pytest.raises(CatalogError, match="line 2"):
        read_labels(wide)


def test_train_job_reads_every_row_of_its_catalogs_before_spark(tmp_path: Path) -> None:
    fine = "https://img.test/a.jpg,1,item_weight,5 gram\n"
    shifted = write(tmp_path, LABELED + fine * 3 + "https://img.test/b.jpg,1,item_weight,5 gram,\n", "labels.csv")
    model = tmp_path / "model"
    done = _run("train", "--catalog", str(shifted), "--store", str(tmp_path / "store"), "--model", str(model))
    [line] = done.stderr.strip().splitlines()  # one line: Spark never started
    assert done.returncode == 2 and line.startswith(f"error: catalog {shifted}: line 5 has 5 fields"), line
    unlabeled = write(tmp_path, LABELED + "https://img.test/a.jpg,1,item_weight,\n", "blank.csv")
    done = _run("train", "--catalog", str(unlabeled), "--store", str(tmp_path / "store"), "--model", str(model))
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: catalog {unlabeled} has no labels (entity_value); training needs a labeled catalog"], done.stderr
    assert not model.exists()
