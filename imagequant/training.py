"""Training: feature-store rows joined with labels -> examples -> the candidate scorer, early-stopped on F1.

The input is the feature store joined with the labeled catalog rows (:func:`build_training_table`, Spark),
written as Parquet under ``STORE/_training/<catalog-hash>/`` and read back with Petastorm (or pyarrow)
by :func:`iter_training_records`. Each record becomes a :class:`RawExample` (its OCR tokens, candidates,
CNN features and label); rows are split into train/validation by a hash of ``group_id`` so that no
product group is on both sides; the model is trained with Adam and early stopping on the validation F1
of the challenge, at the abstain threshold that maximises it (:func:`imagequant.metrics.best_threshold`).

Which rows train what:

* unlabeled rows, rows whose image failed (or is missing from the store) and rows of an unknown entity
  are skipped (counted in ``metrics.json`` under ``skipped``);
* rows whose label is a range, unparseable or in a unit the entity does not allow are KEPT with the
  "no answer" target (no candidate can ever equal such a label, so abstaining is the best the model can
  do) and count as non-empty truths in the validation F1, as the challenge counts them.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import random
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from imagequant import rules
from imagequant.candidates import Candidate, extract_candidates
from imagequant.config import TrainConfig
from imagequant.errors import UsageError
from imagequant.metrics import best_threshold, candidate_recall, per_entity, score
from imagequant.model import (
    CNN_DIM,
    INPUT_NAMES,
    EncodedExample,
    ModelParams,
    Prediction,
    Vocab,
    build_model,
    collate,
    decode,
    encode_example,
    image_size_of,
    option_loss,
    save_checkpoint,
)
from imagequant.ocr import OcrToken
from imagequant.spark.store import TOKEN_FIELDS, tokens_from_record
from imagequant.units import ENTITY_UNITS, format_prediction, values_equal

TRAINING_DIR = "_training"
LOADERS = ("petastorm", "pyarrow")


# --- records -> examples -------------------------------------------------------------------------------


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


def record_tokens(record: Mapping[str, Any]) -> list[OcrToken]:
    """The OCR tokens of a training record: from ``tokens_json`` (training table) or the ``tok_*`` arrays."""
    if "tokens_json" in record:
        text = record["tokens_json"]
        columns = json.loads(text) if isinstance(text, str) and text else {}
        if not columns or columns.get("tok_text") is None:
            return []
        return tokens_from_record({f"tok_{n}": columns.get(f"tok_{n}") or [] for n, _ in TOKEN_FIELDS})
    return tokens_from_record(record)


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def examples_from_records(records: Iterable[Mapping[str, Any]]) -> tuple[list[RawExample], Counter[str]]:
    """Turns training records into examples (sorted by source and index, whatever order they came in)
    and counts the rows skipped by reason."""
    examples: list[RawExample] = []
    skipped: Counter[str] = Counter()
    for record in records:
        entity = _text(record.get("entity_name")) or ""
        label = _text(record.get("entity_value"))
        status = _text(record.get("status")) or "image_missing"
        if label is None:
            skipped["unlabeled"] += 1
            continue
        if entity not in ENTITY_UNITS:
            skipped["unknown_entity"] += 1
            continue
        if status != "ok":
            skipped[status if status == "image_missing" else "image_failed"] += 1
            continue
        tokens = record_tokens(record)
        size = image_size_of(tokens, int(record.get("width") or 0), int(record.get("height") or 0))
        cnn = record.get("cnn_features")
        has_cnn = bool(record.get("has_cnn", cnn is not None and len(cnn) == CNN_DIM))
        examples.append(
            RawExample(
                index=int(record.get("index") or 0),
                group_id=_text(record.get("group_id")) or "",
                entity=entity,
                label=label,
                tokens=tokens,
                image_size=size,
                cnn=np.asarray(cnn, dtype=np.float32) if has_cnn and cnn is not None else None,
                candidates=extract_candidates(tokens, entity, size),
                source=int(record.get("source") or 0),
            )
        )
    examples.sort(key=lambda e: (e.source, e.index))
    return examples, skipped


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


# --- evaluation ----------------------------------------------------------------------------------------


def _answers_right(answers: Sequence[str], labels: Sequence[str | None]) -> list[bool]:
    """Which answers equal their row's label (an empty answer is never right)."""
    return [bool(a) and values_equal(a, label or "") for a, label in zip(answers, labels, strict=True)]


