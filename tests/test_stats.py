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


# --- the test behind a verdict, the sign-flip test, the seeds needed, the family ----------------


def brute_force_sign_flip(diffs, centre=0.0):
    """The sign-flip p by enumerating every sign pattern with itertools (independent of the
    vectorised bit trick): the share of patterns whose |mean| reaches the observed one."""
    import itertools

    x = [d - centre for d in diffs]
    observed = abs(sum(x) / len(x))
    hits = total = 0
    for signs in itertools.product((1, -1), repeat=len(x)):
        total += 1
        hits += abs(sum(s * v for s, v in zip(signs, x, strict=True)) / len(x)) >= observed - 1e-12
    return hits / total


@pytest.mark.parametrize(
    "diffs",
    [
        [0.3, 0.1, 0.25, 0.4, 0.05, 0.2],  # all positive: the smallest p, 2 / 2^6
        [0.3, -0.1, 0.25, 0.4, -0.05, 0.2],
        [0.01, -0.02, 0.03, -0.04, 0.05, -0.06],
        [1.0, 2.0, -3.0, 0.5, 0.5, -1.0],
    ],
)
def test_sign_flip_p_equals_brute_force_enumeration(diffs):
    from selfish_lib.study.stats import sign_flip_p

    assert sign_flip_p(diffs) == pytest.approx(brute_force_sign_flip(diffs))
    # not_worse is the same test centred at -margin
    assert sign_flip_p(diffs, "not_worse", 0.1) == pytest.approx(
        brute_force_sign_flip(diffs, centre=-0.1)
    )


def test_sign_flip_floor_is_two_over_two_to_the_n():
    from selfish_lib.study.stats import sign_flip_p

    assert sign_flip_p([0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(2 / 2**5)  # 0.0625
    assert sign_flip_p([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == pytest.approx(2 / 2**6)  # 0.031
    assert math.isnan(sign_flip_p([0.1]))
    with pytest.raises(ValueError, match="diffs"):
        sign_flip_p(np.ones(21))


def test_similarity_uses_two_one_sided_tests():
    from selfish_lib.study.stats import sign_flip_p, verdict_p

    inside = [0.01, 0.02, 0.0, 0.01, 0.015, 0.012]  # well within +-0.05
    assert verdict_p(inside, "similar", 0.05) < 0.05
    assert sign_flip_p(inside, "similar", 0.05) == pytest.approx(2 / 2**6)
    straddling = [0.03, 0.07, 0.04, 0.06, 0.05, 0.02]  # the mean sits near the margin
    assert verdict_p(straddling, "similar", 0.05) > 0.05


@pytest.mark.parametrize("kind, margin", [("greater", 0.0), ("not_worse", 0.05),
                                          ("similar", 0.05)])  # fmt: skip
def test_verdict_p_below_005_exactly_when_the_interval_decides(kind, margin):
    """p < 0.05 and a decided verdict go together: the p is the interval's own test."""
    from selfish_lib.study.stats import claim_verdict, verdict_p

    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(3, 8))
        diffs = rng.normal(rng.normal(0, 0.06), rng.uniform(0.005, 0.08), size=n)
        _, lo, hi, _ = mean_ci(diffs)
        decided = claim_verdict(lo, hi, kind, margin, n_seeds=n) != "inconclusive"
        p = verdict_p(diffs, kind, margin)
        if abs(p - 0.05) > 1e-9:
            assert decided == (p < 0.05), (diffs, kind)


def test_zero_spread_and_too_few_seeds_decide_nothing():
    from selfish_lib.study.stats import claim_verdict

    _, lo, hi, n = mean_ci([0.01, 0.01])  # identical differences: a zero-width interval
    assert (lo, hi) == (0.01, 0.01)
    assert claim_verdict(lo, hi, "greater", n_seeds=n) == "inconclusive"
    assert claim_verdict(lo, hi, "greater") == "inconclusive"  # without n too
    _, lo, hi, n = mean_ci([0.010, 0.011])  # two seeds, an interval above 0
    assert lo > 0 and claim_verdict(lo, hi, "greater") == "supported"  # the interval alone
    assert claim_verdict(lo, hi, "greater", n_seeds=n) == "inconclusive"  # but two seeds
    _, lo, hi, n = mean_ci([0.010, 0.011, 0.012])
    assert claim_verdict(lo, hi, "greater", n_seeds=n) == "supported"


def test_seeds_needed_is_the_smallest_n_of_the_power_rule():
    """Checked against the rule written out independently, and against its normal
    approximation (the t quantiles only add seeds)."""
    from scipy import stats as st

    from selfish_lib.study.stats import seeds_needed

    diffs = [0.02, -0.01, 0.04, 0.0]  # mean 0.0125, sd 0.0222
    mean, sd = np.mean(diffs), np.std(diffs, ddof=1)
    n = seeds_needed(diffs)

    def clears(k):
        return (st.t.ppf(0.975, k - 1) + st.t.ppf(0.8, k - 1)) * sd / math.sqrt(k) <= mean

    assert clears(n) and not clears(n - 1)
    normal = ((st.norm.ppf(0.975) + st.norm.ppf(0.8)) * sd / mean) ** 2
    assert normal <= n <= normal + 4
    assert math.isnan(seeds_needed([0.01, 0.01]))  # no spread: no rule
    assert math.isinf(seeds_needed([0.01, -0.01]))  # the mean on the boundary
    # similar: the distance to the nearer end of the margin
    assert seeds_needed([0.0, 0.02, -0.02], "similar", 0.05) < seeds_needed(
        [0.03, 0.05, 0.01], "similar", 0.05
    )


def test_holm_adjusted_p_rejects_where_holm_does():
    from selfish_lib.study.stats import holm, holm_adjusted

    p = [0.01, 0.04, 0.03, 0.005, math.nan]
    adjusted = holm_adjusted(p)
    # by hand: sorted 0.005, 0.01, 0.03, 0.04 with m = 4 -> 0.02, 0.03, 0.06, 0.06
    assert adjusted[:4].tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    assert ((adjusted <= 0.05) == holm(p, 0.05)).all()
