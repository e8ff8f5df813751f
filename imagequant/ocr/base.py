"""The OCR engine contract: errors, the deadline of one read, and the passes every engine runs.

Each ``read`` runs under one budget of ``ocr.timeout_s`` CPU seconds covering all of its passes: the CPU time
of the thread reading the image (plus that of the Tesseract processes it waits for), which a busy machine does
not inflate the way it stretches wall-clock time, so an image's outcome does not depend on the machine's load.
A wall-clock backstop of ``ocr.wall_timeout_factor`` times that catches true hangs (a thread that waits and
burns nothing). An engine that outlives either raises :class:`OcrTimeout` (kind "ocr_timeout").

Passes (each measured on real product images, see jobs/measure_ocr.py):
- the upright reading, always;
- ``ocr.rotated_pass``: dimension drawings print heights vertically; the image is also read rotated by
  ``ocr.rotated_angles`` and the tokens of those passes that contain digits are added, mapped back;
- ``ocr.second_pass``, the second look, only where it can pay: with ``ocr.second_pass_targeted`` only for
  an image whose asked-for entities have no plausible candidate yet (the caller says so through
  ``wants_more``), step by step until they have one:
  1. ``regions``: where a line holds a number with no unit after it (or a unit with no number before it)
     the region is cropped, enlarged and read again; the new reading replaces the old one when it
     completes a number+unit mention;
  2. ``detail`` (``ocr.second_pass_detail``): the whole image read again in more detail (engine-specific:
     the detector at full resolution for large images, the image enlarged for small ones), merged in;
  3. ``rotated`` (``ocr.second_pass_rotated``): the rotated passes, when the first reading had none.

The detail and rotated passes find many of the lines read already; an engine may leave those it read sure of
out of their recognition (:meth:`OcrEngine.lines_read`).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence

from PIL import Image

from imagequant.config import ImagingConfig, OcrConfig
from imagequant.core.tokens import Box, OcrToken, box_overlap, rotate_box_back, token_box
from imagequant.errors import RecordedError, UsageError
from imagequant.imaging import ImageError, resize_target
from imagequant.ocr.merging import (
    add_rotated_tokens,
    holds_number_with_unit,
    incomplete_mentions,
    merge_tokens,
    next_ids,
    offset_ids,
    reading_order,
)

OCR_ERROR_KINDS = ("ocr_timeout", "ocr_error")


class OcrError(RecordedError):
    """OCR that failed for one image."""

    KINDS = OCR_ERROR_KINDS


class OcrTimeout(OcrError):
    """The engine did not finish one image within ``ocr.timeout_s``."""

    def __init__(self, message: str) -> None:
        super().__init__("ocr_timeout", message)



class Deadline:
    """The budget of one ``read`` call, shared by all of its passes: ``seconds`` of CPU time of the thread that
    made it (other threads, e.g. a watchdog, may check it), plus CPU time done elsewhere on its behalf
    (:meth:`charge`: a Tesseract process, a share of a model call), and ``wall_seconds`` of wall-clock time as
    a backstop for hangs (default: :data:`WALL_TIMEOUT_FACTOR` times ``seconds``)."""

    def __init__(self, seconds: float, wall_seconds: float | None = None) -> None:
        self.seconds = seconds
        self.wall_seconds = seconds * WALL_TIMEOUT_FACTOR if wall_seconds is None else wall_seconds
        self._clock = time.pthread_getcpuclockid(threading.get_ident())
        self.end = self._cpu() + seconds
        self.wall_end = time.monotonic() + self.wall_seconds

    def _cpu(self) -> float:
        """CPU seconds of the thread that made this deadline (readable from any thread)."""
        return time.clock_gettime(self._clock)

    def remaining(self) -> float:
        """CPU seconds left."""
        return self.end - self._cpu()

    def wall_remaining(self) -> float:
        """Wall-clock seconds left before the backstop."""
        return self.wall_end - time.monotonic()

    def expired(self) -> str | None:
        """Why the budget is spent (CPU or the wall-clock backstop), or None."""
        if self.remaining() <= 0:
            return f"used its budget of {self.seconds:g} CPU s (ocr.timeout_s)"
        if self.wall_remaining() <= 0:
            return f"passed the wall-clock backstop of {self.wall_seconds:g} s (ocr.wall_timeout_factor)"
        return None

    def check(self, what: str) -> None:
        reason = self.expired()
        if reason is not None:
            raise OcrTimeout(f"{what}: OCR {reason}")

    def charge(self, cpu_seconds: float, wall_seconds: float = 0.0) -> None:
        """Counts work done outside this thread's clock, or while paused, against the budget."""
        self.end -= cpu_seconds
        self.wall_end -= wall_seconds


