"""Shared helpers of the benchmark scripts: sizes from the environment, machine facts, image sets, timing
statistics, result files, worker pools for OCR, synthetic token rows and a quickly trained model.

Benchmarks are scripts, not tests: they measure and print ratios against their goals, they never assert a
timing. Each script writes ``bench/results/<name>.json`` through :meth:`Result.write`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
# Exit status of a benchmark that cannot measure on this machine (no GPU) and leaves its stored result in place.
KEPT_STORED_EXIT = 75
SHARED = REPO.parent / "shared"
REALDEV = SHARED / "realdev"
CHALLENGE = SHARED / "challenge"

if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))

from imagequant.devices import cpu_flags  # noqa: E402

# one percentile for the library and the benchmarks
from imagequant.evaluation.ocr_recall import percentile  # noqa: E402

# --- sizes and settings from the environment ---------------------------------------------------------


def env_int(name: str, default: int) -> int:
    """An integer knob (BENCH_IMAGES=...); a bad value is an error rather than a silent default."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"error: {name} must be an integer, got {raw!r}") from None


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def work_dir(name: str) -> Path:
    """A scratch folder for one benchmark (never inside the repository); BENCH_WORK moves the root."""
    root = Path(env_str("BENCH_WORK", str(Path(tempfile.gettempdir()) / "imagequant-bench")))
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- machine facts -----------------------------------------------------------------------------------


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def _command_first_line(args: list[str]) -> str | None:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else None


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# The instruction sets that decide how fast the models run here (bf16 and int8 paths; docs/ocr.md "Runtimes"):
# CPUs of one model name ("AMD EPYC") differ in them, and their figures do not compare.
MODEL_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


def cpu_features() -> list[str] | None:
    """Which of :data:`MODEL_CPU_FLAGS` the CPU has (None where /proc/cpuinfo cannot be read)."""
    flags = cpu_flags()
    return None if flags is None else [f for f in MODEL_CPU_FLAGS if f in flags]


def memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_facts() -> dict[str, Any]:
    """What the figures were measured on; the load average says whether the machine was quiet."""
    git = _command_first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_features": cpu_features(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "load_average_1_5_15": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "git_commit": git,
        "versions": {
            name: _version(name)
            for name in ("torch", "torchvision", "pyspark", "pyarrow", "petastorm", "numpy", "pandas", "pillow",
                         "pytesseract", "tesserocr", "onnxruntime", "rapidocr-onnxruntime")
        },
        "tesseract": _command_first_line(["tesseract", "--version"]),
        "java": _command_first_line(["java", "-version"]),
        "env": {k: os.environ.get(k) for k in ("OMP_THREAD_LIMIT", "PYSPARK_PYTHON") if os.environ.get(k)},
    }


# --- statistics and clocks -----------------------------------------------------------------------------


def stats(values: Sequence[float], scale: float = 1.0, digits: int = 4) -> dict[str, float]:
    """n, median, p90, mean and total of ``values`` times ``scale`` (1000 for milliseconds)."""
    vals = [v * scale for v in values]
    return {
        "n": len(vals),
        "median": round(statistics.median(vals), digits) if vals else 0.0,
        "p90": round(percentile(vals, 0.9), digits),
        "mean": round(statistics.fmean(vals), digits) if vals else 0.0,
        "total": round(sum(vals), digits),
    }


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (Tesseract runs as a child process), in
    microsecond resolution (os.times counts 10 ms clock ticks)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Clock:
    """Wall and CPU seconds since creation."""

    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = cpu_seconds()

    def wall(self) -> float:
        return time.perf_counter() - self.wall0

    def cpu(self) -> float:
        return cpu_seconds() - self.cpu0


