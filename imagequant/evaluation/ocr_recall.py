"""Measures an OCR engine on a labeled catalog of local images (the library half of jobs/measure_ocr.py).

For every labeled row it asks two questions of the OCR tokens of the row's image:
- candidate recall: is the label's value+unit among the candidates extracted for the row's entity?
- number-anywhere recall: does the label's number appear anywhere in the OCR text (numerically)?
and it times every image (decode + OCR, engine threads pinned to 1: the cost on one core). The rules F1 is the
challenge F1 of the rule baseline (``--model rules``) over every labeled row, from the same tokens and the
image's line segments (found after the clock stops: they are not OCR).

Candidates come from ``imagequant.text.candidates.extract_candidates``, as in the extract and predict jobs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import multiprocessing as mp
import os
import re
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagequant.catalog import LabeledRow
from imagequant.config import Config
from imagequant.core.tokens import OcrToken

# ---------------------------------------------------------------------------------------------------------
# Matching: candidates and plain numbers
# ---------------------------------------------------------------------------------------------------------

_NUM = r"(\d+(?:[.,]\d+)?)"


def _number_values(raw: str) -> set[float]:
    """Readings of one printed number: "1,5" may be 1.5 (decimal comma) or 15 / 1500-style thousands."""
    out: set[float] = set()
    if "," in raw:
        with_dot = raw.replace(",", ".")
        if with_dot.count(".") == 1:
            out.add(float(with_dot))
        out.add(float(raw.replace(",", "")))
    else:
        with contextlib.suppress(ValueError):
            out.add(float(raw))
    return out


def _lines_text(tokens: Sequence[OcrToken]) -> list[str]:
    lines: dict[int, list[OcrToken]] = {}
    for t in tokens:
        lines.setdefault(t.line, []).append(t)
    return [" ".join(t.text for t in sorted(ts, key=lambda t: t.word)) for ts in lines.values()]


def numbers_anywhere(tokens: Sequence[OcrToken]) -> set[float]:
    """Every number in the OCR text, under each plausible reading of its separators."""
    found: set[float] = set()
    for text in [t.text for t in tokens] + _lines_text(tokens):
        for m in re.finditer(_NUM, text):
            found |= _number_values(m.group(1))
    return found


def _same_number(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def candidate_pairs(
    tokens: Sequence[OcrToken], entity: str, image_size: tuple[int, int]
) -> set[tuple[float, str]]:
    """(value, unit) pairs of the candidates :func:`imagequant.text.candidates.extract_candidates` finds for ``entity``."""
    from imagequant.text.candidates import extract_candidates

    return {(float(c.value), c.unit) for c in extract_candidates(list(tokens), entity, image_size)}


def rules_prediction(tokens: Sequence[OcrToken], entity: str, image_size: tuple[int, int],
                     segments: Sequence[float] | None) -> str:
    """The rule baseline's answer for one row, as the predict job gives it (candidates linked to the image's
    drawn lines, no abstaining)."""
    from imagequant.core.geometry import segments_from_flat
    from imagequant.scoring.base import ScoringRow
    from imagequant.scoring.zoo import RuleScorer
    from imagequant.text.candidates import extract_candidates

    cands = extract_candidates(list(tokens), entity, image_size, segments=segments_from_flat(segments))
    return RuleScorer().predict([ScoringRow(entity, list(tokens), image_size, cands)])[0].prediction


# ---------------------------------------------------------------------------------------------------------
# Running the engine over images (pool workers)
# ---------------------------------------------------------------------------------------------------------


@dataclass
class ImageResult:
    image_file: str
    seconds: float  # CPU seconds of decode + OCR of this image (this process + its Tesseract children)
    wall: float = 0.0  # wall-clock seconds (inflated when other work shares the cores)
    size: tuple[int, int] = (0, 0)
    error: str | None = None  # error kind
    tokens: list[OcrToken] = field(default_factory=list)
    passes: list[str] = field(default_factory=list)  # the OCR passes run (a second look adds "regions", ...)
    device: str = ""  # where the engine's models ran (e.g. CPUExecutionProvider)
    segments: list[float] | None = None  # the image's line segments (imaging.line_segments); None: not found

    @property
    def second_look(self) -> bool:
        return "regions" in self.passes

    def to_json(self) -> dict[str, Any]:
        return {
            "image_file": self.image_file, "seconds": round(self.seconds, 4), "wall": round(self.wall, 4),
            "size": list(self.size), "passes": self.passes,
            "error": self.error, "tokens": [t.to_dict() for t in self.tokens], "device": self.device,
            "segments": self.segments,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageResult:
        return cls(
            image_file=data["image_file"], seconds=float(data["seconds"]), wall=float(data.get("wall", 0.0)),
            size=tuple(data["size"]), passes=list(data.get("passes", [])),
            error=data.get("error"), tokens=[OcrToken.from_dict(t) for t in data.get("tokens", [])],
            device=data.get("device", ""), segments=data.get("segments"),
        )


_WORKER: dict[str, Any] = {}


def one_core(cfg: Config) -> Config:
    """A copy of ``cfg`` whose engines use one thread each (the per-core cost is what is measured)."""
    cfg = dataclasses.replace(cfg)
    cfg.ocr = dataclasses.replace(
        cfg.ocr,
        tesseract=dataclasses.replace(cfg.ocr.tesseract, thread_limit=1),
        rapidocr=dataclasses.replace(cfg.ocr.rapidocr, threads=1),
    )
    return cfg


def _worker_init(cfg: Config, images_dir: str) -> None:
    from PIL import Image

    from imagequant.ocr.zoo import get_engine

    engine = get_engine(cfg.ocr, cfg.imaging)
    # Model loading and the first onnxruntime run are one-off costs, not per-image ones.
    warm = Image.new("RGB", (320, 96), "white")
    with contextlib.suppress(Exception):  # a failing warm-up shows again on the first real image
        engine.read(warm)
    _WORKER.update(engine=engine, cfg=cfg, images_dir=images_dir)


class _Clock:
    """CPU time of this process plus its finished children (Tesseract runs as a child process).

    With engine threads pinned to 1, CPU seconds are the cost on one core, and unlike wall time they do
    not grow when other work shares the machine.
    """

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = self._now()

    @staticmethod
    def _now() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def cpu(self) -> float:
        return self._now() - self._cpu

    def wall(self) -> float:
        return time.perf_counter() - self._wall


def _measure_one(job: tuple[str, tuple[str, ...]]) -> ImageResult:
    from imagequant.imaging import ImageError, decode_image
    from imagequant.ocr.base import OcrError
    from imagequant.scoring.second_look import lacks_candidates

    image_file, entities = job
    engine, cfg = _WORKER["engine"], _WORKER["cfg"]
    path = os.path.join(_WORKER["images_dir"], image_file)
    clock = _Clock()
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        img = decode_image(data, cfg.imaging.max_pixels)
        # as the extract job reads it: the second look where the entities asked of the image lack a candidate
        reading = engine.read_passes(img, lacks_candidates(entities, img.size))
        cpu, wall = clock.cpu(), clock.wall()
        return ImageResult(image_file, cpu, wall, img.size, None, reading.tokens, reading.passes,
                           engine.describe_device(), _segments(img))
    except FileNotFoundError:
        return ImageResult(image_file, clock.cpu(), clock.wall(), error="missing_file")
    except (ImageError, OcrError) as exc:
        return ImageResult(image_file, clock.cpu(), clock.wall(), error=exc.kind)


def _segments(img: Any) -> list[float] | None:
    from imagequant.imaging import line_segments

    try:
        return line_segments(img)
    except Exception:  # noqa: BLE001 - an image without segments scores without them, as extract records it
        return None


def add_segments(results: Sequence[ImageResult], images_dir: str | Path, max_pixels: int) -> None:
    """Finds the line segments of results read before they were recorded (older --tokens-out files)."""
    from imagequant.imaging import decode_image

    for r in results:
        path = Path(images_dir) / r.image_file
        if r.segments is None and r.error is None and path.is_file():
            r.segments = _segments(decode_image(path.read_bytes(), max_pixels))


def run_ocr(
    image_files: Sequence[str],
    images_dir: str | Path,
    cfg: Config,
    workers: int = 2,
    progress: bool = False,
    entities: Mapping[str, Sequence[str]] | None = None,
) -> list[ImageResult]:
    """OCR every image with ``workers`` processes, each timing its own images on one core. ``entities``:
    the entity names asked of each image (the second look's target; absent: any entity)."""
    cfg = one_core(cfg)
    jobs = [(f, tuple((entities or {}).get(f, ()))) for f in image_files]
    args = (cfg, str(images_dir))
    results: list[ImageResult] = []
    if workers <= 1:
        _worker_init(*args)
        it: Iterable[ImageResult] = map(_measure_one, jobs)
        pool = None
    else:
        # spawn: a fresh interpreter per worker, no onnxruntime threads inherited through fork.
        pool = mp.get_context("spawn").Pool(workers, initializer=_worker_init, initargs=args)
        it = pool.imap_unordered(_measure_one, jobs, chunksize=1)
    try:
        for i, res in enumerate(it, 1):
            results.append(res)
            if progress and (i % 25 == 0 or i == len(image_files)):
                print(f"  {i}/{len(image_files)} images", flush=True)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    order = {f: i for i, f in enumerate(image_files)}
    results.sort(key=lambda r: order[r.image_file])
    return results


# ---------------------------------------------------------------------------------------------------------
# Scoring and report
# ---------------------------------------------------------------------------------------------------------


@dataclass
class GroupStats:
    rows: int = 0
    parsed: int = 0  # rows whose label is a single value with a unit (ranges can never be matched)
    cand_hits: int = 0
    number_hits: int = 0

    @property
    def cand_recall(self) -> float:
        return self.cand_hits / self.rows if self.rows else 0.0

    @property
    def number_recall(self) -> float:
        return self.number_hits / self.rows if self.rows else 0.0


@dataclass
class EvalReport:
    engine: str
    settings: dict[str, Any]
    images: int
    errors: dict[str, int]
    seconds_median: float
    seconds_p90: float
    seconds_mean: float
    wall_median: float
    second_look_share: float  # share of the read images that got the second look
    second_look_seconds_mean: float  # mean CPU seconds of those images (the others: first_seconds_mean)
    first_seconds_mean: float
    overall: GroupStats
    per_entity: dict[str, GroupStats]
    row_hits: list[dict[str, Any]] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)  # where the OCR models ran, as the workers reported it
    rules: dict[str, Any] = field(default_factory=dict)  # challenge F1 of the rule baseline over all rows

    def to_json(self) -> dict[str, Any]:
        def stats(g: GroupStats) -> dict[str, Any]:
            return {**dataclasses.asdict(g), "cand_recall": round(g.cand_recall, 4),
                    "number_recall": round(g.number_recall, 4)}

        return {
            "engine": self.engine, "settings": self.settings, "devices": self.devices,
            "images": self.images, "errors": self.errors,
            "seconds_per_image": {"median": round(self.seconds_median, 3), "p90": round(self.seconds_p90, 3),
                                  "mean": round(self.seconds_mean, 3), "wall_median": round(self.wall_median, 3)},
            "second_look": {"share": round(self.second_look_share, 4),
                            "seconds_mean_with": round(self.second_look_seconds_mean, 3),
                            "seconds_mean_without": round(self.first_seconds_mean, 3)},
            "overall": stats(self.overall), "rules": self.rules,
            "per_entity": {k: stats(v) for k, v in sorted(self.per_entity.items())},
            "rows": self.row_hits,
        }


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..1); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def score(
    rows: Sequence[LabeledRow], results: Sequence[ImageResult], engine: str, settings: dict[str, Any]
) -> EvalReport:
    """Candidate and number-anywhere recall per entity and overall, the rule baseline's F1, per-image seconds."""
    from imagequant.core import metrics

    by_file = {r.image_file: r for r in results}
    predictions: list[str] = []
    truths: list[str] = []
    overall = GroupStats()
    per_entity: dict[str, GroupStats] = {}
    row_hits = []
    for row in rows:
        res = by_file.get(row.image_file)
        if res is None:
            continue
        g = per_entity.setdefault(row.entity, GroupStats())
        cand_hit = num_hit = False
        if row.value is not None and row.unit is not None:
            pairs = candidate_pairs(res.tokens, row.entity, res.size)
            cand_hit = any(_same_number(v, row.value) and u == row.unit for v, u in pairs)
            num_hit = any(_same_number(v, row.value) for v in numbers_anywhere(res.tokens))
        for s in (g, overall):
            s.rows += 1
            s.parsed += int(row.value is not None)
            s.cand_hits += int(cand_hit)
            s.number_hits += int(num_hit)
        predicted = rules_prediction(res.tokens, row.entity, res.size, res.segments) if res.error is None else ""
        predictions.append(predicted)
        truths.append(row.label)
        row_hits.append({"image_file": row.image_file, "entity": row.entity, "label": row.label,
                         "candidate": cand_hit, "number": num_hit, "rules": predicted})
    secs = [r.seconds for r in results if r.error is None]
    looked = [r.seconds for r in results if r.error is None and r.second_look]
    plain = [r.seconds for r in results if r.error is None and not r.second_look]
    errors: dict[str, int] = {}
    for r in results:
        if r.error:
            errors[r.error] = errors.get(r.error, 0) + 1
    return EvalReport(
        engine=engine, settings=settings, images=len(results), errors=errors,
        seconds_median=statistics.median(secs) if secs else 0.0, seconds_p90=percentile(secs, 0.9),
        seconds_mean=statistics.fmean(secs) if secs else 0.0,
        wall_median=statistics.median([r.wall for r in results if r.error is None] or [0.0]),
        second_look_share=len(looked) / len(secs) if secs else 0.0,
        second_look_seconds_mean=statistics.fmean(looked) if looked else 0.0,
        first_seconds_mean=statistics.fmean(plain) if plain else 0.0,
        overall=overall, per_entity=per_entity, row_hits=row_hits,
        devices=sorted({r.device for r in results if r.device}),
        rules={**metrics.score(predictions, truths),
               "images_without_segments": sum(r.segments is None for r in results if r.error is None)},
    )


