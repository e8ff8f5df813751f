"""What computes the ResNet-50 features in this worker: torch (:mod:`imagequant.cnn`) on a GPU and wherever
``cnn.cpu_runtime=torch``; OpenVINO on a CPU worker by default, without importing torch at all.

Why OpenVINO on the CPU: importing torch's CUDA build alone costs a worker about 0.64 GB resident, and
OpenVINO runs the same network in less CPU time (bf16 where the CPU computes it natively, like torch's
autocast). Measured on this project's 2-core AVX512_BF16 machine, one thread, batches of 32 (2026-12-06,
docs/configuration.md "ResNet-50 on the CPU"): 42 against 61 ms per crop, and a process doing only the CNN
holds 0.36 GB against 0.96 GB; in the scale run the worker that ran only the CNN peaked at 461 MiB.

OpenVINO runs an ONNX graph of the network, which only torch can write: the first worker of a machine that
needs it exports it in a separate process (``python -m imagequant.cnn --export-onnx``, a few seconds; that
process's memory is returned when it ends) into :mod:`imagequant.model_cache`'s ``resnet50`` folder, named
by the weights (the file's hash; the seed and torch's version for the random initialisation) and the crop
size. ``make`` exports the default one. The graph takes the uint8 crops as they are and normalises them
itself, with the same steps as the torch path, so both give the same features within bf16's rounding.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from imagequant import model_cache
from imagequant.cnn_weights import check_weights, describe_weights, imagenet_weights_file
from imagequant.config import CPU_PRECISIONS, CnnConfig
from imagequant.core.schema import CNN_FEATURE_DIM as FEATURE_DIM
from imagequant.devices import task_gpu, visible_gpu_count
from imagequant.errors import ConfigError

KIND = "resnet50"
# Part of every exported file's name: changing how the graph is made must change this.
RECIPE = "uint8-nhwc-normalised-opset17-v1"
# An export that takes longer than this is stuck (it takes seconds).
_EXPORT_TIMEOUT_S = 600


class FeatureExtractor(Protocol):
    """The contract both runtimes keep: ``embed`` maps uint8 NHWC crops (one array, or pieces taken as one
    batch in order) to float32 (N, 2048); ``describe`` says where and in which precision, e.g. ``cpu/bf16``."""

    def embed(self, crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray: ...

    def describe(self) -> str: ...


def runs_on_openvino(cfg: CnnConfig) -> bool:
    """Whether this worker computes the features with OpenVINO: a CPU worker (``cnn.device=cpu``, or ``auto``
    with no GPU given to the task or visible) with ``cnn.cpu_runtime=openvino``."""
    if cfg.cpu_runtime == "torch" or cfg.device == "cuda":
        return False
    return cfg.device == "cpu" or (task_gpu() is None and visible_gpu_count() == 0)


_EXTRACTORS: dict[tuple[Any, ...], FeatureExtractor] = {}
# Why the network could not be built in this worker, per configuration: not retried for every batch (an export
# that fails costs seconds, one that hangs up to its timeout).
_FAILURES: dict[tuple[Any, ...], str] = {}
_LOCK = threading.Lock()


def get_extractor(cfg: CnnConfig, crop_size: int = 224) -> FeatureExtractor:
    """One extractor per Python worker process and configuration (the model loads once)."""
    if not runs_on_openvino(cfg):
        from imagequant import cnn  # torch: only where it runs

        return _built_once(("torch", cfg.weights, cfg.seed, cfg.device, cfg.torch_threads, cfg.cpu_precision),
                           lambda: cnn.get_extractor(cfg))
    return _built_once((cfg.weights, cfg.seed, cfg.torch_threads, cfg.cpu_precision, crop_size),
                       lambda: OpenVinoFeatureExtractor(cfg, exported_graph(cfg, crop_size)))


def _built_once(key: tuple[Any, ...], build: Callable[[], FeatureExtractor]) -> FeatureExtractor:
    """The extractor ``build`` makes, kept per ``key``; a build that failed raises its reason again at once."""
    with _LOCK:
        if key in _FAILURES:
            raise RuntimeError(_FAILURES[key])
        if key not in _EXTRACTORS:
            try:
                _EXTRACTORS[key] = build()
            except ConfigError:
                raise  # the configuration, not this worker: the job stops with it
            except Exception as exc:
                _FAILURES[key] = f"{exc} (not tried again in this worker)"
                raise
        return _EXTRACTORS[key]


class OpenVinoFeatureExtractor:
    """ResNet-50's exported graph compiled by OpenVINO's CPU plugin: ``cnn.torch_threads`` threads (one: it
    infers in the calling thread), one stream, no pinning (Spark decides which core a task runs on)."""

    def __init__(self, cfg: CnnConfig, graph: Path) -> None:
        import openvino

        if cfg.cpu_precision not in CPU_PRECISIONS:  # load_config rejects it; a hand-built CnnConfig may not
            raise ConfigError(f"cnn.cpu_precision must be f32, bf16 or auto, got {cfg.cpu_precision!r}")
        # bf16 and auto both ask for bf16: the plugin takes it only where the CPU computes it natively, else f32.
        hint = openvino.Type.f32 if cfg.cpu_precision == "f32" else openvino.Type.bf16
        self._compiled = openvino.Core().compile_model(str(graph), "CPU", {
            "INFERENCE_NUM_THREADS": max(1, cfg.torch_threads), "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False, "INFERENCE_PRECISION_HINT": hint,
        })
        self._request = self._compiled.create_infer_request()
        chosen = str(self._compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.precision = "bf16" if "bf" in chosen else "f32"

    def describe(self) -> str:
        return f"cpu/openvino-{self.precision}"

    def embed(self, crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        pieces = [crops] if isinstance(crops, np.ndarray) else list(crops)
        if sum(len(piece) for piece in pieces) == 0:
            return np.zeros((0, FEATURE_DIM), dtype=np.float32)
        batch = np.ascontiguousarray(np.concatenate(pieces) if len(pieces) > 1 else pieces[0])
        self._request.infer([batch])
        # Copied: the request's output tensor is overwritten by its next call.
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32)


def graph_name(cfg: CnnConfig, crop_size: int) -> str:
    """The exported graph's file name: a hash of the weights, the crop size and :data:`RECIPE`."""
    if cfg.weights == "random":
        # The seeded initialisation is torch's: another torch version may draw other weights.
        source = f"random:{cfg.seed}:torch-{importlib.metadata.version('torch')}".encode()
    else:
        path = imagenet_weights_file() if cfg.weights == "imagenet" else Path(cfg.weights)
        source = hashlib.sha256(path.read_bytes()).digest()
    digest = hashlib.sha256(source + f":{crop_size}:{RECIPE}".encode()).hexdigest()[:16]
    return f"resnet50-{digest}.onnx"