# --- results -------------------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured figure; ``goal`` is (operator, target), operator ">=", "<=" or "==", and ``met`` is
    computed from it."""

    stage: str
    figure: str
    value: float | None
    unit: str = ""
    goal: tuple[str, float] | None = None
    note: str = ""
    digits: int = 3

    @property
    def met(self) -> bool | None:
        if self.goal is None or self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return None
        op, target = self.goal
        if op == "==":
            return math.isclose(self.value, target, rel_tol=1e-9, abs_tol=1e-12)
        return self.value >= target if op == ">=" else self.value <= target

    def display(self) -> str:
        if self.value is None:
            return "n/a"
        text = f"{self.value:.{self.digits}f}".rstrip("0").rstrip(".") if self.digits else f"{self.value:.0f}"
        return f"{text} {self.unit}".strip()

    def goal_text(self) -> str:
        return f"{self.goal[0]} {self.goal[1]:g}" if self.goal else ""

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "figure": self.figure, "value": self.value, "unit": self.unit,
                "display": self.display(), "goal": self.goal_text() or None, "met": self.met, "note": self.note}


@dataclass
class Result:
    """What one benchmark script measured; written as JSON and read back by run_all.py."""

    name: str
    title: str
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    machine: dict[str, Any] = field(default_factory=machine_facts)

    def add(self, *args: Any, **kwargs: Any) -> Figure:
        fig = Figure(*args, **kwargs)
        self.figures.append(fig)
        return fig

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "title": self.title, "status": self.status, "reason": self.reason,
            "seconds": round(time.perf_counter() - self.started, 1),
            "machine": {**self.machine, "load_average_at_end": load_average()},
            "params": self.params, "figures": [f.to_json() for f in self.figures], "details": self.details,
        }

    def write(self) -> Path:
        """Writes bench/results/<name>.json (atomically) and prints the figures."""
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, default=_json_default) + "\n")
        tmp.replace(path)
        print_figures(self)
        print(f"[bench] wrote {path.relative_to(REPO)}", flush=True)
        return path


def _json_default(obj: Any) -> Any:
    with contextlib.suppress(Exception):
        import numpy as np

        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def print_figures(result: Result) -> None:
    print(f"\n== {result.title} ({result.status}{': ' + result.reason if result.reason else ''})")
    for f in result.figures:
        met = {True: "yes", False: "NO", None: ""}[f.met]
        goal = f"  goal {f.goal_text()} -> {met}" if f.goal else ""
        note = f"  ({f.note})" if f.note else ""
        print(f"  {f.stage:<22} {f.figure:<52} {f.display():>16}{goal}{note}")
    sys.stdout.flush()


def run_script(main: Callable[[], int]) -> NoReturn:
    """A benchmark script's entry: ``-h``/``--help`` prints its description and runs nothing; any other argument
    is refused (sizes and settings come from BENCH_* environment variables, bench/README.md), exit 2; otherwise
    ``main`` runs from the repository root and its return is the exit status."""
    args = sys.argv[1:]
    script = Path(sys.argv[0]).name
    if args and args[0] in ("-h", "--help"):
        doc = (sys.modules["__main__"].__doc__ or "").strip()
        print(f"{doc}\n\n{script} takes no arguments: sizes and settings come from BENCH_* environment variables "
              "(bench/README.md).")
        sys.exit(0)
    if args:
        print(f"error: {script} takes no arguments (got {' '.join(args)}); sizes and settings come from BENCH_* "
              "environment variables (bench/README.md), and --help describes it", file=sys.stderr)
        sys.exit(2)
    os.chdir(REPO)
    sys.exit(main())


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- image sets ----------------------------------------------------------------------------------------


@dataclass
class LabelRow:
    entity: str
    label: str


@dataclass
class BenchImage:
    """One distinct image with its catalog link and the labeled rows that ask about it."""

    path: Path
    link: str
    group_id: str
    rows: list[LabelRow]

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class ImageSet:
    images: list[BenchImage]
    source: str  # "realdev" or "synthetic"

    def sizes(self) -> dict[str, Any]:
        """Median width x height of the decoded originals (header only, no pixel decoding)."""
        from PIL import Image

        dims = []
        for im in self.images:
            with Image.open(im.path) as handle:
                dims.append(handle.size)
        widths = [w for w, _ in dims]
        heights = [h for _, h in dims]
        return {
            "images": len(dims),
            "median_width": int(statistics.median(widths)) if dims else 0,
            "median_height": int(statistics.median(heights)) if dims else 0,
            "median_megapixels": round(statistics.median([w * h / 1e6 for w, h in dims]), 3) if dims else 0.0,
            "bytes_median": int(statistics.median([im.path.stat().st_size for im in self.images])) if dims else 0,
        }

    def describe(self) -> str:
        s = self.sizes()
        return (f"{s['images']} {self.source} images, median {s['median_width']}x{s['median_height']} px "
                f"({s['median_megapixels']} Mpx, {s['bytes_median'] / 1000:.0f} kB)")


def _hash_order(name: str) -> str:
    # A fixed pseudo-random order: the realdev file names sort by size code, so a prefix would be biased.
    return hashlib.sha1(f"imagequant-bench:{name}".encode()).hexdigest()


def load_image_set(n: int, seed: int = 5) -> ImageSet:
    """``n`` distinct images: real product images from ../shared/realdev when present, else synthetic
    ones generated by imagequant.synthetic (cached in the bench work folder)."""
    labels = REALDEV / "labels.csv"
    if labels.is_file() and (REALDEV / "images").is_dir() and not os.environ.get("BENCH_SYNTHETIC"):
        by_file: dict[str, BenchImage] = {}
        with labels.open(newline="", encoding="utf-8") as fh:
            for rec in csv.DictReader(fh):
                path = REALDEV / "images" / rec["image_file"]
                if not path.is_file():
                    continue
                item = by_file.setdefault(rec["image_file"], BenchImage(path, rec["image_link"], rec["group_id"], []))
                item.rows.append(LabelRow(rec["entity_name"], rec["entity_value"]))
        chosen = sorted(by_file.values(), key=lambda b: _hash_order(b.name))[:n]
        return ImageSet(chosen, "realdev")
    return synthetic_image_set(n, seed)


def cached_sample(out: Path, n: int, seed: int, **options: Any) -> Path:
    """Generates ``n`` labeled images (imagequant.synthetic.generate_sample with ``options``) into ``out``
    once; a later call with the same folder reuses them. Returns the labels CSV."""
    labels = out / "labels.csv"
    if not labels.is_file():
        from imagequant.synthetic import generate_sample

        if out.exists():
            shutil.rmtree(out)  # a generation that did not finish
        log(f"generating {n} synthetic images (seed {seed}) in {out}")
        started = time.perf_counter()
        generate_sample(out, n, seed, **options)
        log(f"generated in {time.perf_counter() - started:.0f} s")
    return labels


def synthetic_image_set(n: int, seed: int = 5) -> ImageSet:
    """``n`` generated labeled images (imagequant.synthetic), cached per (n, seed) in the work folder."""
    out = work_dir("synthetic") / f"n{n}-seed{seed}"
    labels = cached_sample(out, n, seed)
    by_link: dict[str, BenchImage] = {}
    with labels.open(newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            name = rec["image_link"].rsplit("/", 1)[-1]
            item = by_link.setdefault(rec["image_link"], BenchImage(out / "images" / name, rec["image_link"],
                                                                     rec["group_id"], []))
            item.rows.append(LabelRow(rec["entity_name"], rec["entity_value"]))
    return ImageSet(list(by_link.values())[:n], "synthetic")


def link_images(images: Sequence[BenchImage], folder: Path) -> Path:
    """A folder of symlinks named as the links' file names: --images-dir finds them there, and nothing is
    ever written into ../shared (a missing file would otherwise be downloaded into the images folder)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    from imagequant.fetch import image_file_name

    for im in images:
        (folder / image_file_name(im.link)).symlink_to(im.path.resolve())
    return folder


