"""Aggregation over seeds, with honest uncertainty.

Intervals are Student-t intervals of the mean over seeds: with few seeds
(3 to 5) a bootstrap would understate the spread, and t is exact for normal
errors. Differences between two objectives are *paired by seed* (the same seed
gives both runs the same initialization and the same batches), so the interval
is the t interval of the per-seed differences. Fewer than two values give a
NaN interval: one seed says nothing about the spread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as st

from ..engine.validation import check_float


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


def aggregate_seeds(
    frame: pd.DataFrame,
    by: Sequence[str],
    values: Sequence[str],
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Mean and interval over rows (one per seed) within each group of ``by``.

    Output columns per value ``v``: ``v`` (mean), ``v_lo``, ``v_hi``; plus
    ``n_seeds`` (seeds with a finite value of the first value column). The same
    numbers as ``mean_ci`` per group, computed for all groups at once.
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
    return out.drop(columns="_all") if not by else out


def paired_difference(
    frame: pd.DataFrame,
    by: Sequence[str],
    value: str,
    arm: str,
    treatment: object,
    control: object,
    pair_on: str = "seed",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per group of ``by``: treatment minus control of ``value``, paired on ``pair_on``.

    ``arm`` names the column that tells treatment from control (e.g. 'objective').
    Columns: by..., diff, diff_lo, diff_hi, n_pairs, treatment, control (means).
    Seeds present in only one arm are left out of the difference.
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
            }
        )
    return pd.DataFrame(rows)


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


def claim_verdict(
    diff_lo: float, diff_hi: float, kind: str = "greater", margin: float = 0.0
) -> str:
    """'supported', 'contradicted' or 'inconclusive', from the 95% interval of a difference.

    The difference is oriented so that the claim says it is positive (``greater``),
    near zero (``similar``: within ±``margin``) or not below ``-margin`` (``not_worse``):

    - greater:   supported if the interval lies above 0; contradicted if below 0.
    - similar:   supported if the interval lies within [-margin, margin]; contradicted if
                 it lies entirely outside it (above margin or below -margin).
    - not_worse: supported if the interval lies above -margin; contradicted if it lies
                 below -margin.

    Anything else, and a missing interval (fewer than two seeds), is inconclusive.
    """
    if kind not in CLAIM_KINDS:
        raise ValueError(f"invalid kind={kind!r}: expected one of {', '.join(CLAIM_KINDS)}")
    margin = check_float("margin", margin, 0.0)
    if math.isnan(diff_lo) or math.isnan(diff_hi):
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
