"""The confidence model: its evidence, its fitting on out-of-fold rows, its file, and the calibration metrics."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from imagequant.core import metrics
from imagequant.core.tokens import OcrToken
from imagequant.errors import UsageError
from imagequant.scoring.base import ScoringRow
from imagequant.scoring.confidence import (
    CONFIDENCE_FILE,
    FEATURE_NAMES,
    ConfidenceModel,
    answer_evidence,
    load_confidence,
)
from imagequant.scoring.zoo import RuleScorer
from imagequant.text.candidates import extract_candidates
from imagequant.training.confidence import (
    AnswerEvidence,
    ConfidenceSettings,
    collect_evidence,
    describe_report,
    fit_confidence,
    out_of_fold_confidence,
    repeated_out_of_fold,
    train_confidence,
)

IMAGE = (800, 600)


def _line(words: list[str], y: int, h: int = 20, line_no: int = 0) -> list[OcrToken]:
    out, x = [], 10
    for i, word in enumerate(words):
        out.append(OcrToken(word, 90.0, x, y, 10 * len(word), h, 1, line_no, i))
        x += 10 * len(word) + 8
    return out


def _row(entity: str, lines: list[list[str]]) -> ScoringRow:
    tokens = [t for i, words in enumerate(lines) for t in _line(words, 40 + 60 * i, line_no=i)]
    return ScoringRow(entity, tokens, IMAGE, extract_candidates(tokens, entity, IMAGE))


def _rows(n: int, seed: int) -> tuple[list[ScoringRow], list[str], list[str]]:
    """Rows of two kinds: a keyword-led single weight (its label usually the printed value) and an image
    with several weights and no keyword (its label often another one), with their labels and groups."""
    rng = random.Random(seed)
    rows, labels, groups = [], [], []
    for i in range(n):
        a, b, c = rng.randint(2, 900), rng.randint(2, 900), rng.randint(2, 900)
        if i % 2:
            rows.append(_row("item_weight", [["NET", "WT", f"{a}g"]]))
            labels.append(f"{a} gram" if rng.random() < 0.9 else f"{b} gram")
        else:
            rows.append(_row("item_weight", [[f"{a}g"], [f"{b}g"], [f"{c}g"]]))
            labels.append(f"{a} gram" if rng.random() < 0.35 else f"{c} gram")
        groups.append(str(i // 2))
    return rows, labels, groups


# --- metrics ---------------------------------------------------------------------------------------------


def test_reliability_bins_and_expected_calibration_error() -> None:
    confidence = [0.05, 0.15, 0.95, 0.95, 0.85, 0.85, 1.0]
    right = [False, False, True, True, True, False, True]
    bins = metrics.reliability(confidence, right, 10)
    assert [b["rows"] for b in bins] == [1, 1, 0, 0, 0, 0, 0, 0, 2, 3]  # 1.0 falls in the last bin
    assert bins[9]["accuracy"] == 1.0 and math.isclose(bins[9]["confidence"], (0.95 + 0.95 + 1.0) / 3)
    assert math.isnan(bins[2]["accuracy"])
    ece = metrics.expected_calibration_error(confidence, right, 10)
    expected = (0.05 + 0.15 + 2 * abs(0.85 - 0.5) + 3 * abs((2.9 / 3) - 1.0)) / 7
    assert math.isclose(ece, expected)


def test_coverage_curve_counts_unanswered_rows_in_the_coverage() -> None:
    curve = metrics.coverage_curve([0.9, 0.8, 0.8, 0.3], [True, True, False, False], rows=8)
    assert curve.thresholds.tolist() == [0.9, 0.8, 0.3]  # ties go together
    assert curve.coverage.tolist() == [1 / 8, 3 / 8, 4 / 8]
    point = curve.reaching(0.6)
    assert point is not None and point["threshold"] == 0.8 and point["answered"] == 3
    assert curve.reaching(1.01) is None


# --- evidence ----------------------------------------------------------------------------------------------


def test_answer_evidence_names_every_term_and_needs_a_candidate() -> None:
    row = _row("item_weight", [["NET", "WT", "250g"], ["12g"]])
    [pred] = RuleScorer().predict([row])
    x = answer_evidence(row, pred)
    assert x is not None and x.shape == (len(FEATURE_NAMES),) and np.isfinite(x).all()
    named = dict(zip(FEATURE_NAMES, x, strict=True))
    assert named["keyword"] == 1.0 and named["entity=item_weight"] == 1.0 and named["agrees_with_rules"] == 1.0
    assert named["log_distinct_values"] == pytest.approx(math.log(2)) and named["rule_margin_other_value"] > 0
    empty = _row("item_weight", [["no", "numbers", "here"]])
    [none] = RuleScorer().predict([empty])
    assert answer_evidence(empty, none) is None


# --- fitting ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("repeat", [0, 1, 2])
def test_out_of_fold_confidence_never_scores_a_row_it_was_fitted_on(repeat: int) -> None:
    rows, labels, groups = _rows(160, seed=3)
    preds = RuleScorer().predict(rows)
    data = collect_evidence(rows, preds, labels, groups)
    oof = out_of_fold_confidence(data, "rules", ConfidenceSettings(folds=4), repeat=repeat)
    assert len(oof.fitted_on) == 4
    group_of = np.asarray(data.groups)
    for k, fitted in enumerate(oof.fitted_on):
        held = np.flatnonzero(oof.fold == k)
        assert len(held) and not set(held) & set(fitted.tolist())
        # nor any row of a held-out row's product group
        assert not set(group_of[held]) & set(group_of[fitted])
    assert sorted(np.concatenate([np.flatnonzero(oof.fold == k) for k in range(4)]).tolist()) == list(
        range(len(data.right)))


def test_out_of_fold_confidence_does_not_learn_noise_that_in_sample_fitting_would() -> None:
    """Labels that are coin flips: a model fitted on its own rows ranks them better than chance, the
    out-of-fold confidence does not (what the operating table and every reported figure come from)."""
    rng = np.random.default_rng(11)
    n = 240
    evidence = rng.normal(size=(n, len(FEATURE_NAMES)))
    right = rng.random(n) < 0.5
    data = AnswerEvidence(evidence, right, ["item_weight"] * n, [str(i) for i in range(n)], n)
    settings = ConfidenceSettings(folds=5, regularisation=10.0)
    in_sample = fit_confidence(data, "rules", settings).uncalibrated(evidence)
    oof = out_of_fold_confidence(data, "rules", settings).confidence

    def auc(score: np.ndarray) -> float:
        pos, neg = score[right], score[~right]
        return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())

    assert auc(in_sample) > 0.65
    assert abs(auc(oof) - 0.5) < 0.1


def test_the_inner_folds_choose_strong_shrinkage_for_noise_and_weak_for_plentiful_signal() -> None:
    rng = np.random.default_rng(3)

    def evidence(n: int, signal: float) -> AnswerEvidence:
        x = rng.normal(size=(n, len(FEATURE_NAMES)))
        right = rng.random(n) < 1.0 / (1.0 + np.exp(-signal * x[:, :8].sum(axis=1)))
        return AnswerEvidence(x, right, ["item_weight"] * n, [str(i) for i in range(n)], n)

    settings = ConfidenceSettings()
    noise = fit_confidence(evidence(150, 0.0), "rules", settings).regularisation
    signal = fit_confidence(evidence(3000, 3.0), "rules", settings).regularisation
    assert noise == min(settings.regularisation_grid) and signal is not None and signal >= 0.3
    fixed = fit_confidence(evidence(150, 0.0), "rules", ConfidenceSettings(regularisation=0.5))
    assert fixed.regularisation == 0.5


def test_trained_confidence_ranks_right_above_wrong_and_is_calibrated_on_new_rows() -> None:
    rows, labels, groups = _rows(400, seed=5)
    preds = RuleScorer().predict(rows)
    model = train_confidence(rows, preds, labels, groups, "rules", ConfidenceSettings())
    report = model.report
    assert report["rows"] == 400 and report["answered"] == 400
    assert report["ece"] < 0.08
    assert report["coverage_at_precision"]["0.80"]["coverage"] >= 0.4  # the keyword-led half
    new_rows, new_labels, _ = _rows(300, seed=99)
    new_preds = RuleScorer(confidence=model).predict(new_rows)
    data = collect_evidence(new_rows, new_preds, new_labels, ["g"] * 300)
    confidence = np.asarray([p.confidence for p in new_preds])
    assert metrics.expected_calibration_error(confidence, data.right) < 0.08
    assert confidence[data.right].mean() > confidence[~data.right].mean() + 0.3


def test_the_reported_figures_pool_repeats_that_assign_groups_to_folds_afresh() -> None:
    rows, labels, groups = _rows(200, seed=13)
    preds = RuleScorer().predict(rows)
    settings = ConfidenceSettings(folds=4, repeats=3)
    data = collect_evidence(rows, preds, labels, groups)
    runs = repeated_out_of_fold(data, "rules", settings)
    assert len(runs) == 3 and len({tuple(run.fold.tolist()) for run in runs}) == 3
    model = train_confidence(rows, preds, labels, groups, "rules", settings)
    report = model.report
    assert report["repeats"] == 3 and len(report["ece_per_repeat"]) == 3
    assert report["ece"] == pytest.approx(metrics.expected_calibration_error(
        np.concatenate([run.confidence for run in runs]), np.tile(data.right, 3)))
    # counts are per repeat: the bins hold the answered rows once, the widest point answers every row once
    assert sum(b["rows"] for b in report["reliability"]) == pytest.approx(report["answered"])
    widest = min(model.operating, key=lambda p: p["threshold"])
    assert widest["answered"] == pytest.approx(report["answered"]) and widest["coverage"] == pytest.approx(
        report["answered"] / report["rows"])
    assert widest["right"] == pytest.approx(report["right"])


def test_target_precision_picks_the_widest_operating_point_that_reaches_it() -> None:
    rows, labels, groups = _rows(200, seed=7)
    model = train_confidence(rows, RuleScorer().predict(rows), labels, groups, "rules", ConfidenceSettings())
    point = model.threshold_for(0.8)
    assert point is not None and point["precision"] >= 0.8
    assert all(p["coverage"] <= point["coverage"] for p in model.operating if p["precision"] >= 0.8)
    assert model.threshold_for(1.01) is None


# --- the file --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("calibration", ["platt", "isotonic"])
def test_the_stored_model_applies_as_scikit_learn_would(tmp_path: Path, calibration: str) -> None:
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    rows, labels, groups = _rows(200, seed=1)
    preds = RuleScorer().predict(rows)
    data = collect_evidence(rows, preds, labels, groups)
    settings = ConfidenceSettings(calibration=calibration)
    model = fit_confidence(data, "rules", settings)
    model.save(tmp_path)
    loaded = load_confidence(tmp_path)
    assert loaded is not None and loaded.to_json() == json.loads((tmp_path / CONFIDENCE_FILE).read_text())
    assert loaded.pooled.kind == calibration
    # the logistic part equals scikit-learn's own predict_proba on the same standardised rows
    x = (data.evidence - np.asarray(loaded.mean)) / np.asarray(loaded.scale)
    assert loaded.regularisation in settings.regularisation_grid  # chosen on the inner folds
    reference = LogisticRegression(C=loaded.regularisation, max_iter=2000).fit(x, data.right)
    p = loaded.uncalibrated(data.evidence)
    np.testing.assert_allclose(p, reference.predict_proba(x)[:, 1], atol=1e-6)
    probe = np.linspace(0.001, 0.999, 57)
    if calibration == "isotonic":
        # the map equals IsotonicRegression's prediction through the same breakpoints
        iso = IsotonicRegression(out_of_bounds="clip").fit(loaded.pooled.x, loaded.pooled.y)
        np.testing.assert_allclose(loaded.pooled(probe), iso.predict(probe), atol=1e-12)
    else:
        # Platt: a logistic regression on the log-odds, as scikit-learn predicts it
        platt = LogisticRegression(C=1e6).fit(np.zeros((2, 1)) + [[0.0], [1.0]], [0, 1])
        platt.coef_ = np.asarray([[loaded.pooled.slope]])
        platt.intercept_ = np.asarray([loaded.pooled.intercept])
        logit = np.log(probe / (1 - probe))[:, None]
        np.testing.assert_allclose(loaded.pooled(probe), platt.predict_proba(logit)[:, 1], atol=1e-9)
    assert np.all(np.diff(loaded.pooled(probe)) >= -1e-12)  # monotone


def test_a_directory_without_a_confidence_model_loads_none_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    assert load_confidence(tmp_path) is None
    (tmp_path / CONFIDENCE_FILE).write_text(json.dumps({"format": 99}))
    with pytest.raises(UsageError, match="retrain"):
        load_confidence(tmp_path)


def test_contributions_say_what_moved_the_confidence() -> None:
    rows, labels, groups = _rows(200, seed=2)
    model = train_confidence(rows, RuleScorer().predict(rows), labels, groups, "rules", ConfidenceSettings())
    row = _row("item_weight", [["NET", "WT", "500g"]])
    [pred] = RuleScorer(confidence=model).predict([row])
    evidence = answer_evidence(row, pred)
    terms = model.contributions(evidence)
    assert len(terms) == len(FEATURE_NAMES) and abs(terms[0].push) >= abs(terms[-1].push)
    by_term = {t.term: t for t in terms}
    assert [by_term[name].value for name in FEATURE_NAMES] == list(evidence)  # the row's own values
    assert by_term["entity=item_weight"].value == 1.0 and by_term["entity=voltage"].value == 0.0
    assert by_term["entity=voltage"].describe().startswith("entity=voltage (0) ")
    # the pushes and the intercept add up to the logistic model's log-odds
    logit = sum(t.push for t in terms) + model.intercept
    assert math.isclose(1.0 / (1.0 + math.exp(-logit)), float(model.uncalibrated(evidence)[0]), rel_tol=1e-9)
    assert isinstance(ConfidenceModel.from_json(model.to_json()), ConfidenceModel)


def test_the_report_lines_count_rows_as_means_over_the_repeats() -> None:
    point = {"coverage": 0.034, "precision": 0.857, "threshold": 0.84}
    report = {"rows": 41, "answered": 39, "right": 24, "ece": 0.158, "ece_per_repeat": [0.116, 0.271],
              "coverage_at_precision": {"0.8": {**point, "answered": 1.4}, "0.9": {**point, "answered": 348.6},
                                        "0.95": None}}
    lines = describe_report(report).splitlines()
    assert lines[0].startswith("confidence (out-of-fold over 41 labeled rows, 39 answered, 24 right): expected "
                               "calibration error 0.158 (each of the 2 repeats of the outer folds alone: 0.116-0.271)")
    assert lines[1:] == ["  precision 80%: answering 3.4% of rows (1.4 rows a repeat, 85.7% right) at min "
                         "confidence 0.840",
                         "  precision 90%: answering 3.4% of rows (349 rows, 85.7% right) at min confidence 0.840",
                         "  precision 95%: no minimum confidence reaches it"]
