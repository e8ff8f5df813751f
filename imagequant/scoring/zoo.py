"""Scorers by kind: the registry of what a model specification can name, as :mod:`imagequant.ocr.zoo` is the OCR
engines'.

A specification is a named kind's name (``"rules"``, the rule baseline) or a model directory, whose kind its
marker file tells (directory kinds are tried in registration order):

- ``rules``: the rule baseline; no training, asked for by name;
- ``rules_directory``: a model directory (``jobs/train.py`` for users who train no network) holding only
  ``scorer.json``: the rules choose its answers;
- ``network``: a model directory holding a trained network (``config.json`` and its weights).

A model directory of either kind may hold ``confidence.json``, the calibrated P(right) of its answers
(:mod:`imagequant.scoring.confidence`), and ``training_images.txt``, the images of the labeled rows it was
fitted on (predict marks rows of those images: their answers and confidence are in-sample). Adding a kind is
one :class:`ScorerKind` passed to :func:`register_scorer_kind` (a scorer class following
:class:`imagequant.scoring.base.Scorer`).
:func:`load_scorer` is the one place a specification becomes a scorer; inference, training's baseline comparison,
explain and evaluation go through it.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagequant.core.entities import ENTITY_SPECS
from imagequant.core.units import format_prediction
from imagequant.errors import UsageError
from imagequant.scoring import rules
from imagequant.scoring.base import (
    CandidateScore,
    ConfidencePush,
    Prediction,
    RowJudgement,
    Scorer,
    ScoringRow,
)
from imagequant.scoring.confidence import ConfidenceModel, answer_evidence, attach_confidence, load_confidence
from imagequant.text.candidates import Candidate

RULES = "rules"
SCORER_FILE = "scorer.json"  # marks a model directory whose answers the rules choose
SCORER_FORMAT = 1
# marks a trained network's directory: imagequant.scoring.checkpoint.CONFIG_FILE, named here so that recognising
# a directory imports no torch
NETWORK_FILE = "config.json"
TRAINING_IMAGES_FILE = "training_images.txt"  # one image id per line, sorted
CNN_WEIGHTS_FILE = "cnn_weights.json"  # a network's training rows by the CNN weights of their image's features
OCR_READERS_FILE = "ocr_readers.json"  # a model directory's training rows by the reader of their image


def write_training_images(model_dir: Path, image_ids: Iterable[str]) -> None:
    """Records the images of the labeled rows a model directory was fitted on."""
    ids = sorted({i for i in image_ids if i})
    (model_dir / TRAINING_IMAGES_FILE).write_text("".join(f"{i}\n" for i in ids))


def training_images(model_spec: str | Path) -> frozenset[str] | None:
    """The images a model directory was fitted on; None for the rule baseline and for a directory written
    before they were recorded."""
    path = Path(model_spec) / TRAINING_IMAGES_FILE
    if str(model_spec) == RULES or not path.is_file():
        return None
    return frozenset(line for line in path.read_text().splitlines() if line)


def write_cnn_weights(model_dir: Path, counts: dict[str, int]) -> None:
    """Records which CNN weights made the features a network was trained on (rows per ``cnn_weights``)."""
    _write_counts(model_dir / CNN_WEIGHTS_FILE, "cnn_weights", counts)


def trained_cnn_weights(model_spec: str | Path) -> dict[str, int] | None:
    """The CNN weights a network directory's training features were made with (rows per ``cnn_weights``); None
    for the rule baseline, a rules-only directory and a directory written before they were recorded."""
    return _read_counts(model_spec, CNN_WEIGHTS_FILE, "cnn_weights", "a CNN weights record")


def write_ocr_readers(model_dir: Path, counts: dict[str, int]) -> None:
    """Records which readers read the labeled rows' images a model directory was fitted on (rows per the images
    table's ``ocr_engine``): its confidence, and a network, learned from their readings."""
    _write_counts(model_dir / OCR_READERS_FILE, "ocr_engine", counts)


