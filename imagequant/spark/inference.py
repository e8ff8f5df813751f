"""Batch inference: catalog rows joined with their images in the feature store, scored in a pandas UDF.

The model (or the rule baseline, ``--model rules``) runs inside ``mapInPandas``; each Python worker loads
a checkpoint once and keeps it in a module-level cache keyed by (directory, exported), so the cost of
loading is paid per worker, not per batch. Extraction is NOT run here: rows whose image is not in the
store come out with status ``image_missing`` (run ``jobs/extract_features.py`` on the catalog first).

Output, one row per catalog row (``predictions.parquet``):

* ``index``; ``prediction`` ("" when abstaining, without candidates, or when the row/image failed);
* ``value``, ``unit``, ``score``: the best candidate and its probability (model) or squashed rule score
  (rules), given even when the score is below the threshold so thresholds can be studied afterwards;
* ``confidence``: the calibrated probability that the best candidate is right (null without a confidence
  model in the model directory); a row below ``--min-confidence`` gets status ``low_confidence``;
* ``n_candidates``: candidates found for the row's entity;
* ``status``: ``ok``, ``low_confidence`` (held back below the minimum confidence), the row's problem (``bad_link``, ``unknown_entity``), the image's (``http_status``,
  ``decode_error``, ...), ``image_missing``, or ``predict_error``; ``error``: the message;
* ``evidence_text``, ``evidence_left/top/width/height``, ``evidence_angle``, ``reasons``: the mention the
  value was read from (its OCR text, box in original-image pixels, OCR pass rotation) and why it was chosen
  (:func:`imagequant.scoring.rules.reasons`); null without a candidate, kept when abstaining.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from imagequant.catalog import check_unique_index, read_catalog
from imagequant.core.schema import EVIDENCE_COLUMN_NAMES, IMAGE_EVIDENCE, PREDICTIONS
from imagequant.core.units import ENTITY_UNITS
from imagequant.errors import UsageError
from imagequant.pipeline.rows import evidence_fields, row_evidence, text_or_none
from imagequant.scoring.base import ScoringRow
from imagequant.scoring.confidence import LOW_CONFIDENCE
from imagequant.scoring.rules import reasons as rule_reasons
from imagequant.scoring.zoo import (
    RULES,
    is_rules,
    load_scorer,
    trained_cnn_weights,
    trained_ocr_readers,
    training_images,
)
from imagequant.spark.schema import IMAGE_EVIDENCE_SCHEMA, PREDICTIONS_SCHEMA, ROW_SCHEMA
from imagequant.spark.session import arrow_chunks, catalog_frame, default_parallelism, job_step, runtime_conf
from imagequant.spark.store import read_images, reporting_damage, rows_by_maker
from imagequant.submission import check_submission, read_submission, write_submission_rows
from imagequant.text.candidates import Candidate

CHUNK_ROWS = 256  # rows scored per model call inside a worker (Arrow batches are smaller: image rows are big)
OUTPUT_CHUNK_ROWS = 20_000  # predictions the driver converts and writes at a time
SORTED_PARTITION_ROWS = 100_000  # at most about this many rows per partition of the sorted predictions
PREDICTIONS_FILE = "predictions.parquet"
SUBMISSION_FILE = "submission.csv"
OUTPUT_COLUMNS = PREDICTIONS.names()


def _failed(row: dict[str, Any], status: str, error: str, reader: str | None = None) -> dict[str, Any]:
    return PREDICTIONS.empty_record(**row, value=None, unit=None, confidence=None, n_candidates=0, status=status,
                                    error=error, ocr_reader=reader, in_training=None, **evidence_fields(None))


def _reasons(candidate: Candidate | None, entity: str) -> list[str]:
    """What speaks for the chosen mention, in the rules' vocabulary (whichever scorer chose it)."""
    return rule_reasons(candidate, entity) if candidate is not None else []


