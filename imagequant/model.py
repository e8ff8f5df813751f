"""The learned scorer: OCR tokens read by a bi-LSTM, conditioned on the entity and the image's CNN features.

For one catalog row the model sees the image's OCR tokens (word pieces + layout), the entity asked and the
ResNet-50 features of the image, plus the value+unit candidates that :mod:`imagequant.candidates` found in
the tokens. Each candidate is scored from the LSTM states over its own tokens (mean, first, last), its
evidence features and the image projection; one extra learned "no answer" option competes with them. A
softmax over ``[candidates..., no answer]`` is trained toward every candidate equal to the label (several
mentions of the same quantity share the credit) or toward "no answer" when none is.

Checkpoints are directories (see :func:`save_checkpoint`); :func:`load_model` gives a :class:`LoadedModel`
that encodes rows and predicts, with the eager module or the ``torch.export`` program saved beside it.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imagequant import rules
from imagequant.candidates import CANDIDATE_FEATURE_DIM, Candidate, candidate_features, extract_candidates
from imagequant.config import ModelConfig
from imagequant.errors import UsageError
from imagequant.ocr import OcrToken
from imagequant.units import ENTITIES, format_prediction, parse_label

CHECKPOINT_FORMAT = 1
CNN_DIM = 2048
PAD, UNK, NUM = "<pad>", "<unk>", "<num>"
SPECIALS = (PAD, UNK, NUM)
MODEL_KINDS = ("hybrid", "no_lstm", "no_cnn")
TOKEN_FEATURE_DIM = 11
# Logit given to padded candidate slots: exp() of it is exactly 0 in float32, and unlike -inf it never
# produces NaN when a whole row is masked.
MASKED_LOGIT = -1e4
# Start value of the "no answer" logit: below every candidate's start logit (see CandidateScorer).
NONE_START_LOGIT = -10.0

WEIGHTS_FILE = "weights.pt"
VOCAB_FILE = "vocab.json"
CONFIG_FILE = "config.json"
THRESHOLD_FILE = "threshold.json"
METRICS_FILE = "metrics.json"
EXPORTED_FILE = "model.pt2"


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
    entity_dim: int = 16
    hidden_dim: int = ModelConfig.hidden_dim
    cnn_proj_dim: int = ModelConfig.cnn_proj_dim
    mlp_dim: int = 128
    max_tokens: int = ModelConfig.max_tokens
    max_candidates: int = ModelConfig.max_candidates
    dropout: float = ModelConfig.dropout
    vocab_size: int = len(SPECIALS)
    entities: list[str] = field(default_factory=lambda: list(ENTITIES))
    token_feature_dim: int = TOKEN_FEATURE_DIM
    candidate_feature_dim: int = CANDIDATE_FEATURE_DIM
    extra_candidate_dim: int = 5
    cnn_dim: int = CNN_DIM
    export_batch: int = 32  # rows per call of the exported program (its shapes are fixed)

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise UsageError(f"model.kind must be one of {', '.join(MODEL_KINDS)}, not {self.kind!r}")
        if self.max_tokens < 1 or self.max_candidates < 1:
            raise UsageError("model.max_tokens and model.max_candidates must be positive")

    @classmethod
    def from_config(cls, model_config: Any, vocab_size: int) -> ModelParams:
        """From the ``model`` section of the configuration; keys it lacks keep their defaults here."""
        names = {"kind", "embed_dim", "entity_dim", "hidden_dim", "cnn_proj_dim", "mlp_dim", "max_tokens",
                 "max_candidates", "dropout"}
        values = {n: getattr(model_config, n) for n in names if hasattr(model_config, n)}
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


def image_size_of(tokens: Sequence[OcrToken], width: int, height: int) -> tuple[int, int]:
    """The decoded size, or (when unknown) the extent of the tokens, so relative positions stay in 0..1."""
    if width > 0 and height > 0:
        return width, height
    right = max((t.left + t.width for t in tokens), default=1)
    bottom = max((t.top + t.height for t in tokens), default=1)
    return max(1, right), max(1, bottom)


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
    """Indices of the candidates equal to the label (numerically, same unit); [] when none is or the label
    is a range, an unparseable text or a unit the entity does not allow (such rows train "no answer")."""
    if label is None:
        return []
    parsed = parse_label(label, entity)
    if parsed.kind != "value" or parsed.value is None:
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


# --- batches -------------------------------------------------------------------------------------------

INPUT_NAMES = ("token_ids", "token_feats", "lengths", "entity_ids", "cnn", "cand_start", "cand_end",
               "cand_feats", "cand_mask")


def collate(examples: Sequence[EncodedExample], params: ModelParams, pad_tokens: int | None = None,
            pad_candidates: int | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Pads a batch: (inputs by name, target mask (B, C+1) whose last column is "no answer").

    Without ``pad_*`` the batch is padded to its own longest row (training); the exported program needs
    the fixed sizes ``max_tokens`` / ``max_candidates``.
    """
    b = len(examples)
    t = pad_tokens or max(1, max((len(e.token_ids) for e in examples), default=1))
    c = pad_candidates or max(1, max((len(e.candidates) for e in examples), default=1))
    feat_dim = params.candidate_feature_dim + params.extra_candidate_dim
    token_ids = torch.zeros((b, t), dtype=torch.long)
    token_feats = torch.zeros((b, t, params.token_feature_dim), dtype=torch.float32)
    lengths = torch.zeros(b, dtype=torch.long)
    entity_ids = torch.zeros(b, dtype=torch.long)
    cnn = torch.zeros((b, params.cnn_dim), dtype=torch.float32)
    cand_start = torch.zeros((b, c), dtype=torch.long)
    cand_end = torch.zeros((b, c), dtype=torch.long)
    cand_feats = torch.zeros((b, c, feat_dim), dtype=torch.float32)
    cand_mask = torch.zeros((b, c), dtype=torch.bool)
    targets = torch.zeros((b, c + 1), dtype=torch.bool)
    for i, e in enumerate(examples):
        n, k = len(e.token_ids), len(e.candidates)
        if n > t or k > c:
            raise ValueError(f"row with {n} tokens / {k} candidates does not fit a batch padded to {t} / {c}")
        token_ids[i, :n] = torch.from_numpy(e.token_ids)
        token_feats[i, :n] = torch.from_numpy(e.token_feats)
        lengths[i] = n
        entity_ids[i] = e.entity_id
        cnn[i] = torch.from_numpy(e.cnn)
        cand_start[i, :k] = torch.from_numpy(e.cand_start)
        cand_end[i, :k] = torch.from_numpy(e.cand_end)
        cand_feats[i, :k] = torch.from_numpy(e.cand_feats)
        cand_mask[i, :k] = True
        if e.targets:
            targets[i, e.targets] = True
        else:
            targets[i, c] = True
    inputs = {"token_ids": token_ids, "token_feats": token_feats, "lengths": lengths, "entity_ids": entity_ids,
              "cnn": cnn, "cand_start": cand_start, "cand_end": cand_end, "cand_feats": cand_feats,
              "cand_mask": cand_mask}
    return inputs, targets


