"""ResNet-50 image features (2048-d, global-average pooled), loaded once per Python worker.

Weights come from configuration and are never downloaded at run time:
- ``random``: a seeded random initialisation, the offline default (reported in the job summary);
- ``imagenet``: torchvision's ImageNet weights from the local torch cache (a clear error names the file);
- a path to a state dict, loaded with ``weights_only=True``.

The model and its input are channels_last (NHWC) on every device: oneDNN runs the network NHWC, which on the
CPU in fp32 costs about 30% less than NCHW (110 against 155 ms/image, 1 thread). The permuted NHWC crops
already have channels_last strides, and oneDNN follows the input's layout; converting the model too makes that
explicit instead of a side effect of how ``embed`` permutes. On a GPU the task's GPU runs under bf16 autocast.
On the CPU ``cnn.cpu_precision`` chooses (:func:`cpu_precision`):

- ``f32``: fp32;
- ``bf16``: CPU autocast bf16, about half the time of fp32 where the CPU computes bf16 in hardware
  (AVX512_BF16 or AMX-BF16), but 2-4x the time of fp32 where oneDNN emulates it (said once on stderr);
- ``auto`` (default): bf16 where the CPU has it natively, else f32.

``auto`` is the default because bf16 halves the CPU cost per image and its features differ from fp32's by
about 0.5% (relative L2, cosine >= 0.9999): as much as the GPU's bf16 features already differ from the CPU's
fp32 ones in a store that mixes both. Workers of different CPU types thus store features that agree to that
level, not bit for bit; the job summary's ``cnn_device`` says which precisions ran (e.g. ``cpu/bf16``), and
``f32`` gives fp32 features everywhere.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchvision.models import resnet50

from imagequant.cli import ArgumentParser, run_job
from imagequant.cnn_weights import check_weights, describe_weights, imagenet_weights_file
from imagequant.config import CPU_PRECISIONS, CnnConfig
from imagequant.devices import task_gpu
from imagequant.errors import ConfigError

FEATURE_DIM = 2048
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def build_model(cfg: CnnConfig) -> torch.nn.Module:
    """ResNet-50 with its classifier removed, weights as configured, in eval mode on the CPU."""
    check_weights(cfg)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(cfg.seed)  # the random default is the same network on every worker
    model = resnet50(weights=None)
    torch.random.set_rng_state(generator_state)
    if cfg.weights == "imagenet":
        state = torch.load(imagenet_weights_file(), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    elif cfg.weights != "random":
        state = torch.load(cfg.weights, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, _unexpected = model.load_state_dict(state, strict=False)
        if [m for m in missing if not m.startswith("fc.")]:
            raise ConfigError(f"cnn.weights {cfg.weights} is not a ResNet-50 state dict (missing {missing[:3]})")
    model.fc = torch.nn.Identity()
    return model.eval()


def choose_device(cfg: CnnConfig) -> torch.device:
    if cfg.device == "cpu" or not torch.cuda.is_available():
        if cfg.device == "cuda":
            raise ConfigError("cnn.device=cuda but no CUDA device is visible to this worker")
        return torch.device("cpu")
    gpu = task_gpu()  # the GPU Spark assigned to this task, so two executors never share one by accident
    return torch.device(f"cuda:{gpu if gpu is not None else 0}")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512_BF16 or AMX-BF16), where bf16 autocast pays off.

    Not ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``: that also says yes on AVX-512 CPUs without either
    (oneDNN emulates bf16 there, slower than fp32)."""
    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


_WARNED_EMULATED_BF16 = False


def cpu_precision(cfg: CnnConfig) -> str:
    """The precision the CPU path runs for ``cnn.cpu_precision``: ``f32`` or ``bf16``."""
    global _WARNED_EMULATED_BF16
    if cfg.cpu_precision not in CPU_PRECISIONS:  # load_config rejects it; a hand-built CnnConfig may not
        raise ConfigError(f"cnn.cpu_precision must be f32, bf16 or auto, got {cfg.cpu_precision!r}")
    native = cpu_has_native_bf16()
    if cfg.cpu_precision == "auto":
        return "bf16" if native else "f32"
    if cfg.cpu_precision == "bf16" and not native and not _WARNED_EMULATED_BF16:
        _WARNED_EMULATED_BF16 = True
        print("[imagequant] warning: cnn.cpu_precision=bf16 but this CPU has no native bf16 (AVX512_BF16 or "
              "AMX): the CNN runs emulated bf16, slower than f32; cnn.cpu_precision=auto would choose f32",
              file=sys.stderr, flush=True)
    return cfg.cpu_precision


