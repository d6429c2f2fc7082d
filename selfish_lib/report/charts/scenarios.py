"""Figures of notebook 02: the gradient scenarios per token, per group and over training."""

from __future__ import annotations

import altair as alt
import pandas as pd

from .core import (
    OBJECTIVE_COLORS,
    _clip_for_log,
    _rank_order,
    objective_scale,
    points_with_intervals,
    scenario_scale,
)


def scenario_norms_by_rank(tokens: pd.DataFrame) -> alt.FacetChart:
    """Summed gradient norm of each scenario per symbol, symbols in rank order (log scale),
    one panel per objective. ``tokens`` is ``gradients.per_token_summary(...)``."""
    data = _clip_for_log(tokens[tokens["norm"] > 0], "norm")
    order = _rank_order(tokens.drop_duplicates("token"), "display")
    x = alt.X(
        "display:N",
        sort=order,
        title="symbol (most frequent on the left)",
        axis=alt.Axis(labelAngle=0, labelFontSize=10),
    )
    y = alt.Y("norm:Q", scale=alt.Scale(type="log"), title="summed gradient norm")
    color = alt.Color("scenario_label:N", scale=scenario_scale(labels=True), title="scenario")
    tooltip = [
        alt.Tooltip("symbol:N"),
        alt.Tooltip("rank:Q"),
        alt.Tooltip("scenario_label:N", title="scenario"),
        alt.Tooltip("norm:Q", format=".4g", title="mean over seeds"),
        alt.Tooltip("norm_lo:Q", format=".4g", title="95% CI low"),
        alt.Tooltip("norm_hi:Q", format=".4g", title="95% CI high"),
        alt.Tooltip("n_seeds:Q", title="seeds"),
    ]
    lines = (
        alt.Chart()
        .mark_line(point=alt.OverlayMarkDef(size=18), strokeWidth=1.2)
        .encode(x=x, y=y, color=color, tooltip=tooltip)
    )
    bars = (
        alt.Chart()
        .mark_rule(opacity=0.6)
        .encode(
            x=x,
            y=alt.Y("norm_lo_plot:Q", scale=alt.Scale(type="log")),
            y2="norm_hi_plot:Q",
            color=color,
        )
    )
    return (
        alt.layer(bars, lines, data=data)
        .properties(width=alt.Step(9), height=300)
        .facet(column=alt.Column("objective:N", sort=list(OBJECTIVE_COLORS), title=None))
        .properties(
            title=alt.Title(
                "Gradient of each embedding row, by scenario",
                subtitle="summed over the logged steps; mean over seeds with 95% intervals",
            )
        )
    )


def nontarget_share_by_group(per_seed: pd.DataFrame, shares: pd.DataFrame) -> alt.LayerChart:
    """Share of scenario 2.2 in each rank group: seeds as points, means with 95% intervals,
    a reference line at one half. Inputs are ``gradients.per_group_share(...)``."""
    per_seed = per_seed[per_seed["language"] == "high"]
    shares = shares[shares["language"] == "high"]
    groups = sorted(shares["group"].unique(), key=lambda g: int(g.split("-")[0]))
    x = alt.X("group:N", sort=groups, title="frequency rank group", axis=alt.Axis(labelAngle=0))
    offset = alt.XOffset("objective:N", sort=list(OBJECTIVE_COLORS))
    color = alt.Color("objective:N", scale=objective_scale(), title="objective")
    y_scale = alt.Scale(domain=[0, 1])
    points = (
        alt.Chart(per_seed)
        .mark_point(filled=True, size=30, opacity=0.5)
        .encode(
            x=x,
            xOffset=offset,
            color=color,
            y=alt.Y(
                "share_nontarget:Q",
                scale=y_scale,
                axis=alt.Axis(format="%"),
                title="share of scenario 2.2 in the gradient norm",
            ),
            tooltip=[
                "objective:N",
                "seed:Q",
                "group:N",
                alt.Tooltip("share_nontarget:Q", format=".1%", title="share"),
            ],
        )
    )
    means = (
        alt.Chart(shares)
        .mark_tick(thickness=3, size=18)
        .encode(
            x=x,
            xOffset=offset,
            color=color,
            y=alt.Y("share_nontarget:Q", scale=y_scale),
            tooltip=[
                "objective:N",
                "group:N",
                alt.Tooltip("share_nontarget:Q", format=".1%", title="mean"),
                alt.Tooltip("share_nontarget_lo:Q", format=".1%", title="95% CI low"),
                alt.Tooltip("share_nontarget_hi:Q", format=".1%", title="95% CI high"),
                alt.Tooltip("n_seeds:Q", title="seeds"),
            ],
        )
    )
    intervals = (
        alt.Chart(shares)
        .mark_rule(strokeWidth=2)
        .encode(
            x=x,
            xOffset=offset,
            color=color,
            y=alt.Y("share_nontarget_lo:Q", scale=y_scale),
            y2="share_nontarget_hi:Q",
        )
    )
    half = (
        alt.Chart(pd.DataFrame({"y": [0.5]}))
        .mark_rule(strokeDash=[4, 4], color="#333")
        .encode(y="y:Q")
    )
    return alt.layer(half, intervals, points, means).properties(
        width=alt.Step(70),
        height=300,
        title=alt.Title(
            "How much of a row's gradient is the non-target push?",
            subtitle="above the dashed line, scenario 2.2 outweighs scenarios 1 and 2.1 together",
        ),
    )


