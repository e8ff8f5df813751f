"""Training records -> examples: one labeled row with its tokens, candidates, CNN features and label.

Which rows train what:

* unlabeled rows, rows whose image failed (or is missing from the store) and rows of an unknown entity
  are skipped (counted in ``metrics.json`` under ``skipped``);
* rows whose label is a range, unparseable, negative or in a unit the entity does not allow are KEPT with the
  "no answer" target (no candidate can ever equal such a label, so abstaining is the best the model can
  do) and count as non-empty truths in the validation F1, as the challenge counts them.

Rows are split into train/validation (and cross-validation folds) by a hash of ``group_id``, so no product
group is on both sides.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from imagequant.core.schema import CNN_FEATURE_DIM, TRAINING
from imagequant.core.tokens import OcrToken
from imagequant.core.units import ENTITY_UNITS, label_can_match
from imagequant.errors import UsageError
from imagequant.pipeline.rows import row_evidence, text_or_none
from imagequant.text.candidates import Candidate

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class RawExample:
    """One labeled row with everything the model needs, before vocabulary encoding."""

    index: int
    group_id: str
    entity: str
    label: str | None
    tokens: list[OcrToken]
    image_size: tuple[int, int]
    cnn: np.ndarray | None
    candidates: list[Candidate]
    source: int = 0  # which catalog it came from (several may be given)
    image_id: str = ""


def image_record(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """A training record with its tokens as the ``tok_*`` arrays and its line segments (the training table
    holds them as one JSON column); other records are returned as they are."""
    column = TRAINING["tokens_json"]
    if column.name not in record or column.codec is None:
        return record
    return {**record, **column.codec.decode(record[column.name])}


def examples_from_records(records: Iterable[Mapping[str, Any]]) -> tuple[list[RawExample], Counter[str]]:
    """Turns training records into examples (sorted by source and index, whatever order they came in)
    and counts the rows skipped by reason."""
    examples: list[RawExample] = []
    skipped: Counter[str] = Counter()
    for record in records:
        entity = text_or_none(record.get("entity_name")) or ""
        label = text_or_none(record.get("entity_value"))
        status = text_or_none(record.get("status")) or "image_missing"
        if label is None:
            skipped["unlabeled"] += 1
            continue
        if entity not in ENTITY_UNITS:
            skipped["unknown_entity"] += 1
            continue
        if status != "ok":
            skipped[status if status == "image_missing" else "image_failed"] += 1
            continue
        evidence = row_evidence(image_record(record), entity)
        cnn = record.get("cnn_features")
        has_cnn = bool(record.get("has_cnn", cnn is not None and len(cnn) == CNN_FEATURE_DIM))
        examples.append(
            RawExample(
                index=int(record.get("index") or 0),
                group_id=text_or_none(record.get("group_id")) or "",
                entity=entity,
                label=label,
                tokens=evidence.tokens,
                image_size=evidence.image_size,
                cnn=np.asarray(cnn, dtype=np.float32) if has_cnn and cnn is not None else None,
                candidates=evidence.candidates,
                source=int(record.get("source") or 0),
                image_id=text_or_none(record.get("image_id")) or "",
            )
        )
    examples.sort(key=lambda e: (e.source, e.index))
    return examples, skipped


def never_matched_labels(examples: Iterable[RawExample]) -> int:
    """How many examples have a label no answer can equal (kept, with the "no answer" target)."""
    return sum(1 for e in examples if not label_can_match(e.label, e.entity))


def left_out_rows(rows: pd.DataFrame) -> dict[str, int]:
    """How many catalog rows (``read_catalog``'s columns) stay out of a training table, by reason: ``unlabeled``
    (no entity_value), else the row_status that keeps them from being served (``bad_link``,
    ``unknown_entity``)."""
    reasons = rows["row_status"].where(rows["entity_value"].notna(), "unlabeled")
    return {str(k): int(v) for k, v in reasons[reasons != "ok"].value_counts().sort_index().items()}


def describe_training_rows(trained: int, skipped: Mapping[str, int], never_matched: int) -> list[str]:
    """What train warns of about its rows (the job adds ``warning: ``): those left out, by reason, and the labels
    never matched."""
    lines = []
    left_out = sum(skipped.values())
    if left_out:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"{left_out} of {trained + left_out} catalog rows are not trained on ({reasons}); "
                     "metrics.json's skipped counts them")
    if never_matched:
        lines.append(f"{never_matched} of the {trained} training rows have a label no answer can equal "
                     "(a range, unparseable, negative, or in a unit the entity does not allow): they train abstaining and "
                     "can never be right, as the challenge scores them")
    return lines


def group_hash(group_id: str, seed: int) -> float:
    """A stable number in [0, 1) for a group id (the same on every machine and Python run)."""
    digest = hashlib.sha1(f"{seed}:{group_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_group(examples: Sequence[RawExample], val_fraction: float, seed: int
                   ) -> tuple[list[RawExample], list[RawExample]]:
    """(train, validation): every row of a group goes to the same side, chosen by :func:`group_hash`.

    With one group only (or a split that leaves a side empty) rows are split by image instead; a single
    row trains and validates on itself (reported as such in the metrics).
    """
    train = [e for e in examples if group_hash(e.group_id, seed) >= val_fraction]
    val = [e for e in examples if group_hash(e.group_id, seed) < val_fraction]
    if examples and (not train or not val):
        def key(e: RawExample) -> str:
            return " ".join(t.text for t in e.tokens[:20]) + f"|{e.image_size}|{e.index}"

        train = [e for e in examples if group_hash(key(e), seed) >= val_fraction]
        val = [e for e in examples if group_hash(key(e), seed) < val_fraction]
    return train, val


def fold_of_groups(groups: Sequence[str], folds: int, seed: int) -> np.ndarray:
    """Per row, one of ``folds`` folds; all rows of one group share a fold (groups dealt round-robin in the
    order of :func:`group_hash`, so the folds hold about as many groups each)."""
    if folds < 2:
        raise UsageError(f"cross-validation needs at least 2 folds, got {folds}")
    ordered = sorted(set(groups), key=lambda g: group_hash(g, seed))
    if len(ordered) < folds:
        raise UsageError(f"{folds} folds need at least {folds} distinct group_id values, found {len(ordered)}")
    fold_of = {g: i % folds for i, g in enumerate(ordered)}
    return np.asarray([fold_of[g] for g in groups], dtype=int)


def group_folds(examples: Sequence[RawExample], folds: int, seed: int) -> list[list[RawExample]]:
    """``folds`` disjoint parts of ``examples``; all rows of one group_id fall in the same part."""
    which = fold_of_groups([e.group_id for e in examples], folds, seed)
    parts: list[list[RawExample]] = [[] for _ in range(folds)]
    for e, k in zip(examples, which, strict=True):
        parts[k].append(e)
    return parts
