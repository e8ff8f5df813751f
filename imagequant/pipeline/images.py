"""The per-image work of the extract job, free of Spark: fetch, decode, OCR, CNN crop, CNN features.

The Spark UDFs and the plain single-process loop (benchmarks, debugging) call the same functions, so both
do exactly the same work per image.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from PIL import Image

from imagequant.cnn_runtime import get_extractor
from imagequant.cnn_weights import describe_features
from imagequant.config import Config
from imagequant.core.schema import CNN_FEATURE_DIM, OCR_STAGE, tokens_to_columns
from imagequant.core.tokens import OcrToken, ocr_text
from imagequant.errors import UsageError
from imagequant.fetch import fetch_or_load, plain_names_unique
from imagequant.imaging import ImageError, check_not_blank, decode_image, line_segments, prepare_for_cnn
from imagequant.ocr.base import OcrError, OcrOutcome, Reading, WantsMore
from imagequant.ocr.zoo import get_engine, reader_name
from imagequant.worker_memory import PYSPARK_MEMORY_KEY, minimum_mib


class NeedsSecondLook(Protocol):
    """The second look's question, asked by reading and answered by the job that knows the rows: given the
    tokens read so far from an image of ``image_size`` and the entities the catalog asks of it (none: read
    for any entity), whether the image still lacks what it is read for and is worth reading again. Reading
    knows images, not what makes a candidate usable, so it takes the question rather than answering it
    (the jobs pass :func:`imagequant.scoring.second_look.lacks_plausible_candidate`)."""

    def __call__(self, tokens: Sequence[OcrToken], entities: Sequence[str], image_size: tuple[int, int]) -> bool:
        ...


def _target(question: NeedsSecondLook, entities: Sequence[str], image_size: tuple[int, int]) -> WantsMore:
    """The question bound to one image: the second-look target an engine takes."""
    asked = tuple(entities)

    def wants_more(tokens: Sequence[OcrToken]) -> bool:
        return question(tokens, asked, image_size)

    return wants_more


def _failed(image_id: str, link: str, kind: str, message: str, **extra: Any) -> dict[str, Any]:
    return OCR_STAGE.empty_record(image_id=image_id, image_link=link, status=kind, error=message[:2000], **extra)


def read_image(image: Image.Image, config: Config, entities: Sequence[str] = (), *,
               needs_second_look: NeedsSecondLook) -> tuple[Reading, list[float]]:
    """What the store keeps of a decoded image's text and drawing: the OCR reading (its second look spent
    where ``needs_second_look`` says ``entities`` lack something) and the line segments; raises what stopped
    them. Explain uses it."""
    outcome, segments = read_images([image], [entities], config, needs_second_look=needs_second_look)[0]
    if outcome.error is not None:
        raise outcome.error
    assert outcome.reading is not None and segments is not None
    return outcome.reading, segments


def read_images(images: Sequence[Image.Image], entities: Sequence[Sequence[str]], config: Config, *,
                needs_second_look: NeedsSecondLook) -> list[tuple[OcrOutcome, list[float] | None]]:
    """OCR and line segments of decoded images, the one reading path of the extract job and explain: one
    :meth:`OcrEngine.read_many` call (RapidOCR recognises their lines together), each image with its own
    second-look target (``needs_second_look`` asked with the entities asked of it), then each read image's line segments, timed with its OCR.
    Each image keeps its own outcome, even when the engine cannot be built; a blank image (``check_not_blank``)
    is not read at all. A configuration that cannot work (``ocr.device=cuda`` without a GPU) raises: it is no
    image's fault."""
    blank: dict[int, OcrOutcome] = {}
    for i, image in enumerate(images):
        started = time.perf_counter()
        try:
            check_not_blank(image)
        except ImageError as exc:
            blank[i] = OcrOutcome(None, exc, time.perf_counter() - started)
    todo = [i for i in range(len(images)) if i not in blank]
    if not todo:
        return [(blank[i], None) for i in range(len(images))]
    started = time.perf_counter()
    try:
        engine = get_engine(config.ocr, config.imaging)
    except UsageError:
        raise
    except Exception as exc:
        return [(blank.get(i) or OcrOutcome(None, exc), None) for i in range(len(images))]
    built = (time.perf_counter() - started) / len(todo)  # loading the models, on a worker's first batch
    targets = [_target(needs_second_look, entities[i], images[i].size) for i in todo]
    outcomes = dict(zip(todo, engine.read_many([images[i] for i in todo], targets), strict=True))
    read: list[tuple[OcrOutcome, list[float] | None]] = []
    for i, image in enumerate(images):
        if i in blank:
            read.append((blank[i], None))
            continue
        outcome = outcomes[i]
        outcome.seconds += built
        segments = None
        if outcome.reading is not None:
            started = time.perf_counter()
            try:
                segments = line_segments(image)
            except Exception as exc:  # fails the image as an OCR failure would
                outcome = OcrOutcome(None, exc, outcome.seconds)
            outcome.seconds += time.perf_counter() - started
        read.append((outcome, segments))
    return read


