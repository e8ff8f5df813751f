"""Evaluation of a predictions file against a labeled catalog: the challenge F1, what went wrong, a report.

Scoring is :mod:`imagequant.core.metrics` (the challenge's definition); this module lines predictions up with
the truth, classifies every row's error kind, measures the candidate-recall ceiling from the feature
store's OCR tokens, measures precision against coverage over score thresholds (predictions Parquet), and
writes ``metrics.json`` plus an HTML report whose thumbnails mark the chosen and the true mention.

Error kinds, decided in this order for each row:

- ``unlabeled``: the truth is empty (a true negative when the prediction is empty too);
- ``bad_truth``: the truth is a range, unparseable, negative or has a unit the entity does not allow: never matched;
- ``correct``: the prediction equals the truth;
- ``missing``: the row's index is absent from the predictions (counted as an empty prediction);
- ``image_failed``: the image could not be fetched, decoded or read;
- ``wrong_unit``: the right number, or the right quantity, in another unit;
- ``no_candidate``: the truth is not among the image's candidates (the model could not get it);
- ``abstained``: an empty prediction although the truth was among the candidates (or they are unknown);
- ``wrong_candidate``: another of the image's candidates was chosen;
- ``wrong_value``: a wrong answer when candidates are unknown (no feature store given).
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from imagequant import report
from imagequant.core import locations, metrics
from imagequant.core.schema import (
    EVIDENCE_COLUMN_NAMES,
    IMAGES,
    MANIFEST_FILE,
    READING_COLUMN_NAMES,
    canonical_images,
    check_manifest,
)
from imagequant.core.units import (
    ENTITIES,
    format_value,
    is_valid_prediction,
    label_can_match,
    parse_label,
    to_base,
)
from imagequant.errors import UsageError
from imagequant.pipeline.rows import row_evidence
from imagequant.scoring.confidence import LOW_CONFIDENCE

ERROR_KINDS: dict[str, str] = {
    "correct": "prediction equals the truth",
    "wrong_unit": "right number or quantity, another unit",
    "wrong_candidate": "truth was among the candidates, another was chosen",
    "wrong_value": "wrong answer (candidates unknown: no feature store)",
    "no_candidate": "truth is not among the image's candidates",
    "abstained": "empty answer although the truth was reachable (or candidates unknown)",
    "missing": "index absent from the predictions (scored as empty)",
    "image_failed": "image could not be fetched, decoded or read",
    "bad_truth": "range, unparseable, negative or disallowed-unit truth (never matched)",
    "unlabeled": "empty truth",
}
KIND_COLORS: dict[str, str] = {
    "correct": "#55A868", "wrong_unit": "#DD8452", "wrong_candidate": "#C44E52", "wrong_value": "#C44E52",
    "no_candidate": "#8172B3", "abstained": "#CCB974", "missing": "#937860", "image_failed": "#8C8C8C",
    "bad_truth": "#64B5CD", "unlabeled": "#DA8BC3",
}
STORE_COLUMNS = ("image_id", "image_link", "status", "error", "width", "height", "ocr_text", "processed_at",
                 *READING_COLUMN_NAMES)
EMPTY = "(empty)"


# --- inputs ----------------------------------------------------------------------------------------------


def read_predictions(path: str | Path) -> pd.DataFrame:
    """A submission CSV (index,prediction) or predictions Parquet (file or folder) as a DataFrame.

    ``prediction`` is a string ("" when empty); ``index`` is int64 and unique. Other columns (value, unit,
    score, n_candidates, status, error) are kept when present.
    """
    from imagequant.catalog import check_unique_index, parse_index_column, read_table_strict

    path = Path(path)
    if not path.exists():
        raise UsageError(f"predictions {path} do not exist")
    is_parquet = path.is_dir() or path.name.lower().endswith((".parquet", ".pq"))
    # Strict like the catalogs: a row wider than the header is an error naming its line, not a shifted table.
    frame, where = read_table_strict(path, "parquet" if is_parquet else "csv", f"predictions {path}",
                                     parquet_as_text=False)
    missing = [c for c in ("index", "prediction") if c not in frame.columns]
    if missing:
        raise UsageError(f"predictions {path} lack column(s) {', '.join(missing)}; found: {', '.join(frame.columns)}")
    frame["index"] = parse_index_column(list(frame["index"]), f"predictions {path}", where)
    duplicated = frame["index"][frame["index"].duplicated()]
    if len(duplicated):
        try:
            check_unique_index(frame["index"].tolist(), f"predictions {path}", where)
        except UsageError as exc:
            raise UsageError(f"{exc}; {duplicated.nunique()} duplicated indexes, the challenge would not score "
                             "this file") from None
    frame["prediction"] = [_clean(p) for p in frame["prediction"]]
    return frame


def _clean(text: object) -> str:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    return str(text).strip()


@dataclass
class Alignment:
    """Predictions lined up with the truth: one row per truth row, and what did not line up."""

    rows: pd.DataFrame
    missing: list[int] = field(default_factory=list)  # truth indexes without a prediction
    extra: list[int] = field(default_factory=list)  # prediction indexes not in the truth (ignored)
    # indexes whose prediction names another image_link or entity_name than the truth row (predictions.parquet
    # carries both; a submission CSV does not, and is never mismatched)
    mismatched: list[int] = field(default_factory=list)


def align(truth: pd.DataFrame, predictions: pd.DataFrame) -> Alignment:
    """Joins predictions to the truth catalog on ``index``; a missing index is an empty prediction."""
    keep = [c for c in ("index", "image_link", "image_id", "group_id", "entity_name", "entity_value") if c in truth]
    rows = truth[keep].rename(columns={"entity_value": "truth"}).copy()
    rows["truth"] = [_clean(t) for t in rows["truth"]]
    extras = [c for c in ("value", "unit", "score", "confidence", "n_candidates", "status", "error", "in_training",
                          *EVIDENCE_COLUMN_NAMES) if c in predictions]
    named = {c: f"predicted_{c}" for c in ("image_link", "entity_name") if c in predictions and c in rows}
    chosen = predictions[["index", "prediction", *extras, *named]].rename(columns=named)
    rows = rows.merge(chosen, on="index", how="left", indicator=True)
    rows["missing"] = rows.pop("_merge") == "left_only"
    rows["prediction"] = [_clean(p) for p in rows["prediction"]]
    mismatched = pd.Series(False, index=rows.index)
    for column, theirs in named.items():
        mismatched |= ~rows["missing"] & (rows[column].map(_clean) != rows.pop(theirs).map(_clean))
    extra = sorted(set(predictions["index"]) - set(truth["index"]))
    return Alignment(rows, missing=[int(i) for i in rows.loc[rows["missing"], "index"]], extra=[int(i) for i in extra],
                     mismatched=[int(i) for i in rows.loc[mismatched, "index"]])


# --- feature store: OCR text and candidates ---------------------------------------------------------------


def read_store_images(store: str | Path, image_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """The store's canonical images view through pyarrow (no Spark), at any store location: one row per
    image_id (:func:`imagequant.core.schema.canonical_images`). Only the columns the evaluation needs are
    read (not the CNN features)."""
    manifest = locations.read_text(locations.join(store, MANIFEST_FILE))
    check_manifest(json.loads(manifest) if manifest else None, str(store))
    filesystem, root = locations.arrow_filesystem(locations.join(store, IMAGES.name))
    try:
        # The declared schema, so files written before a column existed read it as null.
        schema = IMAGES.arrow_schema().append(pa.field(str(IMAGES.partition), pa.string()))
        dataset = ds.dataset(root, filesystem=filesystem, format="parquet", partitioning="hive", schema=schema)
        columns = list(STORE_COLUMNS)
        expression = ds.field("image_id").isin(list(image_ids)) if image_ids is not None else None
        frame = dataset.to_table(columns=columns, filter=expression).to_pandas()
    except FileNotFoundError as exc:
        raise UsageError(f"feature store {store} has no images table ({exc})") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise UsageError(f"feature store {store}: the images table cannot be read ({exc}); when a file is "
                         "damaged, run jobs/extract_features.py on this store: it moves a damaged images file "
                         "to _quarantine/ and processes its images again") from None
    return canonical_images(frame) if len(frame) else frame


def attach_candidates(rows: pd.DataFrame, images: pd.DataFrame, shown: int = 10) -> pd.DataFrame:
    """Adds, per row, the image's store status, OCR text and candidates (as "value unit" strings).

    Candidates come from :func:`imagequant.pipeline.rows.row_evidence` on the stored tokens, as training
    and inference build them. ``candidate_hit`` says whether the truth is among them (metrics.candidate_hits).
    """
    by_id = {r["image_id"]: r for r in images.to_dict("records")} if len(images) else {}
    statuses, texts, candidate_lists, counts = [], [], [], []
    truth_boxes: list[Box | None] = []
    prediction_boxes: list[Box | None] = []
    for image, entity, truth, prediction in zip(rows["image_id"], rows["entity_name"], rows["truth"],
                                                rows["prediction"], strict=True):
        record = by_id.get(image)
        if record is None:
            statuses.append("not_in_store")
            texts.append("")
            candidate_lists.append([])
            counts.append(0)
            truth_boxes.append(None)
            prediction_boxes.append(None)
            continue
        statuses.append(str(record["status"]))
        texts.append(str(record.get("ocr_text") or ""))
        found = row_evidence(record, entity).candidates if entity in ENTITIES and record["status"] == "ok" else []
        names = [f"{format_value(c.value)} {c.unit}" for c in found]
        candidate_lists.append(names)
        counts.append(len(found))
        truth_boxes.append(_box_of(found, names, truth))
        prediction_boxes.append(_box_of(found, names, prediction))
    out = rows.copy()
    out["truth_box"] = truth_boxes
    out["prediction_box"] = prediction_boxes  # where a submission CSV's answer was printed (no evidence columns)
    out["image_status"] = statuses
    out["ocr_text"] = texts
    out["candidates"] = candidate_lists
    out["candidate_count"] = counts
    out["candidate_hit"] = metrics.candidate_hits(candidate_lists, list(out["truth"]))
    out["candidates_shown"] = [c[:shown] for c in candidate_lists]
    return out


Box = tuple[int, int, int, int]  # left, top, width, height in original-image pixels


def _box_of(found: Sequence[Any], names: Sequence[str], label: str) -> Box | None:
    """The box of the first candidate equal to ``label`` (as the challenge compares), or None."""
    if not label:
        return None
    for c, hit in zip(found, metrics.candidate_hits([[n] for n in names], [label] * len(names)), strict=True):
        if hit:
            return int(c.left), int(c.top), int(c.width), int(c.height)
    return None


def chosen_box(row: Mapping[str, Any]) -> Box | None:
    """The box of the mention the row's value was read from: predict's evidence columns, else (a
    submission CSV with a store) the first candidate equal to the prediction."""
    values = [row.get(f"evidence_{k}") for k in ("left", "top", "width", "height")]
    if all(v is not None and not pd.isna(v) for v in values):
        return int(values[0]), int(values[1]), int(values[2]), int(values[3])  # type: ignore[arg-type]
    box = row.get("prediction_box")
    return box if isinstance(box, tuple) else None


# --- per-row classification -----------------------------------------------------------------------------


def _same_number_or_quantity(prediction: str, truth: str) -> bool:
    """Whether an unequal prediction has the truth's number, or its quantity in another unit (within 1%)."""
    p, t = parse_label(prediction), parse_label(truth)
    if p.kind != "value" or t.kind != "value" or p.unit == t.unit:
        return False
    assert p.value is not None and t.value is not None and p.unit and t.unit
    if math.isclose(p.value, t.value, rel_tol=1e-9):
        return True
    try:
        (pb, pdim), (tb, tdim) = to_base(p.value, p.unit), to_base(t.value, t.unit)
    except ValueError:
        return False
    return pdim == tdim and math.isclose(pb, tb, rel_tol=0.01)


