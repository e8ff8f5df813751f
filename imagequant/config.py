"""One typed model of every setting, loaded from YAML files plus ``--set key=value`` overrides.

Every knob lives in ``conf/default.yaml`` with a comment; ``local.yaml`` and ``cluster.yaml`` override
parts of it. Unknown keys and values of the wrong type are rejected with the full dotted key, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
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


@dataclass
class ImagingConfig:
    max_pixels: int = 60_000_000
    ocr_min_side: int = 1000
    ocr_max_side: int = 2400
    ocr_max_upscale: float = 3.0
    cnn_size: int = 224


@dataclass
class TesseractConfig:
    psm: int = 11
    extra_psm: list[int] = field(default_factory=list)
    oem: int = 1
    lang: str = "eng"
    extra_args: str = ""
    thread_limit: int = 1
    preprocess: str = "gray"


@dataclass
class RapidOcrConfig:
    threads: int = 1
    text_score: float = 0.3
    use_angle_cls: bool = True
    det_max_side: int = 960
    det_upscale: float = 1.0
    min_side: int = 0
    memory_arena: bool = True
    rotated_pass: bool = False
    rec_batch_lines: int = 6  # text lines per recognition (and direction classifier) model call
    # Which PP-OCR models read (imagequant/ocr/ppocr_models.py): ppocrv4 | ppocrv6_small | ppocrv6_tiny
    models: str = "ppocrv4"
    det_models: str = ""  # the detector of another set ("": that of ``models``)
    second_look_models: str = ""  # the set the second look reads with ("": ``models``)
    # a set whose second look follows the first reader's where that one still found no plausible candidate
    fallback_models: str = ""
    det_model_path: str = ""  # a user's own PP-OCR ONNX files, replacing the chosen set's
    rec_model_path: str = ""
    rec_keys_path: str = ""


@dataclass
class OcrConfig:
    engine: str = "rapidocr"
    device: str = "auto"  # auto | cpu | cuda: where onnxruntime runs the OCR models (imagequant/devices.py)
    timeout_s: float = 60.0  # CPU seconds of one image's reading (imagequant/ocr/base.py)
    wall_timeout_factor: float = 4.0  # the wall-clock backstop of a reading, in multiples of timeout_s
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
    tesseract: TesseractConfig = field(default_factory=TesseractConfig)
    rapidocr: RapidOcrConfig = field(default_factory=RapidOcrConfig)


@dataclass
class CnnConfig:
    enabled: bool = True
    weights: str = "random"
    seed: int = 0
    batch_size: int = 32
    device: str = "auto"
    torch_threads: int = 1
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
        from imagequant.ocr.zoo import ENGINE_NAMES

        for ok, message in self._range_checks():
            if not ok:
                raise ConfigError(message)
        checks: list[tuple[bool, str]] = [
            (self.ocr.engine in ENGINE_NAMES, f"ocr.engine must be one of {', '.join(ENGINE_NAMES)}"),
            (all(a in (90, 180, 270) for a in self.ocr.rotated_angles), "ocr.rotated_angles must be 90, 180 or 270"),
            (self.ocr.tesseract.preprocess in ("none", "gray", "autocontrast"),
             "ocr.tesseract.preprocess must be none, gray or autocontrast"),
            (self.cnn.device in ("auto", "cpu", "cuda"), "cnn.device must be auto, cpu or cuda"),
            (self.ocr.device in ("auto", "cpu", "cuda"), f"ocr.device must be auto, cpu or cuda, got {self.ocr.device!r}"),
            (0 <= self.ocr.tesseract.psm <= 13 and all(0 <= p <= 13 for p in self.ocr.tesseract.extra_psm),
             "ocr.tesseract.psm and extra_psm must be page segmentation modes 0-13"),
            (self.ocr.rapidocr.threads >= 1, "ocr.rapidocr.threads must be >= 1"),
            (self.ocr.rapidocr.det_max_side == 0 or self.ocr.rapidocr.det_max_side >= 320,
             "ocr.rapidocr.det_max_side must be 0 (full size) or >= 320"),
            (self.ocr.rapidocr.min_side >= 0, "ocr.rapidocr.min_side must be >= 0"),
            (1.0 <= self.ocr.rapidocr.det_upscale <= 4.0, "ocr.rapidocr.det_upscale must be between 1 and 4"),
            (0.0 < self.train.val_fraction < 1.0, "train.val_fraction must be between 0 and 1"),
            (self.train.loader in ("petastorm", "pyarrow"), "train.loader must be petastorm or pyarrow"),
            (self.train.scorer in ("network", "rules"), f"train.scorer must be network or rules, got {self.train.scorer!r}"),
            (self.predict.min_confidence is None or self.predict.target_precision is None,
             "predict.min_confidence and predict.target_precision cannot both be set"),
            (self.model.kind in ("hybrid", "no_lstm", "no_cnn"), "model.kind must be hybrid, no_lstm or no_cnn"),
            (self.store.compression in ("zstd", "snappy", "gzip", "none"), "store.compression must be zstd, snappy, gzip or none"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self._check_ocr_models()
        check_spark_settings(self.spark.conf)
        from imagequant.worker_memory import PYSPARK_MEMORY_KEY, check_worker_memory

        check_worker_memory(self.spark.conf.get(PYSPARK_MEMORY_KEY), self.cnn.enabled)
        return self

    def _check_ocr_models(self) -> None:
        """ConfigError for an unknown model set, and, where RapidOCR reads, for a chosen model file that is not
        installed: one clear line before any work, not an error per image."""
        from imagequant.ocr import ppocr_models

        rc = self.ocr.rapidocr
        problem = ppocr_models.check_names(rc.models, rc.det_models, rc.second_look_models, rc.fallback_models)
        if problem:
            raise ConfigError(problem)
        if self.ocr.engine in ("rapidocr", "both"):
            ppocr_models.resolve(rc.models, rc.det_models, rc.det_model_path, rc.rec_model_path, rc.rec_keys_path)
            for extra in {rc.second_look_models, rc.fallback_models} - {""}:
                ppocr_models.resolve(extra)

    def _range_checks(self) -> list[tuple[bool, str]]:
        """Every numeric setting that cannot work: zero or negative sizes and counts, negative, NaN or
        infinite times, scores outside their scale."""
        f, im, ocr, rc, tc, cnn, m, t = (self.fetch, self.imaging, self.ocr, self.ocr.rapidocr, self.ocr.tesseract,
                                         self.cnn, self.model, self.train)
        checks: list[tuple[bool, str]] = []

        def positive(key: str, value: float) -> None:
            checks.append((_finite(value) and value > 0, f"{key} must be a positive number, got {value!r}"))

        def at_least(key: str, value: float, low: float) -> None:
            checks.append((_finite(value) and value >= low, f"{key} must be >= {low:g}, got {value!r}"))

        def between(key: str, value: float, low: float, high: float) -> None:
            checks.append((_finite(value) and low <= value <= high,
                           f"{key} must be between {low:g} and {high:g}, got {value!r}"))

        at_least("spark.image_partitions_per_core", self.spark.image_partitions_per_core, 1)
        positive("fetch.connect_timeout_s", f.connect_timeout_s)
        positive("fetch.read_timeout_s", f.read_timeout_s)
        at_least("fetch.max_retries", f.max_retries, 0)
        at_least("fetch.backoff_s", f.backoff_s, 0)
        at_least("fetch.max_backoff_s", f.max_backoff_s, 0)
        at_least("fetch.max_retry_after_s", f.max_retry_after_s, 0)
        positive("fetch.max_bytes", f.max_bytes)
        at_least("fetch.max_redirects", f.max_redirects, 0)
        at_least("fetch.pool_size", f.pool_size, 1)
        at_least("fetch.per_host_concurrency", f.per_host_concurrency, 1)
        checks.append((bool(f.user_agent) and f.user_agent.isprintable(),
                       "fetch.user_agent must be non-empty printable text (no line breaks)"))
        checks.append((bool(f.allowed_schemes) and all(x.lower() in ("http", "https") for x in f.allowed_schemes),
                       f"fetch.allowed_schemes may only hold http and https, got {f.allowed_schemes!r}"))
        positive("imaging.max_pixels", im.max_pixels)
        positive("imaging.ocr_min_side", im.ocr_min_side)
        positive("imaging.ocr_max_side", im.ocr_max_side)
        checks.append((im.ocr_min_side <= im.ocr_max_side,
                       f"imaging.ocr_min_side ({im.ocr_min_side}) must not exceed imaging.ocr_max_side ({im.ocr_max_side})"))
        positive("imaging.cnn_size", im.cnn_size)
        resize_to = round(im.cnn_size * 256 / 224) if im.cnn_size > 0 else 0
        checks.append((resize_to * resize_to <= im.max_pixels,
                       f"imaging.cnn_size {im.cnn_size} needs {resize_to}x{resize_to} pixels, over imaging.max_pixels"))
        positive("ocr.timeout_s", ocr.timeout_s)
        at_least("ocr.wall_timeout_factor", ocr.wall_timeout_factor, 1)
        at_least("ocr.second_pass_max_regions", ocr.second_pass_max_regions, 0)
        positive("ocr.second_pass_text_px", ocr.second_pass_text_px)
        at_least("ocr.second_pass_detail_max_side", ocr.second_pass_detail_max_side, 0)
        at_least("imaging.ocr_max_upscale", im.ocr_max_upscale, 1)
        at_least("cnn.batch_size", cnn.batch_size, 1)
        at_least("train.confidence_folds", t.confidence_folds, 2)
        at_least("train.confidence_entity_rows", t.confidence_entity_rows, 1)
        for key, value in (("predict.min_confidence", self.predict.min_confidence),
                           ("predict.target_precision", self.predict.target_precision)):
            if value is not None:
                between(key, value, 0, 1)
        between("ocr.min_confidence", ocr.min_confidence, 0, 100)
        between("ocr.tesseract.oem", tc.oem, 0, 3)
        at_least("ocr.tesseract.thread_limit", tc.thread_limit, 1)
        checks.append((bool(tc.lang.strip()), "ocr.tesseract.lang must name a language pack, e.g. eng"))
        between("ocr.rapidocr.text_score", rc.text_score, 0, 1)
        at_least("ocr.rapidocr.rec_batch_lines", rc.rec_batch_lines, 1)
        checks.append((_finite(rc.det_upscale), f"ocr.rapidocr.det_upscale must be a finite number, got {rc.det_upscale!r}"))
        at_least("cnn.seed", cnn.seed, 0)
        checks.append((cnn.seed < 2**32, f"cnn.seed must be below 2**32, got {cnn.seed}"))
        at_least("cnn.torch_threads", cnn.torch_threads, 1)
        at_least("cnn.stage_partitions", cnn.stage_partitions, 1)
        at_least("store.rows_per_file", self.store.rows_per_file, 1)
        for key in ("embed_dim", "entity_dim", "hidden_dim", "cnn_proj_dim", "max_tokens", "max_candidates", "mlp_dim"):
            at_least(f"model.{key}", getattr(m, key), 1)
        checks.append((_finite(m.dropout) and 0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout!r}"))
        at_least("train.epochs", t.epochs, 1)
        at_least("train.batch_size", t.batch_size, 1)
        positive("train.learning_rate", t.learning_rate)
        at_least("train.weight_decay", t.weight_decay, 0)
        at_least("train.patience", t.patience, 0)
        at_least("train.seed", t.seed, 0)
        at_least("train.vocab_min_count", t.vocab_min_count, 1)
        at_least("train.vocab_max_size", t.vocab_max_size, 1)
        positive("train.grad_clip", t.grad_clip)
        at_least("train.unanswerable_weight", t.unanswerable_weight, 0)
        checks.append((_finite(t.min_gain), f"train.min_gain must be a finite number, got {t.min_gain!r}"))
        at_least("train.min_gain_z", t.min_gain_z, 0)
        min_score = self.predict.min_score
        checks.append((min_score is None or (_finite(min_score) and 0.0 <= min_score <= 1.0),
                       f"predict.min_score must be between 0 and 1 or null, got {min_score!r}"))
        return checks


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
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    return value


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
        raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"configuration file {path} must hold a mapping at the top level")
    return data


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
