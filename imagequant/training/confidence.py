"""Fitting the confidence model: which answers are right, learned from out-of-fold predictions.

The scorer's answers come from models that never saw their rows (the rules see no labels; a network is
predicted fold by fold). On them a logistic regression over :func:`imagequant.scoring.confidence.
answer_evidence` is fitted, and Platt scaling (or isotonic regression) calibrates its probability: the map
is fitted on the logistic model's own out-of-fold probabilities (group K-fold by product group, so no row
calibrates a model that was fitted on it), per entity where the entity has enough rows of both kinds,
pooled otherwise. The same inner folds choose the logistic model's shrinkage (lowest log loss).

Everything reported (reliability, expected calibration error, coverage at a precision) and the operating
table that ``predict --target-precision`` reads come from a second, outer group K-fold: each row's
confidence is given by a confidence model fitted without the row's product group. That outer K-fold is
repeated with other assignments of groups to folds and the repeats pooled: on a few hundred rows, the fold
a handful of wrong answers lands in decides whether a precision is reached at all, so a threshold read off
a single assignment would be the luck of that draw.

scikit-learn does the fitting (``LogisticRegression``, ``IsotonicRegression``); the fitted numbers are
stored in ``confidence.json`` so applying them needs numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from imagequant.core import metrics
from imagequant.core.units import values_equal
from imagequant.errors import UsageError
from imagequant.scoring.base import Prediction, ScoringRow
from imagequant.scoring.confidence import (
    FEATURE_NAMES,
    Calibration,
    ConfidenceModel,
    answer_evidence,
    log_odds,
    logistic_probability,
    plain_json,
)
from imagequant.training.examples import fold_of_groups


@dataclass
class ConfidenceSettings:
    folds: int = 5  # outer and inner group K-fold
    entity_rows: int = 500  # an entity gets its own calibration map from this many answered rows
    entity_min_class: int = 20  # ... with at least this many right and this many wrong answers
    # LogisticRegression's C; None: the one of ``regularisation_grid`` with the lowest log loss on the inner
    # group folds, so a few hundred labeled rows get strong shrinkage and many thousands need not
    regularisation: float | None = None
    regularisation_grid: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    calibration: str = "platt"  # or "isotonic"
    seed: int = 7
    repeats: int = 5  # outer group K-folds, each with its own assignment of groups to folds, pooled


@dataclass
class AnswerEvidence:
    """The rows a confidence model learns from: one per answered row (rows without a candidate have no
    answer to be right about, but count in the coverage's denominator)."""

    evidence: np.ndarray  # (answered rows, len(FEATURE_NAMES))
    right: np.ndarray  # bool per answered row
    entities: list[str]
    groups: list[str]
    rows: int  # every labeled row, answered or not


def collect_evidence(rows: Sequence[ScoringRow], predictions: Sequence[Prediction], labels: Sequence[str | None],
                     groups: Sequence[str]) -> AnswerEvidence:
    """Each answered row's evidence and whether its answer (the best candidate, thresholds aside) equals
    its label; a range or unparseable label is never equal, as the challenge scores it."""
    evidence, right, entities, kept_groups = [], [], [], []
    for row, pred, label, group in zip(rows, predictions, labels, groups, strict=True):
        x = answer_evidence(row, pred)
        if x is None or pred.value is None or pred.unit is None:
            continue
        evidence.append(x)
        right.append(bool(label) and values_equal(f"{pred.value!r} {pred.unit}", label or ""))
        entities.append(row.entity)
        kept_groups.append(group)
    matrix = np.stack(evidence) if evidence else np.zeros((0, len(FEATURE_NAMES)))
    return AnswerEvidence(matrix, np.asarray(right, dtype=bool), entities, kept_groups, len(rows))


def _logistic(evidence: np.ndarray, right: np.ndarray, regularisation: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean, scale, coef, intercept) of an L2 logistic regression on standardised evidence."""
    mean = evidence.mean(axis=0)
    scale = evidence.std(axis=0)
    scale[scale < 1e-9] = 1.0  # a constant term (an entity absent from these rows) stays at zero weight
    model = LogisticRegression(C=regularisation, max_iter=2000)
    model.fit((evidence - mean) / scale, right)
    return mean, scale, model.coef_[0], float(model.intercept_[0])


def _inner_probabilities(x: np.ndarray, y: np.ndarray, folds: np.ndarray, regularisation: float) -> np.ndarray:
    """Each row's logistic probability from a model fitted on the other inner folds."""
    inner = np.empty(len(y))
    for k in np.unique(folds):
        fit_rows, held = folds != k, folds == k
        if not _both_kinds(y[fit_rows], 1):
            inner[held] = y[fit_rows].mean()
            continue
        inner[held] = logistic_probability(x[held], *_logistic(x[fit_rows], y[fit_rows], regularisation))
    return inner


def _calibration(p: np.ndarray, right: np.ndarray, kind: str) -> Calibration:
    if kind == "isotonic":
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, right.astype(float))
        return Calibration("isotonic", x=[float(v) for v in iso.X_thresholds_],
                           y=[float(v) for v in iso.y_thresholds_])
    platt = LogisticRegression(C=1e6, max_iter=1000).fit(log_odds(p)[:, None], right)
    return Calibration("platt", slope=float(platt.coef_[0][0]), intercept=float(platt.intercept_[0]))