def _image_failed(status: object) -> bool:
    text = _clean(status)
    return bool(text) and text not in ("ok", LOW_CONFIDENCE)


def error_kind(row: Mapping[str, Any]) -> str:
    """The error kind of one aligned row (see the module docstring for the order of the checks)."""
    truth, prediction = row["truth"], row["prediction"]
    if not truth:
        return "unlabeled"
    if not label_can_match(truth, row.get("entity_name")):
        return "bad_truth"
    if metrics.row_outcome(prediction, truth) == "tp":
        return "correct"
    if row.get("missing"):
        return "missing"
    status = row.get("image_status") if "image_status" in row else row.get("status")
    if _image_failed(status):
        return "image_failed"
    if prediction and _same_number_or_quantity(prediction, truth):
        return "wrong_unit"
    hit = row.get("candidate_hit")
    known = hit is not None and not (isinstance(hit, float) and math.isnan(hit))
    if known and not hit:
        return "no_candidate"
    if not prediction:
        return "abstained"
    return "wrong_candidate" if known else "wrong_value"


def classify(rows: pd.DataFrame) -> pd.DataFrame:
    """Adds ``outcome`` (tp/fp/fn/tn), ``kind`` (error kind) and ``valid`` (prediction format) per row."""
    out = rows.copy()
    out["outcome"] = [metrics.row_outcome(p, t) for p, t in zip(out["prediction"], out["truth"], strict=True)]
    out["kind"] = [error_kind(r) for r in out.to_dict("records")]
    out["valid"] = [is_valid_prediction(p, e) for p, e in zip(out["prediction"], out["entity_name"], strict=True)]
    return out


