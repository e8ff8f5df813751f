"""ResNet-50 on OpenVINO (``cnn.cpu_runtime=openvino``, the CPU default): the exported graph gives the eager
torch network's features (f32 within float rounding, bf16 within the distance torch's own bf16 keeps), a worker
on it never imports torch, the graph is exported once per machine and weights, and what cannot work says so.
Crops of synthetic renders at 64x64: the network pools globally, so a small input exercises every layer."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from imagequant import cnn, cnn_runtime, model_cache
from imagequant.config import CnnConfig, load_config
from imagequant.errors import ConfigError
from imagequant.imaging import prepare_for_cnn
from imagequant.synthetic import make_spec, render_item

SIZE = 64


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    rng = np.random.default_rng(7)
    return np.stack([prepare_for_cnn(render_item(make_spec(rng, image_size=(300, 500)), rng), SIZE)
                     for _ in range(6)])


@pytest.fixture(scope="module")
def torch_f32(crops: np.ndarray) -> np.ndarray:
    return cnn.get_extractor(CnnConfig(device="cpu", cpu_runtime="torch", cpu_precision="f32")).embed(crops)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)).max())


def test_openvino_f32_gives_the_torch_networks_features(crops: np.ndarray, torch_f32: np.ndarray) -> None:
    extractor = cnn_runtime.get_extractor(CnnConfig(device="cpu", cpu_precision="f32"), SIZE)
    assert extractor.describe() == "cpu/openvino-f32"
    features = extractor.embed(crops)
    assert features.shape == (len(crops), cnn_runtime.FEATURE_DIM) and features.dtype == np.float32
    # fp32 summed in another order: measured 7e-7 relative at 224 px; allowed 1e-5.
    assert _relative(features, torch_f32) <= 1e-5


def test_openvino_bf16_stays_as_close_to_f32_as_torchs_bf16(crops: np.ndarray, torch_f32: np.ndarray) -> None:
    if not cnn.cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16: OpenVINO runs f32 there")
    extractor = cnn_runtime.get_extractor(CnnConfig(device="cpu", cpu_precision="auto"), SIZE)
    assert extractor.describe() == "cpu/openvino-bf16"
    features = extractor.embed(crops)
    torch_bf16 = cnn.get_extractor(CnnConfig(device="cpu", cpu_runtime="torch", cpu_precision="bf16")).embed(crops)
    # Measured at 224 px: OpenVINO 0.0073 relative (cosine 0.99999), torch's autocast 0.0052; allowed 0.02.
    assert _relative(features, torch_f32) <= 0.02
    assert _relative(torch_bf16, torch_f32) <= 0.02


def test_a_crops_features_do_not_depend_on_its_batch(crops: np.ndarray) -> None:
    extractor = cnn_runtime.get_extractor(CnnConfig(device="cpu"), SIZE)
    together = extractor.embed([crops[:2], crops[2:]])
    alone = np.concatenate([extractor.embed(crops[i : i + 1]) for i in range(len(crops))])
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-6)
    assert extractor.embed(crops[:0]).shape == (0, cnn_runtime.FEATURE_DIM)


def test_a_worker_on_openvino_never_imports_torch() -> None:
    code = ("import sys, numpy as np; from imagequant.config import load_config; "
            "from imagequant.pipeline.images import cnn_device, embed_crops; "
            f"c = load_config(overrides=['cnn.device=cpu', 'imaging.cnn_size={SIZE}']); "
            f"f, _ = embed_crops(np.zeros((2, {SIZE}, {SIZE}, 3), np.uint8), c); "
            "print(cnn_device(c), f.shape, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split()[0].startswith("cpu/openvino-")
    assert out.stdout.strip().endswith("(2, 2048) False")


def test_which_runtime_runs_the_network() -> None:
    assert cnn_runtime.runs_on_openvino(CnnConfig(device="cpu"))
    assert not cnn_runtime.runs_on_openvino(CnnConfig(device="cpu", cpu_runtime="torch"))
    assert not cnn_runtime.runs_on_openvino(CnnConfig(device="cuda"))
    assert isinstance(cnn_runtime.get_extractor(CnnConfig(device="cpu", cpu_runtime="torch")), cnn.FeatureExtractor)
    with pytest.raises(ConfigError, match="cnn.cpu_runtime must be openvino or torch, got 'onnx'"):
        load_config(overrides=["cnn.cpu_runtime=onnx"])


def test_the_graph_is_exported_once_where_the_machine_can_write(tmp_path, monkeypatch, capsys) -> None:
    # What an executor without make's export does: the first place cannot be created (its parent is a file),
    # so the graph is exported into the next one, by a process of its own, once.
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    monkeypatch.setattr(model_cache, "cache_dirs", lambda kind: [blocked / kind, tmp_path / kind])
    cfg = CnnConfig(device="cpu", seed=3)
    graph = cnn_runtime.exported_graph(cfg, SIZE)
    assert graph == tmp_path / "resnet50" / cnn_runtime.graph_name(cfg, SIZE) and graph.stat().st_size > 1e7
    assert "exporting ResNet-50 (random(seed=3)) for OpenVINO" in capsys.readouterr().err
    built = graph.stat().st_mtime_ns
    assert cnn_runtime.exported_graph(cfg, SIZE).stat().st_mtime_ns == built
    assert cnn_runtime.graph_name(CnnConfig(seed=4), SIZE) != graph.name != cnn_runtime.graph_name(cfg, 224)


def test_weights_that_are_not_resnet50_fail_with_the_exports_reason(tmp_path, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(model_cache, "cache_dirs", lambda kind: [tmp_path / kind])
    bad = tmp_path / "not_resnet.pt"
    torch.save({"layer.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(RuntimeError, match=r"exporting ResNet-50 for OpenVINO failed \(exit 2\): error: cnn.weights"):
        cnn_runtime.exported_graph(CnnConfig(device="cpu", weights=str(bad)), SIZE)
    with pytest.raises(ConfigError, match="no state-dict file"):
        cnn_runtime.exported_graph(CnnConfig(device="cpu", weights=str(tmp_path / "missing.pt")), SIZE)


def test_a_network_that_cannot_be_built_is_not_tried_again_for_every_batch(tmp_path, monkeypatch, capsys) -> None:
    import torch

    monkeypatch.setattr(model_cache, "cache_dirs", lambda kind: [tmp_path / kind])
    bad = tmp_path / "not_resnet.pt"
    torch.save({"layer.weight": torch.zeros(2, 2)}, bad)
    cfg = CnnConfig(device="cpu", weights=str(bad))
    with pytest.raises(RuntimeError, match="exporting ResNet-50 for OpenVINO failed"):
        cnn_runtime.get_extractor(cfg, SIZE)
    assert "exporting ResNet-50" in capsys.readouterr().err
    # the next batch of this worker gets the same reason at once: no second export
    with pytest.raises(RuntimeError, match=r"failed \(exit 2\).*\(not tried again in this worker\)"):
        cnn_runtime.get_extractor(cfg, SIZE)
    assert "exporting" not in capsys.readouterr().err


def test_a_torch_network_that_cannot_be_built_is_not_tried_again_either(monkeypatch) -> None:
    """A build failing for a reason of the worker's (here an allocation) costs its time once per worker; a bad
    cnn.weights is a ConfigError, which stops the job instead (the test above)."""
    from imagequant import cnn

    builds: list[CnnConfig] = []

    def fails(cfg: CnnConfig) -> cnn.FeatureExtractor:
        builds.append(cfg)
        raise MemoryError("cannot allocate the network's weights")

    monkeypatch.setattr(cnn.FeatureExtractor, "create", staticmethod(fails))
    cfg = CnnConfig(device="cpu", cpu_runtime="torch", seed=11)
    with pytest.raises(MemoryError):
        cnn_runtime.get_extractor(cfg, SIZE)
    with pytest.raises(RuntimeError, match=r"cannot allocate .*\(not tried again in this worker\)"):
        cnn_runtime.get_extractor(cfg, SIZE)
    assert len(builds) == 1