def write_catalog(images: Sequence[BenchImage], path: Path, labeled: bool = False) -> Path:
    """A challenge-format catalog with one row per distinct image (its first labeled entity)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        if labeled:
            writer.writerow(["image_link", "group_id", "entity_name", "entity_value"])
        else:
            writer.writerow(["index", "image_link", "group_id", "entity_name"])
        for i, im in enumerate(images):
            row = im.rows[0]
            if labeled:
                writer.writerow([im.link, im.group_id, row.entity, row.label])
            else:
                writer.writerow([i, im.link, im.group_id, row.entity])
    return path


# --- OCR in worker processes ----------------------------------------------------------------------------


@dataclass
class OcrRun:
    """One image's OCR: CPU seconds (process + Tesseract children), wall seconds, tokens or error."""

    name: str
    cpu: float
    wall: float
    size: tuple[int, int]
    tokens: list[Any]
    error: str | None = None
    # CPU seconds of each model call this image made (``set:role``), where the engine counts them (RapidOCR)
    model_cpu: dict[str, float] = field(default_factory=dict)
    passes: list[str] = field(default_factory=list)


def _model_cpu(engine: Any) -> dict[str, float]:
    counted = getattr(engine, "model_cpu_seconds", None)
    return {name: cpu for name, (_calls, cpu) in counted().items()} if counted else {}


_POOL_STATE: dict[str, Any] = {}


def _pool_init(factory: Callable[[], Any]) -> None:
    from PIL import Image

    engine = factory()
    with contextlib.suppress(Exception):  # model loading and first-call costs are not per-image costs
        engine.read(Image.new("RGB", (320, 96), "white"))
    _POOL_STATE["engine"] = engine


def _pool_one(job: tuple[str, tuple[str, ...] | None]) -> OcrRun:
    from imagequant.imaging import ImageError, decode_image
    from imagequant.ocr.base import OcrError
    from imagequant.scoring.second_look import lacks_candidates

    path, entities = job
    engine = _POOL_STATE["engine"]
    try:
        img = decode_image(Path(path).read_bytes())
    except ImageError as exc:
        return OcrRun(Path(path).name, 0.0, 0.0, (0, 0), [], exc.kind)
    # the extract job's second look: only where the entities asked of the image still lack a candidate
    wants_more = lacks_candidates(entities, img.size) if entities is not None else None
    before = _model_cpu(engine)
    clock = Clock()  # OCR only: decoding is measured as its own stage
    try:
        reading = engine.read_passes(img, wants_more)
        spent = {name: cpu - before.get(name, 0.0) for name, cpu in _model_cpu(engine).items()}
        return OcrRun(Path(path).name, clock.cpu(), clock.wall(), img.size, reading.tokens,
                      model_cpu={name: cpu for name, cpu in spent.items() if cpu > 0}, passes=reading.passes)
    except (ImageError, OcrError) as exc:
        return OcrRun(Path(path).name, clock.cpu(), clock.wall(), img.size, [], exc.kind)


