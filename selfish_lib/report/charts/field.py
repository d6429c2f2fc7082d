"""Charts of chapter 07, HNS against the field: every arm side by side."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from ...study.field import FIELD_METRIC_NAMES, FIELD_METRICS, OWN_TARGET
from ...study.readings import LANGUAGE_NAMES
from .core import VERDICT_COLORS, color_scale, points_with_intervals

ROLE_COLORS = {
    "reference": "#7F7F7F",
    "hns": "#F58518",
    "peer": "#4C78A8",
    OWN_TARGET: "#9ECAE9",
    "ablation": "#54A24B",
}
ROLE_TITLES = {
    "reference": "CE (reference)",
    "hns": "HNS",
    "peer": "published peer",
    OWN_TARGET: "peer tuned on its own target",
    "ablation": "ablation of HNS",
}


def seeds_text(seeds: Sequence[int] | None) -> str:
    """'seeds 0-5' for consecutive seeds, 'seeds 0, 2, 7' otherwise ('' for None)."""
    if not seeds:
        return ""
    seeds = sorted(int(s) for s in seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}-{seeds[-1]}"
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(s) for s in seeds)


def _over(seeds: Sequence[int] | None) -> str:
    return f"over {seeds_text(seeds)}" if seeds else "over seeds"


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
    table: pd.DataFrame,
    roles: dict[str, str],
    scopes: list[str],
    order: list[str],
    seeds: Sequence[int] | None = None,
) -> alt.FacetChart:
    """Each metric per arm, balanced recall included (mean and 95% interval over
    ``seeds``), one row of panels per metric and one column per scope (entmax's loss is
    drawn, but the subtitle and the ranking table say it is not comparable)."""
    parts = []
    for metric in FIELD_METRICS:
        part = _as_value(table[table["scope"].isin(scopes)], metric, ["experiment", "scope"])
        parts.append(part.assign(metric=FIELD_METRIC_NAMES[metric]))
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
            row=alt.Row(
                "metric:N", sort=[FIELD_METRIC_NAMES[m] for m in FIELD_METRICS], title=None
            ),  # fmt: skip
            column=alt.Column("scope:N", sort=[_scope_title(s) for s in scopes], title=None),
        )
        .resolve_scale(y="independent")
        .properties(
            title=alt.Title(
                "Every arm on every metric",
                subtitle=f"mean and 95% interval {_over(seeds)}; entmax's softmax loss is not "
                "what it trains (see the ranking table)",
            )
        )
    )


def arm_differences(
    diffs: pd.DataFrame,
    scopes: list[str],
    order: list[str],
    seeds: Sequence[int] | None = None,
) -> alt.FacetChart:
    """Each arm minus CE per metric and scope (paired by seed over ``seeds``, 95%
    interval), coloured by verdict; the zero line is CE."""
    data = diffs[diffs["scope"].isin(scopes) & diffs["loss_comparable"]].copy()
    data["scope"] = data["scope"].map(_scope_title)
    data["metric"] = data["metric"].map(FIELD_METRIC_NAMES)
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
            row=alt.Row(
                "metric:N", sort=[FIELD_METRIC_NAMES[m] for m in FIELD_METRICS], title=None
            ),  # fmt: skip
            column=alt.Column("scope:N", sort=[_scope_title(s) for s in scopes], title=None),
        )
        .resolve_scale(y="independent")
        .properties(
            title=alt.Title(
                "Each arm minus CE",
                subtitle=f"paired by seed {_over(seeds)}, 95% interval; better = lower loss or "
                "higher accuracy and recall",
            )
        )
    )


def arm_shares(
    shares: pd.DataFrame,
    roles: dict[str, str],
    order: list[str],
    seeds: Sequence[int] | None = None,
) -> alt.FacetChart:
    """Scenario 2.2's share of the gradient and of this step's part of AdamW's update,
    per arm, for the rare tokens and the rest (per language), mean and 95% interval
    over ``seeds``."""
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
                subtitle=f"summed definition, mean and 95% interval {_over(seeds)}; an arm "
                "that leaves rare rows alone lowers it",
            )
        )
    )


def arm_geometry(
    geometry: pd.DataFrame,
    roles: dict[str, str],
    order: list[str],
    seeds: Sequence[int] | None = None,
) -> alt.FacetChart:
    """The output embedding's geometry per arm (mean and 95% interval over ``seeds``)."""
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
        .properties(
            title=alt.Title(
                "The output embedding's geometry, per arm",
                subtitle=f"mean and 95% interval {_over(seeds)}",
            )
        )
    )


