"""The challenge F1 on hand-made cases: numeric comparison, abstentions, ranges, thresholds."""

from __future__ import annotations

import math

import pytest

from imagequant.core.metrics import (
    best_threshold,
    candidate_hits,
    candidate_recall,
    per_entity,
    row_outcome,
    score,
)
from imagequant.text.candidates import Candidate


@pytest.mark.parametrize(
    ("out", "gt", "outcome"),
    [
        ("500.0 gram", "500 gram", "tp"),
        ("500 gram", "500.00 gram", "tp"),
        ("0.5 kilogram", "500 gram", "fp"),  # equal mass, different unit: the challenge says wrong
        ("501.0 gram", "500 gram", "fp"),
        ("500.0 gram", "", "fp"),
        ("", "500 gram", "fn"),
        ("", "", "tn"),
        (None, float("nan"), "tn"),
        ("10.0 gram", "[10.0, 20.0] gram", "fp"),  # a range truth is never matched
        ("", "[10.0, 20.0] gram", "fn"),
        ("5.0 watt", "5 horsepower", "fp"),
    ],
)
def test_row_outcome(out: object, gt: object, outcome: str) -> None:
    assert row_outcome(out, gt) == outcome


def test_score_hand_made() -> None:
    out = ["500.0 gram", "2.0 kilogram", "", "", "12.0 volt", "10.0 gram"]
    gt = ["500 gram", "3 kilogram", "100 watt", "", "", "[10.0, 20.0] gram"]
    s = score(out, gt)
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (1, 3, 1, 1)
    assert s["precision"] == pytest.approx(1 / 4)
    assert s["recall"] == pytest.approx(1 / 2)
    assert s["f1"] == pytest.approx(2 * 0.25 * 0.5 / 0.75)
    assert s["accuracy"] == pytest.approx(2 / 6)


def test_score_zero_divisions() -> None:
    s = score(["", ""], ["", ""])
    assert (s["precision"], s["recall"], s["f1"], s["tn"]) == (0.0, 0.0, 0.0, 2)
    s = score(["1.0 gram"], ["2 gram"])
    assert s["f1"] == 0.0 and s["fp"] == 1
    assert score([], [])["f1"] == 0.0
    with pytest.raises(ValueError):
        score(["1 gram"], [])


def test_per_entity_table() -> None:
    entities = ["item_weight", "item_weight", "voltage", "voltage"]
    out = ["500.0 gram", "", "12.0 volt", "5.0 volt"]
    gt = ["500 gram", "1 kilogram", "12 volt", "230 volt"]
    table = per_entity(entities, out, gt)
    assert list(table.index) == ["item_weight", "voltage", "all"]
    assert table.loc["item_weight", "tp"] == 1 and table.loc["item_weight", "fn"] == 1
    assert table.loc["item_weight", "f1"] == pytest.approx(2 / 3)
    assert table.loc["voltage", "precision"] == pytest.approx(0.5)
    assert table.loc["all", "n"] == 4
    assert table.loc["all", "f1"] == pytest.approx(score(out, gt)["f1"])


def test_best_threshold_abstains_where_truth_is_empty() -> None:
    # high-scoring answers are right; low-scoring ones land on rows without a truth
    scores = [0.9, 0.8, 0.7, 0.2, 0.1]
    correct = [True, True, True, False, False]
    has_answer = [True] * 5
    gt_nonempty = [True, True, True, False, False]
    best = best_threshold(scores, correct, has_answer, gt_nonempty)
    assert best["threshold"] == pytest.approx(0.7)
    assert (best["tp"], best["fp"], best["fn"]) == (3, 0, 0)
    assert best["f1"] == pytest.approx(1.0)


def test_best_threshold_keeps_wrong_answers_when_every_row_has_a_truth() -> None:
    # F1 = 2TP/(2TP+FP+FN): with a truth on every row, a wrong answer costs what an empty one does
    scores = [0.9, 0.5, 0.1]
    correct = [True, False, True]
    best = best_threshold(scores, correct, [True] * 3, [True] * 3)
    assert best["threshold"] == -math.inf
    assert (best["tp"], best["fp"], best["fn"]) == (2, 1, 0)
    assert best["f1"] == pytest.approx(
        score(["1 gram", "2 gram", "3 gram"], ["1 gram", "9 gram", "3 gram"])["f1"]
    )


def test_best_threshold_agrees_with_score() -> None:
    scores = [0.95, 0.9, 0.6, 0.6, 0.3, 0.0, 0.2]
    out = ["1.0 gram", "2.0 gram", "3.0 gram", "4.0 gram", "5.0 gram", "", "7.0 gram"]
    gt = ["1 gram", "", "3 gram", "40 gram", "", "6 gram", ""]
    correct = [row_outcome(o, g) == "tp" for o, g in zip(out, gt, strict=True)]
    best = best_threshold(scores, correct, [bool(o) for o in out], [bool(g) for g in gt])
    kept = [o if (o and s >= best["threshold"]) else "" for o, s in zip(out, scores, strict=True)]
    assert best["f1"] == pytest.approx(score(kept, gt)["f1"])
    # brute force over every cut
    brute = max(
        score([o if (o and s >= t) else "" for o, s in zip(out, scores, strict=True)], gt)["f1"]
        for t in [*scores, math.inf, -math.inf]
    )
    assert best["f1"] == pytest.approx(brute)


def test_best_threshold_ties_and_no_answers() -> None:
    best = best_threshold([0.5, 0.5], [True, False], [True, True], [True, False])
    assert (best["tp"], best["fp"]) in {(1, 1), (0, 0)}  # tied scores go together
    none = best_threshold([0.0, 0.0], [False, False], [False, False], [True, True])
    assert none["f1"] == 0.0 and none["fn"] == 2 and none["threshold"] == math.inf
    with pytest.raises(ValueError):
        best_threshold([0.1], [True, True], [True], [True])


def test_candidate_recall() -> None:
    def cand(value: float, unit: str) -> Candidate:
        return Candidate(value, unit, "", 0, 1, 0, 0, 1, 1, 1.0, 0.5, 0.5, 0.9)

    rows = [
        [cand(500.0, "gram"), cand(1.0, "kilogram")],
        [cand(0.5, "kilogram")],  # same mass, other unit: not a hit
        [],
        ["12.0 volt", (5.0, "volt")],
        [cand(10.0, "gram")],
    ]
    truths = ["500 gram", "500 gram", "3 watt", "12 volt", "[10.0, 20.0] gram"]
    assert candidate_hits(rows, truths) == [True, False, False, True, False]
    assert candidate_recall(rows, truths) == pytest.approx(2 / 5)
    assert candidate_recall([[], []], ["", ""]) == 0.0