# --- the network ---------------------------------------------------------------------------------------


def respect_omp_thread_limit() -> None:
    """Caps torch's CPU threads at ``OMP_THREAD_LIMIT`` when that is set lower.

    oneDNN's LSTM splits its work for torch's thread count; when OpenMP is limited to fewer threads (the
    tests and Tesseract workers set OMP_THREAD_LIMIT=1) part of the work is never done and the LSTM returns
    wrong, run-to-run different states. Measured with torch 2.14 on CPU.
    """
    limit = os.environ.get("OMP_THREAD_LIMIT", "").strip()
    if limit.isdigit() and 0 < int(limit) < torch.get_num_threads():
        torch.set_num_threads(int(limit))


def _reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverses each row's first ``length`` steps and leaves padding where it is (an involution).

    A backward LSTM run over this sees each row's own last token first, never the padding, so states do
    not depend on how far the batch was padded (which keeps eager and exported scores equal).
    """
    t = x.size(1)
    pos = torch.arange(t, device=x.device).unsqueeze(0)
    length = lengths.unsqueeze(1)
    index = torch.where(pos < length, length - 1 - pos, pos)
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.size(2)))


class CandidateScorer(nn.Module):
    """Scores ``[candidates..., no answer]`` for a padded batch; returns logits (B, C+1)."""

    def __init__(self, params: ModelParams) -> None:
        super().__init__()
        respect_omp_thread_limit()
        p = params
        self.kind = p.kind
        self.use_lstm = p.kind != "no_lstm"
        self.use_cnn = p.kind != "no_cnn"
        self.word_embedding = nn.Embedding(p.vocab_size, p.embed_dim, padding_idx=0)
        self.entity_embedding = nn.Embedding(len(p.entities), p.entity_dim)
        in_dim = p.embed_dim + p.token_feature_dim + p.entity_dim
        state_dim = 2 * p.hidden_dim
        if self.use_lstm:
            # two one-way LSTMs instead of bidirectional=True: padding-independent states (see above)
            self.lstm_fwd = nn.LSTM(in_dim, p.hidden_dim, batch_first=True)
            self.lstm_bwd = nn.LSTM(in_dim, p.hidden_dim, batch_first=True)
        else:
            self.token_proj = nn.Sequential(nn.Linear(in_dim, state_dim), nn.Tanh())
        cnn_out = p.cnn_proj_dim if self.use_cnn else 0
        if self.use_cnn:
            # LayerNorm first: random-weight and ImageNet ResNet features differ in scale by orders
            self.cnn_proj = nn.Sequential(nn.LayerNorm(p.cnn_dim), nn.Linear(p.cnn_dim, p.cnn_proj_dim), nn.ReLU())
        self.dropout = nn.Dropout(p.dropout)
        cand_in = 3 * state_dim + p.candidate_feature_dim + p.extra_candidate_dim + p.entity_dim + cnn_out
        self.candidate_mlp = nn.Sequential(
            nn.Linear(cand_in, p.mlp_dim), nn.ReLU(), nn.Dropout(p.dropout), nn.Linear(p.mlp_dim, 1)
        )
        # The rule baseline's score enters the logit directly and the network learns corrections to it:
        # with a zero last layer the untrained model ranks candidates exactly as the rules do, and a few
        # hundred labeled rows only have to teach where the rules go wrong.
        self.rule_index = p.candidate_feature_dim + RULE_SCORE_FEATURE
        self.rule_weight = nn.Parameter(torch.tensor(4.0))
        nn.init.zeros_(self.candidate_mlp[3].weight)
        nn.init.zeros_(self.candidate_mlp[3].bias)
        none_in = state_dim + p.entity_dim + cnn_out + 1
        self.none_mlp = nn.Sequential(nn.Linear(none_in, p.mlp_dim // 2), nn.ReLU(), nn.Linear(p.mlp_dim // 2, 1))
        # Untrained, "no answer" loses to every candidate, as the rule baseline never abstains (candidate
        # logits start within +-rule_weight * 1.5); training learns when to abstain.
        nn.init.zeros_(self.none_mlp[2].weight)
        nn.init.constant_(self.none_mlp[2].bias, NONE_START_LOGIT)

    def forward(
        self,
        token_ids: torch.Tensor,
        token_feats: torch.Tensor,
        lengths: torch.Tensor,
        entity_ids: torch.Tensor,
        cnn: torch.Tensor,
        cand_start: torch.Tensor,
        cand_end: torch.Tensor,
        cand_feats: torch.Tensor,
        cand_mask: torch.Tensor,
    ) -> torch.Tensor:
        b, t = token_ids.shape
        entity = self.entity_embedding(entity_ids)  # (B, E)
        words = self.dropout(self.word_embedding(token_ids))
        x = torch.cat([words, token_feats, entity.unsqueeze(1).expand(b, t, entity.size(1))], dim=2)
        if self.use_lstm:
            fwd, _ = self.lstm_fwd(x)
            bwd_rev, _ = self.lstm_bwd(_reverse_within_length(x, lengths))
            states = torch.cat([fwd, _reverse_within_length(bwd_rev, lengths)], dim=2)
        else:
            states = self.token_proj(x)
        token_mask = (torch.arange(t, device=token_ids.device).unsqueeze(0) < lengths.unsqueeze(1)).float()
        states = states * token_mask.unsqueeze(2)
        d = states.size(2)

        # span pooling: mean over the candidate's tokens, plus its first and last token states
        pos = torch.arange(t, device=token_ids.device).view(1, 1, t)
        span = ((pos >= cand_start.unsqueeze(2)) & (pos <= cand_end.unsqueeze(2))).float()
        span_mean = torch.bmm(span, states) / span.sum(dim=2, keepdim=True).clamp(min=1.0)
        first = torch.gather(states, 1, cand_start.unsqueeze(2).expand(-1, -1, d))
        last = torch.gather(states, 1, cand_end.unsqueeze(2).expand(-1, -1, d))
        c = cand_start.size(1)

        parts = [span_mean, first, last, cand_feats, entity.unsqueeze(1).expand(b, c, entity.size(1))]
        pooled = states.sum(dim=1) / lengths.clamp(min=1).unsqueeze(1).float()
        n_cands = cand_mask.float().sum(dim=1, keepdim=True)
        none_parts = [pooled, entity, torch.log1p(n_cands)]
        if self.use_cnn:
            image = self.dropout(self.cnn_proj(cnn))
            parts.append(image.unsqueeze(1).expand(b, c, image.size(1)))
            none_parts.append(image)
        rule = cand_feats[:, :, self.rule_index]
        cand_logits = self.rule_weight * rule + self.candidate_mlp(self.dropout(torch.cat(parts, dim=2))).squeeze(2)
        cand_logits = cand_logits.masked_fill(~cand_mask, MASKED_LOGIT)
        none_logit = self.none_mlp(torch.cat(none_parts, dim=1))
        return torch.cat([cand_logits, none_logit], dim=1)


def option_loss(logits: torch.Tensor, targets: torch.Tensor, unanswerable_weight: float = 1.0) -> torch.Tensor:
    """Weighted mean negative log of the probability mass on the correct options (candidates or "no answer").

    Rows whose target is "no answer" weigh ``unanswerable_weight``: on real data most of them are rows
    whose label the OCR never read, and their gradient pushes down whichever candidate looks best, which
    is noise for learning to rank the candidates of answerable rows.
    """
    log_z = torch.logsumexp(logits, dim=1)
    log_correct = torch.logsumexp(logits.masked_fill(~targets, MASKED_LOGIT), dim=1)
    weights = torch.where(targets[:, -1], torch.full_like(log_z, unanswerable_weight), torch.ones_like(log_z))
    return ((log_z - log_correct) * weights).sum() / weights.sum().clamp(min=1e-6)


# --- decoding ------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """The model's answer for one row: the best quantity among its candidates and its probability."""

    prediction: str  # "" when abstaining (score below the threshold) or no candidate
    value: float | None  # of the best candidate, even when abstaining (for threshold analysis)
    unit: str | None
    score: float  # probability of that quantity (mentions of the same quantity summed); 0 without any
    n_candidates: int
    no_answer: float  # probability of the "no answer" option


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
    text = format_prediction(best.value, best.unit, example.entity) if score >= threshold else ""
    return Prediction(text, best.value, best.unit, score, example.n_candidates_found, no_answer)


