"""Encoding one row for the learned scorer, framework-free: word pieces, token layout, candidate evidence.

The network (:mod:`imagequant.scoring.network`) turns batches of these arrays into tensors; nothing here
needs torch.
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imagequant.config import ModelConfig
from imagequant.core.schema import CNN_FEATURE_DIM
from imagequant.core.tokens import OcrToken
from imagequant.core.units import ENTITIES, matchable_label
from imagequant.errors import UsageError
from imagequant.scoring import rules
from imagequant.text.candidates import Candidate, extract_candidates
from imagequant.text.features import CANDIDATE_FEATURE_DIM, candidate_features

PAD, UNK, NUM = "<pad>", "<unk>", "<num>"
SPECIALS = (PAD, UNK, NUM)
MODEL_KINDS = ("hybrid", "no_lstm", "no_cnn")
TOKEN_FEATURE_DIM = 11
INPUT_NAMES = ("token_ids", "token_feats", "lengths", "entity_ids", "cnn", "cand_start", "cand_end",
               "cand_feats", "cand_mask")

# --- vocabulary ----------------------------------------------------------------------------------------

_NUM_RUN = re.compile(r"\d+(?:[.,]\d+)*")
_EDGE_PUNCT = ".,:;()[]{}!?|*-_/\\"
MAX_WORD_CHARS = 16


def normalize_word(text: str) -> str:
    """A token's word piece: lower case, digit runs -> ``#``, edge punctuation off.

    ``500g`` -> ``#g``, ``Net`` -> ``net``, ``Wt.:`` -> ``wt``, ``12.5`` -> ``<num>``. Numbers carry no
    meaning for the network by their digits (the candidate features hold the value); their shape and the
    words around them do.
    """
    word = _NUM_RUN.sub("#", text.strip().lower()).strip(_EDGE_PUNCT)
    if word == "#":
        return NUM
    if not word:
        return UNK
    return word[:MAX_WORD_CHARS]


@dataclass
class Vocab:
    """Word pieces seen at train time; index 0 is padding, 1 unknown."""

    words: list[str]
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if tuple(self.words[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}")
        self._index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 2, max_size: int = 4000) -> Vocab:
        """The most frequent word pieces (seen at least ``min_count`` times), ties broken alphabetically."""
        counts = Counter(normalize_word(t) for t in texts)
        for special in SPECIALS:
            counts.pop(special, None)
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *kept[: max(0, max_size - len(SPECIALS))]])

    def __len__(self) -> int:
        return len(self.words)

    def id(self, text: str) -> int:
        return self._index.get(normalize_word(text), 1)

    def to_json(self) -> dict[str, Any]:
        return {"words": self.words}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vocab:
        return cls(list(data["words"]))



# --- hyper-parameters ----------------------------------------------------------------------------------

@dataclass
class ModelParams:
    """Everything needed to rebuild the network (saved as config.json)."""

    # The sizes users set come from the ``model`` section's defaults (one place for them).
    kind: str = ModelConfig.kind
    embed_dim: int = ModelConfig.embed_dim
    entity_dim: int = ModelConfig.entity_dim
    hidden_dim: int = ModelConfig.hidden_dim
    cnn_proj_dim: int = ModelConfig.cnn_proj_dim
    mlp_dim: int = ModelConfig.mlp_dim
    max_tokens: int = ModelConfig.max_tokens
    max_candidates: int = ModelConfig.max_candidates
    dropout: float = ModelConfig.dropout
    vocab_size: int = len(SPECIALS)
    entities: list[str] = field(default_factory=lambda: list(ENTITIES))
    token_feature_dim: int = TOKEN_FEATURE_DIM
    candidate_feature_dim: int = CANDIDATE_FEATURE_DIM
    extra_candidate_dim: int = 5
    cnn_dim: int = CNN_FEATURE_DIM
    export_batch: int = 32  # rows per call of the exported program (its shapes are fixed)

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise UsageError(f"model.kind must be one of {', '.join(MODEL_KINDS)}, not {self.kind!r}")
        if self.max_tokens < 1 or self.max_candidates < 1:
            raise UsageError("model.max_tokens and model.max_candidates must be positive")

    @classmethod
    def from_config(cls, model_config: ModelConfig, vocab_size: int) -> ModelParams:
        """From the ``model`` section of the configuration: every one of its keys is a parameter here."""
        values = {f.name: getattr(model_config, f.name) for f in dataclasses.fields(ModelConfig)}
        return cls(vocab_size=vocab_size, **values)



# --- encoding one row ----------------------------------------------------------------------------------


@dataclass
class EncodedExample:
    """One row turned into arrays; ``candidates`` are the ones kept, in the order of ``cand_*``."""

    token_ids: np.ndarray  # (T,) int64
    token_feats: np.ndarray  # (T, TOKEN_FEATURE_DIM) float32
    entity_id: int
    cnn: np.ndarray  # (cnn_dim,) float32
    cand_start: np.ndarray  # (C,) int64, first token of each candidate (in the kept tokens)
    cand_end: np.ndarray  # (C,) int64, last token (inclusive)
    cand_feats: np.ndarray  # (C, candidate_feature_dim + extra_candidate_dim) float32
    candidates: list[Candidate]
    entity: str
    n_candidates_found: int  # before truncation to max_candidates
    targets: list[int] = field(default_factory=list)  # indices of candidates equal to the label; [] = no answer
    label: str | None = None


def select_tokens(n_tokens: int, spans: Sequence[tuple[int, int]], max_tokens: int,
                  context: int = 6) -> tuple[list[int], int]:
    """Which tokens to keep when an image has more than ``max_tokens``: (kept indices, candidates kept).

    Every token of the first candidates is kept (as many candidates as fit), then their neighbours out to
    ``context`` tokens, then the remaining budget in reading order. Kept tokens stay in their order, so a
    candidate's span stays contiguous.
    """
    if n_tokens <= max_tokens:
        return list(range(n_tokens)), len(spans)
    kept: set[int] = set()
    n_spans = 0
    for start, end in spans:
        needed = set(range(start, end)) - kept
        if len(kept) + len(needed) > max_tokens:
            break
        kept |= needed
        n_spans += 1
    for distance in range(1, context + 1):
        for start, end in spans[:n_spans]:
            for i in (start - distance, end - 1 + distance):
                if 0 <= i < n_tokens and len(kept) < max_tokens:
                    kept.add(i)
    i = 0
    while len(kept) < max_tokens and i < n_tokens:
        kept.add(i)
        i += 1
    return sorted(kept), n_spans


def token_features(tokens: Sequence[OcrToken], image_size: tuple[int, int]) -> np.ndarray:
    """Per-token layout: position and size relative to the image, text size vs the median, confidence,
    rotation, digits, capitals, and whether the token starts a new line."""
    width, height = max(1, image_size[0]), max(1, image_size[1])
    heights = [t.height for t in tokens if t.height > 0]
    median_h = statistics.median(heights) if heights else 1.0
    out = np.zeros((len(tokens), TOKEN_FEATURE_DIM), dtype=np.float32)
    previous_line: int | None = None
    for i, t in enumerate(tokens):
        text = t.text.strip()
        letters = [ch for ch in text if ch.isalpha()]
        out[i] = (
            min(1.0, max(0.0, t.left / width)),
            min(1.0, max(0.0, t.top / height)),
            min(1.0, max(0.0, t.width / width)),
            min(1.0, max(0.0, t.height / height)),
            min(1.0, max(-1.0, math.log2(max(t.height, 1) / median_h) / 3.0)),
            min(1.0, max(0.0, t.conf / 100.0)),
            1.0 if t.angle % 360 else 0.0,
            1.0 if any(ch.isdigit() for ch in text) else 0.0,
            1.0 if normalize_word(text) == NUM else 0.0,
            1.0 if letters and all(ch.isupper() for ch in letters) else 0.0,
            1.0 if t.line != previous_line else 0.0,
        )
        previous_line = t.line
    return out


def label_targets(candidates: Sequence[Candidate], label: str | None, entity: str) -> list[int]:
    """Indices of the candidates equal to the label (numerically, same unit); [] when none is or no answer
    can equal the label (:func:`imagequant.core.units.matchable_label`; such rows train "no answer")."""
    parsed = None if label is None else matchable_label(label, entity)
    if parsed is None or parsed.value is None:
        return []
    return [
        i for i, c in enumerate(candidates)
        if c.unit == parsed.unit and math.isclose(c.value, parsed.value, rel_tol=1e-9, abs_tol=1e-12)
    ]


RULE_SCORE_FEATURE = 3  # position of the rule score among the extra candidate features


def _extra_candidate_features(c: Candidate, n_found: int, position: int, rule_score: float,
                              rule_best: bool) -> list[float]:
    """Evidence the candidate module does not give: where the candidate sits among those found, and the
    rule baseline's verdict (so with few labeled rows the network learns corrections to the rules rather
    than the whole ranking from scratch)."""
    finite = math.isfinite(rule_score)
    return [
        position / max(1, n_found - 1) if n_found > 1 else 0.0,
        min(1.0, math.log1p(n_found) / 4.0),
        min(1.0, len(c.text) / 20.0),
        min(1.5, max(-1.5, rule_score / 8.0)) if finite else -1.5,
        1.0 if rule_best else 0.0,
    ]


def encode_example(
    tokens: Sequence[OcrToken],
    image_size: tuple[int, int],
    entity: str,
    cnn_features: Sequence[float] | np.ndarray | None,
    vocab: Vocab,
    params: ModelParams,
    candidates: Sequence[Candidate] | None = None,
    label: str | None = None,
) -> EncodedExample:
    """One row as arrays. ``candidates`` default to :func:`extract_candidates` of the tokens; ``label``
    (training) sets the targets. An entity the model does not know raises ValueError."""
    if entity not in params.entities:
        raise ValueError(f"unknown entity {entity!r}")
    if candidates is None:
        candidates = extract_candidates(tokens, entity, image_size)
    found = list(candidates)
    limited = found[: params.max_candidates]
    spans = [(c.token_start, c.token_end) for c in limited]
    kept_idx, n_spans = select_tokens(len(tokens), spans, params.max_tokens)
    limited = limited[:n_spans]
    new_pos = {old: new for new, old in enumerate(kept_idx)}
    kept_tokens = [tokens[i] for i in kept_idx]

    cnn = np.zeros(params.cnn_dim, dtype=np.float32)
    if cnn_features is not None and len(cnn_features) == params.cnn_dim:
        cnn = np.nan_to_num(np.asarray(cnn_features, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)

    feat_dim = params.candidate_feature_dim + params.extra_candidate_dim
    cand_feats = np.zeros((len(limited), feat_dim), dtype=np.float32)
    rule_scores = [rules.score_candidate(c, entity) for c in limited]
    best_rule = int(np.argmax(rule_scores)) if rule_scores else -1
    for j, c in enumerate(limited):
        base = candidate_features(c)
        if len(base) != params.candidate_feature_dim:
            raise ValueError(
                f"candidate features have {len(base)} values but the model expects {params.candidate_feature_dim}"
            )
        cand_feats[j] = [*base, *_extra_candidate_features(c, len(found), j, rule_scores[j], j == best_rule)]
    return EncodedExample(
        token_ids=np.asarray([vocab.id(t.text) for t in kept_tokens], dtype=np.int64),
        token_feats=token_features(kept_tokens, image_size),
        entity_id=params.entities.index(entity),
        cnn=cnn,
        cand_start=np.asarray([new_pos[c.token_start] for c in limited], dtype=np.int64),
        cand_end=np.asarray([new_pos[c.token_end - 1] for c in limited], dtype=np.int64),
        cand_feats=cand_feats,
        candidates=limited,
        entity=entity,
        n_candidates_found=len(found),
        targets=label_targets(limited, label, entity),
        label=label,
    )


def empty_example(params: ModelParams) -> EncodedExample:
    """A row without tokens or candidates: fills the exported program's fixed batch."""
    none = np.zeros(0, dtype=np.int64)
    return EncodedExample(none, np.zeros((0, params.token_feature_dim), np.float32), 0,
                          np.zeros(params.cnn_dim, np.float32), none, none,
                          np.zeros((0, params.candidate_feature_dim + params.extra_candidate_dim), np.float32),
                          [], params.entities[0], 0)