# --- figures of merit -----------------------------------------------------------------------------------


def _unit_of(text: str) -> str | None:
    parsed = parse_label(text)
    return parsed.unit if parsed.kind == "value" else None


def unit_confusion(rows: pd.DataFrame) -> dict[str, Any]:
    """Counts of (true unit, predicted unit) over rows with a plain truth; an empty prediction is "(empty)"."""
    pairs: Counter[tuple[str, str]] = Counter()
    for truth, prediction, entity in zip(rows["truth"], rows["prediction"], rows["entity_name"], strict=True):
        parsed = parse_label(truth, entity)
        if parsed.kind != "value" or parsed.unit is None:
            continue
        predicted = _unit_of(prediction) if prediction else EMPTY
        pairs[(parsed.unit, predicted or "(invalid)")] += 1
    true_units = sorted({t for t, _ in pairs}, key=lambda u: -sum(n for (t, _), n in pairs.items() if t == u))
    # columns in the rows' order first, so a correct unit lies on the diagonal
    others = sorted({p for _, p in pairs if p not in (EMPTY, "(invalid)") and p not in true_units},
                    key=lambda u: -sum(n for (_, p), n in pairs.items() if p == u))
    predicted_units = true_units + others
    predicted_units += [u for u in ("(invalid)", EMPTY) if any(p == u for _, p in pairs)]
    counts = [[pairs.get((t, p), 0) for p in predicted_units] for t in true_units]
    return {"true_units": true_units, "predicted_units": predicted_units, "counts": counts}


def threshold_analysis(rows: pd.DataFrame) -> dict[str, float] | None:
    """The abstain threshold that would maximise F1 given the file's scores (predictions Parquet only).

    Uses the best candidate's value/unit even where the row abstained, as the predictor writes them.
    """
    if not {"score", "value", "unit"} <= set(rows.columns):
        return None
    answers, scores = _best_answers(rows)
    has_answer = [bool(a) for a in answers]
    correct = [bool(a) and metrics.row_outcome(a, t) == "tp" for a, t in zip(answers, rows["truth"], strict=True)]
    return metrics.best_threshold(scores, correct, has_answer, [bool(t) for t in rows["truth"]])


COVERAGE_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
TARGET_PRECISIONS = (0.95, 0.90)  # the operating points the score section names in a sentence


def _best_answers(rows: pd.DataFrame) -> tuple[list[str], list[float]]:
    """Each row's best answer (its value and unit even where it abstained, as predict writes them) and
    score."""
    answers = []
    for value, unit, prediction in zip(rows["value"], rows["unit"], rows["prediction"], strict=True):
        has_value = value is not None and not (isinstance(value, float) and math.isnan(value)) and _clean(unit)
        answers.append(f"{float(value)!r} {unit}" if has_value else prediction)
    return answers, pd.to_numeric(rows["score"], errors="coerce").fillna(0.0).tolist()