# --- checkpoints ---------------------------------------------------------------------------------------


def build_model(params: ModelParams, seed: int | None = None) -> CandidateScorer:
    if seed is not None:
        torch.manual_seed(seed)
    return CandidateScorer(params)


def _empty_example(params: ModelParams) -> EncodedExample:
    """A row without tokens or candidates: fills the exported program's fixed batch."""
    none = np.zeros(0, dtype=np.int64)
    return EncodedExample(none, np.zeros((0, params.token_feature_dim), np.float32), 0,
                          np.zeros(params.cnn_dim, np.float32), none, none,
                          np.zeros((0, params.candidate_feature_dim + params.extra_candidate_dim), np.float32),
                          [], params.entities[0], 0)


def export_program(model: CandidateScorer, params: ModelParams, path: Path) -> None:
    """Saves ``torch.export`` of the eval-mode scorer with fixed shapes: ``export_batch`` rows padded to
    ``max_tokens`` tokens and ``max_candidates`` candidates. (A dynamic batch dimension made the export
    take ~10 s longer, for nothing: inference pads its last chunk instead.)"""
    import warnings

    model = model.eval()
    inputs, _ = collate([_empty_example(params)] * params.export_batch, params, params.max_tokens,
                        params.max_candidates)
    with warnings.catch_warnings():
        # nn.LSTM's flat-weight bookkeeping warns during tracing; the exported graph is unaffected
        warnings.simplefilter("ignore", UserWarning)
        program = torch.export.export(model, tuple(inputs[n] for n in INPUT_NAMES))
    torch.export.save(program, str(path))


