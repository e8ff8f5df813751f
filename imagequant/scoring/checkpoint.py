"""Model checkpoints: a directory with the weights, vocabulary, parameters, threshold and metrics, and the
``torch.export`` program beside them; :func:`load_model` gives a :class:`LoadedModel` that encodes rows
and predicts with the eager module or the exported program.
"""

from __future__ import annotations

import json
import logging
import math
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imagequant.core.tokens import OcrToken
from imagequant.errors import UsageError
from imagequant.scoring.base import Prediction
from imagequant.scoring.decode import decode, softmax
from imagequant.scoring.encode import (
    INPUT_NAMES,
    EncodedExample,
    ModelParams,
    Vocab,
    empty_example,
    encode_example,
)
from imagequant.scoring.network import CandidateScorer, collate, respect_omp_thread_limit
from imagequant.text.candidates import Candidate
from imagequant.text.features import CANDIDATE_FEATURE_DIM

CHECKPOINT_FORMAT = 1
WEIGHTS_FILE = "weights.pt"
VOCAB_FILE = "vocab.json"
CONFIG_FILE = "config.json"
THRESHOLD_FILE = "threshold.json"
METRICS_FILE = "metrics.json"
EXPORTED_FILE = "model.pt2"
CHECKPOINT_FILES = (WEIGHTS_FILE, VOCAB_FILE, CONFIG_FILE, THRESHOLD_FILE, METRICS_FILE, EXPORTED_FILE)


def export_program(model: CandidateScorer, params: ModelParams, path: Path) -> None:
    """Saves ``torch.export`` of the eval-mode scorer with fixed shapes: ``export_batch`` rows padded to
    ``max_tokens`` tokens and ``max_candidates`` candidates. (A dynamic batch dimension made the export
    take ~10 s longer, for nothing: inference pads its last chunk instead.)"""
    import warnings

    model = model.eval()
    inputs, _ = collate([empty_example(params)] * params.export_batch, params, params.max_tokens,
                        params.max_candidates)
    with warnings.catch_warnings():
        # nn.LSTM's flat-weight bookkeeping warns during tracing; the exported graph is unaffected
        warnings.simplefilter("ignore", UserWarning)
        program = torch.export.export(model, tuple(inputs[n] for n in INPUT_NAMES))
    torch.export.save(program, str(path))


