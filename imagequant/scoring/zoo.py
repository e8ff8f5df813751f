"""Scorers by name: ``"rules"`` is the rule baseline, anything else a model directory (the learned scorer).

:func:`load_scorer` is the one place a model specification becomes a scorer; inference, training's
baseline comparison and evaluation go through it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from imagequant.core.units import format_prediction
from imagequant.scoring import rules
from imagequant.scoring.base import Prediction, Scorer, ScoringRow

RULES = "rules"


class RuleScorer:
    """The rule baseline (:mod:`imagequant.scoring.rules`): no training, never abstains by default."""

    name = RULES

    def __init__(self, threshold: float = 0.0) -> None:
        self.threshold = threshold

    def predict(self, rows: Sequence[ScoringRow], threshold: float | None = None) -> list[Prediction]:
        cut = self.threshold if threshold is None else threshold
        out = []
        for row in rows:
            best, conf = rules.choose(row.candidates, row.entity)
            text = format_prediction(best.value, best.unit, row.entity) if best is not None and conf >= cut else ""
            out.append(Prediction(text, best.value if best else None, best.unit if best else None, float(conf),
                                  len(row.candidates), 0.0, best))
        return out


class NeuralScorer:
    """A trained checkpoint (:mod:`imagequant.scoring.checkpoint`), eager or its exported program."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.name = str(model.directory)
        self.threshold = model.threshold

    def predict(self, rows: Sequence[ScoringRow], threshold: float | None = None) -> list[Prediction]:
        encoded = [self.model.encode(r.tokens, r.image_size, r.entity, r.cnn, r.candidates) for r in rows]
        return self.model.predict(encoded, threshold=threshold)


_LOADED: dict[tuple[str, bool], Scorer] = {}
_LOADED_LOCK = threading.Lock()


def load_scorer(spec: str, exported: bool = True) -> Scorer:
    """``"rules"`` or a model directory -> Scorer, loaded once per process (a Spark Python worker keeps it
    across tasks). A directory that is no loadable checkpoint raises UsageError."""
    if spec == RULES:
        return RuleScorer()
    key = (str(Path(spec).resolve()), exported)
    with _LOADED_LOCK:
        scorer = _LOADED.get(key)
        if scorer is None:
            # torch loads only when a learned model is asked for
            from imagequant.scoring.checkpoint import load_model

            scorer = _LOADED[key] = NeuralScorer(load_model(key[0], exported=exported))
    return scorer