def run_ocr_pool(paths: Sequence[Path], factory: Callable[[], Any], workers: int, label: str = "",
                 asked: Sequence[Sequence[str]] | None = None) -> list[OcrRun]:
    """OCR of every image in ``workers`` fresh processes (spawn), each timing its own images.

    ``factory`` builds the engine in each worker (a module-level function or functools.partial, so it
    pickles). Engine threads are pinned to 1 by the engines themselves: CPU seconds are the cost on one core.
    ``asked``: the entities the catalog asks of each image, which target the second look as in the extract job
    (None: every image is read as if it lacked everything, every configured step running).
    """
    jobs = [(str(p), tuple(asked[i]) if asked is not None else None) for i, p in enumerate(paths)]
    results: list[OcrRun] = []
    ctx = mp.get_context("spawn")
    started = time.perf_counter()
    with ctx.Pool(max(1, workers), initializer=_pool_init, initargs=(factory,)) as pool:
        for i, res in enumerate(pool.imap_unordered(_pool_one, jobs, chunksize=1), 1):
            results.append(res)
            if i % 25 == 0 or i == len(paths):
                log(f"{label} OCR {i}/{len(paths)} images ({time.perf_counter() - started:.0f} s)")
    order = {p.name: i for i, p in enumerate(paths)}
    results.sort(key=lambda r: order[r.name])
    return results


def ocr_runs_cached(paths: Sequence[Path], engine: str, overrides: Sequence[str], factory: Callable[[], Any],
                    workers: int, label: str, asked: Sequence[Sequence[str]] | None = None
                    ) -> tuple[list[OcrRun], bool]:
    """:func:`run_ocr_pool`, or the runs of an identical measurement made less than BENCH_OCR_CACHE_AGE
    seconds ago (default 3600; 0 turns reuse off): same images, engine, settings and OCR/imaging code.
    ``make bench`` measures the default engine in stages.py and reuses it as ocr_cost.py's baseline."""
    import pickle

    from imagequant.config import load_config

    cfg = load_config(overrides=[f"ocr.engine={engine}", *overrides])
    package = REPO / "imagequant"
    code = [p.stat().st_mtime for p in sorted([*(package / "ocr").glob("*.py"), package / "imaging.py"])]
    key_data = json.dumps([engine, cfg.to_dict()["ocr"], cfg.to_dict()["imaging"], code,
                           [(str(p), p.stat().st_size) for p in paths], workers,
                           [list(a) for a in asked] if asked is not None else None], default=str)
    key = hashlib.sha1(key_data.encode()).hexdigest()[:20]
    cache = work_dir("ocr-cache") / f"{key}.pkl"
    max_age = env_int("BENCH_OCR_CACHE_AGE", 3600)
    if max_age > 0 and cache.is_file() and time.time() - cache.stat().st_mtime < max_age:
        with contextlib.suppress(Exception):
            runs = pickle.loads(cache.read_bytes())
            log(f"{label}: reusing the OCR runs measured {time.time() - cache.stat().st_mtime:.0f} s ago ({cache.name})")
            return runs, True
    runs = run_ocr_pool(paths, factory, workers, label, asked)
    cache.write_bytes(pickle.dumps(runs))
    return runs, False


def make_engine(engine: str, overrides: Sequence[str] = ()) -> Any:
    """The project's OCR engine ``engine`` built from the default configuration plus ``--set`` overrides."""
    from imagequant.config import load_config
    from imagequant.ocr.zoo import get_engine

    cfg = load_config(overrides=[f"ocr.engine={engine}", *overrides])
    return get_engine(cfg.ocr, cfg.imaging)


def candidate_recall(images: Sequence[BenchImage], runs: Sequence[OcrRun]) -> dict[str, Any]:
    """Share of labeled rows whose label (value and unit) is among the candidates of the OCR tokens."""
    from imagequant.core.units import ENTITY_UNITS, parse_label
    from imagequant.text.candidates import extract_candidates

    by_name = {r.name: r for r in runs}
    rows = hits = 0
    for im in images:
        run = by_name.get(im.name)
        if run is None:
            continue
        for row in im.rows:
            if row.entity not in ENTITY_UNITS:
                continue
            rows += 1
            parsed = parse_label(row.label, row.entity)
            if parsed.kind != "value" or parsed.value is None:
                continue
            cands = extract_candidates(run.tokens, row.entity, run.size)
            if any(c.unit == parsed.unit and math.isclose(c.value, parsed.value, rel_tol=1e-6, abs_tol=1e-9)
                   for c in cands):
                hits += 1
    return {"rows": rows, "hits": hits, "recall": round(hits / rows, 4) if rows else 0.0}


# --- synthetic token rows and a quick model -------------------------------------------------------------