def predict_frame(frame: pd.DataFrame, model_spec: str, exported: bool, threshold: float | None,
                  min_confidence: float | None = None) -> pd.DataFrame:
    """Scores one pandas batch of joined rows (the body of the UDF; usable without Spark).

    ``frame`` has the catalog columns ``index, image_link, image_id, entity_name, row_status, row_error`` and the
    image columns ``image_status, image_error, width, height, tok_*, cnn_features`` (null when the image is not
    in the store). ``threshold`` overrides the scorer's own (rules: 0, answer whenever possible);
    ``min_confidence`` leaves answers whose confidence is below it empty, with status ``low_confidence``.
    """
    scorer = load_scorer(model_spec, exported)
    out: list[dict[str, Any] | None] = []
    pending: list[tuple[int, dict[str, Any], ScoringRow, str | None]] = []
    for record in frame.to_dict("records"):
        entity = text_or_none(record.get("entity_name")) or ""
        row = {"index": int(record["index"]), "image_link": text_or_none(record.get("image_link")) or "",
               "entity_name": entity}
        row_status = text_or_none(record.get("row_status")) or "ok"
        image_status = text_or_none(record.get("image_status")) or ""
        reader = text_or_none(record.get("ocr_engine"))
        if row_status != "ok":
            out.append(_failed(row, row_status, text_or_none(record.get("row_error")) or ""))
            continue
        if entity not in ENTITY_UNITS:
            out.append(_failed(row, "unknown_entity", f"entity_name {entity!r} is not a known entity"))
            continue
        if not image_status:
            out.append(_failed(row, "image_missing", f"image {text_or_none(record.get('image_id'))} is not in "
                                                     "the feature store; run jobs/extract_features.py on this "
                                                     "catalog first"))
            continue
        if image_status != "ok":
            out.append(_failed(row, image_status, text_or_none(record.get("image_error")) or "", reader))
            continue
        if entity not in scorer.entities:
            out.append(_failed(row, ENTITY_NOT_TRAINED, untrained_entity_message(scorer.name, entity), reader))
            continue
        try:
            evidence = row_evidence(record, entity)
        except Exception as exc:  # one bad row must not fail the job; it is reported in its status
            out.append(_failed(row, "predict_error", f"{type(exc).__name__}: {exc}", reader))
            continue
        scoring = ScoringRow(entity, evidence.tokens, evidence.image_size, evidence.candidates,
                             record.get("cnn_features"))
        pending.append((len(out), row, scoring, reader))
        out.append(None)  # filled after the batched scorer call
    if pending:
        preds = scorer.predict([scoring for _, _, scoring, _ in pending], threshold=threshold)
        for (slot, row, scored, reader), pred in zip(pending, preds, strict=True):
            status, error, answer = "ok", "", pred.prediction
            held = min_confidence is not None and pred.confidence is not None and pred.confidence < min_confidence
            if answer and held:
                status, answer = LOW_CONFIDENCE, ""
                error = f"confidence {pred.confidence:.3f} is below the minimum confidence {min_confidence:.3f}"
            out[slot] = {**row, "prediction": answer, "value": pred.value, "unit": pred.unit,
                         "score": float(pred.score), "confidence": pred.confidence,
                         "n_candidates": pred.n_candidates, "status": status, "error": error, "ocr_reader": reader,
                         "in_training": None,  # run_predict knows the model's training images
                         **evidence_fields(pred.candidate, reasons=_reasons(pred.candidate, scored.entity))}
    return typed(pd.DataFrame([r for r in out if r is not None], columns=OUTPUT_COLUMNS))


def typed(result: pd.DataFrame) -> pd.DataFrame:
    """The predictions frame with the declared column types; the evidence box columns are nullable integers
    (a row without a mention has no box, and 0 would be a real pixel position; Spark's toPandas would
    otherwise hand them back as floats)."""
    boxes = {name: "Int32" for name in EVIDENCE_COLUMN_NAMES if PREDICTIONS[name].kind == "int"}
    return result.astype({"index": "int64", "value": "float64", "score": "float64", "confidence": "float64",
                          "n_candidates": "int32", "in_training": "boolean", **boxes})