@dataclass
class _Decoded:
    """One image fetched and decoded, waiting for OCR."""

    image_id: str
    link: str
    image: Image.Image
    crop: np.ndarray | None
    source: str
    seconds_fetch: float
    seconds_decode: float
    entities: list[str]


def _fetch_decode(image_id: str, link: str, config: Config, images_dir: str | None,
                  entities: Sequence[str], plain_file: bool) -> _Decoded | dict[str, Any]:
    """Fetches and decodes one image (and makes its CNN crop); a failed image's record instead.
    ``plain_file``: a user-placed file named by the link's file name may serve it (see ``fetch_or_load``)."""
    started = time.perf_counter()
    try:
        fetched = fetch_or_load(link, config.fetch, Path(images_dir) if images_dir else None,
                                plain_file=plain_file)
    except Exception as exc:  # a bug or an unforeseen library error must not fail the whole task
        return _failed(image_id, link, "fetch_error", f"{type(exc).__name__}: {exc}")
    fetch_seconds = time.perf_counter() - started
    if not fetched.ok or fetched.data is None:
        return _failed(image_id, link, fetched.error_kind or "fetch_error", fetched.message,
                       seconds_fetch=fetch_seconds, source=fetched.source or "")
    started = time.perf_counter()
    try:
        image = decode_image(fetched.data, config.imaging.max_pixels)
        crop = prepare_for_cnn(image, config.imaging.cnn_size, config.imaging.max_pixels) if config.cnn.enabled else None
    except ImageError as exc:
        return _failed(image_id, link, exc.kind, str(exc), seconds_fetch=fetch_seconds, source=fetched.source)
    except Exception as exc:
        return _failed(image_id, link, "decode_error", f"{type(exc).__name__}: {exc}",
                       seconds_fetch=fetch_seconds, source=fetched.source)
    return _Decoded(image_id, link, image, crop, fetched.source, fetch_seconds, time.perf_counter() - started,
                    list(entities))


def _ocr_record(item: _Decoded, config: Config, outcome: OcrOutcome, segments: list[float] | None) -> dict[str, Any]:
    """The stage-one record of a decoded image, its OCR outcome and its line segments."""
    exc = outcome.error
    engine_name = reader_name(config.ocr, config.imaging)  # which models read, with which settings
    if exc is not None or outcome.reading is None:
        if isinstance(exc, (OcrError, ImageError)):  # ImageError: an OCR resize step that would be too large
            kind, message = exc.kind, str(exc)
        else:
            kind, message = "ocr_error", f"{type(exc).__name__}: {exc}"
        return _failed(item.image_id, item.link, kind, message, seconds_fetch=item.seconds_fetch,
                       seconds_decode=item.seconds_decode, source=item.source,
                       width=item.image.width, height=item.image.height, ocr_engine=engine_name)
    reading = outcome.reading
    return OCR_STAGE.empty_record(
        image_id=item.image_id, image_link=item.link, status="ok", source=item.source,
        width=item.image.width, height=item.image.height, ocr_engine=engine_name, ocr_text=ocr_text(reading.tokens),
        ocr_passes="+".join(reading.passes), line_segments=segments,
        cnn_input=item.crop.tobytes() if item.crop is not None else b"",
        seconds_fetch=item.seconds_fetch, seconds_decode=item.seconds_decode, seconds_ocr=outcome.seconds,
        **tokens_to_columns(reading.tokens),
    )


def process_image(image_id: str, link: str, config: Config, images_dir: str | None,
                  entities: Sequence[str] = (), plain_file: bool = True, *,
                  needs_second_look: NeedsSecondLook) -> dict[str, Any]:
    """Fetches, decodes and OCRs one image; never raises for a bad image (its status says what failed).
    ``entities`` are those the catalog asks of the image: the second look is spent where
    ``needs_second_look`` says they lack something (none given: read for any entity). ``plain_file``: whether a file named by the link's plain file name
    may serve it (by default yes: one link alone shares that name with no other; a caller looping over a
    catalog passes ``plain_names_unique``). A configuration that cannot work (``ocr.device=cuda`` without a
    GPU) raises: it is no image's fault."""
    item = _fetch_decode(image_id, link, config, images_dir, entities, plain_file)
    if not isinstance(item, _Decoded):
        return item
    return _ocr_record(item, config,
                       *read_images([item.image], [item.entities], config, needs_second_look=needs_second_look)[0])