# (printed unit, label unit, low, high) per entity; keywords printed before the headline value.
_UNITS: dict[str, tuple[list[str], list[tuple[str, str, int, int]]]] = {
    "item_weight": (["Net", "Wt"], [("g", "gram", 50, 900), ("kg", "kilogram", 1, 20), ("oz", "ounce", 2, 32)]),
    "maximum_weight_recommendation": (["Max", "load"], [("kg", "kilogram", 5, 200), ("lbs", "pound", 10, 400)]),
    "voltage": (["Input"], [("V", "volt", 3, 240)]),
    "wattage": (["Power"], [("W", "watt", 5, 2000)]),
    "item_volume": (["Contents"], [("ml", "millilitre", 50, 1000), ("L", "litre", 1, 5)]),
    "width": (["Width"], [("cm", "centimetre", 5, 120), ("in", "inch", 2, 48)]),
    "height": (["Height"], [("cm", "centimetre", 5, 200), ("mm", "millimetre", 20, 900)]),
    "depth": (["Depth"], [("cm", "centimetre", 5, 80), ("in", "inch", 2, 30)]),
}
_FILLER = ["premium", "quality", "new", "natural", "made", "in", "USA", "batch", "lot", "best", "before",
           "ingredients", "store", "dry", "place", "pack", "of", "fresh", "classic", "original"]


def synthetic_tokens(rng: random.Random, entity: str, answerable: bool = True, filler_lines: tuple[int, int] = (3, 8)
                     ) -> tuple[list[Any], tuple[int, int], str]:
    """OCR tokens of a made-up package (headline value, a distractor quantity, ``filler_lines`` lines of 1-5
    filler words), its size and label."""
    from imagequant.synthetic import layout_token_lines

    keywords, choices = _UNITS[entity]
    printed, unit, lo, hi = rng.choice(choices)
    value = rng.randint(lo, hi)
    other_entity = rng.choice([e for e in _UNITS if e != entity])
    o_printed, _, o_lo, o_hi = rng.choice(_UNITS[other_entity][1])
    lines: list[tuple[list[str], int]] = []
    if answerable:
        lines.append(([*keywords, str(value), printed], 60))
    lines.append(([str(rng.randint(o_lo, o_hi)), o_printed], 22))
    for _ in range(rng.randint(*filler_lines)):
        lines.append(([rng.choice(_FILLER) for _ in range(rng.randint(1, 5))], rng.choice((18, 22, 26, 30))))
    rng.shuffle(lines)
    tokens, size = layout_token_lines(lines, iter(lambda: rng.randint(60, 96), None))
    label = f"{float(value)} {unit}" if answerable else f"{float(hi + rng.randint(1, 50))} {unit}"
    return tokens, size, label


def synthetic_examples(n: int, seed: int) -> list[Any]:
    """``n`` labeled RawExamples (candidates extracted by the real extractor), ~4 rows per group."""
    import numpy as np

    from imagequant.text.candidates import extract_candidates
    from imagequant.training.examples import RawExample

    rng = random.Random(seed)
    entities = list(_UNITS)
    out = []
    for i in range(n):
        entity = entities[i % len(entities)]
        tokens, size, label = synthetic_tokens(rng, entity, rng.random() > 0.1)
        cnn = np.random.default_rng([seed, i]).random(2048, dtype=np.float32)
        out.append(RawExample(i, f"g{i // 4}", entity, label, tokens, size, cnn,
                              extract_candidates(tokens, entity, size)))
    return out


def quick_model(rows: int = 600, epochs: int = 3) -> Path:
    """A model directory: BENCH_MODEL_DIR when given, else one trained on synthetic token rows (cached in
    the work folder, with its exported program; retrained when this code's checkpoint format changed)."""
    given = os.environ.get("BENCH_MODEL_DIR", "").strip()
    if given:
        return Path(given)
    from imagequant.config import load_config
    from imagequant.errors import UsageError
    from imagequant.scoring.checkpoint import load_model
    from imagequant.training.examples import split_by_group
    from imagequant.training.fit import train_model

    out = work_dir("model") / f"synthetic-{rows}-{epochs}"
    with contextlib.suppress(UsageError, OSError, RuntimeError, ValueError, KeyError, TypeError):
        # Both forms must load with the current code (the model's code may have changed since it was cached).
        load_model(out, exported=False)
        load_model(out, exported=True)
        return out
    log(f"training a model on {rows} synthetic rows ({epochs} epochs) in {out}")
    config = load_config()
    settings = dataclasses.replace(config.train, epochs=epochs, export=True)
    examples = synthetic_examples(rows, seed=3)
    train, val = split_by_group(examples, settings.val_fraction, settings.seed)
    if out.exists():
        shutil.rmtree(out)
    train_model(train, val, config.model, settings, out, progress=False)
    return out


# --- subprocesses ------------------------------------------------------------------------------------