def threshold_report(preds: Sequence[Prediction], labels: Sequence[str | None]) -> dict[str, float]:
    """Best abstain threshold and the F1 it gives, for predictions decoded without a threshold."""
    answers = [p.prediction for p in preds]
    return best_threshold(
        scores=[p.score for p in preds],
        correct=_answers_right(answers, labels),
        has_answer=[bool(a) for a in answers],
        gt_nonempty=[bool(label) for label in labels],
    )


def rule_predictions(examples: Sequence[RawExample]) -> list[Prediction]:
    """The rule baseline's answers (no threshold applied), for comparison on the same rows."""
    out = []
    for e in examples:
        best, conf = rules.choose(e.candidates, e.entity)
        text = format_prediction(best.value, best.unit, e.entity) if best is not None else ""
        out.append(Prediction(text, best.value if best else None, best.unit if best else None, conf,
                              len(e.candidates), 0.0))
    return out


def apply_threshold(preds: Sequence[Prediction], threshold: float) -> list[str]:
    return [p.prediction if p.prediction and p.score >= threshold else "" for p in preds]


def summary_at(preds: Sequence[Prediction], examples: Sequence[RawExample], threshold: float) -> dict[str, Any]:
    """Challenge scores of predictions at a threshold, overall and per entity."""
    answers = apply_threshold(preds, threshold)
    labels = [e.label or "" for e in examples]
    table = per_entity([e.entity for e in examples], answers, labels)
    return {
        "threshold": threshold,
        **{k: v for k, v in score(answers, labels).items()},
        "per_entity": {
            entity: {"n": int(row["n"]), "f1": float(row["f1"]), "precision": float(row["precision"]),
                     "recall": float(row["recall"])}
            for entity, row in table.iterrows()
        },
    }


# --- the training loop ---------------------------------------------------------------------------------


def settings_from_config(train_config: TrainConfig) -> TrainConfig:
    """A copy of the ``train`` section: the run may adjust it without touching the loaded configuration."""
    return dataclasses.replace(train_config)


# The knobs of one training run are the ``train`` section of the configuration itself (one set of defaults).
TrainSettings = TrainConfig


@dataclass
class TrainResult:
    model_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    def line(self) -> str:
        v = self.metrics["validation"]
        r = self.metrics.get("rules_validation", {})
        return (
            f"trained {self.metrics['params']['kind']} model on {self.metrics['train_rows']} rows "
            f"({self.metrics['epochs_run']} epochs, best {self.metrics['best_epoch']}): validation "
            f"F1 {v['f1']:.3f} (P {v['precision']:.3f} R {v['recall']:.3f}, threshold {v['threshold']:.3f}) "
            f"on {self.metrics['val_rows']} rows; rules F1 {r.get('f1', float('nan')):.3f}; "
            f"saved to {self.model_dir}"
        )


@contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic kernels for the duration of training (restored afterwards)."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def encode_all(examples: Sequence[RawExample], vocab: Vocab, params: ModelParams) -> list[EncodedExample]:
    return [
        encode_example(e.tokens, e.image_size, e.entity, e.cnn, vocab, params, e.candidates, e.label)
        for e in examples
    ]


def _predict_encoded(model: torch.nn.Module, encoded: Sequence[EncodedExample], params: ModelParams,
                     batch_size: int = 128) -> tuple[list[Prediction], float]:
    """Predictions without a threshold and the mean loss, in eval mode."""
    model.eval()
    preds: list[Prediction] = []
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(encoded), batch_size):
            chunk = encoded[i : i + batch_size]
            inputs, targets = collate(chunk, params)
            logits = model(*(inputs[n] for n in INPUT_NAMES))
            total += float(option_loss(logits, targets)) * len(chunk)
            count += len(chunk)
            probs = torch.softmax(logits, dim=1).numpy()
            for e, row in zip(chunk, probs, strict=True):
                k = len(e.candidates)
                preds.append(decode(e, np.concatenate([row[:k], row[-1:]]), -math.inf))
    return preds, total / max(1, count)