def trained_ocr_readers(model_spec: str | Path) -> dict[str, int] | None:
    """The readers of a model directory's training rows (rows per ``ocr_engine``); None for the rule baseline
    and a directory written before they were recorded."""
    return _read_counts(model_spec, OCR_READERS_FILE, "ocr_engine", "a record of the training rows' readers")


def _write_counts(path: Path, key: str, counts: dict[str, int]) -> None:
    path.write_text(json.dumps({key: dict(sorted(counts.items()))}) + "\n")


def _read_counts(model_spec: str | Path, name: str, key: str, what: str) -> dict[str, int] | None:
    path = Path(model_spec) / name
    if str(model_spec) == RULES or not path.is_file():
        return None
    try:
        counts = json.loads(path.read_text())[key]
        return {str(k): int(v) for k, v in counts.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path} is not {what} ({exc}); train the model directory again") from None


def mixed_cnn_weights_warning(counts: dict[str, int], what: str) -> str | None:
    """A warning line when ``what`` (rows by the CNN weights of their features) mixes several weights."""
    if len(counts) < 2:
        return None
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    return (f"warning: {what} have CNN features made with different weights ({kinds}); features of one kind "
            "mean nothing to a network trained on the other. Run extract_features with one cnn.weights and "
            "--reprocess-made-otherwise to make them alike")


def _rule_view(c: Candidate, entity: str, score: float | None) -> CandidateScore:
    """A candidate with the rules' figures and reasons, and the scorer's own ``score``."""
    raw = rules.score_candidate(c, entity)
    return CandidateScore(score, rules.reasons(c, entity), raw, rules.confidence(raw))


def _drivers(confidence: ConfidenceModel | None, row: ScoringRow, prediction: Prediction) -> list[ConfidencePush]:
    """What moved the confidence model's log-odds for the prediction, largest push first."""
    if confidence is None:
        return []
    evidence = answer_evidence(row, prediction)
    return confidence.contributions(evidence) if evidence is not None else []


class RuleScorer:
    """The rule baseline (:mod:`imagequant.scoring.rules`): no training, never abstains by default."""

    reads_cnn = False

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

    def judge(self, row: ScoringRow, prediction: Prediction) -> RowJudgement:
        # the rule figures are this scorer's own scores: no separate one
        return RowJudgement([_rule_view(c, row.entity, None) for c in row.candidates],
                            _drivers(self.confidence, row, prediction))


class NeuralScorer:
    """A trained checkpoint (:mod:`imagequant.scoring.checkpoint`), eager or its exported program."""

    reads_cnn = True

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

    def probabilities(self, row: ScoringRow) -> list[float | None]:
        """The model's probability of each candidate (None past the model's max_candidates, which it never sees)."""
        encoded = self.model.encode(row.tokens, row.image_size, row.entity, row.cnn, row.candidates)
        probs = self.model.probabilities([encoded])[0]
        kept = len(encoded.candidates)
        return [float(probs[i]) if i < kept else None for i in range(len(row.candidates))]

    def judge(self, row: ScoringRow, prediction: Prediction) -> RowJudgement:
        return RowJudgement([_rule_view(c, row.entity, p)
                             for c, p in zip(row.candidates, self.probabilities(row), strict=True)],
                            _drivers(self.confidence, row, prediction))