def run_json_subprocess(args: list[str], env: dict[str, str] | None = None, timeout: float | None = None) -> dict[str, Any]:
    """Runs a Python helper that prints one JSON object as its last stdout line; stderr passes through."""
    full_env = {**os.environ, **(env or {})}
    for key, value in list(full_env.items()):
        if value == "":  # an empty value means "unset it" (e.g. OMP_THREAD_LIMIT for all-thread torch)
            del full_env[key]
    proc = subprocess.run([sys.executable, *args], stdout=subprocess.PIPE, stderr=None, text=True,
                          env=full_env, timeout=timeout, cwd=str(REPO))
    lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(args[:2])} failed with exit status {proc.returncode}: {proc.stdout[-2000:]}")
    return json.loads(lines[-1])


def spark_stage_times(spark: Any) -> list[dict[str, Any]]:
    """Completed stages of this application from the Spark UI's REST API on loopback (empty when the UI
    is disabled): name, tasks, wall seconds (submission to completion) and executor run seconds."""
    import urllib.request

    url = spark.sparkContext.uiWebUrl
    if not url:
        return []
    port = re.search(r":(\d+)/?$", url)
    base = f"http://127.0.0.1:{port.group(1)}" if port else url.rstrip("/")
    app = spark.sparkContext.applicationId
    try:
        with urllib.request.urlopen(f"{base}/api/v1/applications/{app}/stages?status=complete", timeout=10) as r:
            stages = json.loads(r.read().decode())
    except Exception as exc:  # the UI may be off or still starting; the caller reports n/a
        log(f"Spark REST API unavailable ({exc}); stage times not separated")
        return []

    def ts(text: str | None) -> float | None:
        if not text:
            return None
        return datetime.strptime(text.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()

    out = []
    for s in stages:
        start, end = ts(s.get("submissionTime")), ts(s.get("completionTime"))
        out.append({
            "stage_id": s.get("stageId"), "name": s.get("name", "")[:120], "tasks": s.get("numTasks"),
            "wall_s": round(end - start, 3) if start and end else None,
            "start": start, "end": end,
            "executor_run_s": round(s.get("executorRunTime", 0) / 1000.0, 3),
            "executor_cpu_s": round(s.get("executorCpuTime", 0) / 1e9, 3),
        })
    out.sort(key=lambda s: s["stage_id"])
    return out


# --- a loopback file server ------------------------------------------------------------------------------


class FileServer:
    """Serves the files under ``root`` over HTTP/1.1 (keep-alive) on 127.0.0.1, an ephemeral port, from a
    thread pool. Files are read from disk per request, so thousands of images cost no memory here (the
    tests' ImageServer holds every body in memory). The fetcher needs ``fetch.allow_loopback=true``."""

    def __init__(self, root: Path) -> None:
        import functools
        from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

        class Handler(SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the fetcher's pooled session expects of a CDN

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client hanging up on a keep-alive connection is not an error worth printing

        self.root = Path(root)
        self._httpd = Server(("127.0.0.1", 0), functools.partial(Handler, directory=str(self.root)))
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="FileServer", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, relative: str) -> str:
        return f"http://127.0.0.1:{self.port}/{relative.lstrip('/')}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


# --- a process tree's CPU and memory, sampled from /proc ---------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class ProcessRecord:
    """One process of a monitored tree: what it is, its CPU seconds and resident memory as last seen."""

    pid: int
    ppid: int
    start: int  # start time in clock ticks since boot: tells a reused pid from the process first seen
    comm: str
    cmdline: str
    role: str = "other"
    libraries: set[str] = field(default_factory=set)  # "onnxruntime", "openvino", "torch": which stage's code it holds
    cpu_s: float = 0.0
    rss_peak: int = 0
    pss_peak: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    maps_checked: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "role": self.role, "libraries": sorted(self.libraries), "comm": self.comm,
                "cpu_s": round(self.cpu_s, 2), "rss_peak_mib": round(self.rss_peak / 2**20, 1),
                "pss_peak_mib": round(self.pss_peak / 2**20, 1),
                "seconds_alive": round(self.last_seen - self.first_seen, 1)}