@dataclass
class FittedModel:
    """A trained scorer with what predicting needs, before anything is written to disk."""

    model: torch.nn.Module
    vocab: Vocab
    params: ModelParams
    threshold: float
    best_epoch: int
    history: list[dict[str, Any]]

    def predict(self, examples: Sequence[RawExample]) -> list[Prediction]:
        """Predictions without a threshold (apply :attr:`threshold` with :func:`apply_threshold`)."""
        preds, _ = _predict_encoded(self.model, encode_all(examples, self.vocab, self.params), self.params)
        return preds


def fit_model(
    train_examples: Sequence[RawExample],
    val_examples: Sequence[RawExample],
    model_config: Any,
    settings: TrainSettings,
    progress: bool = True,
) -> FittedModel:
    """Trains on ``train_examples`` and keeps the epoch (and abstain threshold) with the best F1 on
    ``val_examples`` (the training rows themselves when there are none)."""
    if not train_examples:
        raise UsageError("no training rows: every row was unlabeled, failed or missing from the store")
    val_examples = list(val_examples) or list(train_examples)
    vocab = Vocab.build((t.text for e in train_examples for t in e.tokens), settings.vocab_min_count,
                        settings.vocab_max_size)
    params = ModelParams.from_config(model_config, vocab_size=len(vocab))
    train_enc = encode_all(train_examples, vocab, params)
    val_enc = encode_all(val_examples, vocab, params)
    labels = [e.label for e in val_examples]

    rng = random.Random(settings.seed)
    history: list[dict[str, Any]] = []
    best_epoch, stale = 0, 0
    with _deterministic():
        model = build_model(params, seed=settings.seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate,
                                      weight_decay=settings.weight_decay)
        # Epoch 0 is the untrained network, which ranks candidates as the rule baseline does: training
        # has to beat that on the validation rows to be kept.
        preds, val_loss = _predict_encoded(model, val_enc, params)
        best_report = base_report = threshold_report(preds, labels)
        best_preds = base_preds = preds
        best = (best_report["f1"], -val_loss)
        best_state = base_state = copy.deepcopy(model.state_dict())
        history.append({"epoch": 0, "train_loss": None, "val_loss": val_loss, "val_f1": best_report["f1"],
                        "threshold": best_report["threshold"]})
        for epoch in range(1, settings.epochs + 1):
            model.train()
            order = list(range(len(train_enc)))
            rng.shuffle(order)
            batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
            total = 0.0
            bar = tqdm(batches, desc=f"epoch {epoch}/{settings.epochs}", file=sys.stderr, leave=False,
                       disable=not progress, unit="batch")
            for batch in bar:
                inputs, targets = collate([train_enc[i] for i in batch], params)
                loss = option_loss(model(*(inputs[n] for n in INPUT_NAMES)), targets, settings.unanswerable_weight)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
                optimizer.step()
                total += loss.item() * len(batch)
                bar.set_postfix(loss=f"{loss.item():.3f}")
            preds, val_loss = _predict_encoded(model, val_enc, params)
            report = threshold_report(preds, labels)
            entry = {"epoch": epoch, "train_loss": total / len(train_enc), "val_loss": val_loss,
                     "val_f1": report["f1"], "threshold": report["threshold"]}
            history.append(entry)
            if progress:
                print(f"epoch {epoch}: train loss {entry['train_loss']:.4f}, validation loss {val_loss:.4f}, "
                      f"F1 {report['f1']:.4f}", file=sys.stderr, flush=True)
            key = (report["f1"], -val_loss)
            if key > best:
                best, best_epoch, stale = key, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
                best_report, best_preds = report, preds
            else:
                stale += 1
                if stale >= settings.patience:
                    break
        if best_epoch and not _gain_is_shown(base_preds, base_report, best_preds, best_report, labels, settings):
            # A small gain on a few hundred validation rows is noise more often than not: keep the
            # rule-equivalent start rather than corrections that are not shown to help.
            best_state, best_report, best_epoch = base_state, base_report, 0
        model.load_state_dict(best_state)
    model.eval()
    return FittedModel(model, vocab, params, float(best_report["threshold"]), best_epoch, history)


