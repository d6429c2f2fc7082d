"""Charts of chapter 07, HNS against the field: every arm side by side."""

from __future__ import annotations

import altair as alt
import pandas as pd

from ...study.readings import LANGUAGE_NAMES, METRIC_NAMES
from .core import VERDICT_COLORS, color_scale, points_with_intervals

ROLE_COLORS = {"reference": "#7F7F7F", "hns": "#F58518", "peer": "#4C78A8", "ablation": "#54A24B"}
ROLE_TITLES = {
    "reference": "CE (reference)",
    "hns": "HNS",
    "peer": "published peer",
    "ablation": "ablation of HNS",
}


def _with_roles(frame: pd.DataFrame, roles: dict[str, str]) -> pd.DataFrame:
    return frame.assign(role=[ROLE_TITLES[roles.get(e, "peer")] for e in frame["experiment"]])


def _as_value(frame: pd.DataFrame, column: str, keys: list[str]) -> pd.DataFrame:
    """``keys``, ``n_seeds`` and ``column`` with its interval renamed ``value``,
    ``value_lo``, ``value_hi``: one quantity in the long form the charts draw."""
    names = {column: "value", f"{column}_lo": "value_lo", f"{column}_hi": "value_hi"}
    return frame[[*keys, *names, "n_seeds"]].rename(columns=names)


def _scope_title(scope: str) -> str:
    return LANGUAGE_NAMES.get(scope, scope)


def arm_metrics(
    table: pd.DataFrame, roles: dict[str, str], scopes: list[str], order: list[str]
) -> alt.FacetChart:
    """Each metric per arm (mean and 95% interval over seeds), one row of panels per
    metric and one column per scope (entmax's loss is drawn, but the subtitle and the
    ranking table say it is not comparable)."""
    parts = []
    for metric in ("loss", "top1", "recall5", "mrr"):
        part = _as_value(table[table["scope"].isin(scopes)], metric, ["experiment", "scope"])
        parts.append(part.assign(metric=METRIC_NAMES[metric]))
    data = _with_roles(pd.concat(parts, ignore_index=True), roles)
    data["scope"] = data["scope"].map(_scope_title)
    x = alt.X("experiment:N", sort=order, title=None, axis=alt.Axis(labelAngle=-40))
    color = alt.Color("role:N", scale=color_scale(ROLE_COLORS, ROLE_TITLES), title="arm")
    y = alt.Y("value:Q", scale=alt.Scale(zero=False), title=None)
    keys = ["experiment:N", "scope:N", "metric:N"]
    marks = points_with_intervals(None, x, None, color, y, "value", keys, ".4f")
    return (
        alt.layer(marks, data=data)
        .properties(width=alt.Step(22), height=150)
        .facet(
            row=alt.Row("metric:N", sort=[METRIC_NAMES[m] for m in METRIC_NAMES], title=None),
            column=alt.Column("scope:N", sort=[_scope_title(s) for s in scopes], title=None),
        )
        .resolve_scale(y="independent")
        .properties(
            title=alt.Title(
                "Every arm on every metric",
                subtitle="mean and 95% interval over seeds; entmax's softmax loss is not what it "
                "trains (see the ranking table)",
            )
        )
    )


def arm_differences(diffs: pd.DataFrame, scopes: list[str], order: list[str]) -> alt.FacetChart:
    """Each arm minus CE per metric and scope (paired by seed, 95% interval), coloured by
    verdict; the zero line is CE."""
    data = diffs[diffs["scope"].isin(scopes) & diffs["loss_comparable"]].copy()
    data["scope"] = data["scope"].map(_scope_title)
    data["metric"] = data["metric"].map(METRIC_NAMES)
    data = data.assign(n_seeds=data["n_pairs"])
    x = alt.X("experiment:N", sort=order, title=None, axis=alt.Axis(labelAngle=-40))
    color = alt.Color("verdict:N", scale=color_scale(VERDICT_COLORS), title="arm vs CE")
    y = alt.Y("diff:Q", title=None)
    keys = ["experiment:N", "scope:N", "metric:N", "verdict:N"]
    marks = points_with_intervals(None, x, None, color, y, "diff", keys, "+.4f")
    zero = alt.Chart().mark_rule(color="#333", strokeDash=[4, 4]).encode(y=alt.datum(0))
    return (
        alt.layer(zero, marks, data=data)
        .properties(width=alt.Step(22), height=150)
        .facet(
            row=alt.Row("metric:N", sort=list(METRIC_NAMES.values()), title=None),
            column=alt.Column("scope:N", sort=[_scope_title(s) for s in scopes], title=None),
        )
        .resolve_scale(y="independent")
        .properties(
            title=alt.Title(
                "Each arm minus CE",
                subtitle="paired by seed, 95% interval; better = lower loss or higher accuracy",
            )
        )
    )