def process_frame(frame: pd.DataFrame, config: Config, images_dir: str | None, *,
                  needs_second_look: NeedsSecondLook) -> pd.DataFrame:
    """Stage one over a batch of distinct images (columns image_id, image_link, and optionally entities: the
    entity names the catalog asks of each image, which ``needs_second_look`` is asked with, and plain_file:
    whether no other link of the catalog has the link's plain file name, else decided within the frame). Each image is fetched and decoded, then the decoded
    ones are OCR'd together (:func:`read_images`), at most ``imaging.max_pixels`` pixels of them at a time so a
    batch holds no more image memory than one largest image. The records are those :func:`process_image` makes."""
    wanted = frame["entities"] if "entities" in frame else [()] * len(frame)
    plain = (frame["plain_file"].astype("boolean").fillna(False).astype(bool) if "plain_file" in frame
             else plain_names_unique(list(frame["image_link"])))
    prepared = [_fetch_decode(i, link, config, images_dir, list(e) if e is not None else (), bool(p))
                for i, link, e, p in zip(frame["image_id"], frame["image_link"], wanted, plain, strict=True)]
    decoded = [item for item in prepared if isinstance(item, _Decoded)]
    read: dict[int, dict[str, Any]] = {}
    for group in _pixel_groups(decoded, config.imaging.max_pixels):
        outcomes = read_images([d.image for d in group], [d.entities for d in group], config,
                               needs_second_look=needs_second_look)
        for item, (outcome, segments) in zip(group, outcomes, strict=True):
            read[id(item)] = _ocr_record(item, config, outcome, segments)
    records = [read[id(item)] if isinstance(item, _Decoded) else item for item in prepared]
    return pd.DataFrame.from_records(records, columns=OCR_STAGE.names())


def _pixel_groups(items: list[_Decoded], max_pixels: int) -> Iterator[list[_Decoded]]:
    """Consecutive groups of images holding at most ``max_pixels`` pixels together (one image alone always)."""
    group: list[_Decoded] = []
    pixels = 0
    for item in items:
        size = item.image.width * item.image.height
        if group and pixels + size > max_pixels:
            yield group
            group, pixels = [], 0
        group.append(item)
        pixels += size
    if group:
        yield group


def ocr_device(config: Config) -> str:
    """Where the configured OCR engine's models run in this process (e.g. ``CPUExecutionProvider``)."""
    return get_engine(config.ocr, config.imaging).describe_device()


def cnn_device(config: Config) -> str:
    """Where and in which precision this process's CNN runs (e.g. ``cpu/openvino-bf16``); builds it when not
    built yet."""
    return get_extractor(config.cnn, config.imaging.cnn_size).describe()


def embed_crops(crops: np.ndarray | Sequence[np.ndarray], config: Config) -> tuple[np.ndarray, float]:
    """CNN features of uint8 crops (N, S, S, 3), given as one array or as pieces in order, in
    ``cnn.batch_size`` chunks: (N, 2048) float32 and the seconds spent."""
    pieces = [crops] if isinstance(crops, np.ndarray) else list(crops)
    total = sum(len(piece) for piece in pieces)
    features = np.zeros((total, CNN_FEATURE_DIM), dtype=np.float32)
    if not config.cnn.enabled or total == 0:
        return features, 0.0
    started = time.perf_counter()
    extractor = get_extractor(config.cnn, config.imaging.cnn_size)
    row = 0
    for chunk in _chunks(pieces, max(1, config.cnn.batch_size)):
        embedded = extractor.embed(chunk)
        features[row : row + len(embedded)] = embedded
        row += len(embedded)
    return features, time.perf_counter() - started


#: The status of an image whose CNN features could not be computed in its worker.
CNN_ERROR = "cnn_error"


