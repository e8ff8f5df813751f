"""The scorer contract: a row's candidates in, one answer out.

Every scorer (the rule baseline, the learned network) takes :class:`ScoringRow` s and returns one
:class:`Prediction` per row, and says for one row how it judged each candidate (:class:`CandidateScore`,
what explain shows); the registry in :mod:`imagequant.scoring.zoo` turns ``"rules"`` or a model directory
into one. Training, inference, evaluation and explain see only this contract.
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


@dataclass
class CandidateScore:
    """How a scorer judged one candidate of a row: the figures and reasons explain shows beside it."""

    # the scorer's own score of the mention (a network: its probability); None where the rule figures are its
    # score (the rules) or it did not score the mention (past a model's max_candidates)
    score: float | None
    reasons: list[str]  # the evidence that speaks for the mention, human-readable names, most telling first
    # the rules' view of the mention, a yardstick the current scorers all report so a reviewer can compare a
    # model with the rules; None from a scorer that does not report it
    rule_score: float | None = None  # the rules' raw sum of evidence terms (imagequant.scoring.rules)
    rule_confidence: float | None = None  # its monotone squash to 0..1 (the rules' score of the mention)


@dataclass(frozen=True)
class ConfidencePush:
    """One evidence term's push on the confidence model's log-odds for an answer, measured from an average
    training row's (the terms are standardised): ``value`` is the term's value for this row, so a term that is
    off (``one_value`` 0) can push too, by being off where most rows have it on."""

    term: str
    value: float
    push: float

    def describe(self) -> str:
        return f"{self.term} ({self.value:.3g}) {self.push:+.2f}"


@dataclass
class RowJudgement:
    """A scorer's account of one row's prediction: each candidate judged, and what moved the confidence."""

    candidates: list[CandidateScore]  # one per ScoringRow.candidates, in that order
    # each evidence term's push on the confidence model's log-odds for the answer, largest push first; empty
    # without a confidence model or without an answer
    drivers: list[ConfidencePush]


class Scorer(Protocol):
    """Chooses each row's answer among its candidates."""

    name: str
    threshold: float  # the abstain threshold the scorer was tuned with
    confidence: Any  # its ConfidenceModel (imagequant.scoring.confidence), or None
    entities: tuple[str, ...]  # the entities it can score (a network: those it was trained with)
    reads_cnn: bool  # whether it reads ScoringRow.cnn: a caller computes an image's CNN features only then

    def predict(self, rows: Sequence[ScoringRow], threshold: float | None = None) -> list[Prediction]:
        """One prediction per row; rows scoring below ``threshold`` (default: :attr:`threshold`) get "".
        With a confidence model each prediction with a candidate carries its ``confidence``."""
        ...

    def judge(self, row: ScoringRow, prediction: Prediction) -> RowJudgement:
        """How it judged each of ``row``'s candidates and what drove the confidence of ``prediction`` (its own
        prediction for the row): what a person reads when an answer looks wrong."""
        ...