def _both_kinds(right: np.ndarray, at_least: int) -> bool:
    return int(right.sum()) >= at_least and int((~right).sum()) >= at_least


def fit_confidence(data: AnswerEvidence, scorer: str, settings: ConfidenceSettings) -> ConfidenceModel:
    """The logistic model on all of ``data``, calibrated on its own inner out-of-fold probabilities."""
    x, y = data.evidence, data.right
    if len(y) < 2 * settings.folds or not _both_kinds(y, 2):
        raise UsageError(f"the confidence model needs answered rows both right and wrong (at least "
                         f"{2 * settings.folds} in all); got {int(y.sum())} right and {int((~y).sum())} wrong")
    folds = fold_of_groups(data.groups, min(settings.folds, len(set(data.groups))), settings.seed)
    # the same inner folds choose the shrinkage and give the probabilities the calibration is fitted on
    grid = (settings.regularisation,) if settings.regularisation is not None else settings.regularisation_grid
    inner_by_c = {c: _inner_probabilities(x, y, folds, c) for c in grid}
    regularisation = min(grid, key=lambda c: log_loss(y, inner_by_c[c], labels=[False, True]))
    inner = inner_by_c[regularisation]
    entities = np.asarray(data.entities)
    per_entity = {}
    for entity in sorted(set(data.entities)):
        mine = entities == entity
        if mine.sum() >= settings.entity_rows and _both_kinds(y[mine], settings.entity_min_class):
            per_entity[entity] = _calibration(inner[mine], y[mine], settings.calibration)
    mean, scale, coef, intercept = _logistic(x, y, regularisation)
    return ConfidenceModel(scorer, list(FEATURE_NAMES), mean.tolist(), scale.tolist(), coef.tolist(), intercept,
                           _calibration(inner, y, settings.calibration), per_entity, regularisation=regularisation)


@dataclass
class OutOfFold:
    """Each answered row's confidence from a model fitted without the row's group: ``fold[i]`` is the
    outer fold row i was held out in, ``fitted_on[k]`` the rows fold k's model was fitted on."""

    confidence: np.ndarray
    fold: np.ndarray
    fitted_on: list[np.ndarray]


def out_of_fold_confidence(data: AnswerEvidence, scorer: str, settings: ConfidenceSettings,
                           repeat: int = 0) -> OutOfFold:
    """One outer group K-fold; ``repeat`` picks its assignment of groups to folds."""
    folds = fold_of_groups(data.groups, min(settings.folds, len(set(data.groups))),
                           settings.seed + 1 + 1000 * repeat)
    confidence = np.empty(len(data.right))
    fitted_on = []
    for k in range(int(folds.max()) + 1 if len(folds) else 0):
        train = np.flatnonzero(folds != k)
        held = folds == k
        part = AnswerEvidence(data.evidence[train], data.right[train], [data.entities[i] for i in train],
                              [data.groups[i] for i in train], len(train))
        model = fit_confidence(part, scorer, settings)
        confidence[held] = model.predict(data.evidence[held], [e for e, h in zip(data.entities, held, strict=True) if h])
        fitted_on.append(train)
    return OutOfFold(confidence, folds, fitted_on)


def repeated_out_of_fold(data: AnswerEvidence, scorer: str, settings: ConfidenceSettings) -> list[OutOfFold]:
    """``settings.repeats`` outer group K-folds, each assigning groups to folds afresh."""
    return [out_of_fold_confidence(data, scorer, settings, repeat=r) for r in range(max(settings.repeats, 1))]


