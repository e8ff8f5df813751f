"""Several images read together (``OcrEngine.read_many``, RapidOCR's shared recognition calls) against one at
a time (``read``), with the real RapidOCR on the CPU and images made here: exactly the same tokens at any
batch size (each line is read as if alone), one image's failure or timeout kept to it, and the extract stage's
records unchanged."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from imagequant.config import Config, OcrConfig, load_config
from imagequant.imaging import ImageError
from imagequant.ocr.base import OcrError, OcrTimeout, PausableDeadline
from imagequant.ocr.rapidocr import _recognise
from imagequant.ocr.zoo import get_engine
from imagequant.scoring.second_look import lacks_plausible_candidate
from imagequant.synthetic import iter_items
from tests.httpserver import truncated_jpeg
from tests.ocr.test_ocr import IMAGING, _font, _label_image, _rotated_text_image, needs_rapidocr

pytestmark = needs_rapidocr


def _rapid(rec_batch_lines: int, **changes: object) -> OcrConfig:
    """The default RapidOCR settings (second look on), deterministic on one thread."""
    base = OcrConfig(engine="rapidocr", timeout_s=60.0)
    cfg = dataclasses.replace(base, **changes)
    cfg.rapidocr = dataclasses.replace(cfg.rapidocr, rec_batch_lines=rec_batch_lines)
    return cfg


def _images() -> list[Image.Image]:
    """Three synthetic product images, a two-line label and vertical text: 4 to 13 lines each."""
    renders = [item.image for item in iter_items(3, seed=21, image_size=(400, 640))]
    return [*renders, _label_image()[0], _rotated_text_image()[0]]


@pytest.mark.parametrize("rec_batch_lines", [1, 6, 64])
def test_batched_path_equals_the_per_image_path(rec_batch_lines: int) -> None:
    # Each line is padded to its own width whatever its batch-mates (another image's lines here), so reading
    # images together gives exactly the tokens of reading each alone; a difference would be the batching's
    # plumbing (detection per image, splitting results back, follow-up passes, ids) or padding leaking in.
    engine = get_engine(_rapid(rec_batch_lines), IMAGING)
    images = _images()
    single = [engine.read(img) for img in images]
    together = engine.read_many(images)
    assert [o.error for o in together] == [None] * len(images)
    assert [o.tokens for o in together] == single  # texts, boxes, confidences, line/word ids, angles
    assert all(single) and any(t.angle in (90, 270) for t in single[-1])
    assert all(o.seconds > 0 for o in together)


def test_a_line_reads_the_same_whatever_shares_its_recognition_call() -> None:
    # RapidOCR's own batching pads every line of a call to the widest one, and the recogniser attends over the
    # padding: the same crop read beside a much wider one came out differently.
    engine = get_engine(_rapid(6), IMAGING)
    engine.read(_label_image()[0])  # loads the models
    text_rec = engine._ocr.text_rec
    narrow, wide = _line_crop("500 g"), _line_crop("Net weight 500 g, twelve packs of 42 g each, 12 V")
    assert narrow.shape[1] < 320 < 2 * 320 < wide.shape[1]
    alone = _recognise(text_rec, [narrow], 6)
    assert alone[0][0].replace(" ", "") == "500g"
    assert _recognise(text_rec, [narrow, wide, wide], 6)[0] == alone[0]
    text_rec.rec_batch_num = 6
    assert text_rec([narrow, wide, wide])[0][0] != alone[0]  # RapidOCR's batching: padded to the wide line
    assert _recognise(text_rec, [wide, narrow], 1)[1] == alone[0]


def _line_crop(text: str) -> np.ndarray:
    """A text line as the recogniser gets it: a BGR crop 48 px high around the printed line."""
    font = _font(34)
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    img = Image.new("RGB", (right - left + 12, 48), "white")
    ImageDraw.Draw(img).text((6 - left, (48 - (bottom - top)) // 2 - top), text, fill="black", font=font)
    return np.ascontiguousarray(np.asarray(img)[:, :, ::-1])


def test_rotated_pass_runs_per_image_after_the_shared_calls() -> None:
    cfg = _rapid(1, rotated_pass=True)
    cfg.rapidocr = dataclasses.replace(cfg.rapidocr, rotated_pass=True)
    engine = get_engine(cfg, IMAGING)
    images = [_rotated_text_image()[0], _label_image()[0]]
    assert [o.tokens for o in engine.read_many(images)] == [engine.read(img) for img in images]


def test_an_oversized_image_in_a_batch_keeps_the_others() -> None:
    # 10 x 200,000: its detector input would be 736 x 942,080 pixels, refused as a pixel bomb; the others of
    # the batch are read as if alone, and a grayscale image is converted as read() converts it.
    engine = get_engine(_rapid(1), IMAGING)
    label, boxes = _label_image()
    strip = Image.new("RGB", (10, 200_000), "white")
    gray = label.convert("L")
    together = engine.read_many([label, strip, gray, Image.new("RGB", (64, 64), "white")])
    assert isinstance(together[1].error, ImageError) and together[1].error.kind == "pixel_bomb"
    assert together[1].tokens is None
    assert together[0].tokens == engine.read(label) and together[0].error is None
    assert together[2].tokens == engine.read(gray) and together[2].tokens
    assert together[3].tokens == [] and together[3].error is None  # nothing to read is no error


def _dense_image() -> Image.Image:
    """120 short lines of small print: detection is quick, recognising them all takes seconds."""
    img = Image.new("RGB", (1100, 1100), "white")
    draw = ImageDraw.Draw(img)
    font = _font(16)
    for row in range(60):
        for col in range(2):
            draw.text((20 + col * 540, 12 + row * 18), f"Batch {row * 2 + col} net wt {row + col}50 g",
                      fill="black", font=font)
    return img


def test_each_image_keeps_its_own_deadline_in_a_batch() -> None:
    # The dense image needs over 4 CPU s (4.3-4.5 measured) and gets 2; it must not take the others down with
    # it, and their clocks stand still while its own work runs. The label's lines are recognised on their own once the shared call is
    # stopped at the dense image's deadline, so its tokens are exactly those of a read alone.
    # (No second look: the label alone takes about 0.6 CPU s, well inside its 2.)
    # The budget is CPU time of the reading thread (docs/robustness.md "ocr_timeout"), so the bounds are in CPU seconds.
    label = _label_image()[0]
    blank = Image.new("RGB", (320, 320), "white")
    engine = get_engine(_rapid(6, timeout_s=2.0, second_pass=False), IMAGING)
    started = time.thread_time()
    alone = engine.read(label)
    alone_cpu = time.thread_time() - started
    started = time.thread_time()
    dense_out, label_out, blank_out = engine.read_many([_dense_image(), label, blank])
    cpu = time.thread_time() - started
    assert isinstance(dense_out.error, OcrTimeout) and dense_out.error.kind == "ocr_timeout"
    assert "CPU s" in str(dense_out.error)
    assert label_out.error is None and label_out.tokens == alone
    assert blank_out.error is None and blank_out.tokens == []
    # the dense image's budget, plus at most one step between model calls, plus the others' own work
    assert cpu < 2.0 + 2.0 + 2 * alone_cpu + 1.0, (cpu, alone_cpu)


def test_a_deadline_passed_before_any_work_times_out_every_image_on_its_own() -> None:
    engine = get_engine(_rapid(6, timeout_s=1e-6), IMAGING)
    label = _label_image()[0]
    together = engine.read_many([label, label.copy()])
    assert [type(o.error) for o in together] == [OcrTimeout, OcrTimeout]
    assert get_engine(_rapid(6), IMAGING).read_many([]) == []


def _burn(seconds: float) -> None:
    """Uses ``seconds`` of this thread's CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_paused_deadline_does_not_run() -> None:
    deadline = PausableDeadline(0.2, paused=True)
    _burn(0.3)
    assert deadline.remaining() > 0.15  # paused since it was made
    deadline.resume()
    deadline.check("running")
    _burn(0.25)
    deadline.pause()
    with pytest.raises(OcrError):
        deadline.check("spent")
    _burn(0.1)
    assert -0.2 < deadline.remaining() <= 0.0  # no CPU time counts while paused