def scenario_curves(curves: pd.DataFrame, token_info: pd.DataFrame, tokens) -> alt.FacetChart:
    """Each scenario's gradient norm over training for the given tokens (rows) and both
    objectives (columns), mean over seeds with a 95% band, log scale.
    ``curves`` is ``gradients.step_curves(...)``."""
    tokens = list(tokens)
    info = token_info.set_index("token")
    data = curves[curves["token"].isin(tokens) & (curves["norm"] > 0)].copy()
    data["symbol_label"] = [
        f"{info.loc[t, 'display']} (rank {info.loc[t, 'rank']})" for t in data["token"]
    ]
    data = _clip_for_log(data, "norm")
    order = [f"{info.loc[t, 'display']} (rank {info.loc[t, 'rank']})" for t in tokens]
    x = alt.X("step:Q", title="training step")
    y_scale = alt.Scale(type="log")
    color = alt.Color("scenario_label:N", scale=scenario_scale(labels=True), title="scenario")
    band = (
        alt.Chart()
        .mark_area(opacity=0.2)
        .encode(x=x, y=alt.Y("norm_lo_plot:Q", scale=y_scale), y2="norm_hi_plot:Q", color=color)
    )
    line = (
        alt.Chart()
        .mark_line(strokeWidth=1.5)
        .encode(
            x=x,
            y=alt.Y("norm:Q", scale=y_scale, title="gradient norm"),
            color=color,
            tooltip=[
                "step:Q",
                alt.Tooltip("scenario_label:N", title="scenario"),
                alt.Tooltip("norm:Q", format=".4g", title="mean over seeds"),
            ],
        )
    )
    return (
        alt.layer(band, line, data=data)
        .properties(width=300, height=170)
        .facet(
            row=alt.Row("symbol_label:N", sort=order, title=None),
            column=alt.Column("objective:N", sort=list(OBJECTIVE_COLORS), title=None),
        )
        .properties(
            title=alt.Title(
                "Gradient of one embedding row over training",
                subtitle="mean over seeds with a 95% band",
            )
        )
    )


def _group_order(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["group"].unique(), key=lambda g: int(str(g).split("-")[0]))


def share_definitions(side: pd.DataFrame) -> alt.FacetChart:
    """Scenario 2.2's share per rank group under the two definitions (the norm of the
    batch-summed vector, and the sum of the per-position norms), mean and 95% interval
    over seeds, one panel per objective. ``side`` is
    ``gradients.definitions_side_by_side(...)``."""
    side = side[side["language"] == "high"]
    x = alt.X("group:N", sort=_group_order(side), title="frequency rank group",
              axis=alt.Axis(labelAngle=0))  # fmt: skip
    offset = alt.XOffset("definition:N", sort=["summed", "per-position"])
    color = alt.Color("definition:N", sort=["summed", "per-position"], title="definition",
                      scale=alt.Scale(range=["#2C7FB8", "#E6550D"]))  # fmt: skip
    y = alt.Y("share:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"),
              title="share of scenario 2.2")  # fmt: skip
    keys = ["objective:N", "group:N", "definition:N"]
    marks = points_with_intervals(None, x, offset, color, y, "share", keys, ".1%")
    half = alt.Chart().mark_rule(strokeDash=[4, 4], color="#333").encode(y=alt.datum(0.5))
    return (
        alt.layer(half, marks, data=side)
        .properties(width=alt.Step(44), height=260)
        .facet(column=alt.Column("objective:N", sort=list(OBJECTIVE_COLORS), title=None))
        .properties(
            title=alt.Title(
                "Two ways to measure a scenario's size",
                subtitle="summed: norm of the batch-summed gradient; per-position: sum of "
                "each position's norm (no cancellation)",
            )
        )
    )


def update_view(shares: pd.DataFrame) -> alt.HConcatChart:
    """How the rows move under AdamW, per rank group: (left) the moment-driven update's
    norm over the gradient's (log scale), (right) scenario 2.2's share of this step's
    part of the update. ``shares`` is ``gradients.per_group_share(...)[1]``."""
    shares = _clip_for_log(shares[shares["language"] == "high"], "update_over_grad")
    x = alt.X("group:N", sort=_group_order(shares), title="frequency rank group",
              axis=alt.Axis(labelAngle=0))  # fmt: skip
    offset = alt.XOffset("objective:N", sort=list(OBJECTIVE_COLORS))
    color = alt.Color("objective:N", scale=objective_scale(), title="objective")
    keys = ["objective:N", "group:N"]
    ratio = alt.Y("update_over_grad:Q", scale=alt.Scale(type="log"),
                  title="update norm / gradient norm")  # fmt: skip
    share = alt.Y("update_share_nontarget:Q", scale=alt.Scale(domain=[0, 1]),
                  title="share of 2.2 in this step's update")  # fmt: skip
    left = points_with_intervals(
        shares, x, offset, color, ratio, "update_over_grad", keys, ".3g", bounds="_plot"
    )  # log axis: bounds above 0; fmt: skip
    right = points_with_intervals(shares, x, offset, color, share, "update_share_nontarget",
                                   keys, ".1%")  # fmt: skip
    size = dict(width=alt.Step(44), height=260)
    return alt.hconcat(left.properties(**size), right.properties(**size)).properties(
        title=alt.Title(
            "How the rows actually move: AdamW's update",
            subtitle="Adam divides by each coordinate's gradient scale: rare rows move far "
            "more per unit of gradient",
        )
    )
