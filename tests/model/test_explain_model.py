"""explain with a model directory: each candidate's probability beside its rule score, the model's choice."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from imagequant.config import load_config
from imagequant.pipeline.explain import run_explain
from imagequant.scoring.checkpoint import save_checkpoint
from imagequant.scoring.encode import ModelParams, Vocab
from imagequant.scoring.network import CandidateScorer
from imagequant.scoring.second_look import lacks_plausible_candidate
from imagequant.scoring.zoo import load_scorer
from tests.unit.test_evidence import needs_tesseract, render_label


@needs_tesseract
def test_explain_shows_the_models_probabilities(tmp_path: Path) -> None:
    torch.manual_seed(3)
    params = ModelParams(kind="no_cnn", vocab_size=8, max_tokens=32, max_candidates=8)
    model_dir = tmp_path / "model"
    save_checkpoint(model_dir, CandidateScorer(params), Vocab.build(["net", "wt", "serving"] * 2, min_count=1),
                    params, -math.inf, {}, export=False)
    image = tmp_path / "label.png"
    render_label(image)
    config = load_config(overrides=["ocr.engine=tesseract", "ocr.rotated_pass=false", "ocr.second_pass=false",
                                    "imaging.ocr_min_side=300", "cnn.enabled=false"])
    explanation, _ = run_explain(str(image), "item_weight", config, load_scorer(str(model_dir), exported=False),
                                 lacks_plausible_candidate)
    probabilities = [v.probability for v in explanation.candidates]
    assert probabilities and all(p is not None and 0.0 < p < 1.0 for p in probabilities)
    chosen = explanation.chosen()
    assert chosen is not None and explanation.prediction.candidate is chosen.candidate
    assert explanation.prediction.score == pytest.approx(sum(
        v.probability for v in explanation.candidates
        if (v.candidate.value, v.candidate.unit) == (chosen.candidate.value, chosen.candidate.unit)))
    text = explanation.text()
    assert f"scorer {model_dir}" in text and " p=0." in text