def _gain_is_shown(base_preds: Sequence[Prediction], base_report: dict[str, float],
                   trained_preds: Sequence[Prediction], trained_report: dict[str, float],
                   labels: Sequence[str | None], settings: TrainSettings) -> bool:
    """Does the trained network beat its rule-equivalent start on the validation rows by more than chance?

    Its F1 must be ``min_gain`` higher, and (a sign test over the rows whose outcome changed) the rows it
    gets right that the start got wrong must outnumber the reverse by ``min_gain_z`` standard deviations.
    """
    if trained_report["f1"] < base_report["f1"] + settings.min_gain:
        return False
    before = _answers_right(apply_threshold(base_preds, base_report["threshold"]), labels)
    after = _answers_right(apply_threshold(trained_preds, trained_report["threshold"]), labels)
    fixed = sum(a and not b for a, b in zip(after, before, strict=True))
    broken = sum(b and not a for a, b in zip(after, before, strict=True))
    return fixed - broken >= settings.min_gain_z * math.sqrt(fixed + broken)


def ceiling(examples: Sequence[RawExample]) -> float:
    """Share of labeled rows whose label equals one of their candidates: the best any chooser can do."""
    return candidate_recall([e.candidates for e in examples], [e.label or "" for e in examples])


def train_model(
    train_examples: Sequence[RawExample],
    val_examples: Sequence[RawExample],
    model_config: Any,
    settings: TrainSettings,
    out_dir: str | Path,
    progress: bool = True,
    extra_metrics: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Trains on ``train_examples``, early-stops on the F1 of ``val_examples`` and writes the checkpoint.

    ``model_config`` is the configuration's ``model`` section (or anything with the same attributes).
    With no validation rows the training rows are used to pick the epoch and threshold.
    """
    started = time.perf_counter()
    validation_kind = "group split" if val_examples else "training rows (no validation rows)"
    fitted = fit_model(train_examples, val_examples, model_config, settings, progress)
    val_examples = list(val_examples) or list(train_examples)
    labels = [e.label for e in val_examples]
    preds = fitted.predict(val_examples)
    rule_preds = rule_predictions(val_examples)
    rule_report = threshold_report(rule_preds, labels)
    metrics: dict[str, Any] = {
        "train_rows": len(train_examples),
        "val_rows": len(val_examples),
        "validation": summary_at(preds, val_examples, fitted.threshold),
        "validation_rows": validation_kind,
        "rules_validation": summary_at(rule_preds, val_examples, rule_report["threshold"]),
        "candidate_recall": ceiling(val_examples),
        "best_epoch": fitted.best_epoch,
        "epochs_run": len(fitted.history) - 1,
        "history": fitted.history,
        "params": {k: v for k, v in fitted.params.__dict__.items()},
        "settings": settings.__dict__,
        "vocab_size": len(fitted.vocab),
        "seconds": round(time.perf_counter() - started, 2),
        **(dict(extra_metrics) if extra_metrics else {}),
    }
    out = save_checkpoint(out_dir, fitted.model, fitted.vocab, fitted.params, fitted.threshold, metrics,
                          export=settings.export)
    return TrainResult(out, metrics, fitted.history)


def group_folds(examples: Sequence[RawExample], folds: int, seed: int) -> list[list[RawExample]]:
    """``folds`` disjoint parts of ``examples``; all rows of one group_id fall in the same part."""
    if folds < 2:
        raise UsageError(f"cross-validation needs at least 2 folds, got {folds}")
    groups = sorted({e.group_id for e in examples}, key=lambda g: group_hash(g, seed))
    if len(groups) < folds:
        raise UsageError(f"{folds} folds need at least {folds} distinct group_id values, found {len(groups)}")
    fold_of = {g: i % folds for i, g in enumerate(groups)}
    parts: list[list[RawExample]] = [[] for _ in range(folds)]
    for e in examples:
        parts[fold_of[e.group_id]].append(e)
    return parts


def cross_validate(examples: Sequence[RawExample], model_config: Any, settings: TrainSettings, folds: int,
                   progress: bool = True) -> dict[str, Any]:
    """Group k-fold: each fold is predicted by a model trained on the others (early-stopped and thresholded
    on a group split of those), and by the rule baseline (threshold chosen the same way). Returns the
    out-of-fold scores of both, overall and per entity, and the candidate-recall ceiling per entity."""
    parts = group_folds(examples, folds, settings.seed)
    rows: list[RawExample] = []
    model_answers: list[str] = []
    rule_answers: list[str] = []
    per_fold = []
    for k, test in enumerate(parts):
        rest = [e for i, part in enumerate(parts) if i != k for e in part]
        train, val = split_by_group(rest, settings.val_fraction, settings.seed + k)
        fitted = fit_model(train, val, model_config, settings, progress=False)
        inner_val = val or train
        rule_threshold = threshold_report(rule_predictions(inner_val), [e.label for e in inner_val])["threshold"]
        fold_model = apply_threshold(fitted.predict(test), fitted.threshold)
        fold_rules = apply_threshold(rule_predictions(test), rule_threshold)
        labels = [e.label or "" for e in test]
        per_fold.append({"fold": k, "rows": len(test), "best_epoch": fitted.best_epoch,
                         "model_f1": score(fold_model, labels)["f1"], "rules_f1": score(fold_rules, labels)["f1"]})
        if progress:
            f = per_fold[-1]
            print(f"fold {k + 1}/{folds}: {f['rows']} rows, model F1 {f['model_f1']:.3f}, "
                  f"rules F1 {f['rules_f1']:.3f} (best epoch {f['best_epoch']})", file=sys.stderr, flush=True)
        rows += test
        model_answers += fold_model
        rule_answers += fold_rules
    entities = [e.entity for e in rows]
    labels = [e.label or "" for e in rows]
    model_table = per_entity(entities, model_answers, labels)
    rule_table = per_entity(entities, rule_answers, labels)
    table = {}
    for entity in model_table.index:
        subset = [e for e in rows if (entity == "all" or e.entity == entity)]
        table[entity] = {
            "rows": int(model_table.loc[entity, "n"]),
            "candidate_recall": ceiling(subset),
            "rules_f1": float(rule_table.loc[entity, "f1"]),
            "model_f1": float(model_table.loc[entity, "f1"]),
        }
    return {"folds": folds, "rows": len(rows), "model": score(model_answers, labels),
            "rules": score(rule_answers, labels), "per_entity": table, "per_fold": per_fold}


def render_cross_validation(cv: Mapping[str, Any]) -> str:
    """The cross-validation result as a markdown table (one line per entity, then the overall line)."""
    lines = [f"group {cv['folds']}-fold cross-validation over {cv['rows']} rows (out-of-fold predictions)", "",
             "| entity | rows | candidate recall (ceiling) | rules F1 | model F1 |", "| --- | ---: | ---: | ---: | ---: |"]
    table = cv["per_entity"]
    for entity in [e for e in table if e != "all"] + ["all"]:
        row = table[entity]
        name = "**all**" if entity == "all" else entity
        lines.append(f"| {name} | {row['rows']} | {row['candidate_recall']:.3f} | {row['rules_f1']:.3f} | "
                     f"{row['model_f1']:.3f} |")
    return "\n".join(lines) + "\n"


# --- the training table (Spark) and its readers ----------------------------------------------------------


def catalogs_hash(paths: Sequence[str | Path]) -> str:
    """First 16 hex of a SHA-1 over the catalogs' bytes, in the order given (their training table's name)."""
    digest = hashlib.sha1()
    for path in paths:
        p = Path(path)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        digest.update(f"catalog:{len(files)}\n".encode())
        for f in files:
            digest.update(f.relative_to(p).as_posix().encode() if p.is_dir() else b"")
            with f.open("rb") as handle:
                for chunk in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


@dataclass
class TrainingTable:
    path: Path
    rows: int
    usable_rows: int
    missing_images: int
    failed_images: int

    @property
    def url(self) -> str:
        return self.path.resolve().as_uri()


def build_training_table(spark: Any, catalogs: Sequence[str | Path], store: str | Path) -> TrainingTable:
    """Joins the labeled rows of ``catalogs`` with ``STORE/images`` and writes the join as Parquet under
    ``STORE/_training/<catalogs-hash>/`` (replacing an earlier one). Variable-length token arrays travel
    as one JSON column and CNN features as a fixed 2048-float array (zeros when absent), because Petastorm
    stacks list columns into rectangular arrays."""
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from imagequant.catalog import read_catalog
    from imagequant.spark.store import read_images

    frames = []
    for source, path in enumerate(catalogs):
        frame = read_catalog(path)
        if frame["entity_value"].isna().all():
            raise UsageError(f"catalog {path} has no labels (entity_value); training needs a labeled catalog")
        frame = frame[["index", "group_id", "entity_name", "entity_value", "image_id", "row_status"]].copy()
        frame["source"] = source
        frames.append(frame)
    rows_pd = pd.concat(frames, ignore_index=True)
    rows_pd = rows_pd[(rows_pd["row_status"] == "ok") & rows_pd["entity_value"].notna()]
    schema = T.StructType([
        T.StructField("index", T.LongType()),
        T.StructField("group_id", T.StringType()),
        T.StructField("entity_name", T.StringType()),
        T.StructField("entity_value", T.StringType()),
        T.StructField("image_id", T.StringType()),
        T.StructField("source", T.IntegerType()),
    ])
    rows = spark.createDataFrame(rows_pd.drop(columns=["row_status"]).astype({"source": "int32"}), schema)
    images = read_images(spark, store)
    if images is None:
        raise UsageError(f"store {store} holds no images table; run jobs/extract_features.py on the catalog first")
    zeros = F.array_repeat(F.lit(0.0).cast("float"), CNN_DIM)
    has_cnn = F.coalesce(F.size("cnn_features") == CNN_DIM, F.lit(False))
    images = images.select(
        "image_id", "status", "width", "height",
        F.to_json(F.struct(*[F.col(f"tok_{n}") for n, _ in TOKEN_FIELDS])).alias("tokens_json"),
        has_cnn.alias("has_cnn"),
        F.when(has_cnn, F.col("cnn_features")).otherwise(zeros).alias("cnn_features"),
    )
    joined = rows.join(images, on="image_id", how="left").select(
        "index", "source", "group_id", "entity_name", "entity_value", "image_id",
        F.coalesce("status", F.lit("image_missing")).alias("status"),
        F.coalesce("width", F.lit(0)).alias("width"),
        F.coalesce("height", F.lit(0)).alias("height"),
        F.coalesce("tokens_json", F.lit("{}")).alias("tokens_json"),
        F.coalesce("has_cnn", F.lit(False)).alias("has_cnn"),
        F.coalesce("cnn_features", zeros).alias("cnn_features"),
    )
    out = Path(store) / TRAINING_DIR / catalogs_hash(catalogs)
    joined.coalesce(max(1, min(8, len(rows_pd) // 5000 + 1))).write.mode("overwrite").parquet(str(out))
    counts = spark.read.parquet(str(out)).groupBy("status").count().collect()
    by_status = {r["status"]: int(r["count"]) for r in counts}
    total = sum(by_status.values())
    return TrainingTable(out, total, by_status.get("ok", 0), by_status.get("image_missing", 0),
                         total - by_status.get("ok", 0) - by_status.get("image_missing", 0))


def _row_dicts(columns: Mapping[str, Any], n: int) -> Iterator[dict[str, Any]]:
    names = list(columns)
    for i in range(n):
        yield {name: columns[name][i] for name in names}


def _petastorm_column(name: str, values: Any) -> Any:
    """One column of a Petastorm batch in the types the pyarrow loader yields: the CNN features as one float32
    matrix, every other column a Python list (indexing a numpy array row by row makes a numpy scalar each time,
    which was most of Petastorm's extra cost per row)."""
    if name == "cnn_features":
        if len(values) == 0:
            return np.zeros((0, CNN_DIM), dtype=np.float32)
        if all(v is not None and len(v) == CNN_DIM for v in values):
            return np.stack(values).astype(np.float32, copy=False)
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def iter_training_records(path: str | Path, loader: str = "petastorm", workers: int = 2) -> Iterator[dict[str, Any]]:
    """Rows of a training table as dicts (``cnn_features`` a float32 array), via Petastorm or pyarrow."""
    if loader not in LOADERS:
        raise UsageError(f"train.loader must be one of {', '.join(LOADERS)}, not {loader!r}")
    path = Path(path)
    if loader == "petastorm":
        from petastorm import make_batch_reader

        with warnings.catch_warnings():
            # petastorm 0.12 uses pyarrow's legacy dataset API, which warns on every call under pyarrow 14
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            with make_batch_reader(path.resolve().as_uri(), reader_pool_type="thread", workers_count=workers,
                                   num_epochs=1, shuffle_row_groups=False) as reader:
                for batch in reader:
                    columns = {name: _petastorm_column(name, values) for name, values in batch._asdict().items()}
                    yield from _row_dicts(columns, len(columns["index"]))
        return
    import pyarrow.parquet as pq

    table = pq.read_table(str(path))
    for record_batch in table.to_batches():
        columns: dict[str, Any] = {}
        for name in record_batch.schema.names:
            column = record_batch.column(name)
            if name == "cnn_features":
                columns[name] = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, CNN_DIM)
            else:
                columns[name] = column.to_pylist()
        yield from _row_dicts(columns, record_batch.num_rows)