@dataclass
class FeatureExtractor:
    """A loaded network on one device; ``embed`` maps uint8 NHWC crops to float32 (N, 2048)."""

    model: torch.nn.Module
    device: torch.device
    weights: str
    precision: str  # f32 | bf16 (autocast) on ``device``
    _staging: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def create(cls, cfg: CnnConfig) -> FeatureExtractor:
        device = choose_device(cfg)
        if device.type == "cpu":
            torch.set_num_threads(max(1, cfg.torch_threads))
        precision = "bf16" if device.type == "cuda" else cpu_precision(cfg)
        model = build_model(cfg).to(device).to(memory_format=torch.channels_last)
        return cls(model, device, describe_weights(cfg), precision)

    def describe(self) -> str:
        """Where and in which precision the network runs, e.g. ``cpu/bf16`` or ``cuda:0/bf16``."""
        return f"{self.device}/{self.precision}"

    @torch.inference_mode()
    def embed(self, crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Features of uint8 NHWC crops: one array, or several pieces taken as one batch in order (the CNN
        stage passes views of several Arrow batches, so they are copied only once, into the staging buffer)."""
        pieces = [crops] if isinstance(crops, np.ndarray) else list(crops)
        if sum(len(piece) for piece in pieces) == 0:
            return np.zeros((0, FEATURE_DIM), dtype=np.float32)
        batch = normalise(self._to_device(pieces), _MEAN.to(self.device), _STD.to(self.device))
        # The permuted NHWC crops already have channels_last strides; this keeps them so if that changes.
        batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            out = self.model(batch)
        return out.float().cpu().numpy()  # waits for the GPU, so the staging buffer is free again

    def _to_device(self, pieces: list[np.ndarray]) -> torch.Tensor:
        """The pieces as one uint8 tensor on the device. On CUDA they are copied once into a reused page-locked
        buffer (a faster, asynchronous transfer); a piece may be a read-only view of an Arrow buffer."""
        if self.device.type != "cuda":
            whole = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
            return torch.from_numpy(whole if whole.flags.writeable and whole.flags.c_contiguous else whole.copy())
        shape = (sum(len(piece) for piece in pieces), *pieces[0].shape[1:])
        if self._staging is None or self._staging.shape[0] < shape[0] or self._staging.shape[1:] != shape[1:]:
            self._staging = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        staged = self._staging[: shape[0]]
        host, row = staged.numpy(), 0
        for piece in pieces:
            host[row : row + len(piece)] = piece
            row += len(piece)
        return staged.to(self.device, non_blocking=True)


_EXTRACTORS: dict[tuple[str, int, str, int, str], FeatureExtractor] = {}
_LOCK = threading.Lock()


def get_extractor(cfg: CnnConfig) -> FeatureExtractor:
    """One extractor per Python worker process and configuration (the model loads once)."""
    key = (cfg.weights, cfg.seed, cfg.device, cfg.torch_threads, cfg.cpu_precision)
    with _LOCK:
        if key not in _EXTRACTORS:
            _EXTRACTORS[key] = FeatureExtractor.create(cfg)
        return _EXTRACTORS[key]


def normalise(crops: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC crops -> the network's float NCHW input (ImageNet's mean and std); the exported graph holds
    the same steps."""
    return (crops.permute(0, 3, 1, 2).float().div(255.0) - mean) / std


class _NormalisedResNet(torch.nn.Module):
    """The network with :meth:`FeatureExtractor.embed`'s input steps in front: uint8 NHWC crops in, features out,
    so an exported graph takes the crops as they are."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", _MEAN.clone())
        self.register_buffer("std", _STD.clone())

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.model(normalise(crops, self.mean, self.std))


def export_onnx(cfg: CnnConfig, target: Path, crop_size: int) -> None:
    """Writes the configured network (its weights as :func:`build_model` loads them) as an ONNX graph taking
    uint8 (N, S, S, 3) crops, written whole or not at all."""
    wrapped = _NormalisedResNet(build_model(cfg)).eval()
    example = torch.zeros((1, crop_size, crop_size, 3), dtype=torch.uint8)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
        staged = Path(tmp, target.name)
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice; its graph is plain
            torch.onnx.export(wrapped, (example,), str(staged), input_names=["crops"], output_names=["features"],
                              dynamic_axes={"crops": {0: "n"}, "features": {0: "n"}}, opset_version=17,
                              dynamo=False)
        os.replace(staged, target)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m imagequant.cnn --export-onnx PATH``: what a torch-free worker runs once, in a process of its
    own, to get the graph OpenVINO runs (imagequant/cnn_runtime.py)."""
    parser = ArgumentParser(prog="python -m imagequant.cnn", description="Export the configured ResNet-50 as an ONNX graph.")
    parser.add_argument("--export-onnx", required=True, type=Path, metavar="PATH")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop-size", type=int, default=224)
    args = parser.parse_args(argv)
    export_onnx(CnnConfig(weights=args.weights, seed=args.seed), args.export_onnx, args.crop_size)
    return 0


if __name__ == "__main__":
    run_job(main)
