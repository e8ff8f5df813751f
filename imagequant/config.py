"""One typed model of every setting, loaded from YAML files plus ``--set key=value`` overrides.

Every knob lives in ``conf/default.yaml`` with a comment; ``local.yaml`` and ``cluster.yaml`` override
parts of it. Unknown keys and values of the wrong type are rejected with the full dotted key, so a typo
never silently falls back to a default.

A package may declare a section of its own (:func:`register_section`) and the values a key may take
(:func:`register_choice`): the OCR engines' ``ocr.rapidocr.*`` and ``ocr.tesseract.*`` and the
``ocr.engine`` names come from :mod:`imagequant.ocr.zoo` that way, so this module imports nothing from the
OCR package (whose engine modules import it).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imagequant.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
DEFAULT_CONF = CONF_DIR / "default.yaml"


@dataclass
class SparkConfig:
    master: str | None = None
    app_name: str = "imagequant"
    image_partitions_per_core: int = 8
    progress_interval_s: float = 60.0
    conf: dict[str, str] = field(default_factory=dict)


@dataclass
class FetchConfig:
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 20.0
    max_retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 60.0
    max_bytes: int = 20_000_000
    max_redirects: int = 5
    pool_size: int = 16
    per_host_concurrency: int = 8
    user_agent: str = "ImageQuant/0.1 (+catalog image fetcher)"
    allow_loopback: bool = False
    allow_private: bool = False
    allowed_hosts: list[str] = field(default_factory=list)
    allowed_schemes: list[str] = field(default_factory=lambda: ["http", "https"])


# Field metadata of a setting that does not decide what an image reads as (it changes speed, memory or where the
# work runs, or the reader's name already says it): left out of the reader's settings that the store records
# with each image (imagequant.ocr.zoo.reader_name), so changing it does not make the store's readings "made
# otherwise". Every other setting of ocr, its engine sections and imaging is a reading setting.
NOT_A_READING_SETTING: Mapping[str, Any] = types.MappingProxyType({"reading": False})


def _not_reading(default: Any) -> Any:
    return field(default=default, metadata=NOT_A_READING_SETTING)


@dataclass
class ImagingConfig:
    max_pixels: int = _not_reading(60_000_000)  # which images are refused, not how they read
    ocr_min_side: int = 1000
    ocr_max_side: int = 2400
    ocr_max_upscale: float = 3.0
    cnn_size: int = _not_reading(224)  # the CNN's crop: the images table's cnn_weights records it


@dataclass
class OcrConfig:
    engine: str = _not_reading("rapidocr")
    # auto | cpu | cuda: where onnxruntime runs the OCR models (imagequant/devices.py)
    device: str = _not_reading("auto")
    timeout_s: float = _not_reading(60.0)  # CPU seconds of one image's reading (imagequant/ocr/base.py)
    # the wall-clock backstop of a reading, in multiples of timeout_s
    wall_timeout_factor: float = _not_reading(4.0)
    min_confidence: float = 0.0
    rotated_pass: bool = True
    rotated_angles: list[int] = field(default_factory=lambda: [90, 270])
    second_pass: bool = True
    second_pass_targeted: bool = True
    second_pass_detail: bool = True
    second_pass_detail_max_side: int = 1300
    second_pass_rotated: bool = True
    second_pass_max_regions: int = 4
    second_pass_text_px: int = 48
    split_letter_digit: bool = True
    # Each engine's own section (ocr.rapidocr, ocr.tesseract, ...) is a field too, added by register_section
    # when imagequant.ocr.zoo is imported: the engines declare their settings beside their code.


# cnn.cpu_precision: f32 | bf16 | auto (bf16 where the CPU computes it natively; imagequant/cnn.py)
CPU_PRECISIONS = ("f32", "bf16", "auto")
# cnn.cpu_runtime: what runs ResNet-50 on a CPU worker (imagequant/cnn_runtime.py)
CPU_RUNTIMES = ("openvino", "torch")


@dataclass
class CnnConfig:
    enabled: bool = True
    weights: str = "random"
    seed: int = 0
    batch_size: int = 32
    device: str = "auto"
    torch_threads: int = 1
    cpu_precision: str = "auto"
    cpu_runtime: str = "openvino"
    separate_stage: bool = False
    stage_partitions: int = 1


@dataclass
class StoreConfig:
    compression: str = "zstd"
    rows_per_file: int = 50_000


@dataclass
class ModelConfig:
    kind: str = "hybrid"
    embed_dim: int = 48
    entity_dim: int = 16
    hidden_dim: int = 96
    cnn_proj_dim: int = 32
    max_tokens: int = 160
    max_candidates: int = 48
    mlp_dim: int = 128
    dropout: float = 0.1


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 6
    val_fraction: float = 0.2
    seed: int = 7
    loader: str = "petastorm"
    export: bool = True
    vocab_min_count: int = 2
    vocab_max_size: int = 4000
    grad_clip: float = 1.0
    unanswerable_weight: float = 1.0
    min_gain: float = 0.01
    min_gain_z: float = 2.0
    scorer: str = "network"  # which scorer the model directory holds: a trained network, or the rules
    confidence: bool = True  # learn the calibrated P(right) of the scorer's answers
    confidence_folds: int = 5  # group K-fold of the out-of-fold predictions it is fitted on
    confidence_entity_rows: int = 500  # an entity gets its own calibration from this many answered rows
    confidence_repeats: int = 5  # repeats of the outer group K-fold its figures and thresholds are pooled over


@dataclass
class PredictConfig:
    use_exported: bool = True
    min_score: float | None = None  # rows scoring below are left empty; None: the scorer's own threshold
    min_confidence: float | None = None  # rows whose P(right) is below are left empty (status low_confidence)
    target_precision: float | None = None  # ... the minimum confidence the model's out-of-fold table gives this


@dataclass
class Config:
    spark: SparkConfig = field(default_factory=SparkConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    imaging: ImagingConfig = field(default_factory=ImagingConfig)
    ocr: OcrConfig = field(default_factory=OcrConfig)
    cnn: CnnConfig = field(default_factory=CnnConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> Config:
        """Checks that cross fields or value ranges; raises ConfigError naming the key."""
        problems = self._range_checks()
        if problems:
            raise ConfigError(problems[0])
        checks: list[tuple[bool, str]] = [
            (all(a in (90, 180, 270) for a in self.ocr.rotated_angles), "ocr.rotated_angles must be 90, 180 or 270"),
            (self.cnn.device in ("auto", "cpu", "cuda"), "cnn.device must be auto, cpu or cuda"),
            (self.cnn.cpu_precision in CPU_PRECISIONS,
             f"cnn.cpu_precision must be f32, bf16 or auto, got {self.cnn.cpu_precision!r}"),
            (self.cnn.cpu_runtime in CPU_RUNTIMES,
             f"cnn.cpu_runtime must be openvino or torch, got {self.cnn.cpu_runtime!r}"),
            (self.ocr.device in ("auto", "cpu", "cuda"), f"ocr.device must be auto, cpu or cuda, got {self.ocr.device!r}"),
            (0.0 < self.train.val_fraction < 1.0, "train.val_fraction must be between 0 and 1"),
            (self.train.loader in ("petastorm", "pyarrow"), "train.loader must be petastorm or pyarrow"),
            (self.train.scorer in ("network", "rules"), f"train.scorer must be network or rules, got {self.train.scorer!r}"),
            (self.predict.min_confidence is None or self.predict.target_precision is None,
             "predict.min_confidence and predict.target_precision cannot both be set"),
            (self.model.kind in ("hybrid", "no_lstm", "no_cnn"), "model.kind must be hybrid, no_lstm or no_cnn"),
            (self.store.compression in ("zstd", "snappy", "gzip", "none"), "store.compression must be zstd, snappy, gzip or none"),
            # What SparkSubmit accepts; the JVM would otherwise exit before Python learns why.
            (not self.spark.master or self.spark.master == "yarn"
             or self.spark.master.startswith(("spark://", "k8s://"))
             # local[N] (N >= 1), local[*], each with an optional ",maxFailures"
             or re.fullmatch(r"local(\[(\*|[1-9][0-9]*)(\s*,\s*[0-9]+)?\])?|local-cluster\[[^\]]+\]",
                             self.spark.master) is not None,
             f"spark.master must be local, local[N] (N at least 1), local[*], spark://HOST:PORT, yarn or k8s://URL, "
             f"got {self.spark.master!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        problem = next(_registered_problems(self), None)  # lazily: a later check may look for model files
        if problem:
            raise ConfigError(problem)
        check_spark_settings(self.spark.conf)
        from imagequant.worker_memory import PYSPARK_MEMORY_KEY, check_worker_memory

        check_worker_memory(self.spark.conf.get(PYSPARK_MEMORY_KEY), self.cnn)
        return self

    def _range_checks(self) -> list[str]:
        """Every numeric setting that cannot work: zero or negative sizes and counts, negative, NaN or
        infinite times, scores outside their scale (a registered section checks its own)."""
        f, im, ocr, cnn, m, t = self.fetch, self.imaging, self.ocr, self.cnn, self.model, self.train
        c = Checks()
        c.at_least("spark.image_partitions_per_core", self.spark.image_partitions_per_core, 1)
        c.seconds("spark.progress_interval_s", self.spark.progress_interval_s, zero=True)
        c.seconds("fetch.connect_timeout_s", f.connect_timeout_s)
        c.seconds("fetch.read_timeout_s", f.read_timeout_s)
        c.at_least("fetch.max_retries", f.max_retries, 0)
        c.seconds("fetch.backoff_s", f.backoff_s, zero=True)
        c.seconds("fetch.max_backoff_s", f.max_backoff_s, zero=True)
        c.seconds("fetch.max_retry_after_s", f.max_retry_after_s, zero=True)
        c.positive("fetch.max_bytes", f.max_bytes)
        c.at_least("fetch.max_redirects", f.max_redirects, 0)
        c.at_least("fetch.pool_size", f.pool_size, 1)
        c.at_least("fetch.per_host_concurrency", f.per_host_concurrency, 1)
        c.that(bool(f.user_agent) and f.user_agent.isprintable(),
               "fetch.user_agent must be non-empty printable text (no line breaks)")
        c.that(bool(f.allowed_schemes) and all(x.lower() in ("http", "https") for x in f.allowed_schemes),
               f"fetch.allowed_schemes may only hold http and https, got {f.allowed_schemes!r}")
        c.positive("imaging.max_pixels", im.max_pixels)
        c.positive("imaging.ocr_min_side", im.ocr_min_side)
        c.positive("imaging.ocr_max_side", im.ocr_max_side)
        c.that(im.ocr_min_side <= im.ocr_max_side,
               f"imaging.ocr_min_side ({im.ocr_min_side}) must not exceed imaging.ocr_max_side ({im.ocr_max_side})")
        c.positive("imaging.cnn_size", im.cnn_size)
        resize_to = round(im.cnn_size * 256 / 224) if im.cnn_size > 0 else 0
        c.that(resize_to * resize_to <= im.max_pixels,
               f"imaging.cnn_size {im.cnn_size} needs {resize_to}x{resize_to} pixels, over imaging.max_pixels")
        c.seconds("ocr.timeout_s", ocr.timeout_s)
        c.at_least("ocr.wall_timeout_factor", ocr.wall_timeout_factor, 1)
        wall = ocr.timeout_s * ocr.wall_timeout_factor
        c.that(not _finite(wall) or wall <= MAX_SECONDS,
               f"ocr.timeout_s x ocr.wall_timeout_factor (a reading's wall-clock backstop) must be at most "
               f"{MAX_SECONDS:g} seconds (a week), got {wall:g}")
        c.at_least("ocr.second_pass_max_regions", ocr.second_pass_max_regions, 0)
        c.positive("ocr.second_pass_text_px", ocr.second_pass_text_px)
        c.at_least("ocr.second_pass_detail_max_side", ocr.second_pass_detail_max_side, 0)
        c.at_least("imaging.ocr_max_upscale", im.ocr_max_upscale, 1)
        c.at_least("cnn.batch_size", cnn.batch_size, 1)
        c.at_least("train.confidence_folds", t.confidence_folds, 2)
        c.at_least("train.confidence_entity_rows", t.confidence_entity_rows, 1)
        c.at_least("train.confidence_repeats", t.confidence_repeats, 1)
        for key, value in (("predict.min_confidence", self.predict.min_confidence),
                           ("predict.target_precision", self.predict.target_precision)):
            if value is not None:
                c.between(key, value, 0, 1)
        c.between("ocr.min_confidence", ocr.min_confidence, 0, 100)
        c.at_least("cnn.seed", cnn.seed, 0)
        c.that(cnn.seed < 2**32, f"cnn.seed must be below 2**32, got {cnn.seed}")
        c.at_least("cnn.torch_threads", cnn.torch_threads, 1)
        c.at_least("cnn.stage_partitions", cnn.stage_partitions, 1)
        c.at_least("store.rows_per_file", self.store.rows_per_file, 1)
        for key in ("embed_dim", "entity_dim", "hidden_dim", "cnn_proj_dim", "max_tokens", "max_candidates", "mlp_dim"):
            c.at_least(f"model.{key}", getattr(m, key), 1)
        c.that(_finite(m.dropout) and 0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout!r}")
        c.at_least("train.epochs", t.epochs, 1)
        c.at_least("train.batch_size", t.batch_size, 1)
        c.positive("train.learning_rate", t.learning_rate)
        c.at_least("train.weight_decay", t.weight_decay, 0)
        c.at_least("train.patience", t.patience, 0)
        c.at_least("train.seed", t.seed, 0)
        c.at_least("train.vocab_min_count", t.vocab_min_count, 1)
        c.at_least("train.vocab_max_size", t.vocab_max_size, 1)
        c.positive("train.grad_clip", t.grad_clip)
        c.at_least("train.unanswerable_weight", t.unanswerable_weight, 0)
        c.that(_finite(t.min_gain), f"train.min_gain must be a finite number, got {t.min_gain!r}")
        c.at_least("train.min_gain_z", t.min_gain_z, 0)
        min_score = self.predict.min_score
        c.that(min_score is None or (_finite(min_score) and 0.0 <= min_score <= 1.0),
               f"predict.min_score must be between 0 and 1 or null, got {min_score!r}")
        return c.problems


MAX_SECONDS = 7 * 24 * 3600.0  # the longest time setting taken


class Checks:
    """Collects the problems among settings, each message naming its full dotted key; config.py and the
    sections other packages register (:func:`register_section`) word them alike."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def that(self, ok: bool, message: str) -> None:
        if not ok:
            self.problems.append(message)

    def positive(self, key: str, value: float) -> None:
        self.that(_finite(value) and value > 0, f"{key} must be a positive number, got {value!r}")

    def at_least(self, key: str, value: float, low: float) -> None:
        self.that(_finite(value) and value >= low, f"{key} must be >= {low:g}, got {value!r}")

    def between(self, key: str, value: float, low: float, high: float) -> None:
        self.that(_finite(value) and low <= value <= high, f"{key} must be between {low:g} and {high:g}, got {value!r}")

    def seconds(self, key: str, value: float, *, zero: bool = False) -> None:
        """A time: positive (or zero where ``zero``) and at most a week, past which the clocks and sockets it
        reaches overflow (``socket.settimeout(1e300)`` raises) and no job means it."""
        low = "0 or more" if zero else "more than 0"
        self.that(_finite(value) and (value >= 0 if zero else value > 0) and value <= MAX_SECONDS,
                  f"{key} must be a number of seconds, {low} and at most {MAX_SECONDS:g} (a week), got {value!r}")


