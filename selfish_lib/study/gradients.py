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

# The two definitions of a scenario's size per row (see notebook 02):
# "summed": the norm of the scenario's gradient vector summed over the batch's positions
#           (what the optimizer receives; opposite contributions cancel);
# "per-position": the sum over positions of each contribution's norm (nothing cancels).
DEFINITIONS = {"summed": "", "per-position": "_pp"}
UPDATE_PARTS = ("update_input", "update_target", "update_nontarget", "update_momentum")
UPDATE_COLUMNS = ("grad_total", "update_adam", "update_decay", "update_total", *UPDATE_PARTS)


def _columns(definition: str) -> list[str]:
    suffix = DEFINITIONS[definition]
    return [f"{s}{suffix}" for s in SCENARIOS]


def token_totals(wide: pd.DataFrame) -> pd.DataFrame:
    """Per token: each scenario's size summed over the logged steps, under both
    definitions (``input``.., and ``input_pp``..), the update columns summed alike, and
    the share of scenario 2.2 (``share_nontarget``, ``share_nontarget_pp``)."""
    summed = [c for c in (*_columns("summed"), *_columns("per-position"), *UPDATE_COLUMNS)
              if c in wide.columns]  # fmt: skip
    totals = wide.groupby("token", sort=True)[summed].sum().reset_index()
    for definition, suffix in DEFINITIONS.items():
        columns = _columns(definition)
        if not set(columns) <= set(totals.columns):
            continue  # a run logged before the per-position columns existed
        whole = totals[columns].sum(axis=1)
        totals[f"share_nontarget{suffix}"] = totals[f"nontarget{suffix}"] / whole.where(whole > 0)
    return totals


def group_shares(totals: pd.DataFrame, token_info: pd.DataFrame) -> pd.DataFrame:
    """Per rank group (and language), from the summed sizes of its tokens:

    - ``share_nontarget`` / ``share_nontarget_pp``: the share of scenario 2.2 under the
      summed and the per-position definition, and ``nontarget_over_own`` (2.2 over 1 +
      2.1; > 0.5 and > 1 mean 2.2 outweighs the others);
    - the update view: ``update_share_nontarget``, scenario 2.2's share of this step's
      part of AdamW's update (``update_input`` + ``update_target`` +
      ``update_nontarget``), ``momentum_share``, the part earlier steps left in the
      moment-driven update, and ``update_over_grad``, the moment-driven update's norm
      over the gradient's (how strongly Adam rescales the group's rows).
    """
    merged = totals.merge(token_info[["token", "group", "language"]], on="token")
    value_cols = [c for c in totals.columns if c != "token" and not c.startswith("share_")]
    summed = merged.groupby(["language", "group"], sort=True)[value_cols].sum().reset_index()
    for suffix in DEFINITIONS.values():
        if f"nontarget{suffix}" not in summed:
            continue
        own = summed[f"input{suffix}"] + summed[f"target{suffix}"]
        summed[f"share_nontarget{suffix}"] = summed[f"nontarget{suffix}"] / (
            own + summed[f"nontarget{suffix}"]
        )
        if not suffix:
            summed["nontarget_over_own"] = summed["nontarget"] / own.where(own > 0)
    if set(UPDATE_PARTS) <= set(summed.columns):
        step_part = summed[["update_input", "update_target", "update_nontarget"]].sum(axis=1)
        summed["update_share_nontarget"] = summed["update_nontarget"] / step_part.where(
            step_part > 0
        )
        summed["momentum_share"] = summed["update_momentum"] / (
            step_part + summed["update_momentum"]
        ).where(step_part + summed["update_momentum"] > 0)
        summed["update_over_grad"] = summed["update_adam"] / summed["grad_total"].where(
            summed["grad_total"] > 0
        )
    return summed


SHARE_COLUMNS = (
    "share_nontarget",
    "share_nontarget_pp",
    "nontarget_over_own",
    "update_share_nontarget",
    "momentum_share",
    "update_over_grad",
)


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
    """Shares per rank group (``group_shares``): (per seed, aggregated over seeds with
    intervals). Shares lie in [0, 1] and ratios of norms are >= 0: their intervals are
    clipped to that range (``<column>_clipped``)."""
    per_seed = stack_runs(runs, lambda r: group_shares(token_totals(r.scenarios), token_info))
    values = [c for c in SHARE_COLUMNS if c in per_seed.columns]
    agg = aggregate_seeds(per_seed, ["objective", "language", "group"], values)
    return per_seed, agg


def definitions_side_by_side(shares: pd.DataFrame) -> pd.DataFrame:
    """Long table of scenario 2.2's share per objective and group under both definitions
    (``definition``: 'summed' or 'per-position'), mean and interval over seeds, from
    ``per_group_share``'s aggregated frame."""
    parts = []
    for definition, suffix in DEFINITIONS.items():
        column = f"share_nontarget{suffix}"
        if column not in shares:
            continue
        part = shares[["objective", "language", "group", "n_seeds"]].copy()
        part["definition"] = definition
        for end in ("", "_lo", "_hi"):
            part[f"share{end}"] = shares[f"{column}{end}"]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


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
            text = (
                f"under {objective} scenario 2.2 carries {share} of the summed gradient norm"
                f"{over}: outweighs scenarios 1 and 2.1 together: **{verdict}**"
            )
            if (
                "share_nontarget_pp" in row
                and row["share_nontarget_pp"] == row["share_nontarget_pp"]
            ):
                pp_verdict = _verdict(
                    row["share_nontarget_pp_lo"], row["share_nontarget_pp_hi"], n_seeds, 0.5
                )
                entry[objective]["per_position"] = {
                    "share_nontarget": row["share_nontarget_pp"],
                    "ci": [row["share_nontarget_pp_lo"], row["share_nontarget_pp_hi"]],
                    "outweighs_input_and_target": pp_verdict,
                }
                pp = format_interval(
                    *interval_of(row, "share_nontarget_pp"), digits=1, percent=True
                )
                text += f" (per-position definition: {pp}, **{pp_verdict}**)"
            if "update_over_grad" in row and row["update_over_grad"] == row["update_over_grad"]:
                entry[objective]["update"] = {
                    "update_over_grad": row["update_over_grad"],
                    "update_share_nontarget": row["update_share_nontarget"],
                }
                ratio = format_interval(*interval_of(row, "update_over_grad"), digits=3)
                moved = format_interval(
                    *interval_of(row, "update_share_nontarget"), digits=1, percent=True
                )
                text += (
                    f"; AdamW moves these rows by {ratio} per unit of gradient norm, and "
                    f"scenario 2.2 is {moved} of this step's part of the move"
                )
            parts.append(text)
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
            "*no* when it lies below, and *inconclusive* otherwise. The share is measured "
            "with the summed definition (each scenario's batch-summed gradient per row); "
            "the per-position definition beside it sums each position's contribution "
            "without cancellation.",
            *clipping_note(clipped),
        ]
    )
    return Reading(text, summary)
