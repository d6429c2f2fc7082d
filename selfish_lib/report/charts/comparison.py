"""Figures of notebook 03: CE versus HNS per frequency group."""

from __future__ import annotations

import altair as alt
import pandas as pd

from ...engine.evaluation import METRICS
from .core import METRIC_TITLES, VERDICT_COLORS, color_scale, objective_scale

# The most panels a row of a wrapped grid holds.
GRID_COLUMNS = 4


def _group_order(groups) -> list[str]:
    return sorted(set(groups), key=lambda g: int(str(g).split("-")[0]))


def group_curves(
    bands: pd.DataFrame, title: str = "Training loss by frequency group"
) -> alt.FacetChart:
    """Smoothed training loss over steps, one panel per rank group, CE and HNS overlaid with
    a 95% band over seeds. ``bands`` is ``frequency.curve_bands(...)``."""
    data = bands.copy()
    data["loss_lo"] = data["loss_lo"].fillna(data["loss"])
    data["loss_hi"] = data["loss_hi"].fillna(data["loss"])
    color = alt.Color("objective:N", scale=objective_scale(), title="objective")
    x = alt.X("step:Q", title="training step")
    band = (
        alt.Chart()
        .mark_area(opacity=0.25)
        .encode(
            x=x,
            y=alt.Y("loss_lo:Q", title="training loss (CE, smoothed)"),
            y2="loss_hi:Q",
            color=color,
        )
    )
    line = (
        alt.Chart()
        .mark_line(strokeWidth=1.6)
        .encode(
            x=x,
            y="loss:Q",
            color=color,
            tooltip=[
                "objective:N",
                "group:N",
                "step:Q",
                alt.Tooltip("loss:Q", format=".3f", title="mean over seeds"),
                alt.Tooltip("loss_lo:Q", format=".3f", title="95% CI low"),
                alt.Tooltip("loss_hi:Q", format=".3f", title="95% CI high"),
            ],
        )
    )
    # One cell per group present, wrapped in rows of at most four. Each cell draws its own
    # x axis: with axes in the footer of each column, a last row shorter than the others
    # would leave an axis and its title under an empty slot.
    groups = _group_order(data["group"])
    return (
        alt.layer(band, line, data=data)
        .properties(width=230, height=160)
        .facet(
            facet=alt.Facet("group:N", sort=groups, title="frequency rank group"),
            columns=min(GRID_COLUMNS, len(groups)),
        )
        .resolve_scale(y="independent")
        .resolve_axis(x="independent")
        .properties(title=alt.Title(title, subtitle="mean over seeds with a 95% band"))
    )


def group_differences(table: pd.DataFrame) -> alt.FacetChart:
    """HNS minus CE per rank group for each validation metric, with 95% paired intervals
    and a zero line. ``table`` is ``frequency.validation_table(...)``."""
    rows = []
    for rec in table.to_dict("records"):
        for metric in METRICS:
            rows.append(
                {
                    "group": rec["group"],
                    "count": rec["count"],
                    "metric": METRIC_TITLES[metric],
                    "diff": rec[f"diff_{metric}"],
                    "lo": rec[f"diff_{metric}_lo"],
                    "hi": rec[f"diff_{metric}_hi"],
                    "verdict": rec[f"verdict_{metric}"],
                }
            )
    data = pd.DataFrame(rows).dropna(subset=["diff"])
    order = _group_order(table["group"])
    x = alt.X("group:N", sort=order, title="frequency rank group", axis=alt.Axis(labelAngle=0))
    verdict_color = alt.Color(
        "verdict:N",
        title="HNS vs CE",
        scale=color_scale(VERDICT_COLORS),
    )
    zero = alt.Chart().mark_rule(strokeDash=[4, 4], color="#333").encode(y=alt.datum(0))
    bars = (
        alt.Chart().mark_rule(strokeWidth=2).encode(x=x, y="lo:Q", y2="hi:Q", color=verdict_color)
    )
    points = (
        alt.Chart()
        .mark_point(filled=True, size=50)
        .encode(
            x=x,
            y=alt.Y("diff:Q", title="HNS − CE"),
            color=verdict_color,
            tooltip=[
                "metric:N",
                "group:N",
                alt.Tooltip("count:Q", format=",", title="val tokens"),
                alt.Tooltip("diff:Q", format="+.4f"),
                alt.Tooltip("lo:Q", format="+.4f"),
                alt.Tooltip("hi:Q", format="+.4f"),
                "verdict:N",
            ],
        )
    )
    return (
        alt.layer(zero, bars, points, data=data)
        .properties(width=260, height=170)
        .facet(
            facet=alt.Facet("metric:N", sort=list(METRIC_TITLES.values()), title=None), columns=2
        )
        .resolve_scale(y="independent")
        .properties(
            title=alt.Title(
                "HNS minus CE on the validation split, per frequency group",
                subtitle="95% intervals of the difference paired by seed, clipped to the range "
                "a difference can take; lower loss and higher accuracy are better",
            )
        )
    )
