"""Chapter 09's measures on hand-made distributions: a known nucleus with P(a top-p sample
is the target) and coverage at a matched size worked out by hand, a perfectly calibrated
toy model (ECE 0), a model always 90% confident and 50% right (ECE 0.4), the Brier score
against its formula, the nucleus-margin lemma on random distributions, temperature
scaling recovering a known temperature, the class-wise ECE of rare tokens (calibrated:
at its floor; miscalibrated: far above), why ECE on label-selected positions is not used,
the floor's simulation on a tiny case, the unseen-bigram rate of a hand-made text, and
the verdicts of N1 and N2 on hand-made seeds."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from selfish_lib.engine.corpus import Corpus
from selfish_lib.engine.evaluation import (
    NUCLEUS_MASSES,
    fit_temperature,
    logit_values,
    mean_nll,
    nucleus_values,
    position_logits,
    sampling_values,
)
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
    assert v["place"].tolist() == [3, 1, 4]


def test_p_sample_is_target_and_matched_coverage_by_hand():
    """Two positions of p = (0.5, 0.3, 0.15, 0.05). Top-0.8 nucleus: {0.5, 0.3} (0.5 < 0.8,
    0.8 reaches it), mass 0.8. Target token 1 (p 0.3): a top-p sample is it with
    probability 0.3 / 0.8 = 0.375; target token 2 (p 0.15, outside): 0. Top-0.9 nucleus:
    three tokens, mass 0.95: 0.3 / 0.95 and 0.15 / 0.95."""
    logits = logits_of([[0.5, 0.3, 0.15, 0.05]] * 2)
    targets = torch.tensor([1, 2])
    v = nucleus_values(logits, targets, masses=(0.8, 0.9))
    assert v["mass_0.8"].tolist() == pytest.approx([0.8, 0.8])
    assert v["hit_0.8"].tolist() == pytest.approx([0.375, 0.0])
    assert v["hit_0.9"].tolist() == pytest.approx([0.3 / 0.95, 0.15 / 0.95])
    assert v["place"].tolist() == [2, 3]
    # the flatter copy (temperature 2: p proportional to sqrt) covers more
    flat = nucleus_values(logits, targets, masses=(0.8,), temperature=2.0)
    root = np.sqrt([0.5, 0.3, 0.15, 0.05])
    p = root / root.sum()  # 0.365, 0.283, 0.200, 0.115: top-0.8 holds three tokens
    assert flat["size_0.8"].tolist() == [3, 3]
    assert flat["hit_0.8"].tolist() == pytest.approx([p[1] / p[:3].sum(), p[2] / p[:3].sum()])
    assert flat["covered_0.8"].mean() == 1.0 > v["covered_0.8"].mean()
    # coverage at a matched size: CE's mean size 2.4 -> k = 2; 2.5 -> 3 (halves up)
    assert sampling.matched_size(2.4) == 2 and sampling.matched_size(2.5) == 3
    assert sampling.matched_size(0.2) == 1
    assert sampling.coverage_within(v["place"].numpy(), 2) == 0.5  # place 2 in, 3 out
    assert sampling.coverage_within(flat["place"].numpy(), 2) == 0.5  # the ranking is the same
    assert sampling.coverage_within([1, 2, 3, 4], 3) == 0.75


def test_matched_coverage_uses_ce_k_for_both_arms():
    per_seed = pd.DataFrame(
        [
            {
                "experiment": arm,
                "seed": seed,
                "scope": "low",
                "scaling": "raw",
                **{f"size_{m}": size for m in NUCLEUS_MASSES},
            }
            for arm, sizes in (("CE", (2.0, 3.0)), ("HNS", (9.0, 9.0)))
            for seed, size in enumerate(sizes)
        ]
    )
    sizes = sampling.matched_sizes(per_seed)
    assert set(sizes["k"]) == {3}  # CE's mean 2.5, halves up; HNS's 9 plays no part
    places = pd.DataFrame(
        [
            {"experiment": arm, "seed": seed, "scope": "low", "place": place, "count": count}
            for arm in ("CE", "HNS")
            for seed in (0, 1)
            for place, count in ((1, 2), (3, 1), (4, 1))
        ]
    )
    out = sampling.add_matched(per_seed, places, sizes)
    assert out["matched_0.9"].tolist() == pytest.approx([0.75] * 4)  # places 1, 1, 3 of 4


def test_nucleus_values_agree_with_the_nucleus_mask_and_the_brier_formula():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 40, generator=gen, dtype=torch.float64) * 3
    targets = torch.randint(0, 40, (500,), generator=gen)
    for temperature in (1.0, 0.7, 2.5):
        v = nucleus_values(logits, targets, temperature=temperature)
        probs = torch.softmax(logits / temperature, -1)
        for mass in NUCLEUS_MASSES:
            mask = nucleus_mask(probs, mass)
            inside = mask.gather(1, targets[:, None])[:, 0]
            assert torch.equal(v[f"size_{mass}"], mask.sum(-1).double())
            assert torch.equal(v[f"covered_{mass}"], inside.double())
            kept = torch.where(mask, probs, torch.zeros_like(probs))
            p_y = probs.gather(1, targets[:, None])[:, 0]
            assert torch.allclose(v[f"hit_{mass}"], inside * p_y / kept.sum(-1))
            floor = torch.where(mask, probs, torch.full_like(probs, math.inf)).min(-1).values
            assert torch.allclose(v[f"floor_{mass}"], floor)
        onehot = torch.nn.functional.one_hot(targets, 40).double()
        assert torch.allclose(v["brier"], ((probs - onehot) ** 2).sum(-1))
        assert torch.allclose(v["nll"], -torch.log(probs.gather(1, targets[:, None])[:, 0]))
        # the place: 1 + the tokens strictly more probable (no ties in random logits)
        above = (probs > probs.gather(1, targets[:, None])).sum(-1) + 1
        assert torch.equal(v["place"], above.double())


def test_the_nucleus_margin_lemma_on_random_and_peaked_distributions():
    """The last token a top-p nucleus of k tokens keeps has p > (1 - p) / (V - k + 1)
    >= (1 - p) / V: a theorem, checked here, never measured on the models."""
    gen = torch.Generator().manual_seed(1)
    for scale in (0.1, 1.0, 5.0, 30.0):
        for V in (2, 7, 130, 1000):
            logits = torch.randn(200, V, generator=gen, dtype=torch.float64) * scale
            v = nucleus_values(logits, torch.zeros(200, dtype=torch.long))
            for mass in NUCLEUS_MASSES:
                rest = V - v[f"size_{mass}"] + 1
                assert (v[f"floor_{mass}"] * rest / (1 - mass) > 1 - 1e-12).all()
                assert (v[f"floor_{mass}"] * V / (1 - mass) >= 1 - 1e-12).all()


def test_logit_values_equal_sampling_values_and_kept_logits_are_the_model_s():
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=8, block_size=8), 12)
    ids = torch.randint(0, 12, (50,))
    v = sampling_values(model, ids, batch_windows=2, temperature=1.3)
    assert v["token"].tolist() == ids[1:].tolist()
    assert ((v["size_0.8"] <= v["size_0.9"]) & (v["size_0.9"] <= v["size_0.95"])).all()
    assert v["brier"].between(0, 2).all()
    logits, targets = position_logits(model, ids, batch_windows=3)
    assert logits.shape == (49, 12) and targets.tolist() == ids[1:].tolist()
    kept = logit_values(logits, targets, temperature=1.3)
    pd.testing.assert_frame_equal(kept, v, atol=1e-6, rtol=0)
    with pytest.raises(ParameterError, match="temperature"):
        logit_values(logits, targets, temperature=0.0)


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.0])
def test_the_fitted_temperature_recovers_a_known_one(true_temperature):
    """Logits such that logits / T0 is a calibrated model (targets drawn from it): the
    fit finds T0, and it is the minimum of the NLL on a fine grid (an independent
    search)."""
    logits, targets = sampling.synthetic_model(positions=6000, vocab=20, seed=3)
    fitted = fit_temperature(logits * true_temperature, targets)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    grid = np.exp(np.linspace(np.log(fitted) - 0.05, np.log(fitted) + 0.05, 41))
    nlls = [mean_nll(logits * true_temperature, targets, t) for t in grid]
    assert grid[int(np.argmin(nlls))] == pytest.approx(fitted, rel=0.003)
    # a temperature never changes the ranking: top-1 and every place are the same
    raw = logit_values(logits, targets)
    scaled = logit_values(logits, targets, temperature=fitted)
    assert raw["correct"].equals(scaled["correct"]) and raw["place"].equals(scaled["place"])


def test_the_fit_stops_at_its_bounds_and_refuses_nothing_to_fit():
    logits, targets = sampling.synthetic_model(positions=2000, vocab=10, seed=4)
    assert fit_temperature(logits * 100, targets, bounds=(0.1, 10.0)) == pytest.approx(10.0)
    assert fit_temperature(logits * 0.001, targets, bounds=(0.1, 10.0)) == pytest.approx(0.1)
    with pytest.raises(ParameterError, match="targets"):
        fit_temperature(logits[:0], targets[:0])


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
    with pytest.raises(ParameterError, match="confidence"):
        sampling.expected_calibration_error([1.5], [1])


def test_the_floor_of_a_tiny_case_by_enumeration():
    """Two positions of confidence 0.5, one bin: the outcomes are 00, 01, 10, 11, each with
    probability 1/4, ECE |mean - 0.5| = 0.5, 0, 0, 0.5: the floor is 0.25. One position
    of confidence 0.2: ECE 0.2 (p 0.8) or 0.8 (p 0.2): 0.32."""
    many = sampling.calibration_floor([0.5, 0.5], bins=1, repeats=20000, seed=0)
    assert many == pytest.approx(0.25, abs=0.01)
    one = sampling.calibration_floor([0.2], bins=1, repeats=20000, seed=1)
    assert one == pytest.approx(0.32, abs=0.01)
    # fixed seed: the same floor twice; certain outcomes: a floor of 0
    assert sampling.calibration_floor([0.3] * 50, repeats=3) == sampling.calibration_floor(
        [0.3] * 50, repeats=3
    )
    assert sampling.calibration_floor([0.0, 1.0, 1.0], bins=2) == 0.0


def test_classwise_ece_is_at_its_floor_when_calibrated_and_far_above_when_not():
    logits, targets = sampling.synthetic_model(positions=20000, vocab=30, seed=5)
    rare = list(range(25, 30))  # the prior makes the last tokens the rarest
    calibrated = sampling.rare_calibration(logits, targets, rare)
    assert (calibrated["occurrences"] > 0).all()
    assert calibrated["ece"].mean() < 1.5 * calibrated["floor"].mean()
    for temperature in (0.5, 2.0):  # over- and underconfident copies of the same model
        off = sampling.rare_calibration(logits, targets, rare, temperature)
        assert off["ece"].mean() > 3 * off["floor"].mean()
        assert off["ece"].mean() > 3 * calibrated["ece"].mean()
    # one token by hand: p(k | x) = 0.1 everywhere and k the target at a tenth of them
    probs = np.full(1000, 0.1)
    labels = np.where(np.arange(1000) % 10 == 0, 7, 0)
    assert sampling.classwise_ece(probs, labels, 7, bins=5) == pytest.approx(0.0)
    assert sampling.classwise_ece(probs, labels, 3, bins=5) == pytest.approx(0.1)


def test_ece_on_label_selected_positions_rewards_an_underconfident_model():
    """Why rare-token calibration is class-wise: on the positions whose target is rare,
    the top-1 ECE of a calibrated model is worse than that of a flattened copy."""
    table = sampling.label_selected_example(positions=20000, vocab=40, seed=6)
    calibrated, flat = table.iloc[0], table.iloc[1]
    assert calibrated["temperature"] == 1.0 and flat["temperature"] == 1.5
    assert calibrated["label-selected ECE"] > 2 * flat["label-selected ECE"]
    assert calibrated["class-wise ECE (rare, pooled)"] < flat["class-wise ECE (rare, pooled)"]
    assert "rewards underconfidence" in sampling.label_selected_note(table)


def test_flattening_raises_coverage_and_lowers_the_chance_a_sample_is_the_target():
    table = sampling.flattening_example(positions=8000, vocab=40, seed=7)
    sharp, flat = table.iloc[0], table.iloc[1]
    assert flat["coverage"] > sharp["coverage"] and flat["size"] > sharp["size"]
    assert flat["P(sample = target)"] < sharp["P(sample = target)"]
    assert flat["coverage at k"] == sharp["coverage at k"] and flat["top1"] == sharp["top1"]
    assert flat["ece"] > 5 * sharp["ece floor"] and sharp["ece"] < 2 * sharp["ece floor"]


def test_unseen_bigram_rate_of_a_hand_made_text():
    known = sampling.bigrams("abcab")  # ab, bc, ca
    assert known == {"ab", "bc", "ca"}
    assert sampling.unseen_bigram_rate("abca", known) == 0.0
    assert sampling.unseen_bigram_rate("abxab", known) == pytest.approx(2 / 4)  # bx, xa
    # several texts: never a bigram across two of them ("a" + "b" would be known)
    assert sampling.unseen_bigram_rate(["ax", "bx"], known) == 1.0
    with pytest.raises(ParameterError, match="text"):
        sampling.unseen_bigram_rate("a", known)


def test_seeds_label():
    assert sampling.seeds_label([3]) == "seed 3"
    assert sampling.seeds_label([2, 0, 1]) == "seeds 0-2"
    assert sampling.seeds_label([0, 2, 5]) == "seeds 0, 2, 5"


def _per_seed(ce, hns, column_values=None, scaling="raw"):
    """Hand-made per-seed rows of the low-resource scope: every nucleus value and the ECE
    and top-1 given per arm (``column_values``: column -> (ce values, hns values))."""
    rows = []
    for arm, values in (("CE", ce), ("HNS", hns)):
        for seed, value in enumerate(values):
            row = {
                "experiment": arm,
                "seed": seed,
                "scope": "low",
                "scaling": scaling,
                **{
                    f"{k}_{m}": value
                    for m in NUCLEUS_MASSES
                    for k in ("hit", "coverage", "matched")
                },
            }
            for column, (a, b) in (column_values or {}).items():
                row[column] = (a if arm == "CE" else b)[seed]
            rows.append(row)
    return pd.DataFrame(rows)


def test_n1_rests_on_p_sample_is_target_and_follows_its_interval():
    supported = sampling.nucleus_claim(_per_seed([0.30, 0.31, 0.29], [0.33, 0.35, 0.34]))
    primary = supported[supported["primary"]]
    assert len(primary) == 1 and primary["metric"].iloc[0] == "P(sample = target)"
    assert "P(a top-p 0.9 sample is the target)" in primary["definition"].iloc[0]
    assert primary["verdict"].iloc[0] == "supported" and primary["test"].iloc[0] == "not_worse"
    assert "−0.005" in primary["statement"].iloc[0]
    assert primary["diff"].iloc[0] == pytest.approx(0.04)
    beside = set(supported.loc[~supported["primary"], "metric"])
    assert {"nucleus coverage", "P(sample = target)"} <= beside
    # 2 points below CE, a tight interval: beyond the half-point margin
    worse = sampling.nucleus_claim(_per_seed([0.30, 0.31, 0.29], [0.28, 0.285, 0.27]))
    assert set(worse["verdict"]) == {"contradicted"}
    # within the margin, spread across it: neither
    mixed = sampling.nucleus_claim(_per_seed([0.30, 0.31, 0.29], [0.30, 0.30, 0.28]))
    assert mixed[mixed["primary"]]["verdict"].iloc[0] != "supported"
    assert sampling.nucleus_claim(_per_seed([0.3], [0.4]).assign(scope="high")).empty


def _n2_frame(ece_ce, ece_hns, top1_ce, top1_hns):
    cols = {"ece": (ece_ce, ece_hns), "top1": (top1_ce, top1_hns)}
    return pd.concat(
        [_per_seed([0.3] * 3, [0.3] * 3, cols, scaling) for scaling in ("raw", "fitted")],
        ignore_index=True,
    )


def test_n2_compares_ece_at_the_fitted_temperature_within_its_margin():
    good = sampling.calibration_claim(
        _n2_frame(
            [0.020, 0.022, 0.018], [0.021, 0.024, 0.020], [0.50, 0.51, 0.49], [0.55, 0.57, 0.56]
        )
    )
    primary = good[good["primary"]].iloc[0]
    assert primary["claim"] == "N2" and primary["test"] == "not_worse"
    assert primary["A"] == "CE" and primary["B"] == "HNS"  # CE − HNS: positive is better
    assert primary["diff"] == pytest.approx(-0.00167, abs=1e-5)
    assert primary["verdict"] == "supported" and "0.01" in primary["statement"]
    top1 = good[good["metric"] == "top-1 accuracy"].iloc[0]
    assert top1["verdict"] == "supported" and not top1["primary"]
    bad = sampling.calibration_claim(
        _n2_frame([0.020, 0.022, 0.018], [0.060, 0.061, 0.059], [0.5] * 3, [0.5] * 3)
    )
    assert bad[bad["primary"]]["verdict"].iloc[0] == "contradicted"
    assert sampling.calibration_claim(
        _n2_frame([0.0] * 3, [0.0] * 3, [0] * 3, [0] * 3).assign(scope="high")
    ).empty


class _Run:
    """What ``measure`` reads of a run: its model and its config's seed and setting."""

    def __init__(self, model, bilingual: bool, seed: int):
        self._model = model
        self.config = SimpleNamespace(bilingual=bilingual, seed=seed)

    def model(self, device="cpu"):
        return self._model