def arm_shares(shares: pd.DataFrame, roles: dict[str, str], order: list[str]) -> alt.FacetChart:
    """Scenario 2.2's share of the gradient and of this step's part of AdamW's update,
    per arm, for the rare tokens and the rest (per language)."""
    parts = []
    for column, title in (
        ("share_nontarget", "2.2 share of the gradient"),
        ("update_share_nontarget", "2.2 share of the update"),
    ):
        if column not in shares:
            continue
        part = _as_value(shares, column, ["experiment", "language", "group"])
        parts.append(part.assign(quantity=title))
    data = _with_roles(pd.concat(parts, ignore_index=True), roles)
    data["where"] = data["language"].map(LANGUAGE_NAMES) + ", " + data["group"]
    x = alt.X("experiment:N", sort=order, title=None, axis=alt.Axis(labelAngle=-40))
    color = alt.Color("role:N", scale=color_scale(ROLE_COLORS, ROLE_TITLES), title="arm")
    y = alt.Y("value:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"), title=None)
    keys = ["experiment:N", "where:N", "quantity:N"]
    marks = points_with_intervals(None, x, None, color, y, "value", keys, ".1%")
    half = alt.Chart().mark_rule(strokeDash=[4, 4], color="#333").encode(y=alt.datum(0.5))
    return (
        alt.layer(half, marks, data=data)
        .properties(width=alt.Step(22), height=150)
        .facet(row=alt.Row("quantity:N", title=None), column=alt.Column("where:N", title=None))
        .properties(
            title=alt.Title(
                "How much of the rows' push is scenario 2.2, per arm",
                subtitle="summed definition; an arm that leaves rare rows alone lowers it",
            )
        )
    )


def arm_geometry(geometry: pd.DataFrame, roles: dict[str, str], order: list[str]) -> alt.FacetChart:
    """The output embedding's geometry per arm (mean and 95% interval over seeds)."""
    names = {
        "isotropy": "isotropy I(W)",
        "language_centroid_distance": "language centroid distance",
        "mean_cosine": "mean pairwise cosine",
        "effective_rank": "effective rank",
    }
    parts = []
    for column, title in names.items():
        if column not in geometry:
            continue
        part = _as_value(geometry, column, ["experiment"])
        parts.append(part.assign(measure=title))
    data = _with_roles(pd.concat(parts, ignore_index=True), roles)
    x = alt.X("experiment:N", sort=order, title=None, axis=alt.Axis(labelAngle=-40))
    color = alt.Color("role:N", scale=color_scale(ROLE_COLORS, ROLE_TITLES), title="arm")
    y = alt.Y("value:Q", scale=alt.Scale(zero=False), title=None)
    marks = points_with_intervals(
        None, x, None, color, y, "value", ["experiment:N", "measure:N"], ".4g"
    )
    return (
        alt.layer(marks, data=data)
        .properties(width=alt.Step(22), height=150)
        .facet(column=alt.Column("measure:N", title=None))
        .resolve_scale(y="independent")
        .properties(title=alt.Title("The output embedding's geometry, per arm"))
    )


def tuning_scores(tuning: pd.DataFrame) -> alt.FacetChart:
    """Each tuned arm's score on the tuning split against its candidate values, the
    chosen value marked."""
    data = tuning.assign(
        candidate=[f"{v:g}" for v in tuning["value"]],
        choice=["chosen" if c else "not chosen" for c in tuning["chosen"]],
    )
    base = alt.Chart().encode(
        x=alt.X("candidate:N", sort=None, title="value"),
        y=alt.Y("score:Q", scale=alt.Scale(zero=False), title=None),
    )
    line = base.mark_line(color="#9E9E9E")
    points = base.mark_point(filled=True, size=70).encode(
        color=alt.Color(
            "choice:N",
            scale=alt.Scale(domain=["chosen", "not chosen"], range=["#F58518", "#9E9E9E"]),
            title=None,
        ),
        tooltip=[
            "arm:N",
            "hyperparameter:N",
            "candidate:N",
            alt.Tooltip("score:Q", format=".4f"),
            "choice:N",
        ],
    )
    return (
        alt.layer(line, points, data=data)
        .properties(width=120, height=120)
        .facet(row=alt.Row("setting:N", title=None), column=alt.Column("arm:N", title=None))
        .resolve_scale(y="independent")
        .properties(
            title=alt.Title(
                "Tuning: three values per method, on the tuning split",
                subtitle=f"score: {', '.join(sorted(set(tuning['criterion'])))} at the last step",
            )
        )
    )