def partition_scorer(model_spec: str, exported: bool, threshold: float | None, min_confidence: float | None = None,
                     torch_threads: int = 1) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The ``mapInPandas`` function: regroups Arrow batches into chunks of CHUNK_ROWS and scores them."""

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        if not is_rules(load_scorer(model_spec, exported)):  # the rules need no torch (a few hundred MB a worker)
            import torch

            # Spark already runs one task per core; more torch threads per task would oversubscribe them
            torch.set_num_threads(max(1, torch_threads))
        buffer: list[pd.DataFrame] = []
        size = 0
        for batch in batches:
            buffer.append(batch)
            size += len(batch)
            if size >= CHUNK_ROWS:
                yield predict_frame(pd.concat(buffer, ignore_index=True), model_spec, exported, threshold,
                                    min_confidence)
                buffer, size = [], 0
        if buffer:
            yield predict_frame(pd.concat(buffer, ignore_index=True), model_spec, exported, threshold, min_confidence)

    return score


# --- the job ---------------------------------------------------------------------------------------------


@dataclass
class PredictSummary:
    rows: int
    answered: int
    by_status: dict[str, int]
    model: str
    out_dir: Path
    seconds: float
    problems: list[str] = field(default_factory=list)
    with_confidence: int = 0  # rows given a confidence
    confidence_model: bool = True  # whether the scorer has a confidence model (the rule baseline has none)
    min_confidence: float | None = None
    readers: dict[str, int] = field(default_factory=dict)  # rows by the reader that read their image
    in_training: int | None = None  # rows of images the model directory was fitted on (None: not recorded)
    # rows whose image's CNN features were made with weights the network was not trained on, by weights
    untrained_cnn_weights: dict[str, int] = field(default_factory=dict)
    # scored rows whose image was read by a reader the model directory was not fitted on, by reader
    untrained_readers: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(self.by_status.items())) or "none"
        verdict = "submission check passed" if not self.problems else f"submission check FAILED ({len(self.problems)} problems)"
        if not self.confidence_model:
            has = "the rule baseline has" if self.model == RULES else "the model directory has"
            confidence = f"confidence: none ({has} no confidence model)"
        else:
            confidence = f"confidence on {self.with_confidence} rows"
            if self.min_confidence is not None:
                confidence += f", {self.by_status.get(LOW_CONFIDENCE, 0)} held back below {self.min_confidence:.3f}"
        readers = ", ".join(f"{k} {v}" for k, v in sorted(self.readers.items())) or "none"
        in_training = ("" if self.in_training is None
                       else f"images the model was fitted on: {self.in_training} rows; ")
        untrained = sum(self.untrained_cnn_weights.values())
        otherwise = f"rows with CNN features the network was not trained on: {untrained}; " if untrained else ""
        other_readers = sum(self.untrained_readers.values())
        if other_readers:
            otherwise += f"rows read by a reader the model was not fitted on: {other_readers}; "
        return (f"predicted {self.rows} rows with {self.model}: {self.answered} answered, "
                f"status: {statuses}; {confidence}; {in_training}{otherwise}read by: {readers}; {verdict}; "
                f"wrote {self.out_dir}/predictions.parquet and submission.csv in {self.seconds:.1f}s")


SCORED_STATUSES = ("ok", LOW_CONFIDENCE)  # the rows the scorer scored (answered or not)
ENTITY_NOT_TRAINED = "entity_not_trained"  # a model directory trained before the row's entity existed


def untrained_entity_message(model: str, entity: str) -> str:
    return (f"model {model} was not trained with entity {entity!r}: retrain it (jobs/train.py) on rows that "
            "include it, or predict with --model rules")


def resolve_min_confidence(model_spec: str, exported: bool, min_confidence: float | None,
                           target_precision: float | None) -> tuple[float | None, str]:
    """Loads the scorer (a UsageError when the model directory is not a loadable model) and turns
    ``--min-confidence`` / ``--target-precision`` into the minimum confidence, with a line saying what the
    model's out-of-fold rows expect of it. Either needs a confidence model. A broken record of a network's CNN
    weights or of the training rows' readers is refused here too, before any Spark work."""
    scorer = load_scorer(model_spec, exported)
    if not is_rules(scorer):
        trained_cnn_weights(model_spec)
    trained_ocr_readers(model_spec)
    if min_confidence is None and target_precision is None:
        return None, ""
    option = "--min-confidence" if min_confidence is not None else "--target-precision"
    model = scorer.confidence
    if model is None:
        what = "the rule baseline has" if model_spec == RULES else f"model directory {model_spec} has"
        raise UsageError(f"{option} needs a calibrated confidence, and {what} none: train a model directory "
                         "(jobs/train.py, or jobs/train.py --scorer rules for the rules) and predict with it")
    if target_precision is None:
        assert min_confidence is not None
        kept = [p for p in model.operating if p["threshold"] >= min_confidence]  # thresholds decrease
        if not kept:
            return min_confidence, f"min confidence {min_confidence:.3f}: out of fold no row reached it"
        return min_confidence, (f"min confidence {min_confidence:.3f}: out of fold it answered "
                                f"{kept[-1]['coverage']:.1%} of rows at precision {kept[-1]['precision']:.1%}")
    reached = model.threshold_for(target_precision)
    if reached is None:
        top = max((p["precision"] for p in model.operating), default=float("nan"))
        raise UsageError(f"--target-precision {target_precision:g}: no minimum confidence reaches it on the "
                         f"model's out-of-fold rows (the highest precision there is {top:.3f}); ask for less")
    return reached["threshold"], (
        f"target precision {target_precision:.1%}: min confidence {reached['threshold']:.3f}; out of fold it "
        f"answered {reached['coverage']:.1%} of rows ({reached['answered']:.0f} of {model.report.get('rows', '?')}) "
        f"at precision {reached['precision']:.1%}")