# A section's checks: (its settings, its dotted key e.g. "ocr.rapidocr", whether the configuration uses it)
# -> the problems found, each naming its full key; it may raise ConfigError itself.
SectionCheck = Callable[[Any, str, bool], Iterable[str]]


@dataclass(frozen=True)
class Section:
    """A group of settings another package declares, e.g. one OCR engine's ``ocr.rapidocr.*``."""

    parent: str  # the dotted key of the group holding it, e.g. "ocr"
    name: str
    cls: type  # a dataclass whose every field has a default
    check: SectionCheck | None = None


# Registered by the packages that own them (imagequant.ocr.zoo on import): config.py imports none of them,
# so they can import config.py without a cycle.
_SECTIONS: dict[tuple[str, str], Section] = {}
# "ocr.engine" -> {engine name: the sections beside ocr.engine it reads}
_CHOICES: dict[str, dict[str, tuple[str, ...]]] = {}
# The fields each group declares itself, before any section was added to it.
_DECLARED: dict[type, tuple[dataclasses.Field[Any], ...]] = {}


def register_section(parent: str, name: str, cls: type, check: SectionCheck | None = None) -> None:
    """Makes ``cls`` the settings of ``<parent>.<name>``: a field of the group ``parent`` (so YAML, ``--set``,
    attribute access, ``to_dict`` and pickling treat it as any other setting), checked by ``check`` on every
    :func:`load_config`. Registering a name again replaces the section."""
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"the settings of {parent}.{name} must be a dataclass, got {cls!r}")
    group = _group_class(parent)
    declared = _DECLARED.setdefault(group, dataclasses.fields(group))
    if any(f.name == name for f in declared):
        raise ValueError(f"{parent}.{name} is a setting of config.py itself, not a section to register")
    _SECTIONS[(parent, name)] = Section(parent, name, cls, check)
    _rebuild_group(group, parent)
    _SHIPPED.clear()