class PausableDeadline(Deadline):
    """One image's deadline inside a batch read (:meth:`OcrEngine.read_many`): while it is paused, other images'
    work runs and its clocks (CPU and wall) stand still; a model call it shares with other images is charged to
    it in part (:meth:`charge`). So an image's budget covers its own passes and its share of the shared calls,
    wherever it sits in the batch."""

    def __init__(self, seconds: float, wall_seconds: float | None = None, paused: bool = False) -> None:
        super().__init__(seconds, wall_seconds)
        self._paused_at: tuple[float, float] | None = (
            (self.end - seconds, self.wall_end - self.wall_seconds) if paused else None)

    def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = (self._cpu(), time.monotonic())

    def resume(self) -> None:
        if self._paused_at is not None:
            cpu, wall = self._paused_at
            self.end += self._cpu() - cpu
            self.wall_end += time.monotonic() - wall
            self._paused_at = None

    def remaining(self) -> float:
        now = self._paused_at[0] if self._paused_at is not None else self._cpu()
        return self.end - now

    def wall_remaining(self) -> float:
        now = self._paused_at[1] if self._paused_at is not None else time.monotonic()
        return self.wall_end - now


#: ocr.wall_timeout_factor's default: the wall-clock backstop of a read, in multiples of its CPU budget.
WALL_TIMEOUT_FACTOR = 4.0


