"""Scorers: given a row's candidates, choose the answer. One contract (:mod:`imagequant.scoring.base`),
the rule baseline (:mod:`imagequant.scoring.rules`), the learned network, and a loader
(:mod:`imagequant.scoring.zoo`: ``"rules"`` or a model directory -> Scorer)."""