def _pooled_summary(confidences: Sequence[np.ndarray], right: np.ndarray, rows: int) -> dict[str, Any]:
    """:func:`imagequant.core.metrics.confidence_summary` of the repeats pooled, with its counts per repeat
    (a bin's rows, an operating point's answered and right are means over the repeats), and each repeat's
    own expected calibration error beside the pooled one."""
    repeats = len(confidences)
    summary = metrics.confidence_summary(np.concatenate(confidences), np.tile(right, repeats), rows * repeats)
    summary.update(rows=rows, answered=int(len(right)), right=int(right.sum()), repeats=repeats,
                   ece_per_repeat=[metrics.expected_calibration_error(c, right, metrics.CALIBRATION_BINS)
                                   for c in confidences])
    for b in summary["reliability"]:
        b["rows"] = b["rows"] / repeats
    for point in summary["coverage_at_precision"].values():
        if point is not None:
            point["answered"], point["right"] = point["answered"] / repeats, point["right"] / repeats
    return summary


def confidence_report(runs: Sequence[OutOfFold], data: AnswerEvidence, rows_per_entity: dict[str, int]
                      ) -> dict[str, Any]:
    """Reliability, ECE and coverage at each of :data:`imagequant.core.metrics.PRECISION_TARGETS`, overall
    and per entity, of the out-of-fold confidences of every repeat pooled (coverage over every labeled row)."""
    entities = np.asarray(data.entities)
    report = _pooled_summary([run.confidence for run in runs], data.right, data.rows)
    report["per_entity"] = {
        e: _pooled_summary([run.confidence[entities == e] for run in runs], data.right[entities == e], n)
        for e, n in sorted(rows_per_entity.items())
    }
    return report


def operating_table(runs: Sequence[OutOfFold], data: AnswerEvidence) -> list[dict[str, float]]:
    """The out-of-fold precision-coverage points of the repeats pooled, one per distinct confidence
    (thresholds decreasing; answered and right are means over the repeats)."""
    repeats = len(runs)
    curve = metrics.coverage_curve(np.concatenate([run.confidence for run in runs]), np.tile(data.right, repeats),
                                   data.rows * repeats)
    return [metrics.coverage_point(float(t), int(a) / repeats, int(r) / repeats, data.rows)
            for t, a, r in zip(curve.thresholds, curve.answered, curve.right, strict=True)]


def train_confidence(rows: Sequence[ScoringRow], predictions: Sequence[Prediction], labels: Sequence[str | None],
                     groups: Sequence[str], scorer: str, settings: ConfidenceSettings) -> ConfidenceModel:
    """The confidence model of ``scorer``'s out-of-fold ``predictions`` on labeled ``rows``, with its
    out-of-fold operating table and report."""
    data = collect_evidence(rows, predictions, labels, groups)
    runs = repeated_out_of_fold(data, scorer, settings)
    model = fit_confidence(data, scorer, settings)
    per_entity_rows: dict[str, int] = {}
    for row in rows:
        per_entity_rows[row.entity] = per_entity_rows.get(row.entity, 0) + 1
    model.operating = operating_table(runs, data)
    model.report = plain_json(confidence_report(runs, data, per_entity_rows))
    return model


def describe_report(report: dict[str, Any]) -> str:
    """The confidence report in a few lines, as train prints it."""
    per_repeat = [e for e in report.get("ece_per_repeat", []) if e is not None]
    spread = (f" (each of the {len(per_repeat)} repeats of the outer folds alone: {min(per_repeat):.3f}-"
              f"{max(per_repeat):.3f})" if len(per_repeat) > 1 else "")
    lines = [f"confidence (out-of-fold over {report['rows']} labeled rows, {report['answered']} answered, "
             f"{report['right']} right): expected calibration error {report['ece']:.3f}{spread}"]
    for p, point in report["coverage_at_precision"].items():
        if point is None:
            lines.append(f"  precision {float(p):.0%}: no minimum confidence reaches it")
        else:
            answered = point["answered"]  # a mean over the repeats: its fraction matters on a small catalog only
            whole = answered >= 20 or abs(answered - round(answered)) < 0.05
            rows = f"{answered:.0f} rows" if whole else f"{answered:.1f} rows a repeat"
            lines.append(f"  precision {float(p):.0%}: answering {point['coverage']:.1%} of rows "
                         f"({rows}, {point['precision']:.1%} right) at min confidence {point['threshold']:.3f}")
    return "\n".join(lines)