def render_markdown(report: EvalReport) -> str:
    lines = [
        f"# OCR measurement: {report.engine}",
        "",
        f"- images: {report.images}; errors: {report.errors or 'none'}",
        f"- OCR models ran on: {', '.join(report.devices) or 'not recorded'}",
        f"- CPU seconds per image (decode + OCR, engine threads = 1, i.e. one core): median "
        f"{report.seconds_median:.2f}, p90 {report.seconds_p90:.2f}, mean {report.seconds_mean:.2f} "
        f"(wall median {report.wall_median:.2f})",
        f"- second look: {report.second_look_share:.1%} of the images (mean CPU s {report.second_look_seconds_mean:.2f} "
        f"for those, {report.first_seconds_mean:.2f} for the others)",
        f"- rules F1 (rule baseline, all {len(report.row_hits)} rows): {report.rules.get('f1', 0.0):.3f}"
        f" (images scored without line segments: {report.rules.get('images_without_segments', 0)})",
        f"- settings: `{json.dumps(report.settings, sort_keys=True)}`",
        "",
        "| entity | rows | single-value labels | candidate recall | number-anywhere recall |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, g in sorted(report.per_entity.items()):
        lines.append(f"| {name} | {g.rows} | {g.parsed} | {g.cand_recall:.3f} | {g.number_recall:.3f} |")
    o = report.overall
    lines.append(f"| **overall** | {o.rows} | {o.parsed} | **{o.cand_recall:.3f}** | **{o.number_recall:.3f}** |")
    lines.append("")
    return "\n".join(lines)


def write_report(report: EvalReport, out_md: str | Path) -> tuple[Path, Path]:
    """Writes the markdown table and a JSON file with the same stem next to it."""
    md = Path(out_md)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(render_markdown(report))
    js = md.with_suffix(".json")
    js.write_text(json.dumps(report.to_json(), indent=1))
    return md, js


def write_tokens(results: Sequence[ImageResult], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in results:
            fh.write(json.dumps(r.to_json()) + "\n")


def read_tokens(path: str | Path) -> list[ImageResult]:
    with open(path, encoding="utf-8") as fh:
        return [ImageResult.from_json(json.loads(line)) for line in fh if line.strip()]
