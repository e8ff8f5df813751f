"""Which labeled rows train: the rows left out and the labels no answer can equal, as train reports them."""

from __future__ import annotations

import pytest

from imagequant.core.units import label_can_match
from imagequant.training.examples import RawExample, describe_training_rows, never_matched_labels


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


def _example(i: int, label: str, entity: str = "item_weight") -> RawExample:
    return RawExample(i, f"g{i}", entity, label, [], (100, 100), None, [])


def test_never_matched_labels_counts_ranges_unparseable_and_disallowed_units() -> None:
    examples = [_example(0, "500.0 gram"), _example(1, "[1.0, 2.0] gram"), _example(2, "5 parsecs"),
                _example(3, "12.0 volt"), _example(4, "12.0 volt", "voltage")]
    assert never_matched_labels(examples) == 3


def test_train_warns_of_rows_left_out_by_reason_and_of_labels_never_matched() -> None:
    lines = describe_training_rows(13, {"unlabeled": 1, "image_missing": 3, "unknown_entity": 1}, 2)
    assert lines == [
        "warning: 5 of 18 catalog rows are not trained on (image_missing 3, unknown_entity 1, unlabeled 1); "
        "metrics.json's skipped counts them",
        "warning: 2 of the 13 training rows have a label no answer can equal (a range, unparseable, negative, or in "
        "a unit the entity does not allow): they train abstaining and can never be right, as the challenge scores "
        "them",
    ]
    assert describe_training_rows(13, {}, 0) == []