def unregister_section(parent: str, name: str) -> None:
    """Removes a section :func:`register_section` added (a test's made-up engine, say)."""
    if _SECTIONS.pop((parent, name), None) is not None:
        _rebuild_group(_group_class(parent), parent)
        _SHIPPED.clear()


def register_choice(key: str, choices: Mapping[str, Sequence[str]]) -> None:
    """``key`` (e.g. ``ocr.engine``) must be one of ``choices``; each choice names the sections beside the key
    that it reads, which are checked as in use (e.g. for installed model files) only when it is chosen."""
    _CHOICES[key] = {value: tuple(reads) for value, reads in choices.items()}


def registered_sections() -> list[Section]:
    return list(_SECTIONS.values())


def _group_class(parent: str) -> type:
    """The dataclass of the group at dotted key ``parent`` (``ocr`` -> OcrConfig)."""
    cls: type = Config
    for part in parent.split("."):
        hint = typing.get_type_hints(cls).get(part)
        if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
            raise ValueError(f"no settings group {parent!r} to register a section in")
        cls = hint
    return cls


def _rebuild_group(group: type, parent: str) -> None:
    """Gives ``group`` its declared fields plus one per registered section, in place: modules (and pickles)
    hold the class itself, so it is the same class whatever registers when. The methods come from an equal
    dataclass built afresh, the way @dataclass writes them (config.py's groups are plain, mutable ones)."""
    declared = _DECLARED[group]
    spec: list[tuple[str, Any, Any]] = [(f.name, f.type, _copy_field(f)) for f in declared]
    spec += [(s.name, s.cls, field(default_factory=s.cls)) for s in _SECTIONS.values() if s.parent == parent]
    namespace = {"__post_init__": group.__post_init__} if hasattr(group, "__post_init__") else {}
    model = dataclasses.make_dataclass(group.__name__, spec, namespace=namespace)
    for attr in ("__init__", "__repr__", "__eq__", "__match_args__", "__dataclass_fields__", "__annotations__"):
        setattr(group, attr, model.__dict__[attr])


