"""Seed statistics on cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from selfish_lib.study.stats import (
    aggregate_seeds,
    compare,
    mean_ci,
    paired_difference,
)


def test_mean_ci_matches_the_t_table():
    # n = 4, mean 2.5, sd = sqrt(5/3); t(0.975, 3) = 3.182446305284263
    mean, lo, hi, n = mean_ci([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert (mean, n) == (2.5, 4)
    assert lo == pytest.approx(2.5 - half, rel=1e-12) and hi == pytest.approx(2.5 + half)


def test_mean_ci_edge_cases():
    assert mean_ci([3.0, 3.0, 3.0])[1:3] == (3.0, 3.0)  # no spread, zero-width interval
    mean, lo, hi, n = mean_ci([2.0])
    assert mean == 2.0 and math.isnan(lo) and math.isnan(hi) and n == 1
    mean, lo, hi, n = mean_ci([math.nan, math.nan])
    assert math.isnan(mean) and n == 0
    assert mean_ci([1.0, math.nan, 3.0])[3] == 2  # NaN seeds are left out, not zeros
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=1.5)


def test_interval_coverage_is_close_to_nominal():
    rng = np.random.default_rng(0)
    hits = 0
    trials = 2000
    for _ in range(trials):
        _, lo, hi, _ = mean_ci(rng.normal(1.0, 2.0, size=5))
        hits += lo <= 1.0 <= hi
    assert abs(hits / trials - 0.95) < 0.015


def test_aggregate_seeds_per_group():
    frame = pd.DataFrame(
        {
            "group": ["a", "a", "a", "b", "b"],
            "seed": [0, 1, 2, 0, 1],
            "loss": [1.0, 2.0, 3.0, 5.0, math.nan],
        }
    )
    out = aggregate_seeds(frame, by=["group"], values=["loss"]).set_index("group")
    assert out.loc["a", "loss"] == 2.0 and out.loc["a", "n_seeds"] == 3
    assert out.loc["a", "loss_lo"] < 2.0 < out.loc["a", "loss_hi"]
    assert out.loc["b", "n_seeds"] == 1 and math.isnan(out.loc["b", "loss_lo"])


def test_paired_difference_uses_seed_pairs():
    # a constant +0.5 shift on top of large seed-to-seed variation: pairing removes it
    base = [1.0, 4.0, 9.0]
    frame = pd.DataFrame(
        {
            "objective": ["CE"] * 3 + ["HNS"] * 3,
            "seed": [0, 1, 2] * 2,
            "g": ["x"] * 6,
            "loss": base + [b + 0.5 for b in base],
        }
    )
    out = paired_difference(frame, ["g"], "loss", "objective", "HNS", "CE").iloc[0]
    assert out["diff"] == pytest.approx(0.5)
    assert out["diff_lo"] == pytest.approx(0.5) and out["diff_hi"] == pytest.approx(0.5)
    assert out["n_pairs"] == 3 and compare(out["diff_lo"], out["diff_hi"]) == "higher"
    # an unpaired seed is dropped
    extra = pd.concat(
        [frame, pd.DataFrame([{"objective": "HNS", "seed": 7, "g": "x", "loss": 100.0}])]
    )
    assert paired_difference(extra, ["g"], "loss", "objective", "HNS", "CE")["n_pairs"][0] == 3


def test_compare():
    assert compare(-2.0, -1.0) == "lower"
    assert compare(-1.0, 1.0) == "indistinguishable"
    assert compare(math.nan, math.nan) == "indistinguishable"


def test_vectorized_aggregation_equals_mean_ci_per_group():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"g": rng.integers(0, 30, 300), "seed": rng.integers(0, 5, 300), "v": rng.normal(size=300)}
    )
    frame.loc[::7, "v"] = math.nan
    out = aggregate_seeds(frame, ["g"], ["v"]).set_index("g")
    for g, part in frame.groupby("g"):
        mean, lo, hi, n = mean_ci(part["v"])
        got = out.loc[g, ["v", "v_lo", "v_hi"]].to_numpy(dtype=float)
        assert np.allclose(got, [mean, lo, hi], equal_nan=True) and out.loc[g, "n_seeds"] == n


@pytest.mark.parametrize(
    "lo, hi, kind, margin, expected",
    [
        (0.1, 0.3, "greater", 0.0, "supported"),
        (-0.3, -0.1, "greater", 0.0, "contradicted"),
        (-0.1, 0.3, "greater", 0.0, "inconclusive"),
        (-0.02, 0.03, "similar", 0.05, "supported"),
        (0.01, 0.04, "similar", 0.05, "supported"),  # different from 0, but within the margin
        (0.06, 0.2, "similar", 0.05, "contradicted"),
        (-0.2, -0.07, "similar", 0.05, "contradicted"),
        (-0.02, 0.09, "similar", 0.05, "inconclusive"),
        (-0.004, 0.01, "not_worse", 0.005, "supported"),
        (-0.03, -0.01, "not_worse", 0.005, "contradicted"),
        (-0.03, 0.01, "not_worse", 0.005, "inconclusive"),
        (math.nan, math.nan, "greater", 0.0, "inconclusive"),
    ],
)
def test_claim_verdicts_follow_the_interval(lo, hi, kind, margin, expected):
    from selfish_lib.study.stats import claim_verdict

    assert claim_verdict(lo, hi, kind, margin) == expected


def test_claim_verdict_rejects_bad_arguments():
    from selfish_lib.study.stats import claim_verdict

    with pytest.raises(ValueError, match="kind"):
        claim_verdict(0.0, 1.0, "bigger")
    with pytest.raises(ValueError, match="margin"):
        claim_verdict(0.0, 1.0, "similar", -1.0)


# --- intervals of bounded quantities ------------------------------------------------------------


def test_two_seeds_give_a_raw_t_interval_outside_zero_one():
    # the case of the smoke report: 12.7 standard errors either side of a small accuracy
    _, lo, hi, _ = mean_ci([0.10, 0.12])
    assert lo < 0.0 < hi < 1.0
    _, lo, hi, _ = mean_ci([0.95, 0.99])
    assert lo > 0.0 and hi > 1.0


def test_clip_interval_clips_to_the_range_and_says_so():
    from selfish_lib.study.stats import clip_interval

    assert clip_interval(-0.139, 0.4, 0.0, 1.0) == (0.0, 0.4, True)
    assert clip_interval(0.2, 1.089, 0.0, 1.0) == (0.2, 1.0, True)
    assert clip_interval(0.2, 0.4, 0.0, 1.0) == (0.2, 0.4, False)
    lo, hi, clipped = clip_interval(math.nan, math.nan, 0.0, 1.0)  # one seed: nothing to clip
    assert math.isnan(lo) and math.isnan(hi) and clipped is False
    lo, hi, clipped = clip_interval([-1.0, 0.5], [0.5, 3.0], [0.0, -1.0], [1.0, 1.0])
    assert lo.tolist() == [0.0, 0.5] and hi.tolist() == [0.5, 1.0]
    assert clipped.tolist() == [True, True]
    with pytest.raises(ValueError, match="low"):
        clip_interval(0.0, 1.0, 1.0, 0.0)


def test_a_difference_of_two_bounded_values_has_its_own_range():
    from selfish_lib.study.stats import RANGES, difference_range

    assert difference_range(RANGES["top1"]) == (-1.0, 1.0)
    assert difference_range(RANGES["loss"]) == (-math.inf, math.inf)


def two_seed_metrics() -> pd.DataFrame:
    """Two seeds per objective whose raw t intervals leave every metric's range."""
    return pd.DataFrame(
        {
            "objective": ["CE", "CE", "HNS", "HNS"],
            "seed": [0, 1, 0, 1],
            "loss": [0.1, 2.0, 0.1, 3.0],
            "top1": [0.01, 0.2, 0.9, 0.05],
            "recall5": [0.95, 0.99, 0.97, 0.99],
            "mrr": [0.0, 0.6, 0.7, 0.0],
            "v": [0.01, 0.2, 0.9, 0.05],  # not a bounded quantity: left as it is
        }
    )


