"""Where a task's models run: the GPU Spark assigned to the task, the GPUs this process can see, and the
onnxruntime execution providers that ``ocr.device`` asks for.

Pure logic shared by the CNN (imagequant/cnn.py) and the OCR engines: no torch, and pyspark is never imported
from here (a Spark worker has loaded it already; anywhere else there is no task to ask).
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from imagequant.errors import ConfigError

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")

# The CUDA provider's options. HEURISTIC, not RapidOCR's EXHAUSTIVE: the detector's input size and the
# recogniser's batch width change from call to call, and an exhaustive search reruns for every new shape.
# kSameAsRequested: four OCR tasks of an executor share its GPU, so no arena doubles past what a run needs.
CUDA_OPTIONS: dict[str, Any] = {
    "arena_extend_strategy": "kSameAsRequested",
    "cudnn_conv_algo_search": "HEURISTIC",
    "do_copy_in_default_stream": True,
}
# RapidOCR's own CPU provider options (kept: its measured behaviour).
CPU_OPTIONS: dict[str, Any] = {"arena_extend_strategy": "kSameAsRequested"}


def task_gpu() -> int | None:
    """The CUDA ordinal of the first GPU Spark's resource scheduling assigned to the running task, else None
    (outside Spark, no task running, or a task without GPUs)."""
    pyspark = sys.modules.get("pyspark")  # a Spark worker has imported it; elsewhere no task can hold a GPU
    if pyspark is None:
        return None
    try:
        context = pyspark.TaskContext.get()
        if context is None:
            return None
        gpus = context.resources().get("gpu")
        if gpus is None or not gpus.addresses:
            return None
        return int(gpus.addresses[0])
    except Exception:  # a Spark without resources, or an address that is not an ordinal
        return None


@functools.lru_cache(maxsize=1)
def visible_gpu_count() -> int:
    """CUDA devices this process can see (CUDA_VISIBLE_DEVICES honoured), asked of the driver library itself
    so that no framework has to be imported; 0 without a driver or a device."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return int(count.value)


@dataclass(frozen=True)
class OcrPlacement:
    """Where the OCR models run: ``cuda`` on GPU ``device_id`` (CPU as onnxruntime's fallback for any
    operator the CUDA provider lacks), or ``cpu``."""

    device: str
    device_id: int | None = None

    def providers(self) -> list[tuple[str, dict[str, Any]]]:
        """onnxruntime's ``providers`` argument: CUDA first with this device, then the CPU."""
        cpu = (CPU_PROVIDER, dict(CPU_OPTIONS))
        if self.device != "cuda":
            return [cpu]
        return [(CUDA_PROVIDER, {"device_id": self.device_id or 0, **CUDA_OPTIONS}), cpu]

    def describe(self) -> str:
        return f"cuda:{self.device_id}" if self.device == "cuda" else "cpu"


CPU_PLACEMENT = OcrPlacement("cpu")


def ocr_placement(device: str, available: Sequence[str], assigned: int | None, visible: int) -> OcrPlacement:
    """Where ``ocr.device`` puts the OCR models, given onnxruntime's available providers, the GPU Spark assigned
    to the task (None: none) and the number of GPUs visible to the process.

    ``auto``: the CUDA provider when onnxruntime offers it and a GPU is assigned or visible (the assigned one,
    else GPU 0), else the CPU. ``cuda``: the same GPU, or ConfigError when there is no CUDA provider or no GPU.
    ``cpu``: the CPU."""
    if device not in DEVICES:
        raise ConfigError(f"ocr.device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu":
        return CPU_PLACEMENT
    gpu = assigned if assigned is not None else (0 if visible > 0 else None)
    has_cuda = CUDA_PROVIDER in available
    if device == "cuda":
        if not has_cuda:
            raise ConfigError(
                f"ocr.device=cuda but this onnxruntime has no {CUDA_PROVIDER} (it offers {', '.join(available)}); "
                "replace onnxruntime by onnxruntime-gpu: pip uninstall -y onnxruntime && pip install "
                "'imagequant[gpu]' (docs/cluster.md \"OCR on GPU executors\"), or set ocr.device=auto or cpu"
            )
        if gpu is None:
            raise ConfigError("ocr.device=cuda but no GPU is assigned to this task or visible to this worker; "
                              "set ocr.device=auto or cpu")
    elif not has_cuda or gpu is None:
        return CPU_PLACEMENT
    return OcrPlacement("cuda", gpu)


def onnxruntime_providers() -> list[str]:
    """The execution providers of the installed onnxruntime build (an empty list when it is not installed)."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def current_ocr_placement(device: str) -> OcrPlacement:
    """:func:`ocr_placement` for this process and the task it runs now."""
    if device == "cpu":
        return CPU_PLACEMENT
    available = onnxruntime_providers()
    assigned = task_gpu()
    # The driver is asked only when it matters: a CPU onnxruntime cannot use a GPU anyway.
    visible = visible_gpu_count() if CUDA_PROVIDER in available and assigned is None else 0
    return ocr_placement(device, available, assigned, visible)


# x86 instructions that multiply-add 8-bit integers without saturating 16-bit intermediates. Without one,
# onnxruntime's u8s8 kernels use VPMADDUBSW, which can saturate; measured there, the int8 detectors read worse
# and gain little (docs/ocr.md).
INT8_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
INT8_WITHOUT_VNNI = "int8 without VNNI"  # how the OCR's device description says so


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags as Linux lists them in /proc/cpuinfo; None where that cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        return None
    return None


def has_int8_dot_product(flags: frozenset[str] | None) -> bool | None:
    """Whether a CPU with ``flags`` has a VNNI-class int8 instruction; None when the flags are unknown."""
    return None if flags is None else bool(flags & INT8_DOT_PRODUCT_FLAGS)
