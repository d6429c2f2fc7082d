"""Chapter 09's measures on hand-made distributions: a known nucleus, a perfectly
calibrated toy model (ECE 0), a model always 90% confident and 50% right (ECE 0.4), the
Brier score against its formula, the nucleus-margin lemma on random distributions, and
the unseen-bigram rate of a hand-made text."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from selfish_lib.engine.evaluation import NUCLEUS_MASSES, nucleus_values, sampling_values
from selfish_lib.engine.losses import nucleus_mask
from selfish_lib.engine.model import GPT, ModelConfig
from selfish_lib.engine.validation import ParameterError
from selfish_lib.study import sampling


def logits_of(probs) -> torch.Tensor:
    return torch.log(torch.tensor(probs, dtype=torch.float64))


def test_a_known_nucleus():
    # masses before each token (sorted): 0, .62, .89, .96: away from every p's boundary
    logits = logits_of([[0.07, 0.62, 0.04, 0.27]] * 3)
    targets = torch.tensor([0, 1, 2])  # p 0.07 (third), 0.62 (first), 0.04 (last)
    v = nucleus_values(logits, targets)
    assert v["size_0.8"].tolist() == [2, 2, 2] and v["size_0.9"].tolist() == [3, 3, 3]
    assert v["size_0.95"].tolist() == [3, 3, 3]
    assert v["covered_0.8"].tolist() == [0, 1, 0]
    assert v["covered_0.9"].tolist() == [1, 1, 0]
    assert v["floor_0.8"][0].item() == pytest.approx(0.27)
    assert v["floor_0.9"][0].item() == pytest.approx(0.07)
    assert v["confidence"][0].item() == pytest.approx(0.62)
    assert v["correct"].tolist() == [0, 1, 0]


def test_nucleus_values_agree_with_the_nucleus_mask_and_the_brier_formula():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 40, generator=gen, dtype=torch.float64) * 3
    targets = torch.randint(0, 40, (500,), generator=gen)
    v = nucleus_values(logits, targets)
    probs = torch.softmax(logits, -1)
    for mass in NUCLEUS_MASSES:
        mask = nucleus_mask(probs, mass)
        assert torch.equal(v[f"size_{mass}"], mask.sum(-1).double())
        assert torch.equal(v[f"covered_{mass}"], mask.gather(1, targets[:, None])[:, 0].double())
        inside = torch.where(mask, probs, torch.full_like(probs, math.inf))
        assert torch.allclose(v[f"floor_{mass}"], inside.min(-1).values)
    onehot = torch.nn.functional.one_hot(targets, 40).double()
    assert torch.allclose(v["brier"], ((probs - onehot) ** 2).sum(-1))


def test_the_nucleus_margin_lemma_on_random_and_peaked_distributions():
    """Every token of a top-p nucleus has probability >= (1 - p) / V."""
    gen = torch.Generator().manual_seed(1)
    for scale in (0.1, 1.0, 5.0, 30.0):
        for V in (2, 7, 130, 1000):
            logits = torch.randn(200, V, generator=gen, dtype=torch.float64) * scale
            v = nucleus_values(logits, torch.zeros(200, dtype=torch.long))
            for mass in NUCLEUS_MASSES:
                assert (v[f"floor_{mass}"] * V / (1 - mass) >= 1 - 1e-12).all()


def test_a_perfectly_calibrated_toy_model_has_ece_zero():
    # confidence 0.25 on 8 positions, 2 right; 0.75 on 8, 6 right: two equal-mass bins
    confidence = np.array([0.25] * 8 + [0.75] * 8)
    correct = np.array([1, 1] + [0] * 6 + [1] * 6 + [0, 0])
    assert sampling.expected_calibration_error(confidence, correct, bins=2) == pytest.approx(0)
    table = sampling.reliability(confidence, correct, bins=2)
    assert table["count"].tolist() == [8, 8]
    assert table["accuracy"].tolist() == pytest.approx([0.25, 0.75])


def test_always_90_percent_confident_and_50_percent_right_has_ece_04():
    confidence = np.full(1000, 0.9)
    correct = np.tile([1, 0], 500)
    for bins in (1, 10, 15):
        assert sampling.expected_calibration_error(confidence, correct, bins) == pytest.approx(0.4)


def test_equal_mass_bins_hold_equal_numbers_of_positions_in_order_of_confidence():
    confidence = np.random.default_rng(0).random(103)
    which = sampling.equal_mass_bins(confidence, 10)
    counts = np.bincount(which)
    assert counts.tolist() == [11, 11, 11] + [10] * 7
    ordered = which[np.argsort(confidence)]
    assert (np.diff(ordered) >= 0).all()
    with pytest.raises(ParameterError, match="confidence"):
        sampling.reliability([], [])


def test_unseen_bigram_rate_of_a_hand_made_text():
    known = sampling.bigrams("abcab")  # ab, bc, ca
    assert known == {"ab", "bc", "ca"}
    assert sampling.unseen_bigram_rate("abca", known) == 0.0
    assert sampling.unseen_bigram_rate("abxab", known) == pytest.approx(2 / 4)  # bx, xa
    # several texts: never a bigram across two of them ("a" + "b" would be known)
    assert sampling.unseen_bigram_rate(["ax", "bx"], known) == 1.0
    with pytest.raises(ParameterError, match="text"):
        sampling.unseen_bigram_rate("a", known)


def test_sampling_values_cover_every_position_of_a_split():
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=8, block_size=8), 12)
    ids = torch.randint(0, 12, (50,))
    v = sampling_values(model, ids, batch_windows=2)
    assert v["token"].tolist() == ids[1:].tolist()
    assert ((v["size_0.8"] <= v["size_0.9"]) & (v["size_0.9"] <= v["size_0.95"])).all()
    assert v["brier"].between(0, 2).all()


def _per_seed(ce, hns):
    rows = []
    for arm, values in (("CE", ce), ("HNS", hns)):
        for seed, value in enumerate(values):
            rows.append({"experiment": arm, "seed": seed, "scope": "low",
                         **{f"coverage_{m}": value for m in NUCLEUS_MASSES}})  # fmt: skip
    return pd.DataFrame(rows)


def test_the_nucleus_claim_follows_the_interval_and_its_margin():
    supported = sampling.nucleus_claim(_per_seed([0.80, 0.81, 0.79], [0.83, 0.85, 0.84]))
    primary = supported[supported["primary"]]
    assert len(primary) == 1 and primary["definition"].iloc[0] == "coverage at top-p 0.9"
    assert primary["verdict"].iloc[0] == "supported" and primary["test"].iloc[0] == "not_worse"
    worse = sampling.nucleus_claim(_per_seed([0.80, 0.81, 0.79], [0.70, 0.71, 0.69]))
    assert set(worse["verdict"]) == {"contradicted"}
    assert sampling.nucleus_claim(_per_seed([0.8], [0.9]).assign(scope="high")).empty