def save_checkpoint(
    directory: str | Path,
    model: CandidateScorer,
    vocab: Vocab,
    params: ModelParams,
    threshold: float,
    metrics: dict[str, Any],
    export: bool = True,
) -> Path:
    """Writes weights.pt, vocab.json, config.json, threshold.json, metrics.json (and model.pt2)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / WEIGHTS_FILE)
    (out / VOCAB_FILE).write_text(json.dumps(vocab.to_json()))
    (out / CONFIG_FILE).write_text(json.dumps({"format": CHECKPOINT_FORMAT, **asdict(params)}, indent=2))
    (out / THRESHOLD_FILE).write_text(json.dumps({"threshold": _json_float(threshold)}, indent=2))
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=_json_default))
    exported = out / EXPORTED_FILE
    if export:
        export_program(model, params, exported)
    elif exported.exists():
        exported.unlink()  # a stale program from an earlier run must not be served with new weights
    return out


def _json_float(x: float) -> float | str:
    return x if math.isfinite(x) else ("-inf" if x < 0 else "inf")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class LoadedModel:
    """A checkpoint ready to predict: vocabulary, parameters, threshold and the scoring module."""

    def __init__(self, directory: Path, params: ModelParams, vocab: Vocab, threshold: float,
                 module: Any, exported: bool) -> None:
        self.directory = directory
        self.params = params
        self.vocab = vocab
        self.threshold = threshold
        self.module = module
        self.exported = exported

    def encode(self, tokens: Sequence[OcrToken], image_size: tuple[int, int], entity: str,
               cnn_features: Sequence[float] | np.ndarray | None,
               candidates: Sequence[Candidate] | None = None) -> EncodedExample:
        return encode_example(tokens, image_size, entity, cnn_features, self.vocab, self.params, candidates)

    def logits(self, examples: Sequence[EncodedExample], batch_size: int = 64) -> list[np.ndarray]:
        """Raw option logits per row, ``[candidates..., no answer]`` (padding slots dropped).

        The exported program always takes ``export_batch`` rows; ``batch_size`` applies to eager only.
        """
        out: list[np.ndarray] = []
        p = self.params
        step = p.export_batch if self.exported else batch_size
        for i in range(0, len(examples), step):
            chunk = list(examples[i : i + step])
            if self.exported:
                filler = [_empty_example(p)] * (step - len(chunk))
                inputs, _ = collate(chunk + filler, p, p.max_tokens, p.max_candidates)
            else:
                inputs, _ = collate(chunk, p)
            with torch.no_grad():
                logits = self.module(*(inputs[n] for n in INPUT_NAMES)).numpy()
            for e, row in zip(chunk, logits[: len(chunk)], strict=True):
                k = len(e.candidates)
                out.append(np.concatenate([row[:k], row[-1:]]).astype(np.float64))
        return out

    def probabilities(self, examples: Sequence[EncodedExample], batch_size: int = 64) -> list[np.ndarray]:
        return [_softmax(x) for x in self.logits(examples, batch_size)]

    def predict(self, examples: Sequence[EncodedExample], threshold: float | None = None,
                batch_size: int = 64) -> list[Prediction]:
        t = self.threshold if threshold is None else threshold
        return [decode(e, p, t) for e, p in zip(examples, self.probabilities(examples, batch_size), strict=True)]


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def read_params(directory: str | Path) -> ModelParams:
    path = Path(directory) / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{directory} is not a model checkpoint ({path.name}: {exc})") from exc
    if data.pop("format", None) != CHECKPOINT_FORMAT:
        raise UsageError(f"{path} is not a checkpoint of format {CHECKPOINT_FORMAT}; retrain the model")
    try:
        params = ModelParams(**data)
    except TypeError as exc:
        raise UsageError(f"{path} does not match this version of the model: {exc}") from exc
    if params.candidate_feature_dim != CANDIDATE_FEATURE_DIM:
        raise UsageError(
            f"{directory} was trained with {params.candidate_feature_dim} candidate features; this code computes "
            f"{CANDIDATE_FEATURE_DIM}; retrain the model"
        )
    return params


def load_model(directory: str | Path, exported: bool = False) -> LoadedModel:
    """Loads a checkpoint directory; ``exported`` serves model.pt2 (torch.export) instead of eager weights."""
    root = Path(directory)
    if not root.is_dir():
        raise UsageError(f"model directory {root} does not exist")
    params = read_params(root)
    respect_omp_thread_limit()
    try:
        vocab = Vocab.from_json(json.loads((root / VOCAB_FILE).read_text()))
        threshold = float(json.loads((root / THRESHOLD_FILE).read_text())["threshold"])
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"model directory {root} is incomplete: {exc}") from exc
    if exported:
        path = root / EXPORTED_FILE
        if not path.exists():
            raise UsageError(f"{path} is missing (trained with train.export=false?); use the eager model")
        module: Any = torch.export.load(str(path)).module()
    else:
        model = CandidateScorer(params)
        model.load_state_dict(torch.load(root / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        module = model.eval()
    return LoadedModel(root, params, vocab, threshold, module, exported)