def test_a_deadline_counts_cpu_time_and_stops_a_hang_at_its_wall_clock_backstop() -> None:
    deadline = PausableDeadline(0.2, wall_seconds=0.6)
    time.sleep(0.3)  # waiting uses no CPU: the budget is left, the wall clock runs
    assert deadline.remaining() > 0.15
    deadline.check("waited")
    time.sleep(0.35)
    with pytest.raises(OcrTimeout, match="wall-clock backstop"):
        deadline.check("hung")
    busy = PausableDeadline(0.2, wall_seconds=60.0)
    _burn(0.25)
    with pytest.raises(OcrTimeout, match="0.2 CPU s"):
        busy.check("busy")


# -- the extract job's first stage ---------------------------------------------------------------------------


def _config(**overrides: object) -> Config:
    settings = [f"{k}={v}" for k, v in overrides.items()]
    return load_config(overrides=["cnn.enabled=true", "ocr.engine=rapidocr", "ocr.rapidocr.rec_batch_lines=1",
                                  "imaging.ocr_min_side=300", *settings])


def _frame(tmp: Path) -> pd.DataFrame:
    """Five product images and a truncated JPEG, found in the images folder by the links' file names, with the
    entities the catalog asks of each (the second look's target)."""
    links = []
    label = _label_image()[0]
    for i, img in enumerate([*_images()[:3], label, label.resize((1800, 1080))]):
        img.save(tmp / f"p{i}.png")
        links.append(f"http://img.invalid/x/p{i}.png")
    (tmp / "broken.jpg").write_bytes(truncated_jpeg())
    links.insert(2, "http://img.invalid/x/broken.jpg")
    entities = [["item_weight"], ["voltage", "wattage"], ["height"], [], None, ["item_weight", "voltage"]]
    return pd.DataFrame({"image_id": [f"id{i}" for i in range(len(links))], "image_link": links,
                         "entities": entities})


