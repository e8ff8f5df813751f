"""Training the learned scorer: examples -> network, early-stopped on the validation F1 of the challenge.

The examples come from the training table (:mod:`imagequant.training.examples`, read by
:mod:`imagequant.training.reader`); rows are split into train/validation by product group; the model is
trained with AdamW and early stopping on the validation F1, at the abstain threshold that maximises it
(:func:`imagequant.core.metrics.best_threshold`), and kept only when a sign test shows it beats its
rule-equivalent start.
"""

from __future__ import annotations

import copy
import json
import math
import random
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from imagequant.cli import foreign_entries, refuse_foreign_folder
from imagequant.config import Config, ModelConfig, TrainConfig
from imagequant.console import stderr_is_terminal
from imagequant.core.metrics import best_threshold, candidate_recall, per_entity, score
from imagequant.core.units import values_equal
from imagequant.errors import UsageError
from imagequant.scoring.base import Prediction, ScoringRow
from imagequant.scoring.checkpoint import CHECKPOINT_FILES, METRICS_FILE, json_default, save_checkpoint
from imagequant.scoring.confidence import CONFIDENCE_FILE, ConfidenceModel
from imagequant.scoring.decode import decode
from imagequant.scoring.encode import INPUT_NAMES, EncodedExample, ModelParams, Vocab, encode_example
from imagequant.scoring.network import build_model, collate, option_loss
from imagequant.scoring.zoo import (
    CNN_WEIGHTS_FILE,
    OCR_READERS_FILE,
    SCORER_FILE,
    TRAINING_IMAGES_FILE,
    RuleScorer,
    mixed_cnn_weights_warning,
    write_cnn_weights,
    write_ocr_readers,
    write_rules_directory,
    write_training_images,
)
from imagequant.training.confidence import ConfidenceSettings, train_confidence
from imagequant.training.examples import (
    RawExample,
    describe_training_rows,
    examples_from_records,
    group_folds,
    never_matched_labels,
    split_by_group,
)
from imagequant.training.reader import TrainingTable, iter_training_records

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
    return RuleScorer().predict(scoring_rows(examples))


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


@dataclass
class TrainResult:
    model_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    def line(self) -> str:
        if self.metrics.get("scorer") == "rules":
            r = self.metrics["rules"]
            return (f"wrote a rules model directory for {self.metrics['rows']} rows (rules F1 {r['f1']:.3f}, "
                    f"candidate recall {self.metrics['candidate_recall']:.3f}) to {self.model_dir}")
        v = self.metrics["validation"]
        r = self.metrics.get("rules_validation", {})
        threshold = f"threshold {v['threshold']:.3f}" if math.isfinite(v["threshold"]) else "no threshold"
        return (
            f"trained {self.metrics['params']['kind']} model on {self.metrics['train_rows']} rows "
            f"({self.metrics['epochs_run']} epochs, {self._kept_epoch()}): validation "
            f"F1 {v['f1']:.3f} (P {v['precision']:.3f} R {v['recall']:.3f}, {threshold}) "
            f"on {self.metrics['val_rows']} rows; rules F1 {r.get('f1', float('nan')):.3f}; "
            f"saved to {self.model_dir}"
        )

    def _kept_epoch(self) -> str:
        """Which epoch was kept, and why the untrained start was where a trained epoch scored higher."""
        best, history = self.metrics["best_epoch"], self.metrics.get("history", [])
        top = max((h for h in history if h["epoch"] > 0), key=lambda h: h["val_f1"], default=None)
        if best or not history or top is None or top["val_f1"] <= history[0]["val_f1"]:
            return f"best {best}"
        return (f"best 0, the rule-equivalent start: epoch {top['epoch']}'s validation F1 {top['val_f1']:.3f} is "
                f"not a gain shown over chance by train.min_gain and train.min_gain_z")


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
    model_config: ModelConfig,
    settings: TrainConfig,
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
                       disable=not (progress and stderr_is_terminal()), unit="batch")
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
                   labels: Sequence[str | None], settings: TrainConfig) -> bool:
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
    model_config: ModelConfig,
    settings: TrainConfig,
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




@dataclass
class OutOfFold:
    """Every row's prediction by the network of the fold that held its product group out, before any
    threshold."""

    examples: list[RawExample]
    model: list[Prediction]


