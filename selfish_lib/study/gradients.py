"""Chapter 02: the gradient scenarios across runs (shares by frequency group, curves, reading).

The per-run instrument (the exact decomposition and its log) lives in
``engine.scenarios``; this module turns the logs of a grid of runs into the tables
notebook 02 shows and the reading it ends with.
"""

from __future__ import annotations

import pandas as pd

from ..engine.runs import stack_runs
from ..engine.scenarios import SCENARIO_LABELS, SCENARIOS
from .readings import Reading, clipping_note, format_interval, interval_of
from .stats import aggregate_seeds, compare, paired_difference


def token_totals(wide: pd.DataFrame) -> pd.DataFrame:
    """Per token: each scenario's gradient norm summed over the logged steps, and the
    share of scenario 2.2 in their sum."""
    totals = wide.groupby("token", sort=True)[list(SCENARIOS)].sum().reset_index()
    whole = totals[list(SCENARIOS)].sum(axis=1)
    totals["share_nontarget"] = totals["nontarget"] / whole.where(whole > 0)
    return totals


def group_shares(totals: pd.DataFrame, token_info: pd.DataFrame) -> pd.DataFrame:
    """Per rank group (and language): the share of scenario 2.2 in the summed norms of
    its tokens, and the ratio 2.2 / (1 + 2.1); > 0.5 and > 1 mean 2.2 outweighs the others."""
    merged = totals.merge(token_info[["token", "group", "language"]], on="token")
    summed = merged.groupby(["language", "group"], sort=True)[list(SCENARIOS)].sum().reset_index()
    own = summed["input"] + summed["target"]
    summed["share_nontarget"] = summed["nontarget"] / (own + summed["nontarget"])
    summed["nontarget_over_own"] = summed["nontarget"] / own.where(own > 0)
    return summed


def per_token_summary(runs: dict, token_info: pd.DataFrame) -> pd.DataFrame:
    """Per objective, token and scenario: the summed gradient norm, mean and interval over
    seeds; joined with symbols and ranks. Long format (one row per scenario)."""
    totals = stack_runs(runs, lambda r: token_totals(r.scenarios))
    long = totals.melt(
        id_vars=["objective", "seed", "token"],
        value_vars=list(SCENARIOS),
        var_name="scenario",
        value_name="norm",
    )
    out = aggregate_seeds(long, ["objective", "token", "scenario"], ["norm"])
    out["scenario_label"] = out["scenario"].map(SCENARIO_LABELS)
    cols = ["token", "symbol", "display", "rank", "group", "language"]
    return out.merge(token_info[cols], on="token", how="left")


def per_group_share(runs: dict, token_info: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Share of scenario 2.2 per rank group: (per seed, aggregated over seeds with intervals).
    A share lies in [0, 1] and a ratio of norms is >= 0: their intervals are clipped to that
    range (``share_nontarget_clipped``, ``nontarget_over_own_clipped``)."""
    per_seed = stack_runs(runs, lambda r: group_shares(token_totals(r.scenarios), token_info))
    agg = aggregate_seeds(
        per_seed, ["objective", "language", "group"], ["share_nontarget", "nontarget_over_own"]
    )
    return per_seed, agg


def default_tokens(token_info: pd.DataFrame) -> list[int]:
    """The most frequent, the median and the rarest symbol of the first alphabet."""
    high = token_info[token_info["language"] == "high"].sort_values("rank")
    ranks = high["token"].tolist()
    return [ranks[0], ranks[len(ranks) // 2], ranks[-1]]


def step_curves(runs: dict, token_info: pd.DataFrame) -> pd.DataFrame:
    """Per objective, logged step, token and scenario: the gradient norm, mean and interval
    over seeds (for the per-token curves)."""
    wide = stack_runs(runs, lambda r: r.scenarios)
    long = wide.melt(
        id_vars=["objective", "seed", "step", "token"],
        value_vars=list(SCENARIOS),
        var_name="scenario",
        value_name="norm",
    )
    out = aggregate_seeds(long, ["objective", "step", "token", "scenario"], ["norm"])
    out["scenario_label"] = out["scenario"].map(SCENARIO_LABELS)
    return out


def _verdict(lo: float, hi: float, n: int, threshold: float) -> str:
    if n < 2 or lo != lo or hi != hi:  # NaN: fewer than two seeds
        return "inconclusive (fewer than two seeds)"
    if lo > threshold:
        return "yes"
    if hi < threshold:
        return "no"
    return "inconclusive"


def reading(per_seed: pd.DataFrame, shares: pd.DataFrame, rare_groups) -> Reading:
    """Does scenario 2.2 outweigh scenarios 1 and 2.1 together in the ``rare_groups``
    (the 95% interval of its share lies above one half), and how does HNS change the
    share (paired by seed)? Computed from ``per_group_share``'s two frames."""
    high = shares[shares["language"] == "high"].set_index(["objective", "group"])
    diffs = paired_difference(
        per_seed[per_seed["language"] == "high"],
        ["group"],
        "share_nontarget",
        "objective",
        "HNS",
        "CE",
    ).set_index("group")
    lines, summary = [], {"rare_groups": list(rare_groups), "groups": {}}
    clipped = False  # whether an interval the reading quotes was clipped to its range
    for group in rare_groups:
        entry = {}
        parts = []
        for objective in ("CE", "HNS"):
            if (objective, group) not in high.index:
                continue
            row = high.loc[(objective, group)]
            clipped |= bool(row.get("share_nontarget_clipped", False))
            verdict = _verdict(
                row["share_nontarget_lo"], row["share_nontarget_hi"], row["n_seeds"], 0.5
            )
            entry[objective] = {
                "share_nontarget": row["share_nontarget"],
                "ci": [row["share_nontarget_lo"], row["share_nontarget_hi"]],
                "n_seeds": int(row["n_seeds"]),
                "outweighs_input_and_target": verdict,
            }
            share = format_interval(*interval_of(row, "share_nontarget"), digits=1, percent=True)
            n_seeds = int(row["n_seeds"])
            over = f" over {n_seeds} seeds" if n_seeds > 1 else ""  # one seed: the cell says so
            parts.append(
                f"under {objective} scenario 2.2 carries {share} of the summed gradient norm"
                f"{over}: outweighs scenarios 1 and 2.1 together: **{verdict}**"
            )
        if group in diffs.index:
            d = diffs.loc[group]
            clipped |= bool(d.get("diff_clipped", False))
            direction = compare(d["diff_lo"], d["diff_hi"])
            entry["hns_minus_ce"] = {
                "diff": d["diff"],
                "ci": [d["diff_lo"], d["diff_hi"]],
                "direction": direction,
            }
            points = (100 * v for v in interval_of(d, "diff"))
            parts.append(
                f"HNS minus CE: {format_interval(*points, digits=1, sign='+')} points, "
                f"HNS is **{direction}**"
            )
        summary["groups"][group] = entry
        lines.append(f"- **ranks {group}**: " + "; ".join(parts) + ".")
    summary["intervals_clipped"] = clipped
    text = "\n".join(
        [
            "In the rarest frequency groups of the training split (means over seeds with "
            "their 95% intervals):",
            "",
            *lines,
            "",
            "A verdict is *yes* when the whole 95% interval of the share lies above one half, "
            "*no* when it lies below, and *inconclusive* otherwise.",
            *clipping_note(clipped),
        ]
    )
    return Reading(text, summary)
