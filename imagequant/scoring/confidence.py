"""P(right): the calibrated probability that a scorer's answer is right, from prediction-level evidence.

A :class:`ConfidenceModel` is a logistic model over :func:`answer_evidence` (the scorer's own score and
margins, the chosen mention's evidence, how contested the image is) followed by a calibration map (Platt
scaling by default, or isotonic; one per entity where the training rows allowed, a pooled one otherwise). It is fitted by
:mod:`imagequant.training.confidence` (scikit-learn) on out-of-fold predictions and stored as plain numbers
in ``confidence.json`` in the model directory; applying it needs numpy only, so Spark workers never import
the fitting library. The file also holds the out-of-fold operating table that turns a wanted precision
into a minimum confidence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imagequant.core.entities import ENTITY_SPECS
from imagequant.errors import UsageError
from imagequant.scoring import rules
from imagequant.scoring.base import ConfidencePush, Prediction, ScoringRow
from imagequant.text.candidates import Candidate

CONFIDENCE_FORMAT = 1
CONFIDENCE_FILE = "confidence.json"
LOW_CONFIDENCE = "low_confidence"  # the status of an answer held back below the minimum confidence

_ENTITY_NAMES = tuple(ENTITY_SPECS)
_RAW_CLIP = 12.0  # rule scores beyond this say nothing more (-inf for an impossible unit)
_NO_RIVAL = 6.0  # the margin recorded when no other candidate (or no other value) exists

FEATURE_NAMES: tuple[str, ...] = (
    "scorer_score", "scorer_runner_up", "scorer_margin", "scorer_no_answer",
    "rule_score", "rule_margin_runner_up", "rule_margin_other_value", "agrees_with_rules",
    "log_candidates", "log_distinct_values", "one_value", "dual_pair", "plausible",
    "keyword", "keyword_line_or_row", "keyword_other", "dim_letter", "dim_letter_other", "xgroup",
    "drawing", "line", "size_end", "unit_prior", "unit_not_printed", "unit_inferred", "log_rel_height", "ocr_conf",
    "log_recurrence", "first_mention", "in_parens", "range_low", "range_high", "leading_zero", "ocr_fixed",
    "fraction", "turned", "log_image_side", "image_aspect",
    *(f"entity={name}" for name in _ENTITY_NAMES),
)


def _clip_raw(x: float) -> float:
    return max(-_RAW_CLIP, min(_RAW_CLIP, x)) if not math.isnan(x) else -_RAW_CLIP


def _quantity(c: Candidate) -> tuple[float, str]:
    return round(c.value, 9), c.unit


def answer_evidence(row: ScoringRow, prediction: Prediction) -> np.ndarray | None:
    """The evidence about one answer, in :data:`FEATURE_NAMES` order; None when the row has no candidate
    (nothing to be right about)."""
    chosen = prediction.candidate
    if chosen is None or not row.candidates:
        return None
    entity = row.entity
    spec = ENTITY_SPECS[entity]
    raw = {id(c): _clip_raw(rules.score_candidate(c, entity)) for c in row.candidates}
    own = raw.get(id(chosen), _clip_raw(rules.score_candidate(chosen, entity)))
    others = sorted((s for c, s in ((c, raw[id(c)]) for c in row.candidates) if c is not chosen), reverse=True)
    other_values = [raw[id(c)] for c in row.candidates if _quantity(c) != _quantity(chosen)]
    best_rule, _ = rules.choose(row.candidates, entity)
    distinct = {_quantity(c) for c in row.candidates}
    width, height = row.image_size
    reasons = rules.reasons(chosen, entity)
    evidence = [
        prediction.score,
        prediction.runner_up,
        prediction.score - prediction.runner_up,
        prediction.no_answer,
        own,
        own - others[0] if others else _NO_RIVAL,
        own - max(other_values) if other_values else _NO_RIVAL,
        float(best_rule is not None and _quantity(best_rule) == _quantity(chosen)),
        math.log(len(row.candidates)),
        math.log(len(distinct)),
        float(len(distinct) == 1),
        float(chosen.dual_primary or chosen.dual_secondary),
        float(rules.plausible(chosen, entity)),
        float(chosen.keyword),
        float(chosen.keyword_same_line or chosen.keyword_row),
        float(chosen.keyword_other),
        float(bool(chosen.dim_letter) and chosen.dim_letter in spec.letters),
        float(bool(chosen.dim_letter) and chosen.dim_letter not in spec.letters),
        float(chosen.xgroup_pos >= 0),
        float(any(r.startswith("drawing:") for r in reasons)),
        float(any(r.startswith("line:") for r in reasons)),
        float(any(r.startswith("size:") for r in reasons)),
        math.log(max(spec.unit_prior.get(chosen.unit, 0.0), 1e-3)),
        float(not chosen.unit_explicit),
        float(chosen.unit_inferred),
        math.log(min(max(chosen.rel_height, 0.2), 8.0)),
        min(max(chosen.conf, 0.0), 1.0),
        math.log(min(max(chosen.recurrence, 1), 6)),
        float(chosen.rank == 0),
        float(chosen.in_parens),
        float(chosen.range_low),
        float(chosen.range_high),
        float(chosen.leading_zero),
        float(chosen.ocr_fixed),
        float(chosen.fraction),
        float(chosen.angle % 360 != 0),
        math.log(max(width, height, 1)),
        math.log(max(width, 1) / max(height, 1)),
        *(float(entity == name) for name in _ENTITY_NAMES),
    ]
    return np.asarray(evidence, dtype=float)


@dataclass
class Calibration:
    """A monotone map from the logistic model's probability to the observed share right: Platt scaling (a
    logistic curve in the probability's log-odds, ``slope`` and ``intercept``) or isotonic regression (its
    breakpoints ``x``, ``y``, applied by linear interpolation and clipped at the ends, as scikit-learn's
    ``IsotonicRegression(out_of_bounds="clip")`` predicts)."""

    kind: str  # "platt" or "isotonic"
    slope: float = 1.0
    intercept: float = 0.0
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)

    def __call__(self, p: np.ndarray) -> np.ndarray:
        if self.kind == "isotonic":
            return np.interp(p, self.x, self.y)
        return 1.0 / (1.0 + np.exp(-(self.slope * log_odds(p) + self.intercept)))


def logistic_probability(evidence: np.ndarray, mean: Sequence[float] | np.ndarray, scale: Sequence[float] | np.ndarray,
                         coef: Sequence[float] | np.ndarray, intercept: float) -> np.ndarray:
    """A logistic model's probability per row of evidence, standardised by ``mean`` and ``scale``."""
    z = (np.atleast_2d(evidence) - np.asarray(mean)) / np.asarray(scale) @ np.asarray(coef) + intercept
    return 1.0 / (1.0 + np.exp(-z))


