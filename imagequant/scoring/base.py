"""The scorer contract: a row's candidates in, one answer out.

Every scorer (the rule baseline, the learned network) takes :class:`ScoringRow` s and returns one
:class:`Prediction` per row; the loader in :mod:`imagequant.scoring.zoo` turns ``"rules"`` or a model
directory into one. Training, inference and evaluation see only this contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from imagequant.core.tokens import OcrToken
from imagequant.text.candidates import Candidate


@dataclass
class ScoringRow:
    """What a scorer sees of one catalog row."""

    entity: str
    tokens: list[OcrToken]
    image_size: tuple[int, int]
    candidates: list[Candidate]
    cnn: Any = None  # the image's CNN features (a float array) or None


@dataclass
class Prediction:
    """A scorer's answer for one row: the best quantity among its candidates and its score."""

    prediction: str  # "" when abstaining (score below the threshold) or no candidate
    value: float | None  # of the best candidate, even when abstaining (for threshold analysis)
    unit: str | None
    score: float  # the model's probability of that quantity, or the rules' confidence; 0 without any
    n_candidates: int
    no_answer: float  # the model's probability of "no answer" (0 for the rules)
    # the mention the answer was read from (the first one, when the model pooled several): the evidence a
    # reviewer checks; None without a candidate
    candidate: Candidate | None = None
    runner_up: float = 0.0  # the scorer's score of the best other quantity (0 without one)
    # the calibrated probability that the answer is right (imagequant.scoring.confidence); None when the
    # scorer has no confidence model or the row no candidate
    confidence: float | None = None


class Scorer(Protocol):
    """Chooses each row's answer among its candidates."""

    name: str
    threshold: float  # the abstain threshold the scorer was tuned with
    confidence: Any  # its ConfidenceModel (imagequant.scoring.confidence), or None
    entities: tuple[str, ...]  # the entities it can score (a network: those it was trained with)

    def predict(self, rows: Sequence[ScoringRow], threshold: float | None = None) -> list[Prediction]:
        """One prediction per row; rows scoring below ``threshold`` (default: :attr:`threshold`) get "".
        With a confidence model each prediction with a candidate carries its ``confidence``."""
        ...