def _copy_field(f: dataclasses.Field[Any]) -> Any:
    return field(default=f.default, default_factory=f.default_factory, init=f.init, repr=f.repr, hash=f.hash,
                 compare=f.compare, metadata=f.metadata, kw_only=f.kw_only)


def _setting(config: Config, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _registered_problems(config: Config) -> Iterator[str]:
    """The registered choices' problems, then the sections' (a section is in use where a choice beside it
    reads it, e.g. ``ocr.engine=both`` reads ocr.rapidocr and ocr.tesseract)."""
    reads: dict[str, set[str]] = {}  # group -> the sections its chosen values read
    for key, choices in _CHOICES.items():
        value = _setting(config, key)
        if value not in choices:
            yield f"{key} must be one of {', '.join(choices)}"
        reads.setdefault(key.rpartition(".")[0], set()).update(choices.get(value, ()))
    for section in _SECTIONS.values():
        if section.check is not None:
            # a group without a registered choice uses all its sections
            in_use = section.parent not in reads or section.name in reads[section.parent]
            key = f"{section.parent}.{section.name}"
            yield from section.check(_setting(config, key), key, in_use)


# Sizes Spark parses with JavaUtils.byteStringAs ("512m", "2g", "1024"). Checked while the configuration
# loads, so submit_conf.py (which hands spark.conf to spark-submit) refuses them too: spark-submit's JVM
# would otherwise refuse them before Python starts, with a Java stack trace and exit 1.
_SIZE_KEY = re.compile(r"(\.memory|\.memoryOverhead|\.maxResultSize|\.offHeap\.size|\.maxSize(InFlight)?"
                       r"|\.buffer(\.max)?|\.maxPartitionBytes|\.autoBroadcastJoinThreshold)$")
# spark-submit refuses a zero size for these ("Executor memory must be a positive number").
_POSITIVE_SIZE_KEYS = frozenset({"spark.executor.memory", "spark.driver.memory"})
_BYTE_STRING = re.compile(r"([0-9]+)(b|k|kb|m|mb|g|gb|t|tb|p|pb)?")
_INTEGER = re.compile(r"[+-]?[0-9]+")
# Whole-number settings and the values Spark accepts for them.
_INT_KEYS: tuple[tuple[re.Pattern[str], str, int], ...] = (
    (re.compile(r"(\.cores|\.cores\.max|\.cpus|\.partitions|\.parallelism|\.maxFailures)$"), "a positive whole number", 1),
    (re.compile(r"\.instances$"), "a whole number >= 0", 0),
    (re.compile(r"\.maxRecordsPerBatch$"), "a whole number", -(2**31)),
)


def check_spark_settings(settings: Mapping[str, str]) -> None:
    """ConfigError naming the first setting whose value the JVM would refuse at start-up, for the kinds that
    can be told without it: sizes (``spark.executor.memory=lots``) and counts (``...partitions=-1``)."""
    for key, value in settings.items():
        text = str(value).strip().lower()
        if _SIZE_KEY.search(key):
            size = _BYTE_STRING.fullmatch(text)
            if not (size or (key.endswith("Threshold") and text == "-1")):
                raise ConfigError(f"spark.conf.{key}={value!r} is not a size Spark can read (e.g. 512m, 4g)")
            if key in _POSITIVE_SIZE_KEYS and size and int(size.group(1)) == 0:
                raise ConfigError(f"spark.conf.{key}={value!r} must be a positive size (e.g. 512m, 4g)")
        for pattern, wanted, low in _INT_KEYS:
            if pattern.search(key) and not (_INTEGER.fullmatch(text) and low <= int(text) < 2**31):
                raise ConfigError(f"spark.conf.{key}={value!r} must be {wanted}")


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Converts a YAML value to the annotated type, or raises ConfigError naming the key."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return _build(annotation, value, key + ".")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return {str(k): ("true" if v is True else "false" if v is False else str(v)) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, args[0], key) for v in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):
            value = _decimal_number(value, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    return value


def _decimal_number(text: str, key: str) -> float | str:
    """A number YAML 1.1 leaves a string (``1e3``, ``1.0e3``: its floats need a dot and a signed exponent) read
    as Python reads it; a string that is no number is returned for the caller's message."""
    try:
        number = float(text.strip())
    except ValueError:
        return text
    if not math.isfinite(number):
        raise ConfigError(f"{key} must be a finite number, got {text!r}")
    return number


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown setting {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "conf":
            merged[key] = _merge(merged[key], value)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    except ValueError as exc:  # e.g. a path with a NUL byte
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {path} is not valid YAML: {_yaml_problem(exc)}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"configuration file {path} must hold a mapping at the top level")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's message on one line: the problem, where it was found, and while parsing what."""
    if not isinstance(exc, yaml.MarkedYAMLError) or not exc.problem:
        return " ".join(str(exc).split())
    mark = exc.problem_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = f" ({exc.context})" if exc.context else ""
    return f"{exc.problem}{where}{context}"


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parses ``a.b.c=value``; the value is read as a YAML scalar (``true``, ``3``, ``null``, text)."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    # Spark keys contain dots themselves: spark.conf.<spark key> keeps the rest whole.
    if key.startswith("spark.conf."):
        path = ["spark", "conf", key[len("spark.conf."):]]
    else:
        path = key.split(".")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


_SHIPPED: list[Config] = []  # shipped_config's, built once per process and set of sections


def shipped_config() -> Config:
    """conf/default.yaml's settings as shipped, built without the checks that look at this machine (an installed
    model file, say): what a user's settings are compared with, on a worker too. Shared: read it, never change it."""
    if not _SHIPPED:
        _SHIPPED.append(_build(Config, _read_yaml(DEFAULT_CONF) if DEFAULT_CONF.exists() else {}))
    return _SHIPPED[0]


def load_config(paths: list[str | Path] | None = None, overrides: list[str] | None = None) -> Config:
    """Loads conf/default.yaml, then each file in ``paths``, then ``--set`` overrides, and validates."""
    data = _read_yaml(DEFAULT_CONF) if DEFAULT_CONF.exists() else {}
    for path in paths or []:
        data = _merge(data, _read_yaml(Path(path)))
    for item in overrides or []:
        keys, value = parse_override(item)
        nested: dict[str, Any] = {keys[-1]: value}
        for k in reversed(keys[:-1]):
            nested = {k: nested}
        data = _merge(data, nested)
    return _build(Config, data).validate()
