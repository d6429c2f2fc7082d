"""Figures of notebook 01: the frequency distribution and the worked example."""

from __future__ import annotations

import altair as alt
import pandas as pd

from ...engine.scenarios import SCENARIO_LABELS, SCENARIOS
from .core import (
    EXCLUDED_COLOR,
    GROUP_SCHEME,
    OBJECTIVE_COLORS,
    _rank_order,
    objective_scale,
)


def frequency_by_rank(freq: pd.DataFrame) -> alt.Chart:
    """Bars of every symbol's training count in rank order, on a log scale.

    ``freq`` is ``Corpus.frequencies`` (token, symbol, display, count, share,
    rank, group). Colour marks the rank group; tooltips give the exact numbers.
    """
    groups = _rank_order(freq, "group")
    return (
        alt.Chart(
            freq,
            title=alt.Title(
                "Symbol counts by frequency rank",
                subtitle="Tiny Shakespeare, training split; log scale (⏎ newline, ␣ space)",
            ),
        )
        .mark_bar()
        .encode(
            x=alt.X(
                "display:N",
                sort=_rank_order(freq, "display"),
                title="symbol (rank order)",
                axis=alt.Axis(labelAngle=0, labelFontSize=11),
            ),
            # stack=None: colour would otherwise stack the bars, which a log scale cannot draw.
            y=alt.Y(
                "count:Q",
                # Below 1, so that a symbol seen once still shows a bar.
                scale=alt.Scale(type="log", domainMin=0.5),
                stack=None,
                title="count in the training split",
            ),
            color=alt.Color(
                "group:N",
                sort=groups,
                title="rank group",
                scale=alt.Scale(scheme=GROUP_SCHEME, domain=groups),
                # Above the plot: the 65 bars already need the width of a notebook column.
                legend=alt.Legend(orient="top", direction="horizontal"),
            ),
            tooltip=[
                alt.Tooltip("rank:Q"),
                alt.Tooltip("display:N", title="symbol"),
                alt.Tooltip("count:Q", format=","),
                alt.Tooltip("share:Q", format=".4%"),
                alt.Tooltip("group:N", title="rank group"),
            ],
        )
        .properties(width=alt.Step(12), height=300)
    )


def rank_group_table(freq: pd.DataFrame) -> pd.DataFrame:
    """Per rank group (in rank order): group, symbols, count, share, first_rank, last_rank.

    The data behind ``group_shares``; ``freq`` is ``Corpus.frequencies``.
    """
    table = (
        freq.sort_values("rank")
        .groupby("group", sort=False)
        .agg(
            symbols=("token", "size"),
            count=("count", "sum"),
            share=("share", "sum"),
            first_rank=("rank", "min"),
            last_rank=("rank", "max"),
        )
        .reset_index()
    )
    return table


def group_shares(freq: pd.DataFrame) -> alt.LayerChart:
    """Share of the training tokens held by each rank group (1-10, 11-20, ...), log scale."""
    table = rank_group_table(freq)
    groups = table["group"].tolist()
    title = alt.Title(
        "Share of training tokens by rank group",
        subtitle="log scale: the rarest group holds a tiny fraction of the tokens",
    )
    base = alt.Chart(table, title=title).encode(
        x=alt.X("group:N", sort=groups, title="frequency-rank group", axis=alt.Axis(labelAngle=0)),
        y=alt.Y(
            "share:Q",
            scale=alt.Scale(type="log"),
            stack=None,  # as in frequency_by_rank: a stacked log scale has no bars
            title="share of training tokens",
            axis=alt.Axis(format="%"),
        ),
        tooltip=[
            alt.Tooltip("group:N", title="rank group"),
            alt.Tooltip("share:Q", format=".4%"),
            alt.Tooltip("count:Q", title="tokens", format=","),
            alt.Tooltip("symbols:Q"),
        ],
    )
    bars = base.mark_bar().encode(
        color=alt.Color(
            "group:N", sort=groups, legend=None, scale=alt.Scale(scheme=GROUP_SCHEME, domain=groups)
        ),
    )
    labels = base.mark_text(dy=-8, fontSize=12).encode(text=alt.Text("share:Q", format=".2%"))
    return alt.layer(bars, labels).properties(width=alt.Step(60), height=260)


_PANEL_HEIGHT = 220


def worked_example_chart(norms: pd.DataFrame) -> alt.FacetChart:
    """Per-row gradient norms of the worked example: one panel per scenario, CE vs HNS.

    ``norms`` is ``hypothesis.gradient_norms(...)`` (objective, scenario,
    scenario_label, token, label, role, excluded, grad_norm). Rows HNS excludes
    are shaded and labelled 'excluded'.
    """
    order = list(dict.fromkeys(norms.sort_values("token")["label"]))
    x = alt.X("label:N", sort=order, title="embedding row", axis=alt.Axis(labelAngle=0))
    offset = alt.XOffset("objective:N", sort=list(OBJECTIVE_COLORS))
    # Exclusion only concerns the non-target gradient: mark it in that panel, once per row.
    excluded = alt.datum.excluded & (alt.datum.objective == "HNS")
    excluded &= alt.datum.scenario == SCENARIOS[2]
    shade = (
        alt.Chart()
        .transform_filter(excluded)
        .mark_rect(color=EXCLUDED_COLOR, opacity=0.12)
        .encode(x=x)
    )
    bars = (
        alt.Chart()
        .mark_bar()
        .encode(
            x=x,
            xOffset=offset,
            y=alt.Y("grad_norm:Q", title="gradient norm of the row"),
            color=alt.Color("objective:N", scale=objective_scale(), title="objective"),
            tooltip=[
                "objective:N",
                alt.Tooltip("scenario_label:N", title="scenario"),
                alt.Tooltip("label:N", title="row"),
                "role:N",
                alt.Tooltip("excluded:N", title="excluded by HNS"),
                alt.Tooltip("grad_norm:Q", format=".4f", title="gradient norm"),
            ],
        )
    )
    # Rotated to fit the band, at the (empty) HNS bar, reading upward from the x axis.
    tags = (
        alt.Chart()
        .transform_filter(excluded)
        .mark_text(
            text="excluded by HNS",
            color=EXCLUDED_COLOR,
            angle=270,
            align="left",
            baseline="middle",
            fontSize=11,
        )
        .encode(x=x, xOffset=offset, y=alt.value(_PANEL_HEIGHT - 6))
    )
    names = [SCENARIO_LABELS[s] for s in SCENARIOS]
    return (
        alt.layer(shade, bars, tags, data=norms)
        .properties(width=220, height=_PANEL_HEIGHT)
        .facet(column=alt.Column("scenario_label:N", sort=names, title=None))
        .properties(
            title=alt.Title(
                "Where the gradient of each embedding row comes from",
                subtitle="worked example; shaded rows are excluded by HNS (no non-target gradient)",
            )
        )
    )