def save_checkpoint(
    directory: str | Path,
    model: CandidateScorer,
    vocab: Vocab,
    params: ModelParams,
    threshold: float,
    metrics: dict[str, Any],
    export: bool = True,
) -> Path:
    """Writes weights.pt, vocab.json, config.json, threshold.json, metrics.json (and model.pt2)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / WEIGHTS_FILE)
    (out / VOCAB_FILE).write_text(json.dumps(vocab.to_json()))
    (out / CONFIG_FILE).write_text(json.dumps({"format": CHECKPOINT_FORMAT, **asdict(params)}, indent=2))
    (out / THRESHOLD_FILE).write_text(json.dumps({"threshold": _json_float(threshold)}, indent=2))
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=json_default))
    exported = out / EXPORTED_FILE
    if export:
        export_program(model, params, exported)
    elif exported.exists():
        exported.unlink()  # a stale program from an earlier run must not be served with new weights
    return out


def _json_float(x: float) -> float | str:
    return x if math.isfinite(x) else ("-inf" if x < 0 else "inf")


def json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class LoadedModel:
    """A checkpoint ready to predict: vocabulary, parameters, threshold and the scoring module."""

    def __init__(self, directory: Path, params: ModelParams, vocab: Vocab, threshold: float,
                 module: Any, exported: bool) -> None:
        self.directory = directory
        self.params = params
        self.vocab = vocab
        self.threshold = threshold
        self.module = module
        self.exported = exported

    def encode(self, tokens: Sequence[OcrToken], image_size: tuple[int, int], entity: str,
               cnn_features: Sequence[float] | np.ndarray | None,
               candidates: Sequence[Candidate] | None = None) -> EncodedExample:
        return encode_example(tokens, image_size, entity, cnn_features, self.vocab, self.params, candidates)

    def logits(self, examples: Sequence[EncodedExample], batch_size: int = 64) -> list[np.ndarray]:
        """Raw option logits per row, ``[candidates..., no answer]`` (padding slots dropped).

        The exported program always takes ``export_batch`` rows; ``batch_size`` applies to eager only.
        """
        out: list[np.ndarray] = []
        p = self.params
        step = p.export_batch if self.exported else batch_size
        for i in range(0, len(examples), step):
            chunk = list(examples[i : i + step])
            if self.exported:
                filler = [empty_example(p)] * (step - len(chunk))
                inputs, _ = collate(chunk + filler, p, p.max_tokens, p.max_candidates)
            else:
                inputs, _ = collate(chunk, p)
            with torch.no_grad():
                logits = self.module(*(inputs[n] for n in INPUT_NAMES)).numpy()
            for e, row in zip(chunk, logits[: len(chunk)], strict=True):
                k = len(e.candidates)
                out.append(np.concatenate([row[:k], row[-1:]]).astype(np.float64))
        return out

    def probabilities(self, examples: Sequence[EncodedExample], batch_size: int = 64) -> list[np.ndarray]:
        return [softmax(x) for x in self.logits(examples, batch_size)]

    def predict(self, examples: Sequence[EncodedExample], threshold: float | None = None,
                batch_size: int = 64) -> list[Prediction]:
        t = self.threshold if threshold is None else threshold
        return [decode(e, p, t) for e, p in zip(examples, self.probabilities(examples, batch_size), strict=True)]


def read_params(directory: str | Path) -> ModelParams:
    path = Path(directory) / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{directory} is not a model checkpoint ({path.name}: {exc})") from exc
    if data.pop("format", None) != CHECKPOINT_FORMAT:
        raise UsageError(f"{path} is not a checkpoint of format {CHECKPOINT_FORMAT}; retrain the model")
    try:
        params = ModelParams(**data)
    except TypeError as exc:
        raise UsageError(f"{path} does not match this version of the model: {exc}") from exc
    if params.candidate_feature_dim != CANDIDATE_FEATURE_DIM:
        raise UsageError(
            f"{directory} was trained with {params.candidate_feature_dim} candidate features; this code computes "
            f"{CANDIDATE_FEATURE_DIM}; retrain the model"
        )
    return params


@contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Holds back a library logger's warnings (torch.export logs a whole traceback before raising)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_model(directory: str | Path, exported: bool = False) -> LoadedModel:
    """Loads a checkpoint directory; ``exported`` serves model.pt2 (torch.export) instead of eager weights."""
    root = Path(directory)
    if not root.is_dir():
        raise UsageError(f"model directory {root} does not exist")
    params = read_params(root)
    respect_omp_thread_limit()
    try:
        vocab = Vocab.from_json(json.loads((root / VOCAB_FILE).read_text()))
        threshold = float(json.loads((root / THRESHOLD_FILE).read_text())["threshold"])
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"model directory {root} is incomplete: {exc}") from exc
    path = root / (EXPORTED_FILE if exported else WEIGHTS_FILE)
    if not path.is_file():
        hint = "trained with train.export=false? predict with --eager" if exported else "retrain the model"
        raise UsageError(f"{path} is missing ({hint})")
    # Both files are zip archives: a truncated one is refused before torch, which would log its own traceback.
    # torch raises many kinds of error for a file damaged inside or from another model (zip, pickle, shapes).
    try:
        if not zipfile.is_zipfile(path):
            raise ValueError("not a zip archive (truncated?)")
        with _quiet_logger("torch.export"):
            if exported:
                module: Any = torch.export.load(str(path)).module()
            else:
                model = CandidateScorer(params)
                model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
                module = model.eval()
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise UsageError(f"{path} cannot be loaded ({type(exc).__name__}: {first}); the file is damaged or "
                         "does not belong to this checkpoint: retrain the model or restore the file") from None
    return LoadedModel(root, params, vocab, threshold, module, exported)
