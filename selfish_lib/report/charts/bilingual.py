"""Figures of notebook 04: the bilingual simulation."""

from __future__ import annotations

import altair as alt
import pandas as pd

from ...study.readings import POOLED
from .core import EXPERIMENT_COLORS, LANGUAGE_TITLES, METRIC_TITLES, experiment_scale

# A Vega expression that breaks an axis label into lines after its first hyphen and at
# its spaces: 'high-resource' -> 'high-' / 'resource', 'both languages' -> 'both' / 'languages'.
WRAP_LABEL = "split(replace(datum.label, '-', '- '), ' ')"

# The two alphabets, in the order their panels are drawn.
_ALPHABETS = [LANGUAGE_TITLES[k] for k in ("high", "low")]


def _long_metrics(
    frame: pd.DataFrame, keys: list[str], titles: dict = METRIC_TITLES, name: str = "metric"
) -> pd.DataFrame:
    """One row per key and column of ``titles``: the column's title under ``name``, its mean
    as ``value`` and its interval as ``lo``/``hi`` (the mean where there is no interval)."""
    rows = []
    for column, title in titles.items():
        part = frame[keys].copy()
        part[name] = title
        part["value"] = frame[column]
        part["lo"] = frame[f"{column}_lo"].fillna(frame[column])
        part["hi"] = frame[f"{column}_hi"].fillna(frame[column])
        rows.append(part)
    out = pd.concat(rows, ignore_index=True)
    out["language_title"] = out["language"].map(LANGUAGE_TITLES)
    return out


def bilingual_learning_curves(curves: pd.DataFrame) -> alt.FacetChart:
    """Every metric at every evaluation point, per language (rows) and metric (columns),
    the three experiments overlaid with 95% bands. ``curves`` is
    ``bilingual.learning_curves(...)``."""
    data = _long_metrics(curves[curves["language"] != POOLED], ["experiment", "language", "step"])
    color = alt.Color("experiment:N", scale=experiment_scale(), title="experiment")
    x = alt.X("step:Q", title="training step")
    band = (
        alt.Chart()
        .mark_area(opacity=0.2)
        .encode(
            x=x, y=alt.Y("lo:Q", title=None, scale=alt.Scale(zero=False)), y2="hi:Q", color=color
        )
    )
    line = (
        alt.Chart()
        .mark_line(point=alt.OverlayMarkDef(size=14))
        .encode(
            x=x,
            y="value:Q",
            color=color,
            tooltip=[
                "experiment:N",
                "language_title:N",
                "metric:N",
                "step:Q",
                alt.Tooltip("value:Q", format=".4f", title="mean"),
                alt.Tooltip("lo:Q", format=".4f", title="95% CI low"),
                alt.Tooltip("hi:Q", format=".4f", title="95% CI high"),
            ],
        )
    )
    return (
        alt.layer(band, line, data=data)
        .properties(width=190, height=150)
        .facet(
            row=alt.Row("language_title:N", sort=_ALPHABETS, title=None),
            column=alt.Column("metric:N", sort=list(METRIC_TITLES.values()), title=None),
        )
        .resolve_scale(y="independent")
        .properties(
            title=alt.Title(
                "Learning curves on the validation split",
                subtitle="mean over seeds with a 95% band",
            )
        )
    )


