"""The scorer registry: the kinds it knows, a new kind registered and loaded through it, the error for a
specification no kind recognises, and explain working through the scorer contract alone."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from PIL import Image

from imagequant.config import load_config
from imagequant.core.tokens import OcrToken
from imagequant.errors import UsageError
from imagequant.ocr.base import Reading
from imagequant.scoring import zoo
from imagequant.scoring.base import CandidateScore, Prediction, RowJudgement, Scorer, ScoringRow
from imagequant.scoring.zoo import (
    SCORER_KINDS,
    RuleScorer,
    ScorerKind,
    load_scorer,
    register_scorer_kind,
    scorer_kind,
    write_rules_directory,
)

MARKER = "last_mention.json"


class LastMention:
    """A made-up scorer (not the rules): the row's last candidate, a fixed score; its own reasons, no rule
    figures, no confidence model."""

    reads_cnn = False
    confidence = None
    threshold = 0.0
    entities = ("item_weight",)

    def __init__(self, name: str = "last_mention") -> None:
        self.name = name
        self.judged: list[tuple[ScoringRow, Prediction]] = []

    def predict(self, rows: Sequence[ScoringRow], threshold: float | None = None) -> list[Prediction]:
        out = []
        for row in rows:
            if not row.candidates:
                out.append(Prediction("", None, None, 0.0, 0, 1.0))
                continue
            c = row.candidates[-1]
            text = f"{c.value} {c.unit}" if (threshold or 0.0) <= 0.5 else ""
            out.append(Prediction(text, c.value, c.unit, 0.5, len(row.candidates), 0.5, c, 0.25))
        return out

    def judge(self, row: ScoringRow, prediction: Prediction) -> RowJudgement:
        self.judged.append((row, prediction))
        last = len(row.candidates) - 1
        return RowJudgement([CandidateScore(0.5 if i == last else 0.125, ["last_mention"] if i == last else [])
                             for i in range(len(row.candidates))], [])


def _load_last_mention(root: Path | None, exported: bool) -> Scorer:
    assert root is not None
    return LastMention(str(root))


@pytest.fixture()
def last_mention_kind() -> Iterator[ScorerKind]:
    kind = register_scorer_kind(ScorerKind("last_mention", "the last candidate (a test kind)", _load_last_mention,
                                           marker=MARKER))
    try:
        yield kind
    finally:
        SCORER_KINDS.pop(kind.name)


def test_the_registered_kinds() -> None:
    assert list(SCORER_KINDS) == ["rules", "rules_directory", "network"]
    assert [k.marker for k in SCORER_KINDS.values()] == ["", "scorer.json", "config.json"]
    assert SCORER_KINDS["rules"].named and not SCORER_KINDS["network"].named


def test_each_kind_is_recognised(tmp_path: Path) -> None:
    assert scorer_kind("rules") == (SCORER_KINDS["rules"], None)
    assert isinstance(load_scorer("rules"), RuleScorer)
    rules_dir = write_rules_directory(tmp_path / "rules_model")
    assert scorer_kind(str(rules_dir)) == (SCORER_KINDS["rules_directory"], rules_dir.resolve())
    loaded = load_scorer(str(rules_dir))
    assert isinstance(loaded, RuleScorer) and loaded.name == str(rules_dir.resolve())
    assert load_scorer(str(rules_dir) + "/") is loaded  # once per process
    network = tmp_path / "network"
    network.mkdir()
    (network / "config.json").write_text("{}")
    assert scorer_kind(str(network))[0] is SCORER_KINDS["network"]  # recognised without loading torch
    # scorer.json decides a directory that holds both
    (rules_dir / "config.json").write_text("{}")
    assert scorer_kind(str(rules_dir))[0] is SCORER_KINDS["rules_directory"]


def test_a_new_kind_is_registered_once_and_loaded_through_the_zoo(tmp_path: Path,
                                                                  last_mention_kind: ScorerKind) -> None:
    directory = tmp_path / "made_up"
    directory.mkdir()
    (directory / MARKER).write_text(json.dumps({}))
    assert scorer_kind(str(directory)) == (last_mention_kind, directory.resolve())
    scorer = load_scorer(str(directory))
    assert isinstance(scorer, LastMention) and scorer.name == str(directory.resolve())
    assert load_scorer(str(directory)) is scorer
    with pytest.raises(ValueError, match="already registered"):
        register_scorer_kind(last_mention_kind)
    assert "last_mention (a directory with last_mention.json)" in zoo._known_kinds()


def test_a_specification_no_kind_recognises_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"does not exist \(a scorer is a model directory or one of the names rules\)"):
        load_scorer(str(tmp_path / "absent"))
    (tmp_path / "catalog.csv").write_text("image_link,group_id,entity_name\n")
    with pytest.raises(UsageError, match=r"catalog.csv is not a directory \(a scorer is a model directory"):
        load_scorer(str(tmp_path / "catalog.csv"))
    with pytest.raises(UsageError, match=r"holds no kind of scorer this version knows \(kinds: rules, rules_directory "
                                         r"\(a directory with scorer.json\), network \(a directory with config.json\)\)"):
        load_scorer(str(tmp_path))
    (tmp_path / "scorer.json").write_text("{not json")
    with pytest.raises(UsageError, match="scorer.json cannot be read"):
        load_scorer(str(tmp_path))


def _tokens() -> list[OcrToken]:
    return [OcrToken("Net", 90, 10, 10, 40, 20, 0, 0, 0), OcrToken("Wt", 90, 55, 10, 30, 20, 0, 0, 1),
            OcrToken("500g", 90, 90, 10, 60, 20, 0, 0, 2), OcrToken("Serving", 90, 10, 60, 80, 20, 0, 1, 0),
            OcrToken("30g", 90, 95, 60, 40, 20, 0, 1, 1)]


def test_explain_works_through_the_contract_with_a_scorer_that_is_not_the_rules(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from imagequant.pipeline import explain, images

    asked: list[object] = []

    def question(tokens: Sequence[OcrToken], entities: Sequence[str], image_size: tuple[int, int]) -> bool:
        return False

    def read_image(image: Image.Image, config: object, entities: Sequence[str] = (), *,
                   needs_second_look: object) -> tuple[Reading, list[float]]:
        asked.append(needs_second_look)
        return Reading(_tokens(), ["upright"]), []

    monkeypatch.setattr(images, "read_image", read_image)  # no OCR: the tokens are given
    scorer = LastMention()
    config = load_config(overrides=["cnn.enabled=true"])  # the scorer reads no CNN features: none computed
    explanation = explain.explain_image(Image.new("RGB", (400, 300), "white"), "label.png", "item_weight", config,
                                        scorer, question)
    assert asked == [question]  # the caller's second-look question reached the reading
    [(row, prediction)] = scorer.judged
    assert row.cnn is None and prediction is explanation.prediction
    assert [v.candidate.text for v in explanation.candidates] == ["500g", "30g"]
    assert [v.probability for v in explanation.candidates] == [0.125, 0.5]
    chosen = explanation.chosen()
    assert chosen is explanation.candidates[-1] and chosen.reasons == ["last_mention"]
    text = explanation.text()
    assert "candidates for item_weight: 2 (scorer last_mention)" in text
    assert "rule - p=0.125" in text and "rule - p=0.500" in text  # no rule figures reported: shown as such
    assert text.splitlines()[-2] == ("choice: 30.0 gram (score 0.500) read from '30g' at (95,60,40,20) (angle 0); "
                                     "reasons: last_mention")
    assert text.splitlines()[-1].startswith("confidence: none (the scorer has no confidence model")


def test_a_network_directorys_cnn_weights_are_recorded_read_back_and_checked(tmp_path: Path) -> None:
    zoo.write_cnn_weights(tmp_path, {"imagenet": 40, "random(seed=0)": 2})
    assert zoo.trained_cnn_weights(tmp_path) == {"imagenet": 40, "random(seed=0)": 2}
    assert zoo.trained_cnn_weights(tmp_path / "older") is None  # a directory written before the record
    assert zoo.trained_cnn_weights(zoo.RULES) is None
    (tmp_path / zoo.CNN_WEIGHTS_FILE).write_text("[1, 2]")
    with pytest.raises(UsageError, match="not a CNN weights record"):
        zoo.trained_cnn_weights(tmp_path)


def test_rows_whose_features_mix_cnn_weights_are_warned_about() -> None:
    assert zoo.mixed_cnn_weights_warning({"imagenet": 40}, "the training rows") is None
    assert zoo.mixed_cnn_weights_warning({}, "the training rows") is None
    line = zoo.mixed_cnn_weights_warning({"random(seed=0)": 2, "imagenet": 40}, "the training rows")
    assert line is not None and line.startswith("warning: the training rows have CNN features made with")
    assert "imagenet: 40, random(seed=0): 2" in line and "--reprocess-made-otherwise" in line