def exported_graph(cfg: CnnConfig, crop_size: int = 224) -> Path:
    """The configured network's ONNX graph on this machine, exported first when it has none."""
    check_weights(cfg)
    return model_cache.built_once(
        KIND, graph_name(cfg, crop_size), lambda target: _export(cfg, crop_size, target),
        f"exporting ResNet-50 ({describe_weights(cfg)}) for OpenVINO",
        "ResNet-50 cannot be exported for OpenVINO; run `make` (or `python -m imagequant.cnn_runtime`) where it "
        "can, or set cnn.cpu_runtime=torch")


def _export(cfg: CnnConfig, crop_size: int, target: Path) -> None:
    """Runs the export in a process of its own, so this worker never imports torch."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # the worker's own imagequant
    command = [sys.executable, "-m", "imagequant.cnn", "--export-onnx", str(target), "--weights", cfg.weights,
               "--seed", str(cfg.seed), "--crop-size", str(crop_size)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=_EXPORT_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"exporting ResNet-50 for OpenVINO took over {_EXPORT_TIMEOUT_S} s") from exc
    if done.returncode != 0 or not target.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"exporting ResNet-50 for OpenVINO failed (exit {done.returncode}): {tail[0]}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m imagequant.cnn_runtime``: export the configured network for OpenVINO now (make does)."""
    from imagequant.cli import EXIT_FAILED, config_from_args, job_parser

    parser = job_parser("python -m imagequant.cnn_runtime", "Export the configured ResNet-50 for OpenVINO "
                                                            "(kept when present).")
    cfg = config_from_args(parser.parse_args(argv))
    if not cfg.cnn.enabled or cfg.cnn.cpu_runtime != "openvino":
        print("[cnn] nothing to export: the CNN is disabled or runs on torch", flush=True)
        return 0
    found = model_cache.find(KIND, graph_name(cfg.cnn, cfg.imaging.cnn_size))
    try:
        graph = found or exported_graph(cfg.cnn, cfg.imaging.cnn_size)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"[cnn] {graph}{' (already exported)' if found else ''}", flush=True)
    return 0


if __name__ == "__main__":
    from imagequant.cli import run_job

    run_job(main)