def write_rules_directory(directory: str | Path) -> Path:
    """Marks ``directory`` as a model directory whose answers the rules choose."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / SCORER_FILE).write_text(json.dumps({"format": SCORER_FORMAT, "scorer": RULES}) + "\n")
    return out


# --- the registry ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScorerKind:
    """One kind of scorer the zoo loads: how a specification names it and how to load one."""

    name: str
    summary: str
    # (the model directory, or None for a named kind; whether to serve an exported program) -> a new scorer
    load: Callable[[Path | None, bool], Scorer]
    # the file that marks a model directory of this kind; "": a named kind, asked for by its name (built anew
    # each time, so it must be cheap); a directory's scorer is loaded once per process
    marker: str = ""

    @property
    def named(self) -> bool:
        return not self.marker


SCORER_KINDS: dict[str, ScorerKind] = {}
_KINDS_LOCK = threading.Lock()


def register_scorer_kind(kind: ScorerKind) -> ScorerKind:
    """Adds a kind to the registry; directory kinds are recognised in registration order. A name already
    registered is a ValueError: a kind registers once."""
    with _KINDS_LOCK:
        if kind.name in SCORER_KINDS:
            raise ValueError(f"scorer kind {kind.name!r} is already registered")
        SCORER_KINDS[kind.name] = kind
    return kind


def _known_kinds() -> str:
    return ", ".join(k.name if k.named else f"{k.name} (a directory with {k.marker})" for k in SCORER_KINDS.values())


def model_directory_marker(folder: str | Path) -> str | None:
    """The marker file that makes ``folder`` a model directory of a registered kind, or None."""
    path = Path(folder)
    return next((kind.marker for kind in SCORER_KINDS.values() if kind.marker and (path / kind.marker).is_file()),
                None)


def scorer_kind(spec: str) -> tuple[ScorerKind, Path | None]:
    """The kind ``spec`` names and, for a directory kind, the resolved model directory. A specification that
    names no registered kind raises UsageError, listing the kinds there are."""
    named = SCORER_KINDS.get(spec)
    if named is not None and named.named:
        return named, None
    root = Path(spec).resolve()
    if not root.is_dir():
        problem = "is not a directory" if root.exists() else "does not exist"
        raise UsageError(f"model directory {root} {problem} (a scorer is a model directory or one of the "
                         f"names {', '.join(k.name for k in SCORER_KINDS.values() if k.named)})")
    marker = model_directory_marker(root)
    if marker is not None:
        return next(kind for kind in SCORER_KINDS.values() if kind.marker == marker), root
    raise UsageError(f"model directory {root} holds no kind of scorer this version knows (kinds: {_known_kinds()}); "
                     "train one with jobs/train.py")


_LOADED: dict[tuple[str, bool], Scorer] = {}
_LOADED_LOCK = threading.Lock()


def load_scorer(spec: str, exported: bool = True) -> Scorer:
    """A specification (a named kind, or a model directory) -> its Scorer; a directory's is loaded once per
    process (a Spark Python worker keeps it across tasks). One that is no loadable scorer raises UsageError."""
    named = SCORER_KINDS.get(spec)
    if named is not None and named.named:
        return named.load(None, exported)
    key = (str(Path(spec).resolve()), exported)
    with _LOADED_LOCK:
        scorer = _LOADED.get(key)
        if scorer is None:
            kind, root = scorer_kind(spec)
            scorer = _LOADED[key] = kind.load(root, exported)
    return scorer


def is_rules(scorer: Scorer) -> bool:
    """Whether the rules choose the scorer's answers (the baseline, or a rules-only model directory)."""
    return isinstance(scorer, RuleScorer)


def _load_rules(root: Path | None, exported: bool) -> Scorer:
    return RuleScorer()


def _load_rules_directory(root: Path | None, exported: bool) -> Scorer:
    assert root is not None
    path = root / SCORER_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} cannot be read ({exc}); retrain the model") from None
    if not isinstance(data, dict) or data.get("format") != SCORER_FORMAT or data.get("scorer") != RULES:
        raise UsageError(f"{path} is not a scorer file this version reads; retrain the model")
    return RuleScorer(confidence=load_confidence(root), name=str(root))


def _load_network(root: Path | None, exported: bool) -> Scorer:
    assert root is not None
    # torch loads only when a learned model is asked for
    from imagequant.scoring.checkpoint import load_model

    return NeuralScorer(load_model(root, exported=exported), load_confidence(root))


register_scorer_kind(ScorerKind(RULES, "the rule baseline: no training", _load_rules))
# before the network: scorer.json decides a directory that holds both
register_scorer_kind(ScorerKind("rules_directory", "a model directory whose answers the rules choose",
                                _load_rules_directory, marker=SCORER_FILE))
register_scorer_kind(ScorerKind("network", "a trained network checkpoint (jobs/train.py)", _load_network,
                                marker=NETWORK_FILE))