def test_aggregate_seeds_clips_bounded_metrics_and_records_it():
    frame = two_seed_metrics()
    raw = aggregate_seeds(frame, ["objective"], ["top1", "recall5"], bounds={})
    assert raw["top1_lo"].min() < 0.0 and raw["recall5_hi"].max() > 1.0  # what t alone gives
    assert "top1_clipped" not in raw
    out = aggregate_seeds(frame, ["objective"], ["loss", "top1", "recall5", "mrr", "v"])
    for metric in ("top1", "recall5", "mrr"):
        assert out[f"{metric}_lo"].min() >= 0.0 and out[f"{metric}_hi"].max() <= 1.0
        assert out[f"{metric}_clipped"].all()
    assert out["loss_lo"].min() == 0.0 and out["loss_clipped"].all()
    assert "v_clipped" not in out and out["v_lo"].min() < 0.0  # no range known: not clipped
    # the means are untouched, and so are intervals inside the range
    assert out["top1"].tolist() == pytest.approx([0.105, 0.475])
    wide = aggregate_seeds(frame.assign(top1=[0.5, 0.51, 0.5, 0.51]), ["objective"], ["top1"])
    assert not wide["top1_clipped"].any() and wide["top1_lo"].min() > 0.4
    custom = aggregate_seeds(frame, ["objective"], ["v"], bounds={"v": (0.0, 1.0)})
    assert custom["v_lo"].min() == 0.0 and custom["v_clipped"].all()


