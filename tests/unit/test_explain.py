"""Explain one image: a local file and a loopback URL read, scored and annotated; a refused address is
refused before any connection, as the library call, the job and submit.sh."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from imagequant.config import Config, load_config
from imagequant.errors import UsageError
from imagequant.pipeline.explain import annotated_name, asked_entity, explain_image, run_explain
from imagequant.scoring.second_look import lacks_plausible_candidate
from imagequant.scoring.zoo import load_scorer
from tests.httpserver import ImageServer
from tests.unit.test_evidence import needs_tesseract, render_label

REPO = Path(__file__).resolve().parents[2]
# one Tesseract pass over large clean text: seconds, not minutes
QUICK = ["ocr.engine=tesseract", "ocr.rotated_pass=false", "ocr.second_pass=false", "imaging.ocr_min_side=300"]


def _config(*extra: str) -> Config:
    return load_config(overrides=[*QUICK, *extra])


RULES = load_scorer("rules")
LOOK = lacks_plausible_candidate  # the second look as the extract job spends it


@pytest.fixture()
def label(tmp_path: Path) -> tuple[Path, tuple[int, int, int, int]]:
    path = tmp_path / "label.png"
    _, printed = render_label(path)
    return path, printed


@pytest.fixture()
def server() -> Iterator[ImageServer]:
    with ImageServer() as s:
        yield s


def _contains(box: tuple[int, int, int, int], printed: tuple[int, int, int, int], slack: int = 8) -> bool:
    left, top, width, height = box
    return (left - slack <= printed[0] and printed[2] <= left + width + slack
            and top - slack <= printed[1] and printed[3] <= top + height + slack)


@needs_tesseract
def test_explains_a_local_file(label: tuple[Path, tuple[int, int, int, int]], tmp_path: Path) -> None:
    path, printed = label
    explanation, written = run_explain(str(path), "item_weight", _config(), RULES, LOOK, out_dir=tmp_path / "out")
    assert explanation.prediction.prediction == "500.0 gram"
    chosen = explanation.chosen()
    assert chosen is not None and chosen.candidate is explanation.prediction.candidate
    c = chosen.candidate
    assert _contains((c.left, c.top, c.width, c.height), printed)
    text = explanation.text()
    assert "OCR lines:" in text and "Net Wt 500g" in text
    assert "candidates for item_weight" in text and "'500g'" in text and "evidence: keyword" in text
    assert text.strip().splitlines()[-2].startswith("choice: 500.0 gram (score ")
    assert text.strip().splitlines()[-1].startswith("confidence: none (the scorer has no confidence model")
    assert "reasons: keyword,keyword_line" in text
    # every candidate has its rule score; the choice is the best of them
    assert max(v.rule_score for v in explanation.candidates) == chosen.rule_score
    assert written == tmp_path / "out" / "label.item_weight.explain.png"
    annotated = Image.open(written).convert("RGB")
    assert annotated.size == (900, 500)
    # the choice's box is drawn in green around the printed value
    edge = annotated.getpixel((c.left - 2, c.top + c.height // 2))
    assert edge[1] > 120 and edge[0] < 80, edge


@needs_tesseract
def test_explain_prints_the_confidence_of_a_model_directory_and_what_drove_it(
        label: tuple[Path, tuple[int, int, int, int]], tmp_path: Path) -> None:
    from imagequant.scoring.zoo import RuleScorer, write_rules_directory
    from imagequant.training.confidence import ConfidenceSettings, train_confidence
    from tests.unit.test_confidence import _rows

    rows, labels, groups = _rows(200, seed=4)
    model = train_confidence(rows, RuleScorer().predict(rows), labels, groups, "rules", ConfidenceSettings())
    directory = write_rules_directory(tmp_path / "rules_model")
    model.save(directory)
    path, _ = label
    explanation, _ = run_explain(str(path), "item_weight", _config(), load_scorer(str(directory)), LOOK)
    confidence = explanation.prediction.confidence
    assert explanation.prediction.prediction == "500.0 gram" and confidence is not None and 0 < confidence <= 1
    line = explanation.text().strip().splitlines()[-1]
    assert line.startswith(f"confidence: {confidence:.3f} (calibrated probability that the answer is right)")
    assert "raised by: " in line and "keyword" in line


@needs_tesseract
def test_a_minimum_score_holds_the_answer_back(label: tuple[Path, tuple[int, int, int, int]]) -> None:
    path, _ = label
    explanation, _ = run_explain(str(path), "item_weight", _config("predict.min_score=0.99"), RULES, LOOK)
    assert explanation.prediction.prediction == "" and explanation.prediction.candidate is not None
    assert "below the minimum score 0.990" in explanation.choice_line()


@needs_tesseract
def test_explains_a_loopback_url(label: tuple[Path, tuple[int, int, int, int]], server: ImageServer) -> None:
    path, printed = label
    url = server.add("/images/I/label.png", path.read_bytes(), "image/png")
    explanation, _ = run_explain(url, "item_weight", _config("fetch.allow_loopback=true"), RULES, LOOK)
    assert explanation.prediction.prediction == "500.0 gram" and server.hits["/images/I/label.png"] == 1
    assert annotated_name(url, "item_weight") == "label.item_weight.explain.png"
    # without the setting, the loopback server is refused before it is asked
    with pytest.raises(UsageError, match="refused by the safe-fetch rules: 127.0.0.1 is a loopback address"):
        run_explain(url, "item_weight", _config(), RULES, LOOK)
    assert server.hits["/images/I/label.png"] == 1


class _NoNetwork:
    """Fails the test on any outgoing connection or name lookup."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"network used: {args!r}")

        monkeypatch.setattr(socket.socket, "connect", refuse)
        monkeypatch.setattr(socket.socket, "connect_ex", refuse)
        monkeypatch.setattr(socket, "create_connection", refuse)
        monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("url", ["http://10.0.0.1/x.jpg", "http://192.168.1.20:8080/images/a.png",
                                 "http://169.254.169.254/latest/meta-data", "http://[fd00::1]/x.jpg"])