def _ranked_answers(rows: pd.DataFrame, by: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Over the rows with a truth: the ``by`` value (``score`` or ``confidence``) and whether it is right, of
    each row with an answer and a value of ``by``, and how many rows have a truth. A range truth counts as
    never right, as the challenge scores it; an abstaining row's best candidate counts as its answer."""
    labeled = rows[[bool(t) for t in rows["truth"]]]
    answers, _ = _best_answers(labeled)
    ranks = pd.to_numeric(labeled[by], errors="coerce")
    has = np.array([bool(a) for a in answers], dtype=bool) & ranks.notna().to_numpy()
    right = np.array([bool(a) and metrics.row_outcome(a, t) == "tp"
                      for a, t in zip(answers, labeled["truth"], strict=True)], dtype=bool)
    return ranks.to_numpy(dtype=float)[has], right[has], len(labeled)


def coverage_curve(rows: pd.DataFrame, by: str = "score") -> metrics.CoverageCurve:
    """The precision-coverage curve over rows with a truth, ranked by ``by`` (``score`` or ``confidence``)."""
    return metrics.coverage_curve(*_ranked_answers(rows, by))


def coverage_analysis(rows: pd.DataFrame) -> dict[str, Any] | None:
    """Coverage and precision over score thresholds, overall and per entity (predictions Parquet only: a
    submission CSV has no score). ``table`` holds the :data:`COVERAGE_GRID` points, ``at_precision`` the
    highest coverage reaching each of :data:`TARGET_PRECISIONS`."""
    if not {"score", "value", "unit"} <= set(rows.columns):
        return None

    def describe(part: pd.DataFrame) -> dict[str, Any]:
        curve = coverage_curve(part)
        return {"rows": curve.rows, "table": [curve.at(t) for t in COVERAGE_GRID],
                "at_precision": {f"{p:.2f}": curve.reaching(p) for p in TARGET_PRECISIONS}}

    result = describe(rows)
    result["per_entity"] = {str(e): describe(g) for e, g in rows.groupby("entity_name")}
    return result


def has_confidence(rows: pd.DataFrame) -> bool:
    return "confidence" in rows and bool(pd.to_numeric(rows["confidence"], errors="coerce").notna().any())


def confidence_analysis(rows: pd.DataFrame) -> dict[str, Any] | None:
    """How well the predictions' calibrated confidence matches what is right, overall and per entity
    (:func:`imagequant.core.metrics.confidence_summary`), over the rows with a truth; None when the
    predictions carry no confidence. An abstaining row's best candidate counts as its answer."""
    if not has_confidence(rows):
        return None

    def describe(part: pd.DataFrame) -> dict[str, Any]:
        return metrics.confidence_summary(*_ranked_answers(part, "confidence"))

    result = describe(rows)
    result["per_entity"] = {str(e): describe(g) for e, g in rows.groupby("entity_name")}
    return result


def coverage_sentence(point: Mapping[str, Any] | None, target: float) -> str:
    """'for 95% precision: answering 62% of rows, 96% are right (min score 0.73)', from a coverage_analysis
    point."""
    if point is None:
        return f"for {target:.0%} precision: no minimum score gets there"
    return (f"for {target:.0%} precision: answering {point['coverage']:.0%} of rows, {point['precision']:.0%} are "
            f"right (min score {point['threshold']:.4g})")


def summarize(alignment: Alignment, rows: pd.DataFrame, with_candidates: bool) -> dict[str, Any]:
    """metrics.json: overall and per-entity scores, error kinds, candidate recall, unit confusion."""
    predictions, truths, entities = list(rows["prediction"]), list(rows["truth"]), list(rows["entity_name"])
    overall = metrics.score(predictions, truths)
    table = metrics.per_entity(entities, predictions, truths) if len(rows) else pd.DataFrame()
    # to_dict keeps each column's type (iterrows would turn the counts into floats)
    per_entity = {str(e): {k: _plain(v) for k, v in r.items()} for e, r in table.to_dict("index").items() if e != "all"}
    kinds = Counter(rows["kind"])
    kinds_per_entity = {
        str(e): {k: int(n) for k, n in Counter(g["kind"]).most_common()} for e, g in rows.groupby("entity_name")
    }
    result: dict[str, Any] = {
        "rows": len(rows),
        **{k: _plain(v) for k, v in overall.items()},
        "missing_predictions": len(alignment.missing),
        "missing_indexes": alignment.missing[:50],
        "extra_predictions": len(alignment.extra),
        "extra_indexes": alignment.extra[:50],
        "mismatched_predictions": len(alignment.mismatched),
        "mismatched_indexes": alignment.mismatched[:50],
        "invalid_predictions": int((~rows["valid"]).sum()),
        "invalid_indexes": [int(i) for i in rows.loc[~rows["valid"], "index"][:50]],
        "per_entity": per_entity,
        "error_kinds": {k: int(kinds[k]) for k in ERROR_KINDS if kinds[k]},
        "error_kinds_per_entity": kinds_per_entity,
        "candidate_recall": None,
        "candidate_recall_per_entity": None,
        "unit_confusion": unit_confusion(rows),
        "best_threshold": threshold_analysis(rows),
        "coverage": coverage_analysis(rows),
        "confidence": confidence_analysis(rows),
        **in_training_analysis(rows),
    }
    if with_candidates:
        result["candidate_recall"] = metrics.candidate_recall(list(rows["candidates"]), truths)
        result["candidate_recall_per_entity"] = {
            str(e): metrics.candidate_recall(list(g["candidates"]), list(g["truth"]))
            for e, g in rows.groupby("entity_name")
        }
        result["image_status"] = {str(k): int(n) for k, n in Counter(rows["image_status"]).most_common()}
    return result


def in_training_analysis(rows: pd.DataFrame) -> dict[str, Any]:
    """How many rows are of images the predicting model directory was fitted on (``in_training_rows``; None when
    the predictions do not say), and the score of the others alone (``out_of_training``; None when there are
    none of either)."""
    if "in_training" not in rows or not rows["in_training"].notna().any():
        return {"in_training_rows": None, "out_of_training": None}
    seen = rows["in_training"].astype("boolean").fillna(False).astype(bool)
    unseen = rows[~seen]
    out_of_training = None
    if seen.any() and len(unseen):
        scored = metrics.score(list(unseen["prediction"]), list(unseen["truth"]))
        out_of_training = {"rows": len(unseen), **{k: _plain(v) for k, v in scored.items()}}
    return {"in_training_rows": int(seen.sum()), "out_of_training": out_of_training}


def alignment_warnings(result: Mapping[str, Any]) -> list[str]:
    """What to say about predictions that do not line up with the truth: rows without one, predictions of
    indexes the truth lacks, predictions naming another row's image or entity, and answers no row's entity
    allows (a sign of another catalog or row order)."""
    def first(key: str) -> str:
        shown = result.get(key) or []
        return ", ".join(str(i) for i in shown[:5]) + (", ..." if len(shown) > 5 else "")

    lines = []
    if result["missing_predictions"]:
        lines.append(f"{result['missing_predictions']:,} rows have no prediction (scored as empty; indexes "
                     f"{first('missing_indexes')})")
    if result["extra_predictions"]:
        lines.append(f"{result['extra_predictions']:,} predictions have an index the truth lacks (ignored; indexes "
                     f"{first('extra_indexes')})")
    if result["mismatched_predictions"]:
        lines.append(f"{result['mismatched_predictions']:,} predictions name another image_link or entity_name than "
                     f"their index's truth row (indexes {first('mismatched_indexes')}): are the predictions of the "
                     "truth's catalog?")
    if result["invalid_predictions"]:
        lines.append(f"{result['invalid_predictions']:,} answers are not a value in a unit their truth row's entity "
                     f"allows (indexes {first('invalid_indexes')}): are the predictions of the truth's catalog, in "
                     "its row order?")
    return lines


def in_training_warning(result: Mapping[str, Any]) -> str:
    """What to say when some rows were in the model's training: their figures are in-sample."""
    seen = result.get("in_training_rows")
    if not seen:
        return ""
    text = (f"{seen:,} of {result['rows']:,} rows are of images the model directory was fitted on: their answers "
            "and confidence are in-sample, so these figures are better than on new images")
    rest = result.get("out_of_training")
    if rest:
        text += f"; the other {rest['rows']:,} rows alone: F1 {rest['f1']:.4f}"
    return text


def _plain(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def evaluate(
    predictions_path: str | Path,
    truth: pd.DataFrame,
    store: str | Path | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Scores a predictions file against a truth catalog (read_catalog output): (metrics, per-row frame)."""
    if "entity_value" not in truth or truth["entity_value"].isna().all():
        raise UsageError("the truth catalog has no labels (entity_value column missing or empty)")
    repeated = truth["index"][truth["index"].duplicated()]
    if len(repeated):
        # One truth per index: a repeated one would be scored twice against the same prediction.
        raise UsageError(f"the truth catalog: index {int(repeated.iloc[0])} appears more than once")
    alignment = align(truth, read_predictions(predictions_path))
    rows = alignment.rows
    if store is not None:
        images = read_store_images(store, sorted(set(rows["image_id"])))
        rows = attach_candidates(rows, images)
    rows = classify(rows)
    result = summarize(alignment, rows, with_candidates=store is not None)
    return result, rows


# --- report ----------------------------------------------------------------------------------------------


ROW_COLUMNS = ("index", "entity_name", "group_id", "image_link", "truth", "prediction", "missing", "outcome", "kind",
               "valid", "score", "confidence", "in_training", "evidence_text", "reasons", "status", "image_status",
               "candidate_hit", "candidate_count", "candidates")


def write_rows(rows: pd.DataFrame, path: str | Path) -> Path:
    """One line per truth row: its outcome (tp/fp/fn/tn), error kind and, with a store, its candidates."""
    frame = rows[[c for c in ROW_COLUMNS if c in rows.columns]].copy()
    if "candidates" in frame:
        frame["candidates"] = ["; ".join(c) for c in frame["candidates"]]
    frame.sort_values("index").to_csv(path, index=False)
    return Path(path)


def worst_errors(rows: pd.DataFrame, n: int = 12) -> pd.DataFrame:
    """The rows most worth a look: confident wrong answers first (by score), then reachable abstentions."""
    # a wrong answer on a range truth or a failed image is not the scorer's mistake: left out here
    wrong = rows[(rows["outcome"] == "fp") & rows["kind"].isin(["wrong_unit", "wrong_candidate", "wrong_value",
                                                                 "no_candidate"])].copy()
    wrong["_rank"] = pd.to_numeric(wrong["score"], errors="coerce").fillna(-1.0) if "score" in wrong else -1.0
    wrong = wrong.sort_values(["_rank", "index"], ascending=[False, True], kind="stable")
    empty = rows[rows["kind"].isin(["abstained", "no_candidate"]) & (rows["prediction"] == "")].copy()
    empty = empty.sort_values(["kind", "index"], kind="stable")
    return pd.concat([wrong.drop(columns="_rank"), empty]).head(n)


# Thumbnail box colours: the chosen mention (right, wrong, held back below the threshold), the truth's.
BOX_RIGHT, BOX_WRONG, BOX_HELD, BOX_TRUTH = "#1a9850", "#d73027", "#f0a000", "#2166ac"


def thumbnail_boxes(row: Mapping[str, Any]) -> list[tuple[Box, str]]:
    """What a row's thumbnail draws: the chosen mention's box (green when right, red when wrong, amber when
    the row abstained below the threshold) and, for a wrong row, the true value's box (blue) when the truth
    was among the candidates."""
    boxes: list[tuple[Box, str]] = []
    chosen = chosen_box(row)
    right = row.get("outcome") == "tp"
    if chosen is not None:
        boxes.append((chosen, BOX_RIGHT if right else BOX_WRONG if row.get("prediction") else BOX_HELD))
    truth = row.get("truth_box")
    if not right and isinstance(truth, tuple) and truth != chosen:
        boxes.append((truth, BOX_TRUTH))
    return boxes


def _thumbnail(link: str, images_dir: Path, target: Path, size: int = 260,
               boxes: Sequence[tuple[Box, str]] = ()) -> Path | None:
    """A PNG thumbnail of the row's image, found in ``images_dir`` as the extract job saved it for this
    link, else by the link's file name, with ``boxes`` (original-image pixels, as OCR read the decoded
    image) drawn scaled to it."""
    from PIL import Image, ImageDraw, ImageOps

    from imagequant.fetch import find_cached_image
    from imagequant.imaging import DEFAULT_MAX_PIXELS

    source = find_cached_image(link, images_dir) if link.strip() else None
    if source is None:
        return None
    try:
        with Image.open(source) as opened:
            if opened.width * opened.height > DEFAULT_MAX_PIXELS:
                return None  # a report must not decode a pixel bomb
            # OCR boxes are in the decoded image's frame, which has the EXIF orientation applied
            image = (ImageOps.exif_transpose(opened) or opened).convert("RGB")
        width, height = image.size
        image.thumbnail((size, size))
        if boxes and width and height:
            sx, sy = image.width / width, image.height / height
            draw = ImageDraw.Draw(image)
            for (left, top, w, h), colour in boxes:
                draw.rectangle((left * sx - 2, top * sy - 2, (left + w) * sx + 2, (top + h) * sy + 2),
                               outline=colour, width=2)
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, format="PNG")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return target


def _card(row: Mapping[str, Any], thumb: str | None) -> str:
    lines = [f'<div class="card"><div><span class="kind">{html.escape(row["kind"])}</span> · index '
             f'{int(row["index"])} · {html.escape(str(row["entity_name"]))}</div>']
    if thumb:
        lines.append(f'<img src="{html.escape(thumb)}" alt="image of row {int(row["index"])}">')
    score = row.get("score")
    score_text = f" (score {float(score):.3f})" if score is not None and not pd.isna(score) else ""
    lines.append(f"<div>truth: <b>{html.escape(row['truth'] or '(empty)')}</b><br>"
                 f"prediction: <b>{html.escape(row['prediction'] or '(empty)')}</b>{html.escape(score_text)}</div>")
    evidence = row.get("evidence_text")
    if isinstance(evidence, str) and evidence:
        angle = row.get("evidence_angle")
        turned = f", read turned {int(angle)}°" if angle is not None and not pd.isna(angle) and int(angle) else ""
        lines.append(f"<div>read from: <code>{html.escape(evidence)}</code>{html.escape(turned)}; reasons: "
                     f"{html.escape(str(row.get('reasons') or '(none)'))}</div>")
    if "candidates_shown" in row:
        shown = row["candidates_shown"]
        more = int(row.get("candidate_count") or 0) - len(shown)
        text = ", ".join(shown) + (f" … (+{more})" if more > 0 else "") if len(shown) else "(none)"
        lines.append(f"<div>candidates: {html.escape(text)}</div>")
        status = str(row.get("image_status") or "")
        if status and status != "ok":
            lines.append(f"<div>image status: {html.escape(status)}</div>")
        ocr = str(row.get("ocr_text") or "")
        lines.append(f"<pre>{html.escape(ocr[:600] or '(no OCR text)')}</pre>")
    link = str(row.get("image_link") or "")
    lines.append(f'<div><a href="{html.escape(link)}">{html.escape(PurePosixPath(urlsplit(link).path).name)}</a></div>')
    lines.append("</div>")
    return "\n".join(lines)


def _coverage_section(page: report.HtmlReport, coverage: Mapping[str, Any] | None, rows: pd.DataFrame,
                      names: Sequence[str], out: Path) -> None:
    """Precision against coverage over score thresholds: the sentence a catalog owner acts on, the table,
    the plot, and each entity's operating points."""
    page.heading("Confidence: precision against coverage")
    if coverage is None:
        page.note("The predictions are a submission CSV, which has no score: give predict's "
                  "predictions.parquet to see precision against coverage over score thresholds.")
        return
    points = coverage["at_precision"]
    page.paragraph("Leaving rows below a minimum score empty (predict --min-score S): "
                   + "; ".join(coverage_sentence(points[f"{p:.2f}"], p) for p in TARGET_PRECISIONS)
                   + f". Over the {coverage['rows']:,} rows with a truth; coverage is the answered share of them, "
                   "precision the right share of the answered ones. An abstaining row's best candidate "
                   "counts as its answer when its score reaches the threshold.")
    page.table(["min score", "coverage", "precision", "answered", "right"],
               [[p["threshold"], p["coverage"], p["precision"], p["answered"], p["right"]]
                for p in coverage["table"]])
    series = {}
    for name in names:
        curve = coverage_curve(rows[rows["entity_name"] == name])
        series[name] = (curve.coverage.tolist(), curve.precision.tolist())
    overall = coverage_curve(rows)
    series["all"] = (overall.coverage.tolist(), overall.precision.tolist())
    page.figure(report.line_chart(
        out / "precision_coverage.png", series, title="Precision against coverage", xlabel="coverage (answered share)",
        ylabel="precision (right share of answered)", xlim=(0.0, 1.0), ylim=(0.0, 1.02), hlines=TARGET_PRECISIONS,
        emphasis="all"),
        "Each point is a minimum score: rows scoring below it are left empty. Dotted: 95% and 90% precision.")
    if has_confidence(rows):
        by_confidence = {}
        for name in names:
            curve = coverage_curve(rows[rows["entity_name"] == name], by="confidence")
            by_confidence[name] = (curve.coverage.tolist(), curve.precision.tolist())
        overall = coverage_curve(rows, by="confidence")
        by_confidence["all"] = (overall.coverage.tolist(), overall.precision.tolist())
        page.figure(report.line_chart(
            out / "precision_coverage_confidence.png", by_confidence, title="Precision against coverage, by confidence",
            xlabel="coverage (answered share)", ylabel="precision (right share of answered)", xlim=(0.0, 1.0),
            ylim=(0.0, 1.02), hlines=TARGET_PRECISIONS, emphasis="all"),
            "The same, ranking answers by their calibrated confidence instead of the score "
            "(predict --min-confidence P leaves answers below P empty).")
    per_entity = coverage["per_entity"]
    table_rows = []
    for name in [*names, "all"]:
        part = coverage if name == "all" else per_entity.get(name)
        if part is None:
            continue
        cells: list[Any] = [name, part["rows"]]
        for p in TARGET_PRECISIONS:
            point = part["at_precision"][f"{p:.2f}"]
            cells += [point["coverage"], point["threshold"]] if point else ["–", "–"]
        everything = part["table"][0]  # min score 0: every best candidate answered
        cells += [everything["coverage"], everything["precision"]]
        table_rows.append(cells)
    page.table(["entity", "rows", "coverage at 95%", "min score", "coverage at 90%", "min score",
                "coverage (all answered)", "precision (all answered)"], table_rows)


def _confidence_section(page: report.HtmlReport, confidence: Mapping[str, Any] | None, names: Sequence[str],
                        out: Path) -> None:
    """Calibration of the predictions' confidence: the reliability diagram, the expected calibration error
    and the coverage at each of the reported precisions, overall and per entity."""
    page.heading("Confidence: calibration")
    if confidence is None:
        page.note("The predictions carry no confidence: predict with a model directory that has a confidence "
                  "model (jobs/train.py writes one; --scorer rules for the rules) and give its predictions.parquet.")
        return
    page.paragraph(f"Expected calibration error {confidence['ece']:.3f} over the {confidence['answered']:,} answered "
                   f"rows ({CALIBRATION_BINS_TEXT}): a calibrated confidence of 0.8 is right 8 times in 10. "
                   f"Coverage is the answered share of all {confidence['rows']:,} rows with a truth.")
    page.figure(report.reliability_diagram(out / "reliability.png", confidence["reliability"],
                                           title="Reliability of the confidence"),
                "Bars: the share right among the answers in each confidence bin (row counts above); dots: the "
                "bin's mean confidence; dotted: where a calibrated confidence lies.")
    targets = list(confidence["coverage_at_precision"])
    table_rows = []
    for name in [*names, "all"]:
        part = confidence if name == "all" else confidence["per_entity"].get(name)
        if part is None:
            continue
        cells: list[Any] = [name, part["rows"], part["ece"]]
        for p in targets:
            point = part["coverage_at_precision"][p]
            cells.append(f"{point['coverage']:.3f} (≥ {point['threshold']:.3f})" if point else "–")
        table_rows.append(cells)
    page.table(["entity", "rows", "ECE", *(f"coverage at {float(p):.0%} (min confidence)" for p in targets)],
               table_rows)
    page.raw('<p>Answers to review, least confident first: <a href="review_queue.csv">review_queue.csv</a>.</p>')


CALIBRATION_BINS_TEXT = f"{metrics.CALIBRATION_BINS} equal-width bins"
REVIEW_COLUMNS = ("index", "entity_name", "image_link", "answer", "confidence", "score", "prediction", "status",
                  "evidence_text", "reasons", "truth", "outcome", "kind", "thumbnail")


def write_review_queue(rows: pd.DataFrame, path: Path, images_dir: str | Path | None = None) -> Path | None:
    """review_queue.csv: every row with an answer and a confidence, least confident first (what a reviewer
    checks before letting answers into the catalog), with the evidence thumbnail's path (relative to the
    report folder) when ``images_dir`` is given. None when the predictions carry no confidence."""
    if not has_confidence(rows):
        return None
    answers, _ = _best_answers(rows)
    queue = rows.assign(answer=answers, confidence=pd.to_numeric(rows["confidence"], errors="coerce"))
    queue = queue[(queue["answer"] != "") & queue["confidence"].notna()]
    queue = queue.sort_values(["confidence", "index"], kind="stable")
    thumbs = []
    for record in queue.to_dict("records"):
        made = None
        if images_dir is not None:
            made = _thumbnail(str(record.get("image_link") or ""), Path(images_dir),
                              path.parent / "thumbs" / f"{int(record['index'])}.png", boxes=thumbnail_boxes(record))
        thumbs.append(made.relative_to(path.parent).as_posix() if made else "")
    queue["thumbnail"] = thumbs
    queue[[c for c in REVIEW_COLUMNS if c in queue.columns]].to_csv(path, index=False)
    return path


def write_evaluation_report(
    result: Mapping[str, Any],
    rows: pd.DataFrame,
    report_dir: str | Path,
    *,
    images_dir: str | Path | None = None,
    title_note: str = "",
    worst: int = 12,
) -> Path:
    """Writes metrics.json, rows.csv (each row's outcome and error kind), the PNG figures, thumbnails and
    report.html into ``report_dir``; returns the HTML path."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "metrics.json", result)
    write_rows(rows, out / "rows.csv")
    page = report.HtmlReport("Evaluation", title_note)

    page.heading("Score")
    recall_ceiling = result.get("candidate_recall")
    page.key_values({
        "F1 (challenge definition)": result["f1"],
        "precision": result["precision"],
        "recall": result["recall"],
        "accuracy": result["accuracy"],
        "rows": result["rows"],
        "true positives": result["tp"], "false positives": result["fp"],
        "false negatives": result["fn"], "true negatives": result["tn"],
        "candidate recall (ceiling)": recall_ceiling if recall_ceiling is not None else "needs --store",
        "invalid prediction strings": result["invalid_predictions"],
    })
    if result["missing_predictions"]:
        shown = ", ".join(str(i) for i in result["missing_indexes"][:20])
        page.note(f"{result['missing_predictions']:,} truth rows have no prediction and count as empty "
                  f"predictions (indexes {shown}{', …' if result['missing_predictions'] > 20 else ''}). "
                  "The challenge would not score such a file at all.")
    in_sample = in_training_warning(result)
    if in_sample:
        page.note(in_sample + ".")
    if result["extra_predictions"]:
        page.note(f"{result['extra_predictions']:,} predictions have an index that is not in the truth; "
                  "they were ignored.")
    if result["mismatched_predictions"]:
        page.note(f"{result['mismatched_predictions']:,} predictions name another image_link or entity_name than "
                  "their index's truth row: they answer another catalog's rows, or another row order.")
    if result["invalid_predictions"]:
        page.note(f"{result['invalid_predictions']:,} predictions break the output format (plain decimal, one "
                  "space, an allowed unit of the row's entity).")
    best = result.get("best_threshold")
    if best:
        threshold = float(best["threshold"])
        rule = (f"abstaining below {threshold:.4g}" if math.isfinite(threshold)
                else "keeping every answer" if threshold < 0 else "abstaining on every row")
        page.paragraph(f"With the file's scores, {rule} would give F1 {best['f1']:.4f} (precision "
                       f"{best['precision']:.4f}, recall {best['recall']:.4f}); the best candidate of an "
                       "abstaining row is counted as its answer.")

    per_entity: dict[str, Any] = result["per_entity"]
    names = [e for e in ENTITIES if e in per_entity] + sorted(e for e in per_entity if e not in ENTITIES)
    _coverage_section(page, result.get("coverage"), rows, names, out)
    _confidence_section(page, result.get("confidence"), names, out)
    write_review_queue(rows, out / "review_queue.csv", images_dir)

    page.heading("Per entity")
    labels = [*names, "all"]
    f1s = [per_entity[e]["f1"] for e in names] + [result["f1"]]
    page.figure(report.bar_chart(
        out / "f1_per_entity.png", labels, f1s, title="F1 per entity", xlabel="F1", xlim=(0.0, 1.0),
        colors=[report.color(0)] * len(names) + [report.color(3)]))
    ceiling = result.get("candidate_recall_per_entity") or {}
    page.table(
        ["entity", "rows", "F1", "precision", "recall", "accuracy", "tp", "fp", "fn", "tn", "candidate recall"],
        [[e, per_entity[e]["n"], per_entity[e]["f1"], per_entity[e]["precision"], per_entity[e]["recall"],
          per_entity[e]["accuracy"], per_entity[e]["tp"], per_entity[e]["fp"], per_entity[e]["fn"],
          per_entity[e]["tn"], ceiling.get(e, "–")] for e in names]
        + [["all", result["rows"], result["f1"], result["precision"], result["recall"], result["accuracy"],
            result["tp"], result["fp"], result["fn"], result["tn"],
            recall_ceiling if recall_ceiling is not None else "–"]],
    )

    page.heading("Error kinds")
    kinds_per_entity: dict[str, dict[str, int]] = result["error_kinds_per_entity"]
    present = list(result["error_kinds"])
    page.figure(report.stacked_bars(
        out / "error_kinds.png", labels,
        {k: [kinds_per_entity.get(e, {}).get(k, 0) for e in names] + [result["error_kinds"].get(k, 0)]
         for k in present},
        title="Error kinds per entity", normalize=True, series_colors=KIND_COLORS))
    page.table(["kind", "rows", "meaning"], [[k, n, ERROR_KINDS[k]] for k, n in result["error_kinds"].items()])
    page.raw('<p>Every row\'s outcome (tp, fp, fn, tn) and error kind: <a href="rows.csv">rows.csv</a>.</p>')
    if result.get("candidate_recall") is None:
        page.note("No feature store was given (--store): candidates are unknown, so wrong answers are "
                  "'wrong_value' and the candidate-recall ceiling is not measured.")

    page.heading("Units: predicted against true")
    confusion = result["unit_confusion"]
    page.figure(report.heatmap(
        out / "unit_confusion.png", confusion["counts"], confusion["true_units"], confusion["predicted_units"],
        title="Unit confusion", xlabel="predicted unit", ylabel="true unit"),
        "Rows with a plain truth; (empty) is an empty prediction, (invalid) one that does not parse.")

    page.heading("Worst errors")
    chosen = worst_errors(rows, worst)
    thumbs_dir = out / "thumbs"
    cards = []
    for record in chosen.to_dict("records"):
        thumb = None
        if images_dir is not None:
            made = _thumbnail(str(record.get("image_link") or ""), Path(images_dir),
                              thumbs_dir / f"{int(record['index'])}.png", boxes=thumbnail_boxes(record))
            thumb = made.relative_to(out).as_posix() if made else None
        cards.append(_card(record, thumb))
    if images_dir is None:
        page.note("No --images-dir was given, so the worst errors are shown without thumbnails.")
    else:
        page.raw(f'<p>Boxes: <span style="color:{BOX_RIGHT}">■</span> the chosen mention when right, '
                 f'<span style="color:{BOX_WRONG}">■</span> when wrong, <span style="color:{BOX_HELD}">■</span> '
                 f'the best mention of a row left empty, <span style="color:{BOX_TRUTH}">■</span> the true '
                 "value's mention when it was among the candidates.</p>")
    if "candidates_shown" not in chosen:
        page.note("No --store was given, so the OCR text and candidates of these rows are not shown.")
    page.raw('<div class="cards">' + "\n".join(cards) + "</div>" if cards else "<p>No errors to show.</p>")
    return page.write(out / "report.html")