def embed_crops_or_failure(crops: np.ndarray | Sequence[np.ndarray],
                           config: Config) -> tuple[np.ndarray, float, str | None]:
    """:func:`embed_crops`, with a failure of the CNN stage in this worker (a library that cannot be loaded under a
    Python worker's memory cap, a model that cannot be built, exported or run) returned as the message its images record
    (status ``cnn_error``, zero features) instead of raised: one worker's library never ends the job. A
    configuration that cannot work (``cnn.device=cuda`` without a GPU, missing weights) still raises."""
    try:
        features, seconds = embed_crops(crops, config)
        return features, seconds, None
    except UsageError:
        raise
    except Exception as exc:  # ImportError, MemoryError, RuntimeError from torch: kept to these images
        pieces = [crops] if isinstance(crops, np.ndarray) else list(crops)
        total = sum(len(piece) for piece in pieces)
        message = (f"the CNN stage failed in this worker ({type(exc).__name__}: {exc}); "
                   f"a memory cap ({PYSPARK_MEMORY_KEY}) must be at least {minimum_mib(config.cnn) // 1024}g")[:2000]
        return np.zeros((total, CNN_FEATURE_DIM), dtype=np.float32), 0.0, message


def _chunks(pieces: list[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    """Consecutive slices of the pieces, ``size`` rows per chunk (the last may be shorter; empty pieces add
    nothing); views, no copies."""
    chunk: list[np.ndarray] = []
    room = size
    for piece in pieces:
        start = 0
        while start < len(piece):
            part = piece[start : start + room]
            chunk.append(part)
            start += len(part)
            room -= len(part)
            if room == 0:
                yield chunk
                chunk, room = [], size
    if chunk:
        yield chunk


def embed_inputs(inputs: pd.Series, config: Config) -> tuple[pd.Series, float, str | None]:
    """Stage two of the plain loop: CNN features for a batch of crop bytes (no input -> zeros), the seconds spent
    and the CNN stage's failure (:func:`embed_crops_or_failure`), if any."""
    size = config.imaging.cnn_size
    present = [i for i, data in enumerate(inputs) if data is not None and len(data) == size * size * 3]
    crops = np.stack([np.frombuffer(inputs.iloc[i], dtype=np.uint8).reshape(size, size, 3) for i in present]) \
        if present else np.zeros((0, size, size, 3), dtype=np.uint8)
    embedded, seconds, failure = embed_crops_or_failure(crops, config)
    features = np.zeros((len(inputs), CNN_FEATURE_DIM), dtype=np.float32)
    features[present] = embedded
    return pd.Series(list(features)), seconds, failure


def finish_records(stage1: pd.DataFrame, features: pd.Series, seconds_cnn: float, config: Config, run_id: str,
                   cnn_failure: str | None = None) -> pd.DataFrame:
    """Final images-table records: stage one plus features, with the CNN time shared among the batch; with
    ``cnn_failure`` the images that had a crop get status ``cnn_error`` and that message."""
    out = stage1.drop(columns=["cnn_input"]).copy()
    if cnn_failure is not None:
        failed = np.array([len(data) > 0 for data in stage1["cnn_input"]], dtype=bool)
        out.loc[failed, "status"] = CNN_ERROR
        out.loc[failed, "error"] = cnn_failure
    out["cnn_weights"] = describe_features(config)
    out["cnn_features"] = list(features)
    embedded = [len(data) > 0 for data in stage1["cnn_input"]]
    out["seconds_cnn"] = [seconds_cnn / max(1, sum(embedded)) if e else 0.0 for e in embedded]
    out["run_id"] = run_id
    out["processed_at"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return out


def process_all_locally(
    images: Iterable[tuple[str, str]], config: Config, images_dir: str | None, run_id: str = "local", *,
    needs_second_look: NeedsSecondLook,
) -> Iterator[pd.DataFrame]:
    """The plain single-process loop over the same code path (benchmarks compare Spark against it); its
    images are read for no entity in particular."""
    items = list(images)
    # Plain file names are judged over all the images, as the extract job judges them over the catalog.
    plain = plain_names_unique([link for _, link in items])
    batch: list[tuple[str, str, bool]] = []
    for (image_id, link), unique in zip(items, plain, strict=True):
        batch.append((image_id, link, unique))
        if len(batch) >= config.cnn.batch_size:
            yield _local_batch(batch, config, images_dir, run_id, needs_second_look)
            batch = []
    if batch:
        yield _local_batch(batch, config, images_dir, run_id, needs_second_look)


def _local_batch(batch: list[tuple[str, str, bool]], config: Config, images_dir: str | None,
                 run_id: str, needs_second_look: NeedsSecondLook) -> pd.DataFrame:
    stage1 = process_frame(pd.DataFrame(batch, columns=["image_id", "image_link", "plain_file"]), config, images_dir,
                           needs_second_look=needs_second_look)
    features, seconds, failure = embed_inputs(stage1["cnn_input"], config)
    return finish_records(stage1, features, seconds, config, run_id, failure)