def _read_stat(pid: int) -> tuple[int, int, float, int] | None:
    """(ppid, start ticks, CPU seconds of the process itself, RSS bytes) from /proc/<pid>/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    # fields[0] is field 3 of proc(5): ppid is field 4, utime 14, stime 15, starttime 22, rss 24
    return int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / _CLK_TCK, int(fields[21]) * _PAGE


def _read_pss(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


class ProcessTreeMonitor:
    """Samples a process and every descendant every ``interval`` seconds from a thread: CPU seconds and
    peak resident memory (RSS, and PSS, which shares the pages forked workers have in common) per process,
    and the peak of the tree's total. Roles: ``python_driver`` (the root), ``jvm``, ``pyspark_daemon``,
    ``python_worker`` (forked by the daemon; its mapped libraries say whose code it holds: onnxruntime for
RapidOCR, openvino or torch for the CNN; a reused worker may hold both stages'), ``other``.

    A process's CPU time is read while it runs, so up to one interval of it is missed when it exits
    between samples; a process that lives less than one interval may be missed whole (the Spark launcher
    scripts). A process stays in the tree once seen, even if it is re-parented when its parent exits first.
    PSS is read every ``pss_interval`` seconds only: the kernel walks a process's page tables for it (~17 ms
    for a worker holding torch), which every half second would take a tenth of a core from the job.
    """

    def __init__(self, root_pid: int, interval: float = 0.5, pss_interval: float = 5.0) -> None:
        self.root = root_pid
        self.interval = interval
        self.pss_interval = pss_interval
        self.sampler_cpu_s = 0.0  # the sampling's own cost (it shares the machine with the job)
        self._pss_at = -math.inf
        self.records: dict[tuple[int, int], ProcessRecord] = {}
        self.samples = 0
        self.peak_rss_total = 0
        self.peak_pss_total = 0
        self.timeline: list[tuple[float, int, int]] = []  # (seconds, RSS total, PSS total), every ~5 s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ProcessTreeMonitor", daemon=True)
        self._t0 = time.perf_counter()
        self._machine0: dict[str, float] = {}
        self._machine1: dict[str, float] = {}

    def __enter__(self) -> ProcessTreeMonitor:
        self._machine0 = machine_cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._machine1 = machine_cpu()

    def _run(self) -> None:
        last_timeline = -math.inf
        while True:
            self.sample()
            now = time.perf_counter() - self._t0
            if now - last_timeline >= 5.0:
                self.timeline.append((round(now, 1), self._rss_now, self._pss_now))
                last_timeline = now
            if self._stop.wait(self.interval):
                self.sample()  # the last state before the caller reads the figures
                return

    def sample(self) -> None:
        cpu0 = time.thread_time()
        try:
            self._sample()
        finally:
            self.sampler_cpu_s += time.thread_time() - cpu0

    def _sample(self) -> None:
        stats: dict[int, tuple[int, int, float, int]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                stat = _read_stat(int(entry.name))
                if stat is not None:
                    stats[int(entry.name)] = stat
        known = {pid for pid, start in self.records if pid in stats and stats[pid][1] == start}
        tree = {self.root} | known
        children: dict[int, list[int]] = {}
        for pid, (ppid, _start, _cpu, _rss) in stats.items():
            children.setdefault(ppid, []).append(pid)
        todo = list(tree)
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in tree:
                    tree.add(child)
                    todo.append(child)
        now = time.perf_counter() - self._t0
        with_pss = now - self._pss_at >= self.pss_interval
        if with_pss:
            self._pss_at = now
        rss_total = pss_total = 0
        # Oldest first: a parent is classified before the children it forked (a worker is known by its parent).
        for pid in sorted((p for p in tree if p in stats), key=lambda p: stats[p][1]):
            ppid, start, cpu, rss = stats[pid]
            rec = self.records.get((pid, start))
            if rec is None:
                rec = self._new_record(pid, ppid, start, now)
                if rec is None:
                    continue
                self.records[(pid, start)] = rec
            elif rec.role == "other":
                self._classify(rec)
            pss = _read_pss(pid) if with_pss else 0
            rec.cpu_s = max(rec.cpu_s, cpu)
            rec.rss_peak = max(rec.rss_peak, rss)
            rec.pss_peak = max(rec.pss_peak, pss)
            rec.last_seen = now
            rss_total += rss
            pss_total += pss
            # A reused worker may run the other stage's function later: look again until it holds both.
            if rec.role == "python_worker" and now - rec.maps_checked >= 3.0 and len(rec.libraries) < 2:
                rec.libraries |= _stage_libraries(pid)
                rec.maps_checked = now
        self._rss_now = rss_total
        if with_pss:
            self._pss_now = pss_total
        self.peak_rss_total = max(self.peak_rss_total, rss_total)
        self.peak_pss_total = max(self.peak_pss_total, pss_total)
        self.samples += 1

    def _new_record(self, pid: int, ppid: int, start: int, now: float) -> ProcessRecord | None:
        rec = ProcessRecord(pid, ppid, start, "", "", first_seen=now)
        return rec if self._classify(rec) else None

    def _classify(self, rec: ProcessRecord) -> bool:
        """Reads the command and sets the role; again whenever the command changes (spark-submit is a shell
        script that execs java, so a pid first seen as ``bash`` becomes the JVM). False when it is gone."""
        try:
            comm = Path(f"/proc/{rec.pid}/comm").read_text().strip()
            if comm == rec.comm:
                return True
            cmdline = Path(f"/proc/{rec.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        rec.comm, rec.cmdline = comm, cmdline.strip()[:300]
        parent = next((r for r in self.records.values() if r.pid == rec.ppid), None)
        if rec.pid == self.root:
            rec.role = "python_driver"
        elif comm == "java":
            rec.role = "jvm"
        elif "pyspark.daemon" in rec.cmdline or "pyspark.worker" in rec.cmdline:
            # The daemon is started by the JVM (its command names the worker module too); workers are forks of it.
            forked = parent is not None and parent.role in ("pyspark_daemon", "python_worker")
            rec.role = "python_worker" if forked else "pyspark_daemon"
        else:
            rec.role = "other"
        return True

    def report(self) -> dict[str, Any]:
        """Per role: processes, CPU seconds, the largest per-process RSS/PSS peak; the tree's peaks."""
        roles: dict[str, dict[str, Any]] = {}
        for rec in self.records.values():
            r = roles.setdefault(rec.role, {"processes": 0, "cpu_s": 0.0, "rss_peak_max_mib": 0.0,
                                            "pss_peak_max_mib": 0.0, "rss_peaks_mib": []})
            r["processes"] += 1
            r["cpu_s"] = round(r["cpu_s"] + rec.cpu_s, 2)
            r["rss_peak_max_mib"] = max(r["rss_peak_max_mib"], round(rec.rss_peak / 2**20, 1))
            r["pss_peak_max_mib"] = max(r["pss_peak_max_mib"], round(rec.pss_peak / 2**20, 1))
            r["rss_peaks_mib"].append(round(rec.rss_peak / 2**20, 1))
        machine = {k: round(self._machine1.get(k, 0.0) - self._machine0.get(k, 0.0), 2) for k in self._machine0}
        return {
            "samples": self.samples, "interval_s": self.interval, "pss_interval_s": self.pss_interval,
            "sampler_cpu_s": round(self.sampler_cpu_s, 2),
            "cpu_s": round(sum(r.cpu_s for r in self.records.values()), 2),
            # Every process on the machine over the same span (busy and steal core-seconds, and capacity):
            # the tree's CPU against it says how much else was running.
            "machine_cpu_s": machine,
            "peak_rss_total_mib": round(self.peak_rss_total / 2**20, 1),
            "peak_pss_total_mib": round(self.peak_pss_total / 2**20, 1),
            "roles": roles,
            "processes": [r.to_json() for r in sorted(self.records.values(), key=lambda r: r.first_seen)],
            "timeline_s_rss_pss_mib": [(t, round(a / 2**20), round(b / 2**20)) for t, a, b in self.timeline],
        }

    _rss_now = 0
    _pss_now = 0