TIMINGS = ["seconds_fetch", "seconds_decode", "seconds_ocr"]


def test_stage_one_records_are_those_of_process_image(tmp_path: Path) -> None:
    from imagequant.pipeline.images import process_frame, process_image

    frame = _frame(tmp_path)
    # A pixel budget of about four images per read_many call: the frame is read in two groups.
    budget = 3_000_000
    config = _config(**{"imaging.max_pixels": budget})
    batched = process_frame(frame, config, str(tmp_path), needs_second_look=lacks_plausible_candidate)
    alone = pd.DataFrame.from_records(
        [process_image(i, link, config, str(tmp_path), e or (), needs_second_look=lacks_plausible_candidate)
         for i, link, e in zip(frame["image_id"], frame["image_link"], frame["entities"], strict=True)],
        columns=batched.columns,
    )
    assert list(batched["status"]) == ["ok", "ok", "truncated", "ok", "ok", "ok"], list(batched["error"])
    # tokens, texts, passes (the targeted second look), line segments, sizes, CNN inputs: all the same
    pd.testing.assert_frame_equal(batched.drop(columns=TIMINGS), alone.drop(columns=TIMINGS))
    ok = batched["status"] == "ok"
    assert (batched.loc[ok, "seconds_ocr"] > 0).all()
    sizes = [w * h for w, h in zip(batched.loc[ok, "width"], batched.loc[ok, "height"], strict=True)]
    assert sum(sizes[:4]) <= budget < sum(sizes)  # so the frame was read as two groups
    assert batched.loc[ok, "ocr_text"].str.len().gt(0).all()
    assert batched.loc[ok, "ocr_passes"].str.startswith("upright").all()


def test_stage_one_with_an_engine_that_cannot_work_is_a_configuration_error(tmp_path: Path) -> None:
    from imagequant.errors import ConfigError
    from imagequant.pipeline.images import process_frame

    frame = _frame(tmp_path)
    with pytest.raises(ConfigError, match="ocr.device=cuda"):
        process_frame(frame, _config(**{"ocr.device": "cuda"}), str(tmp_path), needs_second_look=lacks_plausible_candidate)
