"""Aggregation over seeds, with honest uncertainty.

Intervals are Student-t intervals of the mean over seeds: with few seeds
(3 to 5) a bootstrap would understate the spread, and t is exact for normal
errors. Differences between two objectives are *paired by seed* (the same seed
gives both runs the same initialization and the same batches), so the interval
is the t interval of the per-seed differences. Fewer than two values give a
NaN interval: one seed says nothing about the spread.

A t interval over few seeds can reach past the range its quantity can take (with two
seeds the half-width is 12.7 standard errors): a top-1 accuracy of 0.05 may get the
interval [-0.14, 0.24]. Intervals of bounded quantities are therefore clipped to
their range, here and nowhere else: ``RANGES`` names the range of every bounded
column of the study, ``aggregate_seeds`` and ``paired_difference`` clip with it by
default (a difference of two values in [a, b] lies in [a - b, b - a]), and they
record where they clipped in a ``<value>_clipped`` column (``diff_clipped`` for a
difference). ``clip_interval`` is the clipping itself, for one interval or many.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as st

from ..engine.validation import ParameterError, check_float

UNIT = (0.0, 1.0)
NON_NEGATIVE = (0.0, math.inf)
UNBOUNDED = (-math.inf, math.inf)

# The range of every bounded quantity of the study, by the column that holds it.
RANGES: dict[str, tuple[float, float]] = {
    # validation metrics (engine.evaluation.METRICS): mean loss in nats and three shares
    "loss": NON_NEGATIVE,
    "top1": UNIT,
    "recall5": UNIT,
    "mrr": UNIT,
    # gradient scenarios (study.gradients): summed norms and the share of scenario 2.2
    "norm": NON_NEGATIVE,
    "share_nontarget": UNIT,
    "share_nontarget_pp": UNIT,
    "nontarget_over_own": NON_NEGATIVE,
    # the update view of the same log: shares and a ratio of norms
    "update_share_nontarget": UNIT,
    "momentum_share": UNIT,
    "update_over_grad": NON_NEGATIVE,
    # where the probability goes (study.bilingual.where_the_loss_goes)
    "outside_mass": UNIT,
    "easy_mass": UNIT,
    "easy_count": NON_NEGATIVE,
    "target_prob": UNIT,
}

CLIPPED_SUFFIX = "_clipped"


def difference_range(bounds: tuple[float, float]) -> tuple[float, float]:
    """The range of A - B when A and B both lie in ``bounds`` = (low, high):
    (low - high, high - low); [-1, 1] for two shares, unbounded for two losses."""
    low, high = bounds
    return low - high, high - low


def clip_interval(lo, hi, low: float | Any = -math.inf, high: float | Any = math.inf):
    """``(lo, hi, clipped)``: the interval [lo, hi] clipped to [low, high], and whether the
    raw interval reached past either end. Takes numbers or arrays (one interval per
    element, with ``low``/``high`` numbers or arrays alike); NaN bounds stay NaN and are
    not clipped."""
    lo_arr, hi_arr = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    low_arr, high_arr = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    if np.any(low_arr > high_arr):
        raise ParameterError("low", low, f"a lower end of the range <= its upper end {high}")
    with np.errstate(invalid="ignore"):
        clipped = (lo_arr < low_arr) | (hi_arr > high_arr)
        new_lo = np.where(lo_arr < low_arr, low_arr, lo_arr)
        new_hi = np.where(hi_arr > high_arr, high_arr, hi_arr)
    if new_lo.ndim == 0:
        return float(new_lo), float(new_hi), bool(clipped)
    return new_lo, new_hi, clipped


def clip_to_range(
    table: pd.DataFrame,
    name: str,
    low: float | Any = -math.inf,
    high: float | Any = math.inf,
) -> pd.DataFrame:
    """``table`` with the interval ``name_lo``, ``name_hi`` clipped to [low, high] (numbers,
    or one per row) and ``name_clipped`` saying in which rows it was (True where a raw
    bound lay outside the range; a row clipped before stays marked)."""
    out = table.copy()
    lo, hi, clipped = clip_interval(out[f"{name}_lo"], out[f"{name}_hi"], low, high)
    out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi
    before = np.asarray(out.get(name + CLIPPED_SUFFIX, False), dtype=bool)
    out[name + CLIPPED_SUFFIX] = np.asarray(clipped, dtype=bool) | before
    return out


def any_clipped(*tables: pd.DataFrame) -> bool:
    """Whether any interval of ``tables`` was clipped to its range (any ``*_clipped``
    column holds True)."""
    return any(
        bool(t[c].fillna(False).astype(bool).any())
        for t in tables
        for c in t.columns
        if str(c).endswith(CLIPPED_SUFFIX)
    )


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, int]:
    """Mean and two-sided Student-t interval of ``values`` (NaN ignored).

    Returns (mean, low, high, n). With n < 2 the interval is (NaN, NaN); with
    n = 0 the mean is NaN too.
    """
    confidence = check_float("confidence", confidence, 0.0, 1.0, min_inclusive=False)
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    half = float(st.t.ppf(0.5 + confidence / 2, df=n - 1) * x.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def t_test_p(values: Sequence[float]) -> float:
    """Two-sided p-value of a one-sample Student t test of mean 0 (NaN ignored): the test
    behind ``mean_ci``'s interval (the interval excludes 0 exactly when p < 1 - confidence).
    NaN with fewer than two values; with no spread, 0 for a non-zero mean and 1 for zero."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n < 2:
        return math.nan
    sd = float(x.std(ddof=1))
    mean = float(x.mean())
    if sd == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    t = mean / (sd / math.sqrt(n))
    return float(2 * st.t.sf(abs(t), df=n - 1))