def test_a_private_address_is_refused_without_traffic(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _NoNetwork(monkeypatch)
    with pytest.raises(UsageError, match="refused by the safe-fetch rules"):
        run_explain(url, "item_weight", _config(), RULES, LOOK)


def test_usage_errors(tmp_path: Path, label: tuple[Path, tuple[int, int, int, int]]) -> None:
    with pytest.raises(UsageError, match=r"absent.jpg does not exist \(give an image file or an http\(s\) link\)"):
        run_explain(str(tmp_path / "absent.jpg"), "item_weight", _config(), RULES, LOOK)
    with pytest.raises(UsageError, match="is a folder, not an image file"):
        run_explain(str(tmp_path), "item_weight", _config(), RULES, LOOK)
    with pytest.raises(UsageError, match="not a known entity"):
        run_explain(str(label[0]), "colour", _config(), RULES, LOOK)
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    with pytest.raises(UsageError, match=r"cannot be read as an image \(decode_error\): not a recognised image"):
        run_explain(str(not_image), "item_weight", _config(), RULES, LOOK)
    with pytest.raises(UsageError, match="not a known entity"):
        explain_image(Image.new("RGB", (10, 10)), "x", "colour", _config(), RULES, LOOK)


def test_the_entity_is_taken_as_a_catalog_spells_it() -> None:
    assert [asked_entity(t) for t in ("item_weight", "Item_Weight", " item weight ", "ITEM-WEIGHT")] == \
        ["item_weight"] * 4
    with pytest.raises(UsageError, match=r"--entity 'Colour ' is not a known entity \(width, "):
        asked_entity("Colour ")


# --- the job and submit.sh --------------------------------------------------------------------------------


def _run(args: list[str], via_submit: bool = False) -> subprocess.CompletedProcess[str]:
    sets = [a for item in QUICK for a in ("--set", item)]
    command = ([str(REPO / "submit.sh"), "explain"] if via_submit else [sys.executable, str(REPO / "jobs" / "explain.py")])
    env = {**os.environ, "IMAGEQUANT_PYTHON": sys.executable}  # submit.sh: this test's interpreter
    return subprocess.run([*command, *args, *sets], capture_output=True, text=True, timeout=180, env=env)


@needs_tesseract
def test_job_on_a_local_file_and_a_loopback_url(label: tuple[Path, tuple[int, int, int, int]], tmp_path: Path,
                                                server: ImageServer) -> None:
    path, _ = label
    done = _run(["--image", str(path), "--entity", "item_weight", "--out", str(tmp_path / "out")])
    assert done.returncode == 0, done.stderr
    assert "choice: 500.0 gram" in done.stdout
    assert f"annotated: {tmp_path / 'out' / 'label.item_weight.explain.png'}" in done.stdout
    assert (tmp_path / "out" / "label.item_weight.explain.png").stat().st_size > 1000

    url = server.add("/l.png", path.read_bytes(), "image/png")
    done = _run(["--image", url, "--entity", "item_weight", "--set", "fetch.allow_loopback=true"], via_submit=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "choice: 500.0 gram" in done.stdout and server.hits["/l.png"] == 1


def test_job_refuses_a_private_address_and_bad_arguments(tmp_path: Path) -> None:
    done = _run(["--image", "http://10.0.0.1/x.jpg", "--entity", "item_weight"])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --image http://10.0.0.1/x.jpg is refused by the safe-fetch rules: 10.0.0.1 is a private address "
        "(see fetch.allow_loopback, fetch.allow_private and fetch.allowed_hosts)")
    done = _run(["--image", "http://10.0.0.1/x.jpg", "--entity", "item_weight"], via_submit=True)
    assert done.returncode == 2 and "10.0.0.1 is a private address" in done.stderr
    done = _run(["--entity", "item_weight"])
    assert done.returncode == 2 and "--image" in done.stderr
    done = _run(["--image", "x.jpg", "--entity", "item_weight", "--set", "predict.min_score=2"])
    assert done.returncode == 2 and "error: predict.min_score must be between 0 and 1" in done.stderr
    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 200), "white").save(blank)  # decodes, but holds nothing to read: the image's fault
    done = _run(["--image", str(blank), "--entity", "item_weight"])
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr.strip().splitlines() == [
        f"error: --image {blank} cannot be read as an image (blank_image): 300x200 image is uniform (0 pixels "
        "differ from the background level (255, 255, 255) by more than 32): nothing to read, OCR not run"]


def test_submit_runs_explain_without_spark() -> None:
    done = _run(["--image", "a.jpg", "--entity", "width", "--conf", "conf/local.yaml", "--dry-run"], via_submit=True)
    assert done.returncode == 0, done.stderr
    assert "spark-submit" not in done.stdout and "jobs/explain.py" in done.stdout
    assert "--conf conf/local.yaml" in done.stdout
    done = _run(["--image", "a.jpg", "--entity", "width", "--master", "local[2]"], via_submit=True)
    assert done.returncode == 2 and "explain runs without Spark" in done.stderr