def test_paired_differences_of_bounded_metrics_lie_in_minus_one_one():
    frame = two_seed_metrics()
    top1 = paired_difference(frame, [], "top1", "objective", "HNS", "CE").iloc[0]
    assert (top1["diff_lo"], top1["diff_hi"]) == (-1.0, 1.0) and top1["diff_clipped"]
    assert top1["diff"] == pytest.approx(0.37)
    loss = paired_difference(frame, [], "loss", "objective", "HNS", "CE").iloc[0]
    assert loss["diff_lo"] < -1.0 and not loss["diff_clipped"]  # losses: no bound on A - B
    bounded = paired_difference(frame, [], "loss", "objective", "HNS", "CE", bounds=(0.0, 4.0))
    assert bounded["diff_lo"].iloc[0] == -4.0 and bounded["diff_clipped"].iloc[0]


def test_geometry_metrics_are_clipped_to_their_own_ranges():
    from selfish_lib.study import geometry

    per_seed = pd.DataFrame(
        {
            "objective": ["CE", "CE", "HNS", "HNS"],
            "seed": [0, 1, 0, 1],
            "isotropy": [0.99, 0.5, 0.2, 0.98],
            "mean_cosine": [0.9, -0.9, -0.9, 0.9],
            "probe_kl": [0.01, 1.0, 0.02, 2.0],
        }
    )
    means, diffs = geometry.summarize(per_seed)
    m = means.set_index(["objective", "metric"])
    assert m.loc[("CE", "isotropy"), "value_lo"] == 0.0
    assert m.loc[("CE", "isotropy"), "value_hi"] == 1.0
    assert m.loc[("CE", "mean_cosine"), "value_lo"] == -1.0
    assert m.loc[("CE", "probe_kl"), "value_lo"] == 0.0 and m["value_clipped"].all()
    d = diffs.set_index("metric")
    assert (d.loc["isotropy", "diff_lo"], d.loc["isotropy", "diff_hi"]) == (-1.0, 1.0)
    assert (d.loc["mean_cosine", "diff_lo"], d.loc["mean_cosine", "diff_hi"]) == (-2.0, 2.0)
    assert d.loc["probe_kl", "diff_lo"] < -2.0 and not d.loc["probe_kl", "diff_clipped"]