def machine_cpu() -> dict[str, float]:
    """Core-seconds since boot from /proc/stat: busy (user, nice, system, irq, softirq), steal (taken by the
    hypervisor for other guests) and all (busy, steal, idle and iowait)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        values = [int(v) / _CLK_TCK for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        user, nice, system, idle, iowait, irq, softirq, steal = values
        busy = user + nice + system + irq + softirq
        return {"busy": busy, "steal": steal, "all": busy + steal + idle + iowait}
    return {}


def _stage_libraries(pid: int) -> set[str]:
    """Which stage's native code a Python worker has mapped: onnxruntime (RapidOCR), openvino (the CNN on a CPU,
    or RapidOCR with ocr.rapidocr.runtime=openvino) and/or torch (the CNN with cnn.cpu_runtime=torch)."""
    found: set[str] = set()
    with contextlib.suppress(OSError):
        maps = Path(f"/proc/{pid}/maps").read_text()
        if "onnxruntime" in maps:
            found.add("onnxruntime")
        if "libopenvino" in maps:
            found.add("openvino")
        if "libtorch" in maps:
            found.add("torch")
    return found


def timed_runs(run: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    """Wall seconds of each of ``repeats`` calls of ``run``, and the last call's result (None for none)."""
    seconds, last = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        last = run()
        seconds.append(time.perf_counter() - t0)
    return seconds, last


def udf_mode() -> str:
    """How a GPU benchmark runs its Spark function: spark (pyspark and Java here), worker (pyspark's Python
    package only, as on the lent GPU machines), or none; BENCH_GPU_UDF_MODE forces one."""
    forced = os.environ.get("BENCH_GPU_UDF_MODE", "").strip()
    if forced:
        return forced
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "none"
    return "spark" if shutil.which("java") or os.environ.get("JAVA_HOME") else "worker"


def stored_gpu_result(name: str) -> str:
    """'<date> on <device>' of the GPU measurement in bench/results/<name>.json, or '' when there is none."""
    try:
        stored = json.loads((RESULTS / f"{name}.json").read_text())
    except (OSError, ValueError):
        return ""
    if stored.get("status") != "ok" or not stored.get("figures"):
        return ""
    return f"{stored.get('machine', {}).get('date', '?')} on {stored.get('params', {}).get('device', '?')}"
