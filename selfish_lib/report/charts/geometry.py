"""Figures of notebook 05: projections of the embedding matrix, row norms by rank,
the per-model metrics and the unigram probe."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from ...study.geometry import OBJECTIVES
from ...study.projection import PROJECTIONS
from .core import DIRECTION_COLORS, color_scale, language_scale, model_scale

RARE_SHAPES = {"other": "circle", "rarest": "diamond"}

PANEL_WIDTH = 300
PANEL_HEIGHT = (160, 380)  # the smallest and largest panel height


def _equal_aspect_frame(frame: pd.DataFrame, margin: float = 0.06) -> tuple:
    """x and y domains holding every point of ``frame`` and a panel height such that one
    unit is as long on both axes (distances in the picture are true distances).

    The width is fixed; the height follows the y / x extent within ``PANEL_HEIGHT``,
    and when it hits a bound the other axis's domain is widened instead.
    """
    lo = frame[["x", "y"]].min().to_numpy(dtype=float) if len(frame) else np.array([-1.0, -1.0])
    hi = frame[["x", "y"]].max().to_numpy(dtype=float) if len(frame) else np.array([1.0, 1.0])
    span = np.maximum(hi - lo, 1e-12) * (1 + 2 * margin)
    centre = (lo + hi) / 2
    height = PANEL_WIDTH * span[1] / span[0]
    if height < PANEL_HEIGHT[0]:
        height = PANEL_HEIGHT[0]
        span[1] = span[0] * height / PANEL_WIDTH
    elif height > PANEL_HEIGHT[1]:
        height = PANEL_HEIGHT[1]
        span[0] = span[1] * PANEL_WIDTH / height
    x_domain = [float(centre[0] - span[0] / 2), float(centre[0] + span[0] / 2)]
    y_domain = [float(centre[1] - span[1] / 2), float(centre[1] + span[1] / 2)]
    return x_domain, y_domain, int(round(height))


def _projection_panel(data: pd.DataFrame, frame: tuple, title: str) -> alt.LayerChart:
    x_domain, y_domain, height = frame
    x = alt.X(
        "x:Q",
        scale=alt.Scale(domain=x_domain, nice=False, zero=False),
        title=None,
        axis=alt.Axis(labels=False, ticks=False),
    )
    y = alt.Y(
        "y:Q",
        scale=alt.Scale(domain=y_domain, nice=False, zero=False),
        title=None,
        axis=alt.Axis(labels=False, ticks=False),
    )
    twins = (
        alt.Chart(data)
        .mark_line(strokeWidth=0.6, opacity=0.45, color="#888")
        .encode(x=x, y=y, detail="base_token:N")
    )
    points = (
        alt.Chart(data)
        .mark_point(filled=True, opacity=0.85)
        .encode(
            x=x,
            y=y,
            color=alt.Color("language:N", scale=language_scale(), title="language"),
            shape=alt.Shape(
                "kind:N",
                scale=alt.Scale(domain=list(RARE_SHAPES), range=list(RARE_SHAPES.values())),
                title="symbol",
            ),
            # a condition, not a second scale on 'kind', so that the shape legend stays
            size=alt.condition(alt.datum.kind == "rarest", alt.value(110), alt.value(28)),
            tooltip=[
                alt.Tooltip("display:N", title="symbol"),
                alt.Tooltip("rank:Q", title="frequency rank"),
                alt.Tooltip("language:N"),
                alt.Tooltip("token:Q", title="row"),
            ],
        )
    )
    return alt.layer(twins, points).properties(width=PANEL_WIDTH, height=height, title=title)


def embedding_projections(points: pd.DataFrame, n_rare: int = 5) -> alt.VConcatChart:
    """PCA (top row) and t-SNE (bottom row) of each model's embedding matrix, one column
    per model. The panels of a row share their axis domains, with one unit as long on
    both axes. Rows of the
    two languages are coloured, each twin pair is joined by a thin line, and the
    ``n_rare`` rarest symbols are diamonds. ``points`` is ``projection.projection_table``."""
    data = points.copy()
    data["kind"] = np.where(data["rare"], "rarest", "other")
    order = [o for o in OBJECTIVES if o in set(data["objective"])]
    order += [o for o in dict.fromkeys(data["objective"]) if o not in order]
    rows = []
    for method in [m for m in PROJECTIONS if m in set(data["method"])]:
        part = data[data["method"] == method]
        frame = _equal_aspect_frame(part)
        panels = [
            _projection_panel(part[part["objective"] == obj], frame, f"{method} · {obj}")
            for obj in order
        ]
        rows.append(alt.hconcat(*panels))
    return (
        alt.vconcat(*rows)
        .resolve_scale(color="shared", shape="shared")
        .properties(
            title=alt.Title(
                "The embedding matrix in two dimensions",
                subtitle=(
                    "scale-normalized rows; grey lines join each symbol to its twin in the "
                    f"other language; diamonds: the {n_rare} rarest symbols"
                ),
            )
        )
    )


def norms_by_rank(norms: pd.DataFrame, objectives=("CE", "HNS")) -> alt.FacetChart:
    """Row norm (in units of the matrix's scale) against frequency rank, per language, one
    panel per model of ``objectives``; mean over seeds with 95% intervals. ``norms`` is
    ``geometry.norm_table``. The initial model is left out by default: its norms are
    noise around 1 and carry no frequency information."""
    order = [o for o in OBJECTIVES if o in set(objectives)]
    norms = norms[norms["objective"].isin(order)]
    x = alt.X("rank:Q", title="frequency rank (1 = most frequent)", scale=alt.Scale(nice=False))
    color = alt.Color("language:N", scale=language_scale(), title="language")
    line = (
        alt.Chart()
        .mark_line(point=alt.OverlayMarkDef(size=14), strokeWidth=1.2)
        .encode(
            x=x,
            y=alt.Y("norm:Q", title="row norm / scale"),
            color=color,
            tooltip=[
                alt.Tooltip("display:N", title="symbol"),
                "rank:Q",
                "language:N",
                alt.Tooltip("norm:Q", format=".3f", title="mean over seeds"),
                alt.Tooltip("norm_lo:Q", format=".3f", title="95% CI low"),
                alt.Tooltip("norm_hi:Q", format=".3f", title="95% CI high"),
                alt.Tooltip("n_seeds:Q", title="seeds"),
            ],
        )
    )
    bars = (
        alt.Chart().mark_rule(opacity=0.5).encode(x=x, y="norm_lo:Q", y2="norm_hi:Q", color=color)
    )
    return (
        alt.layer(bars, line, data=norms)
        .properties(width=260, height=220)
        .facet(column=alt.Column("objective:N", sort=order, title=None))
        .properties(
            title=alt.Title(
                "Embedding norm against frequency rank",
                subtitle="mean over seeds with 95% intervals; 1 is the matrix's RMS row norm",
            )
        )
    )


def _one_row_per_metric(
    layer: alt.LayerChart, labels: list[str], title: str, subtitle: str
) -> alt.FacetChart:
    """One facet row per metric label, each with its own x axis (metrics have their own
    units), labels on the left."""
    return (
        layer.facet(
            row=alt.Row(
                "label:N",
                sort=labels,
                title=None,
                header=alt.Header(labelAngle=0, labelAlign="left", labelLimit=320),
            ),
        )
        .resolve_scale(x="independent")
        .properties(title=alt.Title(title, subtitle=subtitle))
    )


def metric_comparison(means: pd.DataFrame) -> alt.FacetChart:
    """One row per metric: the mean of each model (initial, CE, HNS) over seeds with its
    95% interval, each row on its own x axis. ``means`` is ``geometry.summarize(...)[0]``."""
    order = [o for o in OBJECTIVES if o in set(means["objective"])]
    labels = list(dict.fromkeys(means["label"]))
    y = alt.Y("objective:N", sort=order, title=None)
    color = alt.Color("objective:N", scale=model_scale(), title="model")
    x_scale = alt.Scale(zero=False)
    rule = (
        alt.Chart()
        .mark_rule(strokeWidth=2)
        .encode(x=alt.X("value_lo:Q", scale=x_scale), x2="value_hi:Q", y=y, color=color)
    )
    point = (
        alt.Chart()
        .mark_point(filled=True, size=70)
        .encode(
            x=alt.X("value:Q", scale=x_scale, title=None),
            y=y,
            color=color,
            tooltip=[
                "label:N",
                "objective:N",
                alt.Tooltip("value:Q", format=".4g", title="mean over seeds"),
                alt.Tooltip("value_lo:Q", format=".4g", title="95% CI low"),
                alt.Tooltip("value_hi:Q", format=".4g", title="95% CI high"),
                alt.Tooltip("n_seeds:Q", title="seeds"),
            ],
        )
    )
    return _one_row_per_metric(
        alt.layer(rule, point, data=means).properties(width=420, height=alt.Step(16)),
        labels,
        "Every geometry metric, per model",
        "mean over seeds with 95% intervals; each row has its own axis",
    )


def unigram_probe_scatter(points: pd.DataFrame) -> alt.HConcatChart:
    """True unigram share against the probe's reconstruction softmax(W x), log-log, one
    panel per model, every seed; the diagonal is a perfect reconstruction.
    ``points`` is ``probe.probe_points``."""
    order = [o for o in OBJECTIVES if o in set(points["objective"])]
    positive = points[(points["f"] > 0) & (points["f_hat"] > 0)]
    lo = float(min(positive["f"].min(), positive["f_hat"].min()))
    hi = float(max(positive["f"].max(), positive["f_hat"].max()))
    domain = [lo / 1.5, hi * 1.5]
    scale = alt.Scale(type="log", domain=domain, nice=False)
    x = alt.X("f:Q", scale=scale, title="true share f", axis=alt.Axis(format=".0e"))
    y = alt.Y("f_hat:Q", scale=scale, title="reconstructed share", axis=alt.Axis(format=".0e"))
    diagonal = (
        alt.Chart(pd.DataFrame({"f": domain, "f_hat": domain}))
        .mark_line(strokeDash=[4, 4], color="#333", strokeWidth=1)
        .encode(x=x, y=y)
    )
    scatter = (
        alt.Chart(positive)
        .mark_point(filled=True, size=22, opacity=0.6)
        .encode(
            x=x,
            y=y,
            color=alt.Color("language:N", scale=language_scale(), title="language"),
            tooltip=[
                alt.Tooltip("display:N", title="symbol"),
                "rank:Q",
                "language:N",
                "seed:Q",
                alt.Tooltip("f:Q", format=".3g", title="true share"),
                alt.Tooltip("f_hat:Q", format=".3g", title="reconstructed"),
            ],
        )
    )
    panels = [
        alt.layer(diagonal, scatter.transform_filter(alt.datum.objective == obj)).properties(
            width=240, height=240, title=obj
        )
        for obj in order
    ]
    return alt.hconcat(*panels).properties(
        title=alt.Title(
            "How well one direction of W encodes unigram frequency",
            subtitle="the unigram probe softmax(W x) against the training distribution; "
            "every seed; dashed: perfect reconstruction",
        )
    )


# The number of x ticks Vega aims at in each row of ``paired_differences``.
DIFF_TICKS = 5


def paired_differences(diffs: pd.DataFrame) -> alt.FacetChart:
    """HNS minus CE for every metric, paired by seed: the mean difference with its 95%
    interval and a line at zero, one row per metric on its own x axis, coloured by the
    direction. ``diffs`` is ``geometry.summarize(...)[1]``."""
    data = diffs.copy()
    labels = list(dict.fromkeys(data["label"]))
    color = alt.Color("direction:N", scale=color_scale(DIRECTION_COLORS), title="HNS − CE")
    x_scale = alt.Scale(zero=True)
    # About five ticks per row, and any label that would touch its neighbour left out: the
    # rows are 420 pixels wide and the differences of some metrics need three decimals.
    x_axis = alt.Axis(tickCount=DIFF_TICKS, labelOverlap="greedy", labelSeparation=6)
    zero = alt.Chart().mark_rule(strokeDash=[4, 4], color="#333").encode(x=alt.datum(0))
    rule = (
        alt.Chart()
        .mark_rule(strokeWidth=2)
        .encode(x=alt.X("diff_lo:Q", scale=x_scale), x2="diff_hi:Q", color=color)
    )
    point = (
        alt.Chart()
        .mark_point(filled=True, size=80)
        .encode(
            x=alt.X("diff:Q", scale=x_scale, title=None, axis=x_axis),
            color=color,
            tooltip=[
                "label:N",
                alt.Tooltip("diff:Q", format="+.4g", title="HNS − CE"),
                alt.Tooltip("diff_lo:Q", format="+.4g", title="95% CI low"),
                alt.Tooltip("diff_hi:Q", format="+.4g", title="95% CI high"),
                alt.Tooltip("n_pairs:Q", title="seeds"),
                "direction:N",
            ],
        )
    )
    return _one_row_per_metric(
        alt.layer(zero, rule, point, data=data).properties(width=420, height=22),
        labels,
        "HNS minus CE, paired by seed",
        "mean difference with its 95% interval, clipped to the range a difference can take; "
        "dashed: no difference",
    )