def cross_validate(examples: Sequence[RawExample], model_config: ModelConfig, settings: TrainConfig, folds: int,
                   progress: bool = True) -> tuple[dict[str, Any], OutOfFold]:
    """Group k-fold: each fold is predicted by a model trained on the others (early-stopped and thresholded
    on a group split of those), and by the rule baseline (threshold chosen the same way). Returns the
    out-of-fold scores of both, overall and per entity, and the candidate-recall ceiling per entity; and
    the out-of-fold predictions themselves (what the confidence model learns from)."""
    parts = group_folds(examples, folds, settings.seed)
    oof = OutOfFold([], [])
    model_answers: list[str] = []
    rule_answers: list[str] = []
    per_fold = []
    for k, test in enumerate(parts):
        rest = [e for i, part in enumerate(parts) if i != k for e in part]
        train, val = split_by_group(rest, settings.val_fraction, settings.seed + k)
        fitted = fit_model(train, val, model_config, settings, progress=False)
        inner_val = val or train
        rule_threshold = threshold_report(rule_predictions(inner_val), [e.label for e in inner_val])["threshold"]
        model_preds, rule_preds = fitted.predict(test), rule_predictions(test)
        fold_model = apply_threshold(model_preds, fitted.threshold)
        fold_rules = apply_threshold(rule_preds, rule_threshold)
        labels = [e.label or "" for e in test]
        per_fold.append({"fold": k, "rows": len(test), "best_epoch": fitted.best_epoch,
                         "model_f1": score(fold_model, labels)["f1"], "rules_f1": score(fold_rules, labels)["f1"]})
        if progress:
            f = per_fold[-1]
            print(f"fold {k + 1}/{folds}: {f['rows']} rows, model F1 {f['model_f1']:.3f}, "
                  f"rules F1 {f['rules_f1']:.3f} (best epoch {f['best_epoch']})", file=sys.stderr, flush=True)
        oof.examples += test
        oof.model += model_preds
        model_answers += fold_model
        rule_answers += fold_rules
    rows = oof.examples
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
    cv = {"folds": folds, "rows": len(rows), "model": score(model_answers, labels),
          "rules": score(rule_answers, labels), "per_entity": table, "per_fold": per_fold}
    return cv, oof


def scoring_rows(examples: Sequence[RawExample]) -> list[ScoringRow]:
    return [ScoringRow(e.entity, e.tokens, e.image_size, e.candidates, e.cnn) for e in examples]


def learn_confidence(examples: Sequence[RawExample], predictions: Sequence[Prediction], scorer: str,
                     settings: TrainConfig) -> ConfidenceModel | None:
    """The confidence model of ``scorer``'s out-of-fold ``predictions`` of ``examples``; None, with a warning,
    when these rows cannot support one (too few answers right or wrong)."""
    try:
        return train_confidence(scoring_rows(examples), predictions, [e.label for e in examples],
                                [e.group_id for e in examples], scorer,
                                ConfidenceSettings(folds=settings.confidence_folds,
                                                   entity_rows=settings.confidence_entity_rows, seed=settings.seed,
                                                   repeats=settings.confidence_repeats))
    except UsageError as exc:
        _skip_confidence(str(exc))
        return None


def _skip_confidence(why: str) -> None:
    print(f"warning: no confidence model learned: {why}; this model directory's predictions get a null "
          "confidence", file=sys.stderr, flush=True)


def confidence_possible(examples: Sequence[RawExample], settings: TrainConfig) -> bool:
    """Whether the rows hold enough product groups for the confidence's group folds (warns when not)."""
    groups = len({e.group_id for e in examples})
    if groups >= settings.confidence_folds:
        return True
    _skip_confidence(f"its {settings.confidence_folds} group folds (train.confidence_folds) need labeled rows "
                     f"from as many product groups (group_id); these rows have {groups}")
    return False


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


CROSS_VALIDATION_FILES = ("cross_validation.json", "cross_validation.md")
# Everything train writes into a model directory, of either kind.
MODEL_DIRECTORY_FILES = frozenset({SCORER_FILE, CONFIDENCE_FILE, TRAINING_IMAGES_FILE, CNN_WEIGHTS_FILE,
                                   OCR_READERS_FILE, *CROSS_VALIDATION_FILES, *CHECKPOINT_FILES})


def check_model_target(model: str | Path) -> None:
    """A folder train may write a model directory into: a new or empty one, or a model directory. A folder of
    other files is a usage error, since training replaces and removes files of the model directory's names
    (``config.json``, ``metrics.json``) that may be someone else's there."""
    path = Path(model)
    if path.is_dir():
        refuse_foreign_folder("--model", model, foreign_entries(path, MODEL_DIRECTORY_FILES), "model directory",
                              "jobs/train.py")


def _clear_model_directory(out: Path) -> None:
    """Removes what an earlier training wrote that this one may not write again (a rules-only directory
    retrained as a network, a confidence model when confidence is off): a stale file would be served."""
    for name in MODEL_DIRECTORY_FILES:
        if (out / name).is_file():
            (out / name).unlink()


