"""The learned scorer's network (torch): OCR tokens read by a bi-LSTM, conditioned on the entity and the
image's CNN features.

For one catalog row the model sees the image's OCR tokens (word pieces + layout), the entity asked and the
ResNet-50 features of the image, plus the value+unit candidates that :mod:`imagequant.text.candidates` found in
the tokens. Each candidate is scored from the LSTM states over its own tokens (mean, first, last), its
evidence features and the image projection; one extra learned "no answer" option competes with them. A
softmax over ``[candidates..., no answer]`` is trained toward every candidate equal to the label (several
mentions of the same quantity share the credit) or toward "no answer" when none is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from imagequant.scoring.encode import RULE_SCORE_FEATURE, EncodedExample, ModelParams

# Logit given to padded candidate slots: exp() of it is exactly 0 in float32, and unlike -inf it never
# produces NaN when a whole row is masked.
MASKED_LOGIT = -1e4
# Start value of the "no answer" logit: below every candidate's start logit (see CandidateScorer).
NONE_START_LOGIT = -10.0


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


def build_model(params: ModelParams, seed: int | None = None) -> CandidateScorer:
    if seed is not None:
        torch.manual_seed(seed)
    return CandidateScorer(params)

