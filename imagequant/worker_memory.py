"""The address-space cap of a Python worker (``spark.executor.pyspark.memory``) checked against what the job's
libraries need, before any work.

Spark applies that setting as RLIMIT_AS on every Python worker, which limits address space, not resident memory.
Importing torch's CUDA build maps about 3.1 GB of shared libraries even on a CPU-only machine, far more than it
ever touches, so a cap that comfortably holds the worker's real memory can still refuse the import
(``ImportError: libtorch_cuda.so: failed to map segment from shared object``). Measured on this project's
pins (torch 2.14 cu130, onnxruntime 1.20, 2026-12-05) in a process doing what one extract worker does, under
``resource.setrlimit(RLIMIT_AS, ...)``:

- RapidOCR on four images, then torch + ResNet-50 on a batch of 32 crops (the CNN stage in the same worker,
  as Spark reuses workers across the two stages): fails at 4 GiB (torchvision's operators do not load) and
  4.5 GiB (the forward pass cannot allocate), works at 4.75 GiB;
- the CNN stage alone (a fresh worker): fails at 3 GiB (the import) and 4 GiB (the forward pass), works at
  4.5 GiB;
- RapidOCR alone (``cnn.enabled=false``): fails at 1 GiB, works at 1.5 GiB. On large images that take the second
  look's full-resolution detection with both readers (five of the scale run's, up to 1,931 px; 2026-12-06) it
  needs more: at 1.75 GiB two of the five fail (``ocr_error``: the detector's input cannot be allocated; three
  before the sessions ran without a memory pattern), at 2 GiB all are read, here and in an extract under ``2g``
  in Spark. The 2g minimum has little margin for them: the arena reserves address space in powers of two.

ResNet-50 on OpenVINO (``cnn.cpu_runtime=openvino`` on a CPU worker) imports no torch. Measured 2026-12-06
(openvino 2026.4.1, onnxruntime 1.31.1): the CNN stage alone works at 1 GiB; RapidOCR on four images, then the
CNN stage on 32 crops fails at 2 GiB and 2.25 GiB (OpenVINO's plugin library cannot be mapped), works at 2.5 GiB.
A worker may run torch unless ``cnn.device=cpu``: ``auto`` gives a GPU executor's tasks torch on the GPU.

The extract job runs the OCR and the CNN in separate pools of workers (``imagequant.spark.udfs.worker_pool``), so
a worker holds one of them; the minimums below still cover a worker holding both, with a margin (the Spark
worker's own modules and buffers). Not measured: CUDA on a GPU executor, whose driver reserves address space of
its own; a cap there must be found on that machine.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from imagequant.errors import ConfigError

if TYPE_CHECKING:
    from imagequant.config import CnnConfig

PYSPARK_MEMORY_KEY = "spark.executor.pyspark.memory"

#: The smallest cap (MiB) a Python worker of the extract job works under: with a CNN stage that may run torch,
#: with one that runs OpenVINO only, and without a CNN stage.
MIN_MIB_WITH_TORCH = 5 * 1024
MIN_MIB_WITH_OPENVINO = 3 * 1024
MIN_MIB_OCR_ONLY = 2 * 1024

_SIZE = re.compile(r"(\d+)\s*([kmgtp]?)b?")
_MIB_PER_UNIT = {"k": 1 / 1024, "m": 1, "": 1, "g": 1024, "t": 1024**2, "p": 1024**3}  # no suffix: MiB, as Spark reads it


def pyspark_memory_mib(value: str) -> int | None:
    """The cap a ``spark.executor.pyspark.memory`` value sets, in MiB (Spark's reading: no suffix is MiB);
    None when it is not a size (the Spark settings check reports that)."""
    found = _SIZE.fullmatch(str(value).strip().lower())
    if not found:
        return None
    return int(int(found.group(1)) * _MIB_PER_UNIT[found.group(2)])


def minimum_mib(cnn: CnnConfig) -> int:
    """The smallest cap under which the extract job's Python workers run with these CNN settings."""
    if not cnn.enabled:
        return MIN_MIB_OCR_ONLY
    return MIN_MIB_WITH_OPENVINO if cnn.device == "cpu" and cnn.cpu_runtime == "openvino" else MIN_MIB_WITH_TORCH


def check_worker_memory(value: str | None, cnn: CnnConfig) -> None:
    """ConfigError when ``value`` (``spark.executor.pyspark.memory``, None: unset, no cap) is a cap under which
    the extract job's Python workers cannot import and run their libraries."""
    if value is None:
        return
    mib = pyspark_memory_mib(value)
    if mib is None:
        return
    minimum = minimum_mib(cnn)
    if mib < minimum:
        need = {MIN_MIB_WITH_TORCH: "the CNN stage (torch's CUDA build maps about 3.1 GB of libraries) and OCR",
                MIN_MIB_WITH_OPENVINO: "the CNN stage on OpenVINO and OCR", MIN_MIB_OCR_ONLY: "OCR"}[minimum]
        openvino_g, ocr_g = MIN_MIB_WITH_OPENVINO // 1024, MIN_MIB_OCR_ONLY // 1024
        lower = {MIN_MIB_WITH_TORCH: f" (or cnn.device=cpu on CPU executors: {openvino_g}g; cnn.enabled=false: {ocr_g}g)",
                 MIN_MIB_WITH_OPENVINO: f" (or cnn.enabled=false: {ocr_g}g)", MIN_MIB_OCR_ONLY: ""}[minimum]
        raise ConfigError(
            f"{PYSPARK_MEMORY_KEY}={value} caps each Python worker's address space below what {need} need: "
            f"at least {minimum // 1024}g{lower}; docs/configuration.md \"Python worker memory\""
        )