def train_rules_directory(examples: Sequence[RawExample], out_dir: str | Path, settings: TrainConfig,
                          extra_metrics: Mapping[str, Any], progress: bool = True) -> TrainResult:
    """A model directory whose answers the rules choose (no network), with the confidence model of those
    answers. The rules see no labels, so their predictions of every row are out-of-fold as they stand."""
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _clear_model_directory(out)
    preds = rule_predictions(examples)
    labels = [e.label for e in examples]
    report = threshold_report(preds, labels)
    metrics: dict[str, Any] = {
        "scorer": "rules",
        "rows": len(examples),
        "rules": summary_at(preds, examples, report["threshold"]),
        "candidate_recall": ceiling(examples),
        **dict(extra_metrics),
    }
    if settings.confidence and confidence_possible(examples, settings):
        if progress:
            print(f"confidence: fitting on the rules' answers to {len(examples)} rows", file=sys.stderr, flush=True)
        confidence = learn_confidence(examples, preds, "rules", settings)
        if confidence is not None:
            confidence.save(out)
            metrics["confidence"] = confidence.report
    write_rules_directory(out)
    write_training_images(out, (e.image_id for e in examples))
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=json_default))
    return TrainResult(out, metrics)


def train_from_table(table: TrainingTable, out_dir: str | Path, config: Config, progress: bool = True,
                     folds: int = 0) -> TrainResult:
    """Reads a written training table and trains (no Spark needed).

    With ``folds`` >= 2 a group k-fold cross-validation runs first; its table is printed and written to
    ``cross_validation.json`` / ``cross_validation.md`` in the model directory. Its out-of-fold predictions
    (``train.confidence_folds`` folds when no cross-validation is asked for) train the confidence model,
    written to ``confidence.json``. With ``train.scorer=rules`` no network is trained: the directory holds
    the rules and the confidence model of their answers.
    """
    settings = config.train
    loader = settings.loader
    started = time.perf_counter()
    examples, skipped = examples_from_records(iter_training_records(table.uri, loader))
    read_seconds = time.perf_counter() - started
    skipped.update(table.left_out)
    never_matched = never_matched_labels(examples)
    for line in describe_training_rows(len(examples), skipped, never_matched):
        print(f"warning: {line}", file=sys.stderr, flush=True)
    extra: dict[str, Any] = {
        "loader": loader,
        "read_seconds": round(read_seconds, 3),
        "training_table": table.uri,
        "table_rows": table.rows,
        "table_missing_images": table.missing_images,
        "table_failed_images": table.failed_images,
        "skipped": dict(sorted(skipped.items())),
        "labels_never_matched": never_matched,
        "cnn_weights": dict(table.cnn_weights),
        "ocr_readers": dict(table.ocr_readers),
    }
    if not examples:
        raise UsageError("no training rows: every row was unlabeled, failed or missing from the store")
    if settings.scorer == "rules":
        result = train_rules_directory(examples, out_dir, settings, extra, progress)
        write_ocr_readers(result.model_dir, table.ocr_readers)
        return result
    mixed = mixed_cnn_weights_warning(table.cnn_weights, "the training rows")
    if mixed:
        print(mixed, file=sys.stderr, flush=True)
    cv = oof = None
    wants_confidence = settings.confidence and confidence_possible(examples, settings)
    if folds or wants_confidence:
        if progress and not folds:  # the confidence's own out-of-fold predictions
            print(f"confidence: predicting {len(examples)} rows out of fold ({settings.confidence_folds} group "
                  "folds, a network trained for each)", file=sys.stderr, flush=True)
        cv, oof = cross_validate(examples, config.model, settings, folds or settings.confidence_folds, progress)
    if folds and cv is not None:
        print(render_cross_validation(cv), flush=True)
        extra["cross_validation"] = {k: cv[k] for k in ("folds", "rows", "model", "rules")}
    confidence = None
    if wants_confidence and oof is not None:
        confidence = learn_confidence(oof.examples, oof.model, "network", settings)
        if confidence is not None:
            extra["confidence"] = confidence.report
    train, val = split_by_group(examples, settings.val_fraction, settings.seed)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    _clear_model_directory(Path(out_dir))
    result = train_model(train, val, config.model, settings, out_dir, progress, extra)
    if confidence is not None:
        confidence.save(result.model_dir)
    # every labeled row's image: the network saw the training split, the confidence model all of them
    write_training_images(result.model_dir, (e.image_id for e in examples))
    write_cnn_weights(result.model_dir, table.cnn_weights)
    write_ocr_readers(result.model_dir, table.ocr_readers)
    if folds and cv is not None:
        cv_json, cv_markdown = CROSS_VALIDATION_FILES
        (result.model_dir / cv_json).write_text(json.dumps(cv, indent=2) + "\n")
        (result.model_dir / cv_markdown).write_text(render_cross_validation(cv))
    return result