def child_cpu_seconds() -> float:
    """CPU seconds of this process's finished, waited-for child processes (a Tesseract pass, once it ended)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_ROTATIONS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}

# Given the tokens read so far, whether the image still lacks what it was read for (a plausible candidate
# for each entity asked of it); the pipeline builds it from the catalog rows of the image.
WantsMore = Callable[[Sequence[OcrToken]], bool]


@dataclasses.dataclass
class Reading:
    """The tokens of one image and the passes that were run to read them, in order."""

    tokens: list[OcrToken]
    passes: list[str]


@dataclasses.dataclass
class OcrOutcome:
    """One image's result in :meth:`OcrEngine.read_many`: its reading (tokens and passes), or the error that
    stopped it (an :class:`OcrError`, an ImageError from an OCR resize that would be too large, or any
    unforeseen error, kept to this image), and the seconds spent on it (its own work plus its share of the
    model calls it shared with other images)."""

    reading: Reading | None
    error: Exception | None = None
    seconds: float = 0.0

    @property
    def tokens(self) -> list[OcrToken] | None:
        return self.reading.tokens if self.reading is not None else None


class OcrEngine:
    """The public contract of an OCR engine: ``read(img) -> list[OcrToken]``, boxes in ``img``'s pixels.

    A new engine subclasses this, sets ``name``, implements :meth:`read_pass` (one reading of one image) and
    registers itself in :mod:`imagequant.ocr.zoo`; it may override :meth:`read_detail` (the second look's
    closer reading), and :meth:`lines_read` with :meth:`read_pass_anew` (lines read already, left out of the
    later passes). This class runs the passes around them under one budget of ``ocr.timeout_s``: the
    upright reading, the rotated passes (``ocr.rotated_pass``) and the second look (``ocr.second_pass``).
    """

    name = "base"

    def __init__(self, cfg: OcrConfig, imaging: ImagingConfig) -> None:
        self.cfg = cfg
        self.imaging = imaging
        self.rotated_pass = cfg.rotated_pass

    def new_deadline(self, paused: bool = False) -> PausableDeadline:
        """The budget of one image's read: ``ocr.timeout_s`` CPU seconds, ``ocr.wall_timeout_factor`` times that
        of wall-clock time."""
        return PausableDeadline(self.cfg.timeout_s, self.cfg.timeout_s * self.cfg.wall_timeout_factor, paused)

    def read(self, img: Image.Image, wants_more: WantsMore | None = None) -> list[OcrToken]:
        """The tokens of ``img``. ``wants_more`` targets the second look (None: the image is read as if
        it still lacked everything, so every configured step runs)."""
        return self.read_passes(img, wants_more).tokens

    def read_passes(self, img: Image.Image, wants_more: WantsMore | None = None) -> Reading:
        """:meth:`read`, also saying which passes ran."""
        if img.mode != "RGB":
            img = img.convert("RGB")
        return self.read_with_deadline(img, self.new_deadline(), wants_more)

    def read_with_deadline(self, img: Image.Image, deadline: Deadline, wants_more: WantsMore | None = None,
                           upright: list[OcrToken] | None = None) -> Reading:
        """All passes over ``img``; ``upright``: its upright pass when a batch read has done it already."""
        passes = ["upright"]
        tokens = list(upright) if upright is not None else self.read_pass(img, deadline)
        if self.rotated_pass:
            tokens = self._rotated_passes(img, tokens, deadline)
            passes.append("rotated")
        cfg = self.cfg

        def lacking() -> bool:
            return not cfg.second_pass_targeted or wants_more is None or wants_more(tokens)

        if cfg.second_pass and lacking():
            tokens = self._second_pass(img, tokens, deadline)
            passes.append("regions")
            if cfg.second_pass_detail and lacking():
                try:
                    detail = self.read_detail(img, deadline, tokens)
                except ImageError:
                    detail = None  # too large for imaging.max_pixels: this optional step is skipped
                if detail is not None:
                    tokens = merge_tokens(tokens, detail)
                    passes.append("detail")
            if cfg.second_pass_rotated and not self.rotated_pass and lacking():
                tokens = self._rotated_passes(img, tokens, deadline)
                passes.append("rotated")
        keep = [t for t in tokens if t.text and t.conf >= cfg.min_confidence]
        return Reading(reading_order(keep), passes)

    def _rotated_passes(self, img: Image.Image, tokens: list[OcrToken], deadline: Deadline) -> list[OcrToken]:
        """Adds the digit-bearing lines of the image read rotated by each of ``ocr.rotated_angles``."""
        rotated: list[OcrToken] = []
        read = self.lines_read(tokens)
        for angle in self.cfg.rotated_angles:
            deadline.check(f"{self.name} rotated pass")
            turned = img.transpose(_ROTATIONS[angle])
            offset_line, offset_block = next_ids(rotated)
            # a box of img is mapped into the turned image as the turned image's box is mapped back
            turned_read = [rotate_box_back(b, (360 - angle) % 360, img.size) for b in read]
            for t in self.read_pass_anew(turned, deadline, turned_read):
                box = rotate_box_back(token_box(t), angle, turned.size)
                rotated.append(
                    dataclasses.replace(
                        t, left=box[0], top=box[1], width=box[2], height=box[3],
                        angle=(t.angle + angle) % 360,
                        line=t.line + offset_line, block=t.block + offset_block,
                    )
                )
        return add_rotated_tokens(tokens, rotated)

    def read_detail(self, img: Image.Image, deadline: Deadline,
                    known: Sequence[OcrToken] = ()) -> list[OcrToken] | None:
        """The second look's closer reading of the whole image, in ``img``'s pixels; None when the engine has
        nothing closer to offer for this image. ``known``: the tokens read so far, whose lines an engine may
        leave out of this reading (their reading is merged with it anyway). Here: an image whose longer side is
        at most ``ocr.second_pass_detail_max_side`` is enlarged 2x and read again (small print gets the pixels the
        detector needs); larger images are left to engines that can do better."""
        if max(img.size) > self.cfg.second_pass_detail_max_side:
            return None
        try:
            size = resize_target(img.size, scale=2.0, max_pixels=self.imaging.max_pixels,
                                 what="second-look enlargement")
        except ImageError:
            return None  # too large to enlarge: this optional pass skips the image
        deadline.check(f"{self.name} detail pass")
        enlarged = img.resize(size, Image.Resampling.LANCZOS)
        fx, fy = enlarged.width / img.width, enlarged.height / img.height
        return [_scaled_back(t, fx, fy) for t in self.read_pass(enlarged, deadline)]

    def read_pass(self, img: Image.Image, deadline: Deadline) -> list[OcrToken]:
        """Tokens of one pass over ``img``, in ``img``'s pixel coordinates."""
        raise NotImplementedError

    def lines_read(self, tokens: Sequence[OcrToken]) -> list[Box]:
        """The boxes of the lines of ``tokens`` that a later pass with the models now in use need not recognise
        again (:meth:`read_pass_anew`). Here none: every line is read again."""
        return []

    def read_pass_anew(self, img: Image.Image, deadline: Deadline, read: Sequence[Box]) -> list[OcrToken]:
        """:meth:`read_pass`, where an engine that can leaves out the lines whose box coincides with one of
        ``read`` (boxes in ``img``'s pixels). Here every line is read."""
        return self.read_pass(img, deadline)

    def read_many(self, images: Sequence[Image.Image],
                  wants_more: Sequence[WantsMore | None] | None = None) -> list[OcrOutcome]:
        """Reads several images, each as :meth:`read_passes` reads it (``wants_more``: one target per image, or
        None) under its own deadline; one image's failure is its own outcome and never affects the others.
        This default reads them one by one; an engine that can share model calls between images overrides it
        (RapidOCR recognises the lines of all of them together)."""
        targets = list(wants_more) if wants_more is not None else [None] * len(images)
        outcomes = []
        for img, target in zip(images, targets, strict=True):
            started = time.perf_counter()
            try:
                outcomes.append(OcrOutcome(self.read_passes(img, target), seconds=time.perf_counter() - started))
            except UsageError:  # a configuration that cannot work is no image's fault
                raise
            except Exception as exc:  # kept to this image: the caller records it as it would a single read's
                outcomes.append(OcrOutcome(None, exc, time.perf_counter() - started))
        return outcomes

    def describe_device(self) -> str:
        """Where this engine's models run, for job logs and summaries."""
        return "cpu"

    def read_region(self, crop: Image.Image, deadline: Deadline) -> list[OcrToken]:
        """Tokens of an enlarged crop holding one or a few lines of text (crop coordinates)."""
        return self.read_pass(crop, deadline)

    def reread_incomplete(self, img: Image.Image, tokens: list[OcrToken]) -> list[OcrToken]:
        """The second look's first step alone: re-reads the regions of ``tokens`` holding incomplete mentions."""
        return reading_order(self._second_pass(img.convert("RGB"), list(tokens), self.new_deadline()))

    def _second_pass(self, img: Image.Image, tokens: list[OcrToken], deadline: Deadline) -> list[OcrToken]:
        """Crops each incomplete mention with its line neighbourhood, enlarges it to ~second_pass_text_px
        high text and reads it again; the new tokens replace the old ones there only if they complete a
        number+unit mention."""
        triggers = [t for t in incomplete_mentions(tokens) if t.angle == 0]
        # Larger print first: the headline value is usually the biggest number on the pack.
        triggers.sort(key=lambda t: -t.height)
        done: list[Box] = []
        for trig in triggers:
            if len(done) >= self.cfg.second_pass_max_regions:
                break
            h = max(trig.height, 4)
            region = (
                max(0, trig.left - 4 * h),
                max(0, trig.top - h // 2),
                min(img.width, trig.left + trig.width + 4 * h),
                min(img.height, trig.top + trig.height + h // 2),
            )
            rbox = (region[0], region[1], region[2] - region[0], region[3] - region[1])
            if any(box_overlap(rbox, d) > 0.5 for d in done) or rbox[2] < 2 or rbox[3] < 2:
                continue
            done.append(rbox)
            deadline.check(f"{self.name} second pass")
            factor = min(4.0, max(1.0, self.cfg.second_pass_text_px / h))
            crop = img.crop(region)
            if factor > 1.0:
                try:
                    enlarged = resize_target(crop.size, scale=factor, max_pixels=self.imaging.max_pixels,
                                             what="second-pass enlargement")
                except ImageError:
                    continue  # too large to enlarge: this optional pass skips the region
                crop = crop.resize(enlarged, Image.Resampling.LANCZOS)
            fx, fy = crop.width / rbox[2], crop.height / rbox[3]
            try:
                new = self.read_region(crop, deadline)
            except ImageError:
                continue  # a detector input too large for imaging.max_pixels: this optional pass skips it
            if not holds_number_with_unit(new):
                continue
            mapped = [_scaled_back(t, fx, fy, rbox[0], rbox[1]) for t in new]
            # The new reading replaces the old tokens that lie inside the region.
            kept = [t for t in tokens if box_overlap(token_box(t), rbox) <= 0.5 or t.angle != 0]
            line_offset, block_offset = next_ids(kept)
            tokens = kept + offset_ids(mapped, line_offset, block_offset)
        return tokens


def _scaled_back(t: OcrToken, fx: float, fy: float, dx: int = 0, dy: int = 0) -> OcrToken:
    """A token read on a copy enlarged by (fx, fy) (and cut at (dx, dy)), in the original's pixels."""
    return dataclasses.replace(
        t, left=dx + int(round(t.left / fx)), top=dy + int(round(t.top / fy)),
        width=max(1, int(round(t.width / fx))), height=max(1, int(round(t.height / fy))),
    )
