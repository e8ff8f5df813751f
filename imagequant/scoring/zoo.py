"""Scorers by name: ``"rules"`` is the rule baseline, anything else a model directory.

A model directory (written by ``jobs/train.py``) holds a trained network (``config.json`` and its
weights), or, for users who train no network, only ``scorer.json`` saying the rules choose; either kind
may hold ``confidence.json``, the calibrated P(right) of its answers (:mod:`imagequant.scoring.confidence`).
:func:`load_scorer` is the one place a model specification becomes a scorer; inference, training's
baseline comparison, explain and evaluation go through it.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from imagequant.core.entities import ENTITY_SPECS
from imagequant.core.units import format_prediction
from imagequant.errors import UsageError
from imagequant.scoring import rules
from imagequant.scoring.base import Prediction, Scorer, ScoringRow
from imagequant.scoring.confidence import ConfidenceModel, attach_confidence, load_confidence

RULES = "rules"
SCORER_FILE = "scorer.json"  # marks a model directory whose answers the rules choose
SCORER_FORMAT = 1


class RuleScorer:
    """The rule baseline (:mod:`imagequant.scoring.rules`): no training, never abstains by default."""

    def __init__(self, threshold: float = 0.0, confidence: ConfidenceModel | None = None,
                 name: str = RULES) -> None:
        self.name = name
        self.threshold = threshold
        self.confidence = confidence
        self.entities = tuple(ENTITY_SPECS)

    def predict(self, rows: Sequence[ScoringRow], threshold: float | None = None) -> list[Prediction]:
        cut = self.threshold if threshold is None else threshold
        out = []
        for row in rows:
            best, conf = rules.choose(row.candidates, row.entity)
            text = format_prediction(best.value, best.unit, row.entity) if best is not None and conf >= cut else ""
            rival = -math.inf
            if best is not None:
                chosen = (round(best.value, 9), best.unit)
                rival = max((rules.score_candidate(c, row.entity) for c in row.candidates
                             if (round(c.value, 9), c.unit) != chosen), default=-math.inf)
            out.append(Prediction(text, best.value if best else None, best.unit if best else None, float(conf),
                                  len(row.candidates), 0.0, best, rules.confidence(rival)))
        attach_confidence(self.confidence, rows, out)
        return out


class NeuralScorer:
    """A trained checkpoint (:mod:`imagequant.scoring.checkpoint`), eager or its exported program."""

    def __init__(self, model: Any, confidence: ConfidenceModel | None = None) -> None:
        self.model = model
        self.name = str(model.directory)
        self.threshold = model.threshold
        self.confidence = confidence
        self.entities = tuple(model.params.entities)

    def predict(self, rows: Sequence[ScoringRow], threshold: float | None = None) -> list[Prediction]:
        encoded = [self.model.encode(r.tokens, r.image_size, r.entity, r.cnn, r.candidates) for r in rows]
        out = self.model.predict(encoded, threshold=threshold)
        attach_confidence(self.confidence, rows, out)
        return out


def write_rules_directory(directory: str | Path) -> Path:
    """Marks ``directory`` as a model directory whose answers the rules choose."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / SCORER_FILE).write_text(json.dumps({"format": SCORER_FORMAT, "scorer": RULES}) + "\n")
    return out


def _rules_directory(root: Path) -> bool:
    path = root / SCORER_FILE
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} cannot be read ({exc}); retrain the model") from None
    if not isinstance(data, dict) or data.get("format") != SCORER_FORMAT or data.get("scorer") != RULES:
        raise UsageError(f"{path} is not a scorer file this version reads; retrain the model")
    return True


_LOADED: dict[tuple[str, bool], Scorer] = {}
_LOADED_LOCK = threading.Lock()


def load_scorer(spec: str, exported: bool = True) -> Scorer:
    """``"rules"`` or a model directory -> Scorer, loaded once per process (a Spark Python worker keeps it
    across tasks). A directory that is no loadable model raises UsageError."""
    if spec == RULES:
        return RuleScorer()
    key = (str(Path(spec).resolve()), exported)
    with _LOADED_LOCK:
        scorer = _LOADED.get(key)
        if scorer is None:
            root = Path(key[0])
            if not root.is_dir():
                raise UsageError(f"model directory {root} does not exist")
            if _rules_directory(root):
                scorer = RuleScorer(confidence=load_confidence(root), name=str(root))
            else:
                # torch loads only when a learned model is asked for
                from imagequant.scoring.checkpoint import load_model

                scorer = NeuralScorer(load_model(root, exported=exported), load_confidence(root))
            _LOADED[key] = scorer
    return scorer


def is_rules(scorer: Scorer) -> bool:
    """Whether the rules choose the scorer's answers (the baseline, or a rules-only model directory)."""
    return isinstance(scorer, RuleScorer)