def test_measure_claims_and_reading_end_to_end_on_a_tiny_corpus():
    rng = np.random.default_rng(0)
    symbols = ["\n"] + [chr(c) for c in range(40, 109)]  # 70 symbols, Zipf-like frequencies
    weights = 1.0 / np.arange(1, len(symbols) + 1)
    text = "".join(rng.choice(symbols, size=4000, p=weights / weights.sum()))
    corpus = Corpus.from_text(text)
    V = corpus.vocab_size
    results = {}
    for setting, bilingual in (("single", False), ("bilingual", True)):
        runs = {}
        for arm in ("CE", "HNS"):
            for seed in range(2):
                torch.manual_seed(seed + 10 * (arm == "HNS"))
                model = GPT(
                    ModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=8),
                    2 * V if bilingual else V,
                )
                runs[(arm, seed)] = _Run(model, bilingual, seed)
        info = corpus.token_info(bilingual)
        results[setting] = sampling.measure(runs, corpus, info, setting, length=32)
    single = results["single"]
    assert set(single.per_seed["scaling"]) == {"raw", "fitted"}
    raw = single.per_seed[single.per_seed["scaling"] == "raw"]
    assert (raw["temperature"] == 1.0).all() and single.seeds == (0, 1)
    # calibration only where positions are chosen by language, never by label
    labelled = single.per_seed[single.per_seed["scope"] == sampling.RARE_SCOPE]
    assert labelled["ece"].isna().all() and labelled["brier"].isna().all()
    everything = single.per_seed[single.per_seed["scope"] == "all"]
    assert everything[["ece", "ece_floor", "rare_ece", "rare_ece_floor"]].notna().all().all()
    assert set(single.rare["rank"]) == set(range(51, V + 1))
    # the matched k is CE's, and a temperature moves no target: raw and fitted agree at one k
    assert set(single.matched["scope"]) >= {"all", sampling.RARE_SCOPE}
    assert set(single.samples["scaling"]) == {"raw", "fitted"}
    both = results["bilingual"]
    assert set(both.per_seed["scope"]) == {"high", "low"}
    table = sampling.chapter_claims(results)
    assert set(table["claim"]) == {"N1", "N2"} and table["definition"].str.len().min() > 0
    text = sampling.reading(results, table).text
    assert "**N1**" in text and "**N2**" in text and "over seeds 0-1" in text
    assert "fitted temperature" in text and "floor" in text and "lemma" not in text
