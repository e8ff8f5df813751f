"""Which labeled rows train: the rows left out and the labels no answer can equal, as train reports them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from imagequant.catalog import read_catalog
from imagequant.core.units import label_can_match
from imagequant.training.examples import (
    RawExample,
    describe_training_rows,
    left_out_rows,
    never_matched_labels,
)


@pytest.mark.parametrize(("label", "entity", "can_match"), [
    ("500.0 gram", "item_weight", True),
    ("500 g", "item_weight", True),
    ("[1.0, 2.0] gram", "item_weight", False),  # a range is never matched
    ("5 parsecs", "item_weight", False),
    ("12.0 volt", "item_weight", False),  # another entity's unit
    ("-5 gram", "item_weight", False),  # no answer is negative
    ("0.0 gram", "item_weight", True),
    ("", "item_weight", False),
    (None, "item_weight", False),
])
def test_a_label_can_match_only_when_it_is_one_value_in_an_allowed_unit(label: str | None, entity: str,
                                                                         can_match: bool) -> None:
    assert label_can_match(label, entity) is can_match


@pytest.mark.parametrize("label", ["500 g", "-500 gram", "[500.0, 600.0] gram", "500 volt", "junk", None])
def test_training_targets_a_candidate_exactly_when_the_label_can_match(label: str | None) -> None:
    """The network's targets and train's report of unmatchable labels use the one test of a label."""
    from imagequant.scoring.encode import label_targets
    from imagequant.text.candidates import Candidate

    def candidate(value: float) -> Candidate:
        return Candidate(value, "gram", f"{value} g", 0, 1, 0, 0, 10, 10, 1.0, 0.5, 0.5, 0.9)

    targets = label_targets([candidate(-500.0), candidate(250.0), candidate(500.0)], label, "item_weight")
    assert targets == ([2] if label_can_match(label, "item_weight") else [])


def _example(i: int, label: str, entity: str = "item_weight") -> RawExample:
    return RawExample(i, f"g{i}", entity, label, [], (100, 100), None, [])


def test_never_matched_labels_counts_ranges_unparseable_and_disallowed_units() -> None:
    examples = [_example(0, "500.0 gram"), _example(1, "[1.0, 2.0] gram"), _example(2, "5 parsecs"),
                _example(3, "12.0 volt"), _example(4, "12.0 volt", "voltage")]
    assert never_matched_labels(examples) == 3


def test_train_warns_of_rows_left_out_by_reason_and_of_labels_never_matched() -> None:
    lines = describe_training_rows(13, {"unlabeled": 1, "image_missing": 3, "unknown_entity": 1}, 2)
    assert lines == [
        "5 of 18 catalog rows are not trained on (image_missing 3, unknown_entity 1, unlabeled 1); "
        "metrics.json's skipped counts them",
        "2 of the 13 training rows have a label no answer can equal (a range, unparseable, negative, or in "
        "a unit the entity does not allow): they train abstaining and can never be right, as the challenge scores "
        "them",
    ]
    assert describe_training_rows(13, {}, 0) == []


def test_rows_a_training_table_leaves_out_are_counted_by_reason(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    pd.DataFrame([
        {"image_link": "https://img.test/a.jpg", "group_id": "1", "entity_name": "voltage", "entity_value": "5.0 volt"},
        {"image_link": "https://img.test/b.jpg", "group_id": "1", "entity_name": "voltage", "entity_value": None},
        {"image_link": "https://img.test/c.jpg", "group_id": "1", "entity_name": "colour", "entity_value": "red"},
        {"image_link": "ftp://x/d.jpg", "group_id": "1", "entity_name": "voltage", "entity_value": "5.0 volt"},
        {"image_link": "", "group_id": "1", "entity_name": "voltage", "entity_value": None},
    ]).to_csv(path, index=False)
    assert left_out_rows(read_catalog(path)) == {"bad_link": 1, "unknown_entity": 1, "unlabeled": 2}
