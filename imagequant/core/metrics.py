"""The challenge's F1 (CHALLENGE.md), per-entity tables, the abstain threshold, candidate recall, and what a
confidence is worth: precision against coverage and calibration (reliability bins, expected calibration error)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from imagequant.core.units import parse_label, values_equal


def _clean(text: object) -> str:
    """A prediction or truth as the challenge sees it: None/NaN -> empty string, surrounding spaces off."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    return str(text).strip()


def _ratios(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = tp + fp + fn + tn
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": (tp + tn) / n if n else 0.0}


def row_outcome(prediction: object, truth: object) -> str:
    """'tp', 'fp', 'fn' or 'tn' for one row; values compare numerically and a range truth never matches."""
    out, gt = _clean(prediction), _clean(truth)
    if out and gt:
        return "tp" if values_equal(out, gt) else "fp"
    if out:
        return "fp"
    return "fn" if gt else "tn"


def score(predictions: Sequence[object], truths: Sequence[object]) -> dict[str, Any]:
    """Challenge F1 over paired lists (OUT, GT): counts tp/fp/fn/tn and precision, recall, f1, accuracy."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} truths")
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for out, gt in zip(predictions, truths, strict=True):
        counts[row_outcome(out, gt)] += 1
    return {**counts, **_ratios(**counts)}


def per_entity(
    entities: Sequence[str], predictions: Sequence[object], truths: Sequence[object]
) -> pd.DataFrame:
    """One row of :func:`score` per entity plus an ``all`` row, with the row count ``n``."""
    if not len(entities) == len(predictions) == len(truths):
        raise ValueError("entities, predictions and truths must have the same length")
    rows = []
    for entity in sorted(set(entities)):
        idx = [i for i, e in enumerate(entities) if e == entity]
        rows.append(
            {
                "entity": entity,
                "n": len(idx),
                **score([predictions[i] for i in idx], [truths[i] for i in idx]),
            }
        )
    rows.append({"entity": "all", "n": len(entities), **score(list(predictions), list(truths))})
    return pd.DataFrame(rows).set_index("entity")


def best_threshold(
    scores: Sequence[float],
    correct: Sequence[bool],
    has_answer: Sequence[bool],
    gt_nonempty: Sequence[bool],
) -> dict[str, float]:
    """The abstain threshold that maximises F1: answers scoring below it become empty.

    ``correct[i]`` says the row's answer equals its truth. Counting as :func:`score` does, a kept wrong
    answer is a false positive and an unanswered non-empty truth a false negative, so F1 =
    2TP/(2TP+FP+FN): abstaining only gains where the truth is empty (fp -> tn). Returns the threshold
    (``-inf`` = keep every answer, ``inf`` = abstain everywhere) and the f1, precision, recall, tp, fp,
    fn it gives.
    """
    s = np.asarray(scores, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    ans = np.asarray(has_answer, dtype=bool)
    gt = np.asarray(gt_nonempty, dtype=bool)
    if not (len(s) == len(ok) == len(ans) == len(gt)):
        raise ValueError("all inputs must have the same length")
    tp_row = ans & ok & gt
    n_pos = int(gt.sum())
    # answered rows in decreasing score; a threshold keeps a prefix, cut only between distinct scores.
    # A kept wrong answer is a false positive only; a truth left unanswered is the false negative.
    order = np.argsort(-s[ans], kind="stable")
    s_ans = s[ans][order]
    tp_cum = np.cumsum(tp_row[ans][order])
    fp_cum = np.arange(1, len(s_ans) + 1) - tp_cum
    kept_pos_cum = np.cumsum(gt[ans][order])
    options = [(math.inf, 0, 0, n_pos)]
    for k in range(len(s_ans)):
        if k + 1 < len(s_ans) and s_ans[k + 1] == s_ans[k]:
            continue  # ties go together
        threshold = -math.inf if k == len(s_ans) - 1 else float(s_ans[k])
        options.append((threshold, int(tp_cum[k]), int(fp_cum[k]), n_pos - int(kept_pos_cum[k])))
    best_f1, (threshold, tp, fp, fn) = -1.0, options[0]
    for option in options:
        _, o_tp, o_fp, o_fn = option
        f1 = 2 * o_tp / (2 * o_tp + o_fp + o_fn) if o_tp else 0.0
        # Ties go to the lower threshold: past the last correct answer, keeping a wrong answer to a
        # non-empty truth costs nothing (fp instead of fn), and on new rows those answers may be right.
        if f1 >= best_f1:
            best_f1, (threshold, tp, fp, fn) = f1, option
    ratios = _ratios(tp, fp, fn, 0)
    return {
        "threshold": float(threshold),
        "f1": ratios["f1"],
        "precision": ratios["precision"],
        "recall": ratios["recall"],
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def _as_pair(candidate: object) -> tuple[float, str] | None:
    """(value, unit) of a Candidate, a (value, unit) pair or a ``"x unit"`` string."""
    if hasattr(candidate, "value") and hasattr(candidate, "unit"):
        return float(candidate.value), str(candidate.unit)  # type: ignore[attr-defined]
    if isinstance(candidate, str):
        parsed = parse_label(candidate)
        return (parsed.value, parsed.unit) if parsed.kind == "value" and parsed.unit else None  # type: ignore[return-value]
    if isinstance(candidate, tuple) and len(candidate) == 2:
        return float(candidate[0]), str(candidate[1])
    return None


def candidate_hits(candidates_per_row: Sequence[Iterable[object]], truths: Sequence[object]) -> list[bool]:
    """Per row: does any candidate equal the truth numerically and unit-wise (ranges never do)?"""
    if len(candidates_per_row) != len(truths):
        raise ValueError("one candidate list per truth is needed")
    hits = []
    for cands, truth in zip(candidates_per_row, truths, strict=True):
        gt = parse_label(_clean(truth))
        hit = False
        if gt.kind == "value" and gt.value is not None:
            for cand in cands:
                pair = _as_pair(cand)
                if (
                    pair
                    and pair[1] == gt.unit
                    and math.isclose(pair[0], gt.value, rel_tol=1e-9, abs_tol=1e-12)
                ):
                    hit = True
                    break
        hits.append(hit)
    return hits


def candidate_recall(candidates_per_row: Sequence[Iterable[object]], truths: Sequence[object]) -> float:
    """Share of rows with a non-empty truth whose truth is among the row's candidates."""
    hits = candidate_hits(candidates_per_row, truths)
    nonempty = [bool(_clean(t)) for t in truths]
    n = sum(nonempty)
    return sum(h for h, ne in zip(hits, nonempty, strict=True) if ne) / n if n else 0.0


# --- confidence: precision against coverage, and calibration -----------------------------------------------


@dataclass
class CoverageCurve:
    """Precision against coverage when answers scoring below a threshold are left empty, at every distinct
    score (in decreasing order): ``coverage`` is the answered share of ``rows`` (all rows with a truth),
    ``precision`` the right share of the answered ones."""

    rows: int
    thresholds: np.ndarray
    answered: np.ndarray
    right: np.ndarray

    @property
    def coverage(self) -> np.ndarray:
        return self.answered / self.rows if self.rows else np.zeros(len(self.answered))

    @property
    def precision(self) -> np.ndarray:
        return np.divide(self.right, self.answered, out=np.zeros(len(self.right)), where=self.answered > 0)

    def at(self, threshold: float) -> dict[str, float]:
        """The point of answering the rows scoring >= ``threshold``."""
        kept = int(np.searchsorted(-self.thresholds, -threshold, side="right"))  # thresholds >= threshold
        answered = int(self.answered[kept - 1]) if kept else 0
        right = int(self.right[kept - 1]) if kept else 0
        return coverage_point(threshold, answered, right, self.rows)

    def reaching(self, precision: float) -> dict[str, float] | None:
        """The threshold with the highest coverage whose precision is at least ``precision``, or None."""
        ok = np.flatnonzero(self.precision >= precision - 1e-12)
        if not len(ok):
            return None
        i = int(ok[-1])  # thresholds decrease, so coverage grows along the curve
        return coverage_point(float(self.thresholds[i]), int(self.answered[i]), int(self.right[i]), self.rows)


def coverage_point(threshold: float, answered: float, right: float, rows: int) -> dict[str, float]:
    return {"threshold": threshold, "coverage": answered / rows if rows else 0.0,
            "precision": right / answered if answered else math.nan, "answered": answered, "right": right}


def coverage_curve(scores: Sequence[float], right: Sequence[bool], rows: int) -> CoverageCurve:
    """The curve of answers with ``scores`` (one per answered row; ``right`` says which are right) over
    ``rows`` rows in all (the unanswered ones count in the coverage's denominator). Ties go together."""
    s = np.asarray(scores, dtype=float)
    ok = np.asarray(right, dtype=bool)
    order = np.argsort(-s, kind="stable")
    s, ok = s[order], ok[order]
    last_of_tie = np.flatnonzero(np.append(s[1:] != s[:-1], True)) if len(s) else np.array([], dtype=int)
    return CoverageCurve(rows, s[last_of_tie], last_of_tie + 1, np.cumsum(ok)[last_of_tie])


def reliability(confidence: Sequence[float], right: Sequence[bool], bins: int = 10) -> list[dict[str, float]]:
    """Equal-width confidence bins over 0..1: each bin's row count, mean confidence and observed accuracy
    (the reliability diagram). The last bin holds 1.0."""
    c = np.clip(np.asarray(confidence, dtype=float), 0.0, 1.0)
    ok = np.asarray(right, dtype=bool)
    which = np.minimum((c * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        members = which == b
        n = int(members.sum())
        out.append({"low": b / bins, "high": (b + 1) / bins, "rows": n,
                    "confidence": float(c[members].mean()) if n else math.nan,
                    "accuracy": float(ok[members].mean()) if n else math.nan})
    return out


def expected_calibration_error(confidence: Sequence[float], right: Sequence[bool], bins: int = 10) -> float:
    """ECE: the row-weighted mean gap between confidence and accuracy over equal-width bins."""
    table = reliability(confidence, right, bins)
    total = sum(b["rows"] for b in table)
    if not total:
        return math.nan
    return sum(b["rows"] * abs(b["confidence"] - b["accuracy"]) for b in table if b["rows"]) / total


PRECISION_TARGETS = (0.80, 0.90, 0.95, 0.99)  # the operating points reported for a score or a confidence
CALIBRATION_BINS = 10


def confidence_summary(confidence: Sequence[float], right: Sequence[bool], rows: int) -> dict[str, Any]:
    """What a confidence is worth over ``rows`` labeled rows, of which these are the answered ones: the
    reliability bins, the expected calibration error, and the highest coverage (share of all ``rows``) at
    each of :data:`PRECISION_TARGETS`."""
    c = np.asarray(confidence, dtype=float)
    ok = np.asarray(right, dtype=bool)
    curve = coverage_curve(c, ok, rows)
    return {
        "rows": rows,
        "answered": int(len(ok)),
        "right": int(ok.sum()),
        "ece": expected_calibration_error(c, ok, CALIBRATION_BINS),
        "reliability": reliability(c, ok, CALIBRATION_BINS),
        "coverage_at_precision": {f"{p:.2f}": curve.reaching(p) for p in PRECISION_TARGETS},
    }