def run_predict(
    spark: SparkSession,
    catalog_path: str | Path | pd.DataFrame,
    store: str | Path,
    model_spec: str,
    out_dir: str | Path,
    exported: bool = True,
    threshold: float | None = None,
    min_confidence: float | None = None,
) -> PredictSummary:
    """Predicts every row of the catalog (a path, or rows already read: ``read_catalog``'s frame or an extract
    run's rows from the store, ``imagequant.spark.store.read_rows``); writes predictions.parquet and
    submission.csv and checks the submission (problems listed in the summary). An index that appears twice
    is a CatalogError before any work, labeled or not: the submission names each row by its index."""
    started = time.perf_counter()
    if isinstance(catalog_path, pd.DataFrame):
        catalog = catalog_path
        check_unique_index(catalog["index"].tolist(), str(catalog.attrs.get("path", "catalog")),
                           lambda i: f"row {i + 1}")
    else:
        catalog = read_catalog(catalog_path, unique_index=True)  # a submission names each row by its index
    scorer = load_scorer(model_spec, exported)
    trained_weights = None if is_rules(scorer) else trained_cnn_weights(model_spec)  # a broken record: refused now
    trained_readers = trained_ocr_readers(model_spec)
    known = set(scorer.entities)
    for entity in sorted(set(catalog["entity_name"].dropna().astype(str)) & set(ENTITY_UNITS) - known):
        print(f"warning: {untrained_entity_message(str(model_spec), entity)}; its rows get status "
              f"{ENTITY_NOT_TRAINED}", file=sys.stderr, flush=True)
    row_fields = [ROW_SCHEMA[name] for name in ("index", "image_link", "image_id", "entity_name", "row_status",
                                                  "row_error")]
    parallelism = default_parallelism(spark)
    rows = catalog_frame(spark, catalog[[f.name for f in row_fields]], T.StructType(row_fields))
    stored = read_images(spark, store)
    images = spark.createDataFrame([], IMAGE_EVIDENCE_SCHEMA) if stored is None else stored
    images = images.select(*IMAGE_EVIDENCE.names()).withColumnRenamed("status", "image_status") \
        .withColumnRenamed("error", "image_error")
    joined = rows.join(images, on="image_id", how="left").repartition(parallelism * 2)
    scored = joined.mapInPandas(partition_scorer(str(model_spec), exported, threshold, min_confidence),
                                PREDICTIONS_SCHEMA)
    # The exchange before the sort lets the sort's sampling job read the scored rows back from shuffle files;
    # sorting the scorer's output directly would score every row twice.
    ordered = scored.repartition(parallelism).orderBy("index")
    trained = training_images(model_spec)
    image_of = None if trained is None else dict(zip(catalog["index"], catalog["image_id"], strict=True))
    out = Path(out_dir)
    tally = PredictionTally()
    # The driver holds one partition of the sorted predictions at a time: enough of them that none is large.
    partitions = max(int(spark.conf.get("spark.sql.shuffle.partitions") or 1),
                     -(-len(catalog) // SORTED_PARTITION_ROWS))
    with runtime_conf(spark, {"spark.sql.shuffle.partitions": str(partitions)}), reporting_damage(store), \
            PredictionFiles(out) as files, job_step(spark, "scoring the rows"):
        for chunk in arrow_chunks(ordered, OUTPUT_CHUNK_ROWS):
            result = typed(chunk.to_pandas())
            if image_of is not None:
                result["in_training"] = result["index"].map(image_of).isin(trained).astype("boolean")
            files.write(result)
            tally.add(result)
    untrained: dict[str, int] = {}
    if stored is not None and trained_weights:
        with reporting_damage(store):
            untrained = untrained_cnn_weights(rows, stored, model_spec, trained_weights)
    other_readers = untrained_readers(tally.scored_readers, model_spec, trained_readers)
    problems = check_submission(read_submission(out / SUBMISSION_FILE), catalog)
    return PredictSummary(
        rows=tally.rows,
        answered=tally.answered,
        by_status=dict(tally.by_status),
        model=(RULES if model_spec == RULES else f"{model_spec} (rules)" if is_rules(scorer)
               else f"{model_spec} ({'exported' if exported else 'eager'})"),
        out_dir=out,
        seconds=time.perf_counter() - started,
        problems=problems,
        with_confidence=tally.with_confidence,
        confidence_model=scorer.confidence is not None,
        min_confidence=min_confidence,
        readers=dict(tally.readers),
        in_training=None if trained is None else tally.in_training,
        untrained_cnn_weights=untrained,
        untrained_readers=other_readers,
    )


@dataclass
class PredictionTally:
    """The summary's counts, added up a chunk of predictions at a time."""

    rows: int = 0
    answered: int = 0
    with_confidence: int = 0
    in_training: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    readers: Counter[str] = field(default_factory=Counter)  # rows by the reader that read their image
    scored_readers: Counter[str] = field(default_factory=Counter)  # the same, of the rows the scorer scored

    def add(self, result: pd.DataFrame) -> None:
        self.rows += len(result)
        self.answered += int((result["prediction"] != "").sum())
        self.with_confidence += int(result["confidence"].notna().sum())
        self.in_training += int(result["in_training"].fillna(False).sum())
        self.by_status.update(str(k) for k in result["status"])
        self.readers.update(str(k) for k in result["ocr_reader"].dropna())
        scored = result["status"].isin(SCORED_STATUSES)
        self.scored_readers.update(str(k) for k in result.loc[scored, "ocr_reader"].dropna())


class PredictionFiles:
    """predictions.parquet and submission.csv, written a chunk of index-ordered rows at a time under partial
    names and renamed when every row is in: a predict that fails midway leaves the earlier files (or none), never
    a part of new ones."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        # A typed frame's pandas metadata: the nullable integer and boolean columns read back as they were.
        self.schema = pa.Table.from_pandas(typed(pd.DataFrame(columns=OUTPUT_COLUMNS)),
                                           schema=PREDICTIONS.arrow_schema(), preserve_index=False).schema
        self._parquet = pq.ParquetWriter(self._partial(PREDICTIONS_FILE), self.schema)
        self._csv = self._partial(SUBMISSION_FILE).open("w", encoding="utf-8", newline="")
        self._rows = 0

    def _partial(self, name: str) -> Path:
        return self.out / f".{name}.partial"

    def write(self, result: pd.DataFrame) -> None:
        self._parquet.write_table(pa.Table.from_pandas(result[OUTPUT_COLUMNS], schema=self.schema,
                                                       preserve_index=False))
        write_submission_rows(result, self._csv, header=self._rows == 0)
        self._rows += len(result)

    def __enter__(self) -> PredictionFiles:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None and self._rows == 0:
            write_submission_rows(pd.DataFrame(columns=OUTPUT_COLUMNS), self._csv, header=True)
        self._parquet.close()
        self._csv.close()
        for name in (PREDICTIONS_FILE, SUBMISSION_FILE):
            if exc_type is None:
                self._partial(name).replace(self.out / name)
            else:
                self._partial(name).unlink(missing_ok=True)


def untrained_cnn_weights(rows: DataFrame, stored: DataFrame, model_spec: str | Path,
                          trained: dict[str, int]) -> dict[str, int]:
    """The rows whose image's CNN features were made with other weights than ``trained`` (the network
    directory's record), by those weights; warned on stderr."""
    return _warn_outside(
        rows_by_maker(rows, stored, "cnn_weights")["cnn_weights"], trained,
        lambda n, kinds: f"warning: {n} rows have CNN features made with weights the network {model_spec} was not "
                         f"trained on ({kinds}; it was trained on {', '.join(sorted(trained))}); their answers use "
                         "features it cannot read. Run extract_features with the network's cnn.weights and "
                         "--reprocess-made-otherwise, or train on these features")


def untrained_readers(scored: Mapping[str, int], model_spec: str | Path,
                      trained: dict[str, int] | None) -> dict[str, int]:
    """The scored rows whose image was read by a reader the model directory was not fitted on (``trained``: its
    record; None, not recorded), by reader; warned on stderr. Its confidence learned what a right answer looks
    like in its training rows' readings, and a network their tokens."""
    if not trained:
        return {}
    return _warn_outside(
        scored, trained,
        lambda n, kinds: f"warning: {n} rows were read by a reader the model directory {model_spec} was not fitted "
                         f"on ({kinds}; its training rows were read by {', '.join(sorted(trained))}); its "
                         "confidence was calibrated on the other readings. Train it again on rows read this way, "
                         "or run extract_features with its reader's settings and --reprocess-made-otherwise")


def _warn_outside(counts: Mapping[str, int], trained: Mapping[str, int],
                  warning: Callable[[int, str], str]) -> dict[str, int]:
    """The ``counts`` of kinds ``trained`` does not hold; when there are any, ``warning(rows, "kind: rows, …")``
    goes to stderr."""
    other = {k: v for k, v in counts.items() if k not in trained}
    if other:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(other.items()))
        print(warning(sum(other.values()), kinds), file=sys.stderr, flush=True)
    return other
