"""Decoding the network's option probabilities into an answer, framework-free."""

from __future__ import annotations

import numpy as np

from imagequant.core.units import format_prediction
from imagequant.scoring.base import Prediction
from imagequant.scoring.encode import EncodedExample
from imagequant.text.candidates import Candidate


def decode(example: EncodedExample, probs: np.ndarray, threshold: float) -> Prediction:
    """The most probable quantity (mentions with the same value and unit pooled) and the answer string."""
    k = len(example.candidates)
    no_answer = float(probs[-1])
    if k == 0:
        return Prediction("", None, None, 0.0, example.n_candidates_found, no_answer)
    pooled: dict[tuple[float, str], float] = {}
    first: dict[tuple[float, str], Candidate] = {}
    for c, p in zip(example.candidates, probs[:k], strict=True):
        key = (round(c.value, 9), c.unit)
        pooled[key] = pooled.get(key, 0.0) + float(p)
        first.setdefault(key, c)
    key = max(pooled, key=lambda kk: pooled[kk])  # dict order breaks ties: the earliest mention wins
    best, score = first[key], pooled[key]
    runner_up = max((p for kk, p in pooled.items() if kk != key), default=0.0)
    text = format_prediction(best.value, best.unit, example.entity) if score >= threshold else ""
    return Prediction(text, best.value, best.unit, score, example.n_candidates_found, no_answer, best, runner_up)


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()