def prepare_training_table(spark: Any, catalogs: Sequence[str | Path], store: str | Path) -> TrainingTable:
    """:func:`build_training_table`, refusing (UsageError) a join in which no row has a usable image."""
    table = build_training_table(spark, catalogs, store)
    if table.usable_rows == 0:
        raise UsageError(
            f"none of the {table.rows} labeled rows has a usable image in store {store} "
            f"({table.missing_images} missing, {table.failed_images} failed); run jobs/extract_features.py "
            "on these catalogs with this store first"
        )
    return table


def train_from_store(spark: Any, catalogs: Sequence[str | Path], store: str | Path, out_dir: str | Path,
                     config: Any, progress: bool = True) -> TrainResult:
    """The whole training job: training table (Spark) -> records (Petastorm/pyarrow) -> model directory."""
    return train_from_table(prepare_training_table(spark, catalogs, store), out_dir, config, progress)


def train_from_table(table: TrainingTable, out_dir: str | Path, config: Any, progress: bool = True,
                     folds: int = 0) -> TrainResult:
    """Reads a written training table and trains (no Spark needed).

    With ``folds`` >= 2 a group k-fold cross-validation runs first; its table is printed and written to
    ``cross_validation.json`` / ``cross_validation.md`` in the model directory.
    """
    settings = settings_from_config(config.train)
    loader = getattr(config.train, "loader", "petastorm")
    started = time.perf_counter()
    examples, skipped = examples_from_records(iter_training_records(table.path, loader))
    read_seconds = time.perf_counter() - started
    cv = None
    if folds:
        cv = cross_validate(examples, config.model, settings, folds, progress)
        print(render_cross_validation(cv), flush=True)
    train, val = split_by_group(examples, settings.val_fraction, settings.seed)
    extra = {
        "loader": loader,
        "read_seconds": round(read_seconds, 3),
        "training_table": str(table.path),
        "table_rows": table.rows,
        "table_missing_images": table.missing_images,
        "table_failed_images": table.failed_images,
        "skipped": dict(skipped),
    }
    if cv is not None:
        extra["cross_validation"] = {k: cv[k] for k in ("folds", "rows", "model", "rules")}
    result = train_model(train, val, config.model, settings, out_dir, progress, extra)
    if cv is not None:
        (result.model_dir / "cross_validation.json").write_text(json.dumps(cv, indent=2) + "\n")
        (result.model_dir / "cross_validation.md").write_text(render_cross_validation(cv))
    return result
