"""ResNet-50 on the CPU: channels_last fp32 gives the eager NCHW network's features, bf16 autocast stays within a
stated distance of fp32, ``cnn.cpu_precision=auto`` picks bf16 only where the CPU computes it natively, and the
extract job hears which precision ran. Synthetic crops at 64x64: the network pools globally, so a small input
exercises every layer and keeps the tests quick."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from imagequant import cnn
from imagequant.cnn import FEATURE_DIM, build_model, cpu_precision, get_extractor
from imagequant.config import Config, load_config
from imagequant.spark.extract import ExtractSummary
from imagequant.spark.udfs import cnn_features_function

SIZE = 64
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _config(precision: str) -> Config:
    return load_config(overrides=["cnn.device=cpu", "cnn.cpu_runtime=torch", f"cnn.cpu_precision={precision}", "cnn.batch_size=4",
                                  f"imaging.cnn_size={SIZE}"])


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def f32_features(crops: np.ndarray) -> np.ndarray:
    return get_extractor(_config("f32").cnn).embed(crops)


def _eager_nchw_features(crops: np.ndarray, config: Config) -> np.ndarray:
    """The features of the network as built (NCHW weights) on NCHW-contiguous fp32 input, normalised here
    independently of imagequant.cnn."""
    model = build_model(config.cnn)
    batch = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
    batch = (batch - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        return model(batch.contiguous()).numpy()


def test_channels_last_f32_gives_the_eager_nchw_features(crops: np.ndarray, f32_features: np.ndarray) -> None:
    config = _config("f32")
    extractor = get_extractor(config.cnn)
    assert extractor.describe() == "cpu/f32"
    assert extractor.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    reference = _eager_nchw_features(crops, config)
    assert f32_features.shape == (4, FEATURE_DIM) and f32_features.dtype == np.float32
    # The same fp32 arithmetic summed in another order: measured 1.1e-6 of the largest feature; allowed 1e-5.
    assert np.abs(f32_features - reference).max() <= 1e-5 * np.abs(reference).max()


def test_bf16_features_stay_close_to_f32(crops: np.ndarray, f32_features: np.ndarray) -> None:
    extractor = get_extractor(_config("bf16").cnn)
    assert extractor.describe() == "cpu/bf16"
    features = extractor.embed(crops)
    assert features.shape == (4, FEATURE_DIM) and features.dtype == np.float32
    norms = np.linalg.norm(f32_features, axis=1)
    cosine = (features * f32_features).sum(axis=1) / (np.linalg.norm(features, axis=1) * norms)
    relative_error = np.linalg.norm(features - f32_features, axis=1) / norms
    # Measured here: cosine >= 0.99998 and relative L2 error <= 0.0062 per row; allowed 0.999 and 0.02.
    assert cosine.min() >= 0.999, cosine
    assert relative_error.max() <= 0.02, relative_error


def test_auto_runs_bf16_only_where_the_cpu_computes_it_natively(monkeypatch: pytest.MonkeyPatch) -> None:
    for native, expected in ((True, "bf16"), (False, "f32")):
        monkeypatch.setattr(cnn, "cpu_has_native_bf16", lambda native=native: native)
        assert cpu_precision(_config("auto").cnn) == expected
        assert cpu_precision(_config("f32").cnn) == "f32"
    assert load_config().cnn.cpu_precision == "auto"  # the default


def test_bf16_asked_without_native_support_runs_it_and_says_so_once(monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cnn, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(cnn, "_WARNED_EMULATED_BF16", False)
    assert [cpu_precision(_config("bf16").cnn) for _ in range(2)] == ["bf16", "bf16"]
    warnings = [line for line in capsys.readouterr().err.splitlines() if "cnn.cpu_precision=bf16" in line]
    assert len(warnings) == 1 and "no native bf16" in warnings[0]
    monkeypatch.setattr(cnn, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(cnn, "_WARNED_EMULATED_BF16", False)
    cpu_precision(_config("bf16").cnn)
    assert "cnn.cpu_precision" not in capsys.readouterr().err


def test_each_precision_has_its_own_extractor() -> None:
    f32, bf16 = get_extractor(_config("f32").cnn), get_extractor(_config("bf16").cnn)
    assert f32 is not bf16 and (f32.precision, bf16.precision) == ("f32", "bf16")
    assert get_extractor(_config("f32").cnn) is f32


class _Collected:
    """Stands in for the job's accumulator of :class:`imagequant.spark.udfs.SetParam`."""

    def __init__(self) -> None:
        self.value: set[str] = set()

    def add(self, term: set[str]) -> None:
        self.value |= term


def test_the_cnn_function_reports_where_and_in_which_precision_it_ran(crops: np.ndarray) -> None:
    config = _config("f32")
    table = pa.table({"image_id": ["a", "b", "c"], "status": ["ok", "fetch_error", "ok"],
                      "cnn_input": pa.array([crops[0].tobytes(), b"", crops[1].tobytes()], type=pa.binary())})
    devices = _Collected()
    list(cnn_features_function(config, devices)(iter(table.to_batches(max_chunksize=1))))  # type: ignore[arg-type]
    assert devices.value == {"cpu/f32"}
    no_crops = pa.table({"image_id": ["d"], "status": ["fetch_error"], "cnn_input": pa.array([b""], type=pa.binary())})
    nothing = _Collected()
    list(cnn_features_function(config, nothing)(iter(no_crops.to_batches())))  # type: ignore[arg-type]
    assert nothing.value == set()  # no network ran, none is built just to be described


def test_the_summary_line_says_where_the_cnn_ran() -> None:
    summary = ExtractSummary(run_id="r", batch="b", cnn_weights="random(seed=0)", cnn_device="cpu/bf16,cpu/f32")
    assert summary.line().endswith(" cnn_weights=random(seed=0) cnn_device=cpu/bf16,cpu/f32")
    assert summary.to_json()["cnn_device"] == "cpu/bf16,cpu/f32"
    assert "cnn_device" not in ExtractSummary(run_id="r", batch="b", cnn_weights="disabled").line()
