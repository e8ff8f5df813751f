"""The submission file and its sanity check: the challenge scores nothing unless every rule holds.

Rules (CHALLENGE.md): a CSV with the header ``index,prediction``; exactly one row for every catalog index
(no duplicates, none missing, none foreign); a prediction is empty or ``"<plain decimal> <unit>"`` with
one space and a unit allowed for that row's entity, spelled in full (``2 gms``, ``2.2e2 gram`` fail).
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import pandas as pd

from imagequant.core.units import ENTITY_UNITS, is_valid_prediction

SUBMISSION_COLUMNS = ["index", "prediction"]
MAX_LISTED = 20  # offending rows listed per problem; the count is always given


def read_submission(path: str | Path) -> pd.DataFrame:
    """Reads a submission CSV as text (empty predictions stay empty strings, indices are not coerced)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])


def write_submission_rows(frame: pd.DataFrame, handle: TextIO, header: bool) -> None:
    """Writes ``frame``'s ``index,prediction`` rows in their order to an open CSV file, empty predictions as
    empty fields; ``header`` the first time. A submission is written a chunk of rows at a time, in index order."""
    out = frame[SUBMISSION_COLUMNS].copy()
    out["prediction"] = out["prediction"].fillna("")
    out.to_csv(handle, header=header, index=False, lineterminator="\n")


def _listed(values: list[str]) -> str:
    more = f" ... ({len(values) - MAX_LISTED} more)" if len(values) > MAX_LISTED else ""
    return ", ".join(values[:MAX_LISTED]) + more


def check_submission(submission: pd.DataFrame, catalog: pd.DataFrame) -> list[str]:
    """Everything that would make the challenge reject ``submission`` for ``catalog`` (empty = fine).

    ``catalog`` needs the columns ``index`` and ``entity_name``; ``submission`` is read as text
    (:func:`read_submission`) or built in memory.
    """
    problems: list[str] = []
    columns = [str(c) for c in submission.columns]
    if columns != SUBMISSION_COLUMNS:
        return [f"columns must be exactly {','.join(SUBMISSION_COLUMNS)}, found {','.join(columns) or '(none)'}"]
    raw_index = submission["index"].astype(str).str.strip()
    numeric = pd.to_numeric(raw_index, errors="coerce")
    not_int = raw_index[numeric.isna() | (numeric != numeric.round())]
    if len(not_int):
        problems.append(f"{len(not_int)} index value(s) are not integers: {_listed([repr(v) for v in not_int])}")
    index = numeric.dropna().astype("int64")
    duplicated = sorted(set(index[index.duplicated()].tolist()))
    if duplicated:
        problems.append(f"{len(duplicated)} index value(s) appear more than once: {_listed([str(i) for i in duplicated])}")
    wanted = set(pd.to_numeric(catalog["index"]).astype("int64").tolist())
    present = set(index.tolist())
    missing = sorted(wanted - present)
    if missing:
        problems.append(f"{len(missing)} catalog index value(s) have no row: {_listed([str(i) for i in missing])}")
    foreign = sorted(present - wanted)
    if foreign:
        problems.append(f"{len(foreign)} index value(s) are not in the catalog: {_listed([str(i) for i in foreign])}")

    entity_of = dict(zip(pd.to_numeric(catalog["index"]).astype("int64"), catalog["entity_name"], strict=True))
    bad: list[str] = []
    for idx, text in zip(numeric, submission["prediction"], strict=True):
        prediction = "" if text is None or (isinstance(text, float) and pd.isna(text)) else str(text)
        if prediction == "" or pd.isna(idx):
            continue
        entity = entity_of.get(int(idx))
        if entity is None:
            continue  # already reported as foreign
        if entity not in ENTITY_UNITS:
            bad.append(f"{int(idx)}: {prediction!r} (entity {entity!r} is unknown: the prediction must be empty)")
        elif not is_valid_prediction(prediction, entity):
            bad.append(f"{int(idx)}: {prediction!r} (not '<plain decimal> <unit allowed for {entity}>')")
    if bad:
        problems.append(f"{len(bad)} prediction(s) are malformed: {_listed(bad)}")
    return problems