def holm(p_values: Sequence[float], alpha: float = 0.05) -> np.ndarray:
    """Holm's step-down correction: which of the hypotheses are rejected at family-wise
    error ``alpha``. Sort the m p-values; reject the k-th smallest while
    p_(k) <= alpha / (m - k + 1), and stop at the first that is not. NaN p-values are
    never rejected and do not count in m."""
    alpha = check_float("alpha", alpha, 0.0, 1.0, min_inclusive=False)
    p = np.asarray(p_values, dtype=float)
    rejected = np.zeros(len(p), dtype=bool)
    tested = np.flatnonzero(~np.isnan(p))
    m = len(tested)
    for k, index in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        if p[index] > alpha / (m - k):
            break
        rejected[index] = True
    return rejected


def aggregate_seeds(
    frame: pd.DataFrame,
    by: Sequence[str],
    values: Sequence[str],
    confidence: float = 0.95,
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> pd.DataFrame:
    """Mean and interval over rows (one per seed) within each group of ``by``.

    Output columns per value ``v``: ``v`` (mean), ``v_lo``, ``v_hi``; plus
    ``n_seeds`` (seeds with a finite value of the first value column). The same
    numbers as ``mean_ci`` per group, computed for all groups at once; then the
    interval of every value with a range in ``bounds`` (default ``RANGES``; ``{}``
    for none) is clipped to it, and ``v_clipped`` says in which groups it was.
    """
    confidence = check_float("confidence", confidence, 0.0, 1.0, min_inclusive=False)
    by, values = list(by), list(values)
    data = frame[by + values].copy() if by else frame[values].assign(_all=0)
    keys = by or ["_all"]
    grouped = data.groupby(keys, sort=False, observed=True)[values]
    mean, std, n = grouped.mean(), grouped.std(ddof=1), grouped.count()
    out = pd.DataFrame(index=mean.index)
    for v in values:
        df = n[v].to_numpy(dtype=float) - 1
        with np.errstate(invalid="ignore"):
            t = st.t.ppf(0.5 + confidence / 2, df=np.where(df >= 1, df, np.nan))
        half = t * std[v].to_numpy() / np.sqrt(n[v].to_numpy(dtype=float))
        out[v] = mean[v].to_numpy()
        out[f"{v}_lo"] = out[v] - half
        out[f"{v}_hi"] = out[v] + half
    out["n_seeds"] = n[values[0]].to_numpy()
    out = out.reset_index()
    out = out.drop(columns="_all") if not by else out
    bounds = RANGES if bounds is None else bounds
    for v in values:
        if v in bounds:
            out = clip_to_range(out, v, *bounds[v])
    return out


def paired_difference(
    frame: pd.DataFrame,
    by: Sequence[str],
    value: str,
    arm: str,
    treatment: object,
    control: object,
    pair_on: str = "seed",
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Per group of ``by``: treatment minus control of ``value``, paired on ``pair_on``.

    ``arm`` names the column that tells treatment from control (e.g. 'objective').
    Columns: by..., diff, diff_lo, diff_hi, n_pairs, treatment, control (means),
    p_value (the paired t test of no difference, ``t_test_p``), diff_clipped. Seeds
    present in only one arm are left out of the difference. The interval is clipped to
    the range a difference can take, ``difference_range`` of ``bounds`` (default:
    ``value``'s range in ``RANGES``, if it has one), and ``diff_clipped`` says where it
    was.
    """
    keys = list(by) + [pair_on]
    t = frame[frame[arm] == treatment].set_index(keys)[value]
    c = frame[frame[arm] == control].set_index(keys)[value]
    both = pd.concat({"t": t, "c": c}, axis=1, join="inner").reset_index()
    both["d"] = both["t"] - both["c"]
    rows = []
    groups = both.groupby(list(by), sort=False, observed=True) if by else [((), both)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        mean, lo, hi, n = mean_ci(part["d"].to_numpy(dtype=float), confidence)
        rows.append(
            {
                **dict(zip(by, key, strict=True)),
                "diff": mean,
                "diff_lo": lo,
                "diff_hi": hi,
                "n_pairs": n,
                "treatment": part["t"].mean(),
                "control": part["c"].mean(),
                "p_value": t_test_p(part["d"].to_numpy(dtype=float)),
            }
        )
    columns = [*by, "diff", "diff_lo", "diff_hi", "n_pairs", "treatment", "control", "p_value"]
    out = pd.DataFrame(rows, columns=columns)
    if bounds is None:
        bounds = RANGES.get(value, UNBOUNDED)
    return clip_to_range(out, "diff", *difference_range(bounds))


def compare(diff_lo: float, diff_hi: float) -> str:
    """'higher', 'lower' or 'indistinguishable': where the interval of a difference lies
    relative to zero (NaN bounds give 'indistinguishable')."""
    if not (math.isnan(diff_lo) or math.isnan(diff_hi)):
        if diff_lo > 0:
            return "higher"
        if diff_hi < 0:
            return "lower"
    return "indistinguishable"


CLAIM_KINDS = ("greater", "similar", "not_worse")


# Below this many paired seeds a verdict is 'inconclusive' whatever the interval says: a t
# interval on two seeds has one degree of freedom and its spread estimate is one number.
MIN_DECIDING_SEEDS = 3


def claim_verdict(
    diff_lo: float,
    diff_hi: float,
    kind: str = "greater",
    margin: float = 0.0,
    n_seeds: int | None = None,
) -> str:
    """'supported', 'contradicted' or 'inconclusive', from the 95% interval of a difference.

    The difference is oriented so that the claim says it is positive (``greater``),
    near zero (``similar``: within ±``margin``) or not below ``-margin`` (``not_worse``):

    - greater:   supported if the interval lies above 0; contradicted if below 0.
    - similar:   supported if the interval lies within [-margin, margin]; contradicted if
                 it lies entirely outside it (above margin or below -margin).
    - not_worse: supported if the interval lies above -margin; contradicted if it lies
                 below -margin.

    Anything else, and a missing interval (fewer than two seeds), is inconclusive. With
    ``n_seeds`` given, fewer than ``MIN_DECIDING_SEEDS`` paired seeds decide nothing either;
    nor does a zero-width interval (identical per-seed differences: no spread, no evidence
    about the spread, whatever the mean).
    """
    if kind not in CLAIM_KINDS:
        raise ValueError(f"invalid kind={kind!r}: expected one of {', '.join(CLAIM_KINDS)}")
    margin = check_float("margin", margin, 0.0)
    if math.isnan(diff_lo) or math.isnan(diff_hi) or diff_lo == diff_hi:
        return "inconclusive"
    if n_seeds is not None and n_seeds < MIN_DECIDING_SEEDS:
        return "inconclusive"
    if kind == "greater":
        if diff_lo > 0:
            return "supported"
        return "contradicted" if diff_hi < 0 else "inconclusive"
    if kind == "similar":
        if -margin <= diff_lo and diff_hi <= margin:
            return "supported"
        return "contradicted" if diff_lo > margin or diff_hi < -margin else "inconclusive"
    if diff_lo >= -margin:
        return "supported"
    return "contradicted" if diff_hi < -margin else "inconclusive"


# --- the test behind a verdict, its exact permutation twin, and the seeds a contrast needs ------


def _check_kind(kind: str, margin: float) -> float:
    if kind not in CLAIM_KINDS:
        raise ParameterError("kind", kind, f"one of {', '.join(CLAIM_KINDS)}")
    return check_float("margin", margin, 0.0)


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[~np.isnan(x)]


def decision_boundary(mean: float, kind: str, margin: float) -> float:
    """The value the interval of a difference must clear for ``kind`` to be decided, given the
    observed ``mean``: 0 for 'greater'; -margin for 'not_worse'; for 'similar', the nearer
    end of [-margin, margin] (the interval must fall inside both ends to support it, which
    is two one-sided tests, and outside the nearer one to contradict it)."""
    margin = _check_kind(kind, margin)
    if kind == "greater":
        return 0.0
    if kind == "not_worse":
        return -margin
    return margin if mean >= 0 else -margin


def verdict_p(diffs: Sequence[float], kind: str = "greater", margin: float = 0.0) -> float:
    """The two-sided p-value of the t test behind ``claim_verdict``'s 95% interval, so that
    p < 0.05 exactly when the interval decides the claim (either way).

    - greater, not_worse: the t test of mean = boundary (0, or -margin);
    - similar, |mean| < margin: two one-sided tests (TOST) against -margin and +margin, p =
      twice the larger one-sided p (the interval lies inside both ends);
    - similar, |mean| >= margin: the t test of mean = the nearer end.

    NaN with fewer than two values; with no spread, 0 away from the boundary and 1 on it.
    """
    margin = _check_kind(kind, margin)
    x = _finite(diffs)
    if len(x) < 2:
        return math.nan
    mean = float(x.mean())
    if kind == "similar" and abs(mean) < margin:
        sd = float(x.std(ddof=1))
        if sd == 0.0:
            return 0.0
        se = sd / math.sqrt(len(x))
        above = st.t.sf((mean + margin) / se, df=len(x) - 1)  # H0: mean <= -margin
        below = st.t.cdf((mean - margin) / se, df=len(x) - 1)  # H0: mean >= +margin
        return float(min(1.0, 2 * max(above, below)))
    return t_test_p(x - decision_boundary(mean, kind, margin))


# Beyond this many paired values the sign patterns (2^n) are too many to enumerate.
MAX_EXACT_SIGN_FLIPS = 20


def sign_flip_p(diffs: Sequence[float], kind: str = "greater", margin: float = 0.0) -> float:
    """The exact paired sign-flip permutation test beside ``verdict_p``, on the per-seed
    differences: under the null each centred difference is as likely negative as positive,
    so the observed mean is compared with the means of all 2^n sign patterns.

    Centred at the same boundary as ``verdict_p`` (and, for 'similar' inside the margin,
    the same two one-sided tests, p = twice the larger one-sided p). Two-sided: the share of
    patterns whose |mean| reaches the observed one (the observed pattern counts), so the
    smallest p is 2 / 2^n: 0.0625 with five seeds, 0.031 with six. NaN with fewer than two
    values; more than ``MAX_EXACT_SIGN_FLIPS`` values are refused.
    """
    margin = _check_kind(kind, margin)
    x = _finite(diffs)
    n = len(x)
    if n < 2:
        return math.nan
    if n > MAX_EXACT_SIGN_FLIPS:
        raise ParameterError(
            "diffs", f"{n} values", f"at most {MAX_EXACT_SIGN_FLIPS} (2^n patterns)"
        )
    signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)  # every +-1 pattern

    def share(centred: np.ndarray, side: str) -> float:
        """The share of sign patterns whose mean reaches the observed one: 'upper' (as
        large), 'lower' (as small) or 'both' (as large in absolute value)."""
        means, observed = signs @ centred / n, centred.mean()
        tol = 1e-12 * max(1.0, float(np.abs(centred).max()))  # the observed pattern counts
        if side == "upper":
            return float((means >= observed - tol).mean())
        if side == "lower":
            return float((means <= observed + tol).mean())
        return float((np.abs(means) >= abs(observed) - tol).mean())

    mean = float(x.mean())
    if kind == "similar" and abs(mean) < margin:
        return min(1.0, 2 * max(share(x + margin, "upper"), share(x - margin, "lower")))
    return share(x - decision_boundary(mean, kind, margin), "both")


POWER = 0.8  # the seeds-needed rule plans for this chance of deciding a contrast
MAX_SEEDS_NEEDED = 10_000


def seeds_needed(
    diffs: Sequence[float],
    kind: str = "greater",
    margin: float = 0.0,
    confidence: float = 0.95,
    power: float = POWER,
) -> float:
    """How many paired seeds would decide a contrast if its observed mean and paired standard
    deviation held: the smallest n >= ``MIN_DECIDING_SEEDS`` with

        (t_{(1 + confidence)/2, n-1} + t_{power, n-1}) * sd / sqrt(n) <= gap,

    where gap is the distance of the mean from the boundary the interval must clear
    (``decision_boundary``; inside a 'similar' margin, from the nearer end). This is the
    usual normal-approximation sample size for a paired t test with Student quantiles: at n
    seeds the interval clears the boundary with about ``power`` probability. NaN with fewer
    than two values or no spread; inf when the mean sits on the boundary or n would exceed
    ``MAX_SEEDS_NEEDED``.
    """
    margin = _check_kind(kind, margin)
    confidence = check_float("confidence", confidence, 0.0, 1.0, min_inclusive=False)
    power = check_float("power", power, 0.5, 0.999)
    x = _finite(diffs)
    if len(x) < 2:
        return math.nan
    sd = float(x.std(ddof=1))
    if sd == 0.0:
        return math.nan
    mean = float(x.mean())
    if kind == "similar" and abs(mean) < margin:
        gap = margin - abs(mean)
    else:
        gap = abs(mean - decision_boundary(mean, kind, margin))
    if gap == 0.0:
        return math.inf
    n = np.arange(MIN_DECIDING_SEEDS, MAX_SEEDS_NEEDED + 1)
    need = (st.t.ppf(0.5 + confidence / 2, n - 1) + st.t.ppf(power, n - 1)) * sd / np.sqrt(n)
    enough = np.flatnonzero(need <= gap)
    return float(n[enough[0]]) if len(enough) else math.inf


def holm_adjusted(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values: sorted ascending, p_(k) * (m - k + 1), made
    non-decreasing and capped at 1. ``holm(p, alpha)`` rejects exactly where the adjusted
    p is <= alpha. NaN stays NaN and does not count in m."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = len(tested)
    running = 0.0
    for k, index in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (m - k) * p[index]))
        out[index] = running
    return out
