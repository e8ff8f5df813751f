"""RapidOCR: PP-OCRv4 detection, angle classification and recognition run by onnxruntime in this process,
from the models shipped in the rapidocr_onnxruntime wheel (offline, no download).

RapidOCR runs in the calling thread; a watchdog timer sets onnxruntime's ``RunOptions.terminate`` so a
model call in progress is abandoned at the deadline, and the Python steps between model calls check the
deadline. The Python steps are bounded by the image size (the decoder caps pixels), so no read outlives
its deadline by more than one such step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image

from imagequant.config import ImagingConfig, OcrConfig
from imagequant.core.tokens import OcrToken, scale_box, token_box
from imagequant.imaging import prepare_for_ocr, resize_target
from imagequant.ocr.base import Deadline, OcrEngine, OcrError, OcrTimeout
from imagequant.ocr.merging import clean_text, split_line_words

_MODELS_LOCK = threading.Lock()


class _TerminableSession:
    """Wraps an onnxruntime InferenceSession so a watchdog can abandon the model call in progress."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.run_options: Any = None

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        return self._session.run(output_names, input_feed, run_options or self.run_options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


# A number glued to the word before it: after two or more letters ("Weighs235g", "Wt500g") or after a letter


class _RapidModels:
    """The RapidOCR models of one process (loading them takes seconds), shared by every engine using them.

    Their onnxruntime sessions are wrapped so a watchdog can terminate a run; the lock keeps one image at a
    time on them (the terminate switch is per run, and a Spark Python worker runs one task at a time anyway).
    """

    def __init__(self, threads: int, use_cls: bool, memory_arena: bool) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise OcrError(
                "ocr_error",
                f"rapidocr_onnxruntime cannot be imported ({exc}); install it with: pip install 'imagequant[rapidocr]'",
            ) from exc
        # Pinned threads: a Spark executor runs one task per core, each must stay on its own core.
        with _memory_arena_enabled() if memory_arena else contextlib.nullcontext():
            self.ocr = RapidOCR(
                intra_op_num_threads=threads, inter_op_num_threads=1, use_cls=use_cls, print_verbose=False
            )
        self.lock = threading.Lock()
        self.sessions: list[_TerminableSession] = []
        for holder in (self.ocr.text_det.infer, self.ocr.text_cls.infer, self.ocr.text_rec.session):
            wrapped = _TerminableSession(holder.session)
            holder.session = wrapped
            self.sessions.append(wrapped)


@contextlib.contextmanager
def _memory_arena_enabled() -> Iterator[None]:
    """Builds RapidOCR's onnxruntime sessions with the CPU memory arena on.

    rapidocr_onnxruntime turns the arena off, so every model run maps and unmaps its buffers afresh (tens of
    MB per detection); on real product images that cost 37% more CPU per image, mostly system time spent on
    page faults. The arena keeps the largest run's buffers alive per process instead. rapidocr builds its
    sessions from a static options hook, which is swapped only while they are built.
    """
    from rapidocr_onnxruntime.utils import infer_engine

    session_class = infer_engine.OrtInferSession
    original = session_class.__dict__["_init_sess_opts"]

    def with_arena(config: dict[str, Any]) -> Any:
        options = original.__func__(config)
        options.enable_cpu_mem_arena = True
        return options

    session_class._init_sess_opts = staticmethod(with_arena)
    try:
        yield
    finally:
        session_class._init_sess_opts = original


_RAPID_MODELS: dict[tuple[int, int, bool, bool], _RapidModels] = {}


def _rapid_models(threads: int, use_cls: bool, memory_arena: bool) -> _RapidModels:
    key = (os.getpid(), threads, use_cls, memory_arena)
    with _MODELS_LOCK:
        models = _RAPID_MODELS.get(key)
        if models is None:
            models = _RAPID_MODELS[key] = _RapidModels(threads, use_cls, memory_arena)
    return models


def _is_vertical(quad: np.ndarray) -> bool:
    """Whether RapidOCR turns this box's crop a quarter turn (CCW) before reading it: crops at least 1.5x
    taller than wide, measured with the same integer crop size as its get_crop_img_list."""
    p0, p1, p2, p3 = (quad[i].astype(np.float64) for i in range(4))
    crop_w = int(max(np.linalg.norm(p0 - p1), np.linalg.norm(p2 - p3)))
    crop_h = int(max(np.linalg.norm(p0 - p3), np.linalg.norm(p1 - p2)))
    return crop_w > 0 and crop_h / crop_w >= 1.5


def _bgr(img: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(img)[:, :, ::-1])


class RapidOcrEngine(OcrEngine):
    """RapidOCR (PP-OCRv4 det + cls + rec on onnxruntime), split into word tokens.

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
        self._models = _rapid_models(max(1, rc.threads), rc.use_angle_cls, rc.memory_arena)
        self._ocr = self._models.ocr
        self._sessions = self._models.sessions
        self._use_cls = rc.use_angle_cls
        self._text_score = rc.text_score

    @contextlib.contextmanager
    def _watchdog(self, deadline: Deadline) -> Iterator[Any]:
        deadline.check("rapidocr")
        remaining = deadline.remaining()
        run_options = self._ort.RunOptions()
        run_options.log_severity_level = 4
        for s in self._sessions:
            s.run_options = run_options
        fired = threading.Event()

        def terminate() -> None:
            fired.set()
            run_options.terminate = True

        timer = threading.Timer(remaining, terminate)
        timer.daemon = True
        timer.start()
        try:
            yield run_options
        except OcrTimeout:
            raise
        except Exception as exc:
            if fired.is_set():
                raise OcrTimeout(f"rapidocr stopped after {deadline.seconds:g} s") from exc
            raise OcrError("ocr_error", f"rapidocr failed: {exc}") from exc
        finally:
            timer.cancel()
            for s in self._sessions:
                s.run_options = None
        if fired.is_set():
            raise OcrTimeout(f"rapidocr stopped after {deadline.seconds:g} s")

    def read_pass(self, img: Image.Image, deadline: Deadline) -> list[OcrToken]:
        scale = 1.0
        work = img
        min_side = self.cfg.rapidocr.min_side
        if min_side and min(img.size) < min_side:
            work, scale = prepare_for_ocr(img, min_side, max(min_side * 3, max(img.size)), self.imaging.ocr_max_upscale,
                                          max_pixels=self.imaging.max_pixels)
        tokens = self._read_array(_bgr(work), deadline)
        if scale == 1.0:
            return tokens
        out = []
        for t in tokens:
            b = scale_box(token_box(t), scale, img.size)
            out.append(dataclasses.replace(t, left=b[0], top=b[1], width=b[2], height=b[3]))
        return out

    def read_detail(self, img: Image.Image, deadline: Deadline) -> list[OcrToken] | None:
        """A large image's first reading detected on a reduced copy: now at full resolution (at most twice
        the first reading's side). Small images: enlarged, as every engine does."""
        det_max = self.cfg.rapidocr.det_max_side
        if det_max and max(img.size) > det_max:
            return self._read_array(_bgr(img), deadline, det_max_side=min(max(img.size), 2 * det_max))
        return super().read_detail(img, deadline)

    def _read_array(self, bgr: np.ndarray, deadline: Deadline, det_max_side: int | None = None) -> list[OcrToken]:
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
        with self._models.lock, self._watchdog(deadline):
            # Very flat or very short images get the letterbox RapidOCR itself would add.
            det_img, record = ocr.maybe_add_letterbox(det_img, {})
            pad_top = record.get("padding_1", {}).get("top", 0)
            boxes, _ = ocr.text_det(det_img)
            if boxes is None or len(boxes) == 0:
                return []
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
            flipped = [False] * len(crops)
            if self._use_cls:
                deadline.check("rapidocr crops")
                crops, cls_res, _ = ocr.text_cls(crops)
                thresh = ocr.text_cls.cls_thresh
                flipped = [("180" in str(label) and float(score) > thresh) for label, score in cls_res]
            deadline.check("rapidocr classification")
            rec_res, _ = ocr.text_rec(crops)
            rec_res, flipped = self._both_ways(crops, quads, list(rec_res), flipped, deadline)
        tokens: list[OcrToken] = []
        line = 0
        for quad, flip, res in zip(quads, flipped, rec_res, strict=True):
            text, score = clean_text(str(res[0])), float(res[1])
            if not text or score < self._text_score:
                continue
            tokens.extend(self._line_tokens(text, score, quad, flip, line, (w, h)))
            line += 1
        return tokens

    def _both_ways(self, crops: list[np.ndarray], quads: list[np.ndarray], rec_res: list[Any],
                   flipped: list[bool], deadline: Deadline) -> tuple[list[Any], list[bool]]:
        """Vertical labels (a drawing's heights) read both ways: RapidOCR turns a tall box a quarter turn one
        way and its classifier is trained on upright lines, so each tall box is also recognised turned
        the other way (a half turn of the crop) and the reading with the higher score is kept."""
        tall = [i for i, q in enumerate(quads) if _is_vertical(q)]
        if not tall:
            return rec_res, flipped
        deadline.check("rapidocr vertical lines")
        turned, _ = self._ocr.text_rec([np.ascontiguousarray(np.rot90(crops[i], 2)) for i in tall])
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