def bilingual_final_metrics(table: pd.DataFrame) -> alt.FacetChart:
    """Final metrics per experiment and language with 95% intervals.
    ``table`` is the first frame of ``bilingual.final_table(...)``."""
    data = _long_metrics(table, ["experiment", "language"])
    color = alt.Color("experiment:N", scale=experiment_scale(), title="experiment")
    # Each language title on two lines ('low-' over 'resource', 'both' over 'languages'):
    # on one line the three titles run into each other under a panel 240 pixels wide.
    x = alt.X(
        "language_title:N",
        title=None,
        sort=list(LANGUAGE_TITLES.values()),
        axis=alt.Axis(labelAngle=0, labelExpr=WRAP_LABEL, labelLineHeight=13),
    )
    offset = alt.XOffset("experiment:N", sort=list(EXPERIMENT_COLORS))
    points = (
        alt.Chart()
        .mark_point(filled=True, size=60)
        .encode(
            x=x,
            xOffset=offset,
            y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
            color=color,
            tooltip=[
                "experiment:N",
                "language_title:N",
                "metric:N",
                alt.Tooltip("value:Q", format=".4f", title="mean"),
                alt.Tooltip("lo:Q", format=".4f", title="95% CI low"),
                alt.Tooltip("hi:Q", format=".4f", title="95% CI high"),
            ],
        )
    )
    rules = (
        alt.Chart()
        .mark_rule(strokeWidth=2)
        .encode(x=x, xOffset=offset, y="lo:Q", y2="hi:Q", color=color)
    )
    return (
        alt.layer(rules, points, data=data)
        .properties(width=240, height=190)
        .facet(
            facet=alt.Facet("metric:N", sort=list(METRIC_TITLES.values()), title=None), columns=4
        )
        .resolve_scale(y="independent")
        .properties(
            title=alt.Title(
                "Final validation metrics",
                subtitle="mean over seeds with 95% intervals, clipped to each metric's range",
                offset=10,
            )
        )
    )


def probability_histogram(hist: pd.DataFrame) -> alt.FacetChart:
    """Distribution of the probabilities given to non-target tokens (log10 scale), CE
    baseline against HNS, per language. ``hist`` is ``bilingual.where_the_loss_goes(...)[0]``."""
    data = hist.copy()
    data["language_title"] = data["language"].map(LANGUAGE_TITLES)
    data["log10p"] = (data["bin_lo"] + data["bin_hi"]) / 2
    color = alt.Color("experiment:N", scale=experiment_scale(), title="experiment")
    line = (
        alt.Chart()
        .mark_line(interpolate="step-after", strokeWidth=1.8)
        .encode(
            x=alt.X("bin_lo:Q", title="log₁₀ P(non-target token)"),
            y=alt.Y(
                "fraction:Q", title="share of non-target probabilities", axis=alt.Axis(format="%")
            ),
            color=color,
            tooltip=[
                "experiment:N",
                "language_title:N",
                alt.Tooltip("bin_lo:Q", format=".2f", title="log₁₀ P from"),
                alt.Tooltip("bin_hi:Q", format=".2f", title="to"),
                alt.Tooltip("fraction:Q", format=".2%", title="share"),
            ],
        )
    )
    return (
        alt.layer(line, data=data)
        .properties(width=330, height=200)
        .facet(column=alt.Column("language_title:N", sort=_ALPHABETS, title=None))
        .properties(
            title=alt.Title(
                "Where the probability goes",
                subtitle="every non-target token at every validation position; mean over seeds",
            )
        )
    )


def probability_mass(summary: pd.DataFrame) -> alt.FacetChart:
    """Mean probability mass outside the target, and the part of it held by the tokens
    HNS would exclude (never pushed down by HNS), per experiment and language with 95%
    intervals. ``summary`` is ``bilingual.where_the_loss_goes(...)[1]``."""
    names = {"outside_mass": "mass outside the target", "easy_mass": "mass of easy negatives"}
    data = _long_metrics(summary, ["experiment", "language"], names, name="quantity")
    color = alt.Color("experiment:N", scale=experiment_scale(), title="experiment")
    x = alt.X("language_title:N", title=None, axis=alt.Axis(labelAngle=0))
    offset = alt.XOffset("experiment:N", sort=list(EXPERIMENT_COLORS))
    bars = (
        alt.Chart()
        .mark_bar()
        .encode(
            x=x,
            xOffset=offset,
            color=color,
            y=alt.Y("value:Q", title="mean probability", axis=alt.Axis(format="%")),
            tooltip=[
                "experiment:N",
                "language_title:N",
                "quantity:N",
                alt.Tooltip("value:Q", format=".2%", title="mean"),
                alt.Tooltip("lo:Q", format=".2%", title="95% CI low"),
                alt.Tooltip("hi:Q", format=".2%", title="95% CI high"),
            ],
        )
    )
    rules = alt.Chart().mark_rule(color="#333").encode(x=x, xOffset=offset, y="lo:Q", y2="hi:Q")
    return (
        alt.layer(bars, rules, data=data)
        .properties(width=alt.Step(45), height=200)
        .facet(column=alt.Column("quantity:N", sort=list(names.values()), title=None))
        .resolve_scale(y="independent")
    )