def tuning_scores(tuning: pd.DataFrame) -> alt.FacetChart:
    """Each tuned arm's score on the tuning split against its candidate values (a log
    axis: the grids are geometric): each tuning seed's score as a tick, their mean as
    the line and the points (no interval: two seeds give none worth drawing), the
    chosen value marked and the values an extension added drawn as diamonds."""
    means = tuning.assign(
        kind="mean",
        choice=["chosen" if c else "not chosen" for c in tuning["chosen"]],
        grid=["added" if r > 0 else "first grid" for r in tuning["round"]],
        seed="mean",
    )
    rows = []
    for rec in tuning.to_dict("records"):
        for seed, value in zip(rec["tuning_seeds"], rec["seed_scores"], strict=True):
            rows.append({"setting": rec["setting"], "arm": rec["arm"], "value": rec["value"],
                         "score": value, "seed": str(seed), "kind": "seed"})  # fmt: skip
    columns = ["setting", "arm", "value", "score", "kind", "seed", "choice", "grid",
               "hyperparameter", "criterion"]  # fmt: skip
    data = pd.concat([means, pd.DataFrame(rows)], ignore_index=True)
    data = data.reindex(columns=columns)
    seeds = sorted({s for row in tuning["tuning_seeds"] for s in row})
    x = alt.X("value:Q", scale=alt.Scale(type="log"), title="value (log scale)")
    y = alt.Y("score:Q", scale=alt.Scale(zero=False), title=None)
    is_mean = alt.datum.kind == "mean"
    line = alt.Chart().mark_line(color="#9E9E9E").encode(x=x, y=y).transform_filter(is_mean)
    ticks = (
        alt.Chart()
        .mark_tick(color="#4C78A8", opacity=0.7, orient="horizontal")
        .encode(
            x=x, y=y, tooltip=["arm:N", "value:Q", "seed:N", alt.Tooltip("score:Q", format=".4f")]
        )
        .transform_filter(alt.datum.kind == "seed")
    )
    points = (
        alt.Chart()
        .mark_point(filled=True, size=70)
        .encode(
            x=x,
            y=y,
            color=alt.Color(
                "choice:N",
                scale=alt.Scale(domain=["chosen", "not chosen"], range=["#F58518", "#9E9E9E"]),
                title=None,
            ),
            shape=alt.Shape(
                "grid:N",
                scale=alt.Scale(domain=["first grid", "added"], range=["circle", "diamond"]),
                title=None,
            ),
            tooltip=[
                "arm:N",
                "hyperparameter:N",
                "value:Q",
                alt.Tooltip("score:Q", format=".4f", title="mean over seeds"),
                "choice:N",
                "grid:N",
            ],
        )
        .transform_filter(is_mean)
    )
    return (
        alt.layer(line, ticks, points, data=data)
        .properties(width=140, height=120)
        .facet(row=alt.Row("setting:N", title=None), column=alt.Column("arm:N", title=None))
        .resolve_scale(y="independent", x="independent")
        .properties(
            title=alt.Title(
                "Tuning on the tuning split: every candidate on every tuning seed",
                subtitle=[
                    f"score: {', '.join(sorted(set(tuning['criterion'])))} at the last step",
                    f"ticks: each of {seeds_text(seeds)}; points: their mean (no interval); "
                    "diamonds: values added where the first grid's choice lay on its edge",
                ],
            )
        )
    )


def tuning_carry_over(table: pd.DataFrame, summary: pd.DataFrame) -> alt.FacetChart:
    """HNS's layout candidates: the full-length score against the tuning score, one
    point per candidate (each the mean over the tuning seeds), per setting; the Spearman
    correlation in the panel's title."""
    rho = {r["setting"]: r["spearman"] for r in summary.to_dict("records")}
    data = table.assign(
        panel=[
            f"{s}: Spearman {rho[s]:+.2f}" if pd.notna(rho.get(s)) else f"{s}: Spearman n/a"
            for s in table["setting"]
        ],
        candidate=[f"layout {v:g}" for v in table["layout"]],
    )
    seeds = sorted({s for text in table["seeds"] for s in text.split(", ")})
    base = alt.Chart().encode(
        x=alt.X("tuning score:Q", scale=alt.Scale(zero=False)),
        y=alt.Y("full-length score:Q", scale=alt.Scale(zero=False)),
    )
    points = base.mark_point(filled=True, size=70, color="#F58518").encode(
        tooltip=[
            "candidate:N",
            alt.Tooltip("tuning score:Q", format=".4f"),
            alt.Tooltip("full-length score:Q", format=".4f"),
            "seeds:N",
        ]
    )
    labels = base.mark_text(dx=8, align="left", fontSize=10).encode(text="candidate:N")
    return (
        alt.layer(points, labels, data=data)
        .properties(width=200, height=160)
        .facet(column=alt.Column("panel:N", title=None))
        .resolve_scale(x="independent", y="independent")
        .properties(
            title=alt.Title(
                "Does the tuning score rank HNS's layouts as the full runs do?",
                subtitle=f"each point the mean over seeds {', '.join(seeds)} (no interval); "
                "x: the short run on the tuning split, y: the full run on the validation split",
            )
        )
    )
