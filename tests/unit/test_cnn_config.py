"""``cnn.cpu_precision``: the values it may take, checked when the configuration loads; what the images table
records as having made an image's features (no torch needed)."""

from __future__ import annotations

import pytest

from imagequant.cnn_weights import describe_features
from imagequant.config import load_config
from imagequant.errors import ConfigError


def test_cpu_precision_defaults_to_auto_and_takes_f32_bf16_auto() -> None:
    assert load_config().cnn.cpu_precision == "auto"
    for value in ("f32", "bf16", "auto"):
        assert load_config(overrides=[f"cnn.cpu_precision={value}"]).cnn.cpu_precision == value


def test_a_bad_cpu_precision_is_one_clear_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^cnn\.cpu_precision must be f32, bf16 or auto, got 'fp16'$"):
        load_config(overrides=["cnn.cpu_precision=fp16"])


def test_the_features_record_names_the_weights_and_a_crop_size_other_than_the_shipped_one() -> None:
    assert describe_features(load_config()) == "random(seed=0)"
    assert describe_features(load_config(overrides=["cnn.seed=3", "cnn.batch_size=8"])) == "random(seed=3)"
    assert describe_features(load_config(overrides=["imaging.cnn_size=160"])) == "random(seed=0) at 160 px"
    assert describe_features(load_config(overrides=["cnn.enabled=false", "imaging.cnn_size=160"])) == "disabled"