def log_odds(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=float), 1e-6, 1.0 - 1e-6)
    return np.log(q / (1.0 - q))


@dataclass
class ConfidenceModel:
    """What ``confidence.json`` holds: the logistic model, its calibration maps, the out-of-fold operating
    table and the out-of-fold figures of merit."""

    scorer: str  # "rules" or "network": which scorer's answers it was fitted on
    feature_names: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    pooled: Calibration
    per_entity: dict[str, Calibration] = field(default_factory=dict)
    # out-of-fold (threshold, coverage, precision, answered, right) points, in decreasing threshold
    operating: list[dict[str, float]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    regularisation: float | None = None  # the logistic model's C (absent from files written before it was chosen)

    def _standardised(self, evidence: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(evidence) - np.asarray(self.mean)) / np.asarray(self.scale)

    def uncalibrated(self, evidence: np.ndarray) -> np.ndarray:
        """The logistic model's probability per row (rows of :data:`FEATURE_NAMES` evidence)."""
        return logistic_probability(evidence, self.mean, self.scale, self.coef, self.intercept)

    def predict(self, evidence: np.ndarray, entities: Sequence[str]) -> np.ndarray:
        """Calibrated P(right) per row."""
        p = self.uncalibrated(evidence)
        out = np.empty(len(p))
        for i, (value, entity) in enumerate(zip(p, entities, strict=True)):
            out[i] = self.per_entity.get(entity, self.pooled)(np.asarray([value]))[0]
        return np.clip(out, 0.0, 1.0)

    def contributions(self, evidence: np.ndarray) -> list[ConfidencePush]:
        """Each evidence term's push on the logistic model's log-odds for one row (largest first), from an
        average training row's: what drove a confidence up or down, exactly, before the monotone calibration."""
        pushes = self._standardised(evidence)[0] * np.asarray(self.coef)
        values = np.asarray(evidence, dtype=float).reshape(-1)
        named = [ConfidencePush(name, float(value), float(push))
                 for name, value, push in zip(self.feature_names, values, pushes, strict=True)]
        return sorted(named, key=lambda p: -abs(p.push))

    def threshold_for(self, precision: float) -> dict[str, float] | None:
        """The lowest minimum confidence whose out-of-fold precision is at least ``precision`` (the
        operating point with the highest coverage there), or None when no point reaches it."""
        reaching = [p for p in self.operating if p["precision"] >= precision - 1e-12]
        return max(reaching, key=lambda p: p["coverage"]) if reaching else None

    def to_json(self) -> dict[str, Any]:
        return plain_json({"format": CONFIDENCE_FORMAT, **asdict(self)})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConfidenceModel:
        fields = dict(data)
        if fields.pop("format", None) != CONFIDENCE_FORMAT:
            raise ValueError(f"not a confidence model of format {CONFIDENCE_FORMAT}")
        fields["pooled"] = Calibration(**fields["pooled"])
        fields["per_entity"] = {k: Calibration(**v) for k, v in fields.get("per_entity", {}).items()}
        model = cls(**fields)
        if list(model.feature_names) != list(FEATURE_NAMES):
            raise ValueError("its evidence terms are not those this code computes")
        return model

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIDENCE_FILE
        path.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n")
        return path


def plain_json(data: Any) -> Any:
    """NaN (an empty reliability bin's accuracy) as null, so the file is strict JSON."""
    if isinstance(data, float) and math.isnan(data):
        return None
    if isinstance(data, dict):
        return {k: plain_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [plain_json(v) for v in data]
    return data


def load_confidence(directory: str | Path) -> ConfidenceModel | None:
    """The model directory's confidence model, or None when it has none (a directory written before
    confidence existed: its predictions get a null confidence). A damaged or outdated file is a UsageError."""
    path = Path(directory) / CONFIDENCE_FILE
    if not path.is_file():
        return None
    try:
        return ConfidenceModel.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"{path} cannot be used ({exc}); retrain the model (jobs/train.py)") from None


def attach_confidence(model: ConfidenceModel | None, rows: Sequence[ScoringRow],
                      predictions: Sequence[Prediction]) -> None:
    """Sets each prediction's ``confidence`` (left None without a model or without a candidate)."""
    if model is None:
        return
    scored = [(p, e) for p, e in ((p, answer_evidence(r, p)) for r, p in zip(rows, predictions, strict=True))
              if e is not None]
    if not scored:
        return
    rows_by_prediction = {id(p): r for r, p in zip(rows, predictions, strict=True)}
    values = model.predict(np.stack([e for _, e in scored]), [rows_by_prediction[id(p)].entity for p, _ in scored])
    for (prediction, _), value in zip(scored, values, strict=True):
        prediction.confidence = float(value)
