"""The candidate scorer: vocabulary, encoding, network shapes, the no-answer option, determinism, export."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from imagequant.config import ModelConfig, TrainConfig
from imagequant.core.tokens import OcrToken
from imagequant.errors import UsageError
from imagequant.scoring.base import Prediction
from imagequant.scoring.checkpoint import EXPORTED_FILE, WEIGHTS_FILE, load_model, save_checkpoint
from imagequant.scoring.decode import decode
from imagequant.scoring.encode import (
    INPUT_NAMES,
    NUM,
    UNK,
    ModelParams,
    Vocab,
    encode_example,
    normalize_word,
    select_tokens,
)
from imagequant.scoring.network import MASKED_LOGIT, CandidateScorer, collate, option_loss
from imagequant.synthetic import layout_token_lines
from imagequant.text.features import CANDIDATE_FEATURE_DIM
from imagequant.training.examples import RawExample, group_folds, split_by_group
from imagequant.training.fit import (
    _gain_is_shown,
    ceiling,
    cross_validate,
    fit_model,
    render_cross_validation,
    threshold_report,
    train_model,
)

# --- synthetic OCR rows (shared with test_train_predict) -----------------------------------------------

_FILLER = ["organic", "natural", "premium", "quality", "new", "fresh", "made", "in", "usa", "best", "before",
           "ingredients", "sugar", "water", "store", "cool", "dry", "place", "lot", "batch", "brand"]
_HEADLINE = {
    "item_weight": (["NET", "WT"], [("g", "gram", 50, 900), ("kg", "kilogram", 1, 5), ("oz", "ounce", 2, 32)]),
    "voltage": (["Rated", "Voltage"], [("V", "volt", 3, 240)]),
    "wattage": (["Power"], [("W", "watt", 5, 2000)]),
    "item_volume": (["Contents"], [("ml", "millilitre", 100, 1000), ("L", "litre", 1, 5)]),
    "width": (["Width"], [("cm", "centimetre", 5, 90), ("in", "inch", 2, 40)]),
}
_DISTRACTOR = {
    "item_weight": (["Serving", "size"], "g", 5, 40),
    "voltage": (["Battery"], "V", 1, 9),
    "wattage": (["Standby"], "W", 1, 4),
    "item_volume": (["Serving"], "ml", 5, 50),
    "width": (["Cable"], "cm", 100, 200),
}
ENTITIES = tuple(_HEADLINE)


def synthetic_row(rng: random.Random, entity: str, answerable: bool = True, tricky: bool = False
                  ) -> tuple[list[OcrToken], tuple[int, int], str]:
    """OCR tokens of a made-up package: a large keyword+value headline, a small distractor quantity and
    filler words, shuffled in line order; returns (tokens, (width, height), label).

    ``tricky`` swaps the sizes and marks the answer only by a word no rule knows ("peso" before it), so
    the rule baseline picks the large distractor and only a model that reads the context gets it right.
    """
    keywords, choices = _HEADLINE[entity]
    unit_text, unit, lo, hi = rng.choice(choices)
    value = rng.randint(lo, hi)
    d_keywords, d_unit, d_lo, d_hi = _DISTRACTOR[entity]
    lines: list[tuple[list[str], int]] = []
    if tricky:
        lines.append((["peso", str(value), unit_text], 20))
        lines.append((["extra", str(value + rng.randint(1, 50)), unit_text], 60))
    elif answerable:
        lines.append(([*keywords, str(value), unit_text], 60))
    lines.append(([*d_keywords, str(rng.randint(d_lo, d_hi)), d_unit], 20))
    for _ in range(rng.randint(2, 5)):
        lines.append(([rng.choice(_FILLER) for _ in range(rng.randint(1, 4))], rng.choice((18, 22, 26))))
    rng.shuffle(lines)
    tokens, size = layout_token_lines(lines, iter(lambda: rng.randint(70, 96), None))
    label = f"{float(value)} {unit}" if answerable else f"{float(rng.randint(lo, hi) + 1000)} {unit}"
    return tokens, size, label


def synthetic_examples(n: int, seed: int, p_unanswerable: float = 0.1, tricky: bool = False) -> list[RawExample]:
    """``n`` labeled synthetic rows (groups of ~4 rows), with candidates extracted by the real extractor."""
    from imagequant.text.candidates import extract_candidates

    rng = random.Random(seed)
    out = []
    for i in range(n):
        entity = ENTITIES[i % len(ENTITIES)]
        tokens, size, label = synthetic_row(rng, entity, rng.random() >= p_unanswerable, tricky)
        cnn = np.asarray([rng.random() for _ in range(2048)], dtype=np.float32)
        out.append(RawExample(i, f"g{seed}-{i // 4}", entity, label, tokens, size, cnn,
                              extract_candidates(tokens, entity, size)))
    return out


def small_model_config(**kw: object) -> ModelConfig:
    """The ``model`` section, small for fast tests."""
    return ModelConfig(**{"embed_dim": 16, "hidden_dim": 24, "cnn_proj_dim": 8, "max_tokens": 64,
                          "max_candidates": 16, **kw})


def tiny_settings(**kw: object) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 16, "patience": 5, "seed": 3, "vocab_min_count": 1, **kw})


# --- vocabulary and encoding -----------------------------------------------------------------------------


def test_normalize_word_shapes() -> None:
    assert normalize_word("500") == NUM
    assert normalize_word("12.5") == NUM
    assert normalize_word("500g") == "#g"
    assert normalize_word("Wt.:") == "wt"
    assert normalize_word("NET") == "net"
    assert normalize_word("...") == UNK
    assert normalize_word('5.9"') == '#"'


def test_vocab_build_and_round_trip() -> None:
    vocab = Vocab.build(["Net", "net", "NET", "Wt", "wt", "rare", "500g", "250g"], min_count=2)
    assert vocab.words[:3] == ["<pad>", "<unk>", "<num>"]
    assert vocab.id("NET") == vocab.id("net") != vocab.id("rare") == 1
    assert vocab.id("120g") == vocab.id("500g")  # digits carry no identity, the shape does
    again = Vocab.from_json(json.loads(json.dumps(vocab.to_json())))
    assert again.words == vocab.words


def test_encode_example_targets_the_labeled_candidate() -> None:
    rng = random.Random(1)
    tokens, size, label = synthetic_row(rng, "item_weight")
    params = ModelParams(max_tokens=64, max_candidates=8)
    vocab = Vocab.build([t.text for t in tokens], min_count=1)
    enc = encode_example(tokens, size, "item_weight", [0.5] * 2048, vocab, params, label=label)
    assert enc.token_ids.shape == (len(tokens),)
    assert enc.token_feats.shape == (len(tokens), params.token_feature_dim)
    assert enc.cand_feats.shape == (len(enc.candidates), CANDIDATE_FEATURE_DIM + params.extra_candidate_dim)
    assert len(enc.candidates) == 2  # headline + serving size
    assert len(enc.targets) == 1
    target = enc.candidates[enc.targets[0]]
    assert f"{float(target.value)} {target.unit}" == label
    assert np.all(enc.cand_start <= enc.cand_end)
    # a range or a unit the entity does not allow trains "no answer"
    for bad in ("[10.0, 20.0] gram", "5.0 horsepower", "garbage", None):
        assert encode_example(tokens, size, "item_weight", None, vocab, params, label=bad).targets == []
    with pytest.raises(ValueError):
        encode_example(tokens, size, "colour", None, vocab, params)


def test_truncation_keeps_candidate_spans_contiguous() -> None:
    kept, n = select_tokens(300, [(250, 252), (10, 11)], max_tokens=20, context=2)
    assert n == 2 and len(kept) == 20 and kept == sorted(kept)
    assert {250, 251, 10}.issubset(kept)
    assert kept.index(251) == kept.index(250) + 1
    # a long row encodes within max_tokens and still finds its target
    rng = random.Random(2)
    tokens, size, label = synthetic_row(rng, "voltage")
    filler = [OcrToken("word", 90.0, 10, 700 + i, 40, 10, 2, 100 + i // 8, i % 8) for i in range(200)]
    tokens = filler + tokens
    params = ModelParams(max_tokens=32, max_candidates=8)
    vocab = Vocab.build([t.text for t in tokens], min_count=1)
    enc = encode_example(tokens, size, "voltage", None, vocab, params, label=label)
    assert len(enc.token_ids) == 32 and len(enc.targets) == 1


# --- the network -------------------------------------------------------------------------------------------


def _encoded(n: int, seed: int, params: ModelParams) -> list:
    examples = synthetic_examples(n, seed)
    vocab = Vocab.build([t.text for e in examples for t in e.tokens], min_count=1)
    return [encode_example(e.tokens, e.image_size, e.entity, e.cnn, vocab, params, e.candidates, e.label)
            for e in examples], vocab


@pytest.mark.parametrize("kind", ["hybrid", "no_lstm", "no_cnn"])
def test_forward_shapes_and_masking(kind: str) -> None:
    params = ModelParams(kind=kind, vocab_size=200, max_tokens=64, max_candidates=16)
    enc, vocab = _encoded(6, 4, params)
    params.vocab_size = len(vocab)
    torch.manual_seed(0)
    model = CandidateScorer(params).eval()
    inputs, targets = collate(enc, params)
    c = max(len(e.candidates) for e in enc)
    logits = model(*(inputs[n] for n in INPUT_NAMES))
    assert logits.shape == (6, c + 1) and targets.shape == (6, c + 1)
    for i, e in enumerate(enc):
        assert torch.all(logits[i, len(e.candidates) : c] == MASKED_LOGIT)
        assert torch.isfinite(logits[i, -1])
    # padding further (as the exported program does) does not change any score
    padded, _ = collate(enc, params, params.max_tokens, params.max_candidates)
    logits_padded = model(*(padded[n] for n in INPUT_NAMES))
    assert torch.allclose(logits[:, :c], logits_padded[:, :c], atol=1e-5)
    assert torch.allclose(logits[:, -1], logits_padded[:, -1], atol=1e-5)
    loss = option_loss(logits, targets)
    assert loss.ndim == 0 and loss.item() > 0


def test_no_answer_option_is_the_target_without_a_match() -> None:
    params = ModelParams(max_tokens=64, max_candidates=16)
    rng = random.Random(5)
    tokens, size, _ = synthetic_row(rng, "wattage", answerable=False)
    vocab = Vocab.build([t.text for t in tokens], min_count=1)
    enc = encode_example(tokens, size, "wattage", None, vocab, params, label="77.0 watt")
    assert enc.targets == [] and len(enc.candidates) == 1
    _, targets = collate([enc], params)
    assert targets.tolist() == [[False, True]]
    # a row without tokens has only the no-answer option and decodes to an empty answer
    empty = encode_example([], (100, 100), "wattage", None, vocab, params)
    params.vocab_size = len(vocab)
    model = CandidateScorer(params).eval()
    inputs, targets = collate([empty], params)
    with torch.no_grad():
        probs = torch.softmax(model(*(inputs[n] for n in INPUT_NAMES)), 1)[0]
    assert targets.tolist() == [[False, True]] and float(probs[-1]) == pytest.approx(1.0)
    pred = decode(empty, np.array([1.0]), threshold=-math.inf)
    assert pred.prediction == "" and pred.n_candidates == 0 and pred.score == 0.0


def test_option_loss_shares_credit_between_equal_mentions() -> None:
    logits = torch.tensor([[2.0, 2.0, 0.0, 0.0]])
    both = torch.tensor([[True, True, False, False]])
    one = torch.tensor([[True, False, False, False]])
    assert float(option_loss(logits, both)) < float(option_loss(logits, one))
    z = math.log(2 * math.e**2 + 2)
    assert float(option_loss(logits, both)) == pytest.approx(z - math.log(2 * math.e**2), abs=1e-6)


def test_decode_pools_mentions_and_abstains_below_threshold() -> None:
    params = ModelParams(max_tokens=64, max_candidates=16)
    tokens = [OcrToken(t, 90.0, 10 + 60 * i, 10, 50, 20, 1, 1, i) for i, t in enumerate(["500", "g", "500", "g", "20", "g"])]
    vocab = Vocab.build([t.text for t in tokens], min_count=1)
    enc = encode_example(tokens, (400, 100), "item_weight", None, vocab, params)
    assert [c.value for c in enc.candidates] == [500, 500, 20]
    pred = decode(enc, np.array([0.3, 0.3, 0.35, 0.05]), threshold=0.5)
    assert (pred.value, pred.unit, pred.prediction) == (500, "gram", "500.0 gram")
    assert pred.score == pytest.approx(0.6)
    low = decode(enc, np.array([0.2, 0.2, 0.35, 0.25]), threshold=0.5)
    assert low.prediction == "" and low.value == 500 and low.score == pytest.approx(0.4)


# --- training, determinism, checkpoints ------------------------------------------------------------------


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path / WEIGHTS_FILE, weights_only=True)


def test_same_seed_same_model(tmp_path: Path) -> None:
    examples = synthetic_examples(64, 11)
    train, val = split_by_group(examples, 0.25, seed=3)
    assert train and val and not {e.group_id for e in train} & {e.group_id for e in val}
    settings = tiny_settings(epochs=2, export=False)
    a = train_model(train, val, small_model_config(), settings, tmp_path / "a", progress=False)
    b = train_model(train, val, small_model_config(), settings, tmp_path / "b", progress=False)
    sa, sb = _state(a.model_dir), _state(b.model_dir)
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.metrics["history"] == b.metrics["history"]
    c = train_model(train, val, small_model_config(), tiny_settings(epochs=2, export=False, seed=4),
                    tmp_path / "c", progress=False)
    assert not all(torch.equal(sa[k], _state(c.model_dir)[k]) for k in sa)


def test_checkpoint_export_matches_eager_and_learns(tmp_path: Path) -> None:
    examples = synthetic_examples(240, 21)
    train, val = split_by_group(examples, 0.25, seed=3)
    # min_gain 0: this test is about the checkpoint of a trained network, however small its gain
    result = train_model(train, val, small_model_config(), tiny_settings(epochs=4, min_gain=0.0, min_gain_z=0.0),
                         tmp_path / "m", progress=False)
    files = {p.name for p in result.model_dir.iterdir()}
    assert {"weights.pt", "vocab.json", "config.json", "threshold.json", "metrics.json", EXPORTED_FILE} <= files
    metrics = json.loads((result.model_dir / "metrics.json").read_text())
    assert metrics["validation"]["f1"] >= 0.9, metrics["history"]
    assert metrics["best_epoch"] >= 1 and metrics["val_rows"] == len(val)

    state = torch.load(result.model_dir / WEIGHTS_FILE, weights_only=True)  # plain tensors only
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    eager = load_model(result.model_dir, exported=False)
    exported = load_model(result.model_dir, exported=True)
    assert eager.threshold == exported.threshold == pytest.approx(metrics["validation"]["threshold"])
    fresh = synthetic_examples(37, 99)  # an odd batch size, another seed
    enc = [eager.encode(e.tokens, e.image_size, e.entity, e.cnn) for e in fresh]
    for a, b in zip(eager.logits(enc, batch_size=16), exported.logits(enc, batch_size=16), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    pa, pb = eager.predict(enc), exported.predict(enc)
    assert [p.prediction for p in pa] == [p.prediction for p in pb]
    # one row alone (batch of one) also agrees
    np.testing.assert_allclose(eager.logits(enc[:1])[0], exported.logits(enc[:1])[0], atol=1e-5, rtol=0)


def test_a_damaged_or_missing_model_file_is_one_usage_error(tmp_path: Path) -> None:
    import shutil

    examples = synthetic_examples(60, 5)
    train, val = split_by_group(examples, 0.25, seed=3)
    good = train_model(train, val, small_model_config(), tiny_settings(epochs=1), tmp_path / "good",
                       progress=False).model_dir
    for name, exported in ((WEIGHTS_FILE, False), (EXPORTED_FILE, True)):
        truncated = tmp_path / f"truncated-{name}"
        shutil.copytree(good, truncated)
        data = (good / name).read_bytes()
        (truncated / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(UsageError, match=f"{name} cannot be loaded.*retrain the model or restore"):
            load_model(truncated, exported=exported)
        missing = tmp_path / f"missing-{name}"
        shutil.copytree(good, missing)
        (missing / name).unlink()
        with pytest.raises(UsageError, match=f"{name} is missing"):
            load_model(missing, exported=exported)
    foreign = tmp_path / "foreign"
    shutil.copytree(good, foreign)
    torch.save({"something": torch.zeros(3)}, foreign / WEIGHTS_FILE)
    with pytest.raises(UsageError, match="does not belong to this checkpoint"):
        load_model(foreign, exported=False)


def test_model_learns_context_the_rules_miss(tmp_path: Path) -> None:
    examples = synthetic_examples(240, 41, p_unanswerable=0.0, tricky=True)
    train, val = split_by_group(examples, 0.25, seed=3)
    result = train_model(train, val, small_model_config(), tiny_settings(epochs=8, export=False), tmp_path / "m",
                         progress=False)
    rules_f1 = result.metrics["rules_validation"]["f1"]
    model_f1 = result.metrics["validation"]["f1"]
    assert rules_f1 < 0.5 and model_f1 >= 0.9, result.metrics["history"]
    assert result.metrics["best_epoch"] >= 1  # better than the untrained (rule-like) network


def test_load_model_rejects_a_foreign_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UsageError, match="format"):
        load_model(tmp_path)


@pytest.mark.parametrize("kind", ["no_lstm", "no_cnn"])
def test_ablation_variants_train_and_save(tmp_path: Path, kind: str) -> None:
    examples = synthetic_examples(48, 31)
    train, val = split_by_group(examples, 0.25, seed=3)
    result = train_model(train, val, small_model_config(kind=kind), tiny_settings(epochs=1, export=False),
                         tmp_path / kind, progress=False)
    loaded = load_model(result.model_dir)
    assert loaded.params.kind == kind
    assert not (result.model_dir / EXPORTED_FILE).exists()
    enc = [loaded.encode(e.tokens, e.image_size, e.entity, e.cnn) for e in val]
    assert len(loaded.predict(enc)) == len(val)


def test_save_checkpoint_roundtrip_params(tmp_path: Path) -> None:
    params = ModelParams(kind="no_cnn", vocab_size=10, max_tokens=8, max_candidates=4)
    model = CandidateScorer(params)
    save_checkpoint(tmp_path, model, Vocab.build(["a"] * 2 + ["b"] * 7, min_count=1), params, -math.inf,
                    {"note": "x"}, export=False)
    loaded = load_model(tmp_path)
    assert loaded.params == params and loaded.threshold == -math.inf


def test_group_folds_keep_groups_whole_and_cover_every_row() -> None:
    examples = synthetic_examples(60, seed=21)
    parts = group_folds(examples, 4, seed=5)
    assert sorted(e.index for part in parts for e in part) == list(range(60))
    groups = [{e.group_id for e in part} for part in parts]
    assert all(part for part in parts)
    assert all(not (groups[i] & groups[j]) for i in range(4) for j in range(i + 1, 4))
    with pytest.raises(UsageError):
        group_folds(examples, 1, seed=5)
    with pytest.raises(UsageError, match="distinct group_id"):
        group_folds(examples[:4], 3, seed=5)  # one group only


def test_cross_validation_scores_every_row_out_of_fold() -> None:
    examples = synthetic_examples(96, seed=22, tricky=True)
    cv, oof = cross_validate(examples, small_model_config(), tiny_settings(epochs=2, export=False), folds=3,
                             progress=False)
    assert cv["rows"] == 96 and len(cv["per_fold"]) == 3
    # the out-of-fold predictions the confidence model learns from: one per row, unthresholded
    assert len(oof.examples) == len(oof.model) == 96
    assert sorted(e.index for e in oof.examples) == sorted(e.index for e in examples)
    assert sum(f["rows"] for f in cv["per_fold"]) == 96
    table = cv["per_entity"]
    assert table["all"]["rows"] == 96
    assert sum(row["rows"] for entity, row in table.items() if entity != "all") == 96
    assert table["all"]["candidate_recall"] == pytest.approx(ceiling(examples))
    for row in table.values():
        # Recall can't pass the ceiling c, so F1 can't pass 2c / (1 + c) (precision 1).
        c = row["candidate_recall"]
        assert row["model_f1"] <= 2 * c / (1 + c) + 1e-9 and row["rules_f1"] <= 2 * c / (1 + c) + 1e-9
    text = render_cross_validation(cv)
    assert "| **all** | 96 |" in text


def test_training_keeps_the_rule_equivalent_start_unless_it_gains_enough() -> None:
    examples = synthetic_examples(120, 43, p_unanswerable=0.0, tricky=True)
    train, val = split_by_group(examples, 0.25, seed=3)
    fitted = fit_model(train, val, small_model_config(), tiny_settings(epochs=3, min_gain=1.01, export=False),
                       progress=False)
    assert fitted.best_epoch == 0 and len(fitted.history) > 1  # trained, then not kept


def test_trained_network_kept_only_when_its_gain_passes_a_sign_test() -> None:
    labels = ["5.0 gram"] * 40

    def preds(n_right: int, offset: int = 0) -> list[Prediction]:
        right = set(range(offset, offset + n_right))
        return [Prediction("5.0 gram" if i in right else "6.0 gram", None, None, 0.9, 2, 0.0) for i in range(40)]

    def report(p: list[Prediction]) -> dict[str, float]:
        return threshold_report(p, labels)

    base = preds(20)
    settings = tiny_settings(min_gain=0.01, min_gain_z=2.0)
    # 6 rows fixed, none broken: 6 >= 2 * sqrt(6)
    better = preds(26)
    assert _gain_is_shown(base, report(base), better, report(better), labels, settings)
    # the same F1 gain made of 10 rows fixed and 4 broken: 6 < 2 * sqrt(14)
    shuffled = preds(26, offset=4)
    assert report(shuffled)["f1"] == report(better)["f1"]
    assert not _gain_is_shown(base, report(base), shuffled, report(shuffled), labels, settings)
    assert _gain_is_shown(base, report(base), shuffled, report(shuffled), labels,
                          tiny_settings(min_gain=0.01, min_gain_z=0.0))


def test_the_training_line_says_why_the_untrained_start_was_kept() -> None:
    from imagequant.training.fit import TrainResult

    def history(*f1: float) -> list[dict[str, float]]:
        return [{"epoch": i, "val_f1": f} for i, f in enumerate(f1)]

    metrics = {"params": {"kind": "hybrid"}, "train_rows": 126, "val_rows": 22, "epochs_run": 3,
               "validation": {"f1": 0.952, "precision": 0.909, "recall": 1.0, "threshold": float("-inf")},
               "rules_validation": {"f1": 0.952}, "best_epoch": 0, "history": history(0.952, 0.930, 0.977, 0.977)}
    line = TrainResult(Path("model"), metrics).line()
    assert ("(3 epochs, best 0, the rule-equivalent start: epoch 2's validation F1 0.977 is not a gain shown "
            "over chance by train.min_gain and train.min_gain_z)") in line, line
    assert "no threshold" in line and "inf" not in line
    for best, f1 in ((2, (0.952, 0.930, 0.977)), (0, (0.952, 0.930, 0.952))):  # a trained epoch kept; none better
        line = TrainResult(Path("model"), {**metrics, "best_epoch": best, "history": history(*f1),
                                           "validation": {**metrics["validation"], "threshold": 0.25}}).line()
        assert f"(3 epochs, best {best}): " in line and "threshold 0.250" in line, line
