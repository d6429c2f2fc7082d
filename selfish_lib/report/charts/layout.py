"""Figures of notebook 06: the layout sweep, its explorer and the toy explainer.

``layout_explorer_chart`` is the explorer's composite for one chosen arm of the
sweep (a constant layout or the scheduled run): accuracy, MRR and loss against
the layout per language, the chosen arm highlighted; its validation loss per
frequency-rank group against CE; and the PCA of its embeddings beside CE's.
Every builder only filters the precomputed ``study.layout.SweepTables``, so redrawing
is instant.
"""

from __future__ import annotations

import math

import altair as alt
import pandas as pd

from ...study.layout import CE_ARM, CONSTANT, SweepTables, layout_label
from .core import (
    HIGHLIGHT_COLOR,
    LANGUAGE_TITLES,
    METRIC_TITLES,
    OBJECTIVE_COLORS,
    SCHEDULE_COLOR,
    SWEEP_COLOR,
    TOY_COLORS,
    color_scale,
    language_scale,
)

_PANEL_WIDTH, _PANEL_HEIGHT = 230, 150
# The languages of the group and embedding panels, low-resource first.
_LANGUAGE_ORDER = [LANGUAGE_TITLES[k] for k in ("low", "high")]


def _metric_title(metric: str) -> str:
    """'top-1 accuracy', 'loss (nats)': the metric's title, with the unit of the loss."""
    return f"{METRIC_TITLES[metric]} (nats)" if metric == "loss" else METRIC_TITLES[metric]


def _metric_panel(
    summary: pd.DataFrame, language: str, metric: str, chosen: str, order: list[str]
) -> alt.LayerChart:
    """One metric against the layout for one language; the chosen arm highlighted and
    the scheduled run drawn across the panel as a dashed line with its interval band."""
    rows = summary[summary["language"] == language]
    cols = ["arm", "label", "schedule", metric, f"{metric}_lo", f"{metric}_hi", "n_seeds"]
    constant = rows.loc[rows["schedule"] == CONSTANT, cols].assign(chosen=lambda d: d.arm == chosen)
    scheduled = rows.loc[rows["schedule"] != CONSTANT, cols].assign(
        chosen=lambda d: d.arm == chosen
    )
    fmt = ".3f" if metric == "loss" else ".2%"
    axis_fmt = ".2f" if metric == "loss" else ".3~%"  # trimmed: distinct ticks on narrow ranges
    # 'CE' rather than '∞ (CE)' on the axis: the long label would overlap its neighbour.
    x = alt.X(
        "label:N",
        sort=order,
        title="layout ℓ (CE = ∞)",
        axis=alt.Axis(
            labelAngle=0,
            labelExpr=f"datum.label == '{layout_label(math.inf)}' ? 'CE' : datum.label",
        ),
    )
    y = alt.Y(
        f"{metric}:Q",
        scale=alt.Scale(zero=False),
        axis=alt.Axis(format=axis_fmt),
        title=_metric_title(metric),
    )
    tooltip = [
        alt.Tooltip("label:N", title="layout"),
        alt.Tooltip(f"{metric}:Q", format=fmt, title="mean over seeds"),
        alt.Tooltip(f"{metric}_lo:Q", format=fmt, title="95% CI low"),
        alt.Tooltip(f"{metric}_hi:Q", format=fmt, title="95% CI high"),
        alt.Tooltip("n_seeds:Q", title="seeds"),
    ]
    is_chosen = alt.datum.chosen
    highlight = (
        alt.Chart(constant)
        .transform_filter(is_chosen)
        .mark_rect(color=HIGHLIGHT_COLOR, opacity=0.15)
        .encode(x=x)
    )
    line = alt.Chart(constant).mark_line(color=SWEEP_COLOR, strokeWidth=1).encode(x=x, y=y)
    bars = (
        alt.Chart(constant)
        .mark_rule(strokeWidth=1.5)
        .encode(
            x=x,
            y=alt.Y(f"{metric}_lo:Q"),
            y2=f"{metric}_hi:Q",
            color=alt.condition(is_chosen, alt.value(HIGHLIGHT_COLOR), alt.value(SWEEP_COLOR)),
        )
    )
    points = (
        alt.Chart(constant)
        .mark_point(filled=True, opacity=1)
        .encode(
            x=x,
            y=y,
            color=alt.condition(is_chosen, alt.value(HIGHLIGHT_COLOR), alt.value(SWEEP_COLOR)),
            size=alt.condition(is_chosen, alt.value(140), alt.value(40)),
            tooltip=tooltip,
        )
    )
    layers: list[alt.Chart] = [highlight]
    if not scheduled.empty:
        strong = bool(scheduled["chosen"].any())
        layers += [
            alt.Chart(scheduled)
            .mark_rect(color=SCHEDULE_COLOR, opacity=0.3 if strong else 0.12)
            .encode(y=alt.Y(f"{metric}_lo:Q"), y2=f"{metric}_hi:Q"),
            alt.Chart(scheduled)
            .mark_rule(color=SCHEDULE_COLOR, strokeDash=[5, 3], strokeWidth=3 if strong else 1.5)
            .encode(y=y, tooltip=tooltip),
        ]
    layers += [line, bars, points]
    title = f"{LANGUAGE_TITLES[language]} · {_metric_title(metric)}"
    return alt.layer(*layers, width=_PANEL_WIDTH, height=_PANEL_HEIGHT, title=title)


def _metric_rows(
    summary: pd.DataFrame,
    chosen: str,
    languages: tuple[str, ...] = ("low", "high"),
    metrics: tuple[str, ...] = ("top1", "mrr", "loss"),
) -> list[alt.HConcatChart]:
    """One row of metric panels per language (see ``layout_metrics_chart``)."""
    constant = summary[summary["schedule"] == CONSTANT].drop_duplicates("arm")
    order = list(constant.sort_values("layout")["label"])
    return [
        alt.hconcat(*(_metric_panel(summary, lang, m, chosen, order) for m in metrics))
        for lang in languages
    ]


def layout_metrics_chart(
    summary: pd.DataFrame,
    chosen: str,
    languages: tuple[str, ...] = ("low", "high"),
    metrics: tuple[str, ...] = ("top1", "mrr", "loss"),
) -> alt.VConcatChart:
    """Each metric against the layout (rows: languages, columns: metrics), means over
    seeds with 95% intervals, the arm ``chosen`` highlighted. ``summary`` is
    ``SweepTables.summary``; the scheduled run is a dashed line across each panel."""
    return alt.vconcat(*_metric_rows(summary, chosen, languages, metrics))


def layout_group_chart(groups: pd.DataFrame, chosen: str) -> alt.FacetChart:
    """Validation loss per frequency-rank group of the chosen arm against CE, one panel
    per language, means over seeds with 95% intervals. ``groups`` is ``SweepTables.groups``."""
    arms = list(dict.fromkeys([chosen, CE_ARM]))
    data = groups[groups["arm"].isin(arms)].copy()
    data["language_name"] = data["language"].map(LANGUAGE_TITLES)
    labels = [str(data.loc[data["arm"] == a, "label"].iloc[0]) for a in arms]
    colors = [HIGHLIGHT_COLOR if a != CE_ARM else OBJECTIVE_COLORS["CE"] for a in arms]
    order = sorted(data["group"].unique(), key=lambda g: int(str(g).split("-")[0]))
    x = alt.X("group:N", sort=order, title="frequency-rank group", axis=alt.Axis(labelAngle=0))
    offset = alt.XOffset("label:N", sort=labels)
    color = alt.Color("label:N", sort=labels, scale=alt.Scale(domain=labels, range=colors))
    bars = (
        alt.Chart()
        .mark_bar()
        .encode(
            x=x,
            xOffset=offset,
            y=alt.Y("loss:Q", title="validation loss (nats)"),
            color=color.title("layout"),
            tooltip=[
                alt.Tooltip("label:N", title="layout"),
                "group:N",
                alt.Tooltip("loss:Q", format=".3f", title="mean over seeds"),
                alt.Tooltip("loss_lo:Q", format=".3f", title="95% CI low"),
                alt.Tooltip("loss_hi:Q", format=".3f", title="95% CI high"),
            ],
        )
    )
    intervals = (
        alt.Chart()
        .mark_rule(color="#333")
        .encode(x=x, xOffset=offset, y="loss_lo:Q", y2="loss_hi:Q")
    )
    return (
        alt.layer(bars, intervals, data=data)
        .properties(width=alt.Step(16), height=_PANEL_HEIGHT)
        .facet(
            column=alt.Column("language_name:N", sort=_LANGUAGE_ORDER, title=None),
            title=alt.Title(
                "Validation loss per frequency-rank group",
                subtitle="the chosen layout against CE; mean over seeds with 95% intervals",
            ),
        )
    )


def layout_embedding_chart(embeddings: pd.DataFrame, chosen: str) -> alt.FacetChart:
    """PCA of the tied embeddings (one seed) of the chosen arm beside CE's, coloured by
    language. ``embeddings`` is ``SweepTables.embeddings``."""
    arms = list(dict.fromkeys([chosen, CE_ARM]))
    data = embeddings[embeddings["arm"].isin(arms)].copy()
    data["language_name"] = data["language"].map(LANGUAGE_TITLES)
    data["panel"] = "layout " + data["label"].astype(str)
    panels = [f"layout {data.loc[data['arm'] == a, 'label'].iloc[0]}" for a in arms]
    seed = int(data["seed"].iloc[0])
    return (
        alt.Chart(data)
        .mark_circle(size=45, opacity=0.8)
        .encode(
            x=alt.X("pc1:Q", title="PC 1"),
            y=alt.Y("pc2:Q", title="PC 2"),
            color=alt.Color(
                "language_name:N",
                title="language",
                scale=language_scale(titles=True),
            ),
            tooltip=[
                alt.Tooltip("display:N", title="symbol"),
                alt.Tooltip("language_name:N", title="language"),
                "rank:Q",
                "group:N",
            ],
        )
        .properties(width=260, height=220)
        .facet(
            column=alt.Column("panel:N", sort=panels, title=None),
            title=alt.Title(
                "Embeddings, first two principal components",
                subtitle=f"seed {seed}; each matrix scaled to unit RMS row norm",
            ),
        )
    )


def layout_explorer_chart(
    tables: SweepTables, layout: float, schedule: str = CONSTANT
) -> alt.VConcatChart:
    """The explorer's composite for a slider ``layout`` and a ``schedule`` choice
    ('constant', or the kind of the scheduled run, which then replaces the layout)."""
    chosen = tables.arm(layout, schedule)
    label = tables.label(chosen)
    subtitle = "means over seeds with 95% intervals; the chosen layout in orange"
    scheduled = tables.table[tables.table["schedule"] != CONSTANT]
    if not scheduled.empty:
        subtitle += (
            f"; dashed purple line and band: the scheduled run ({scheduled['label'].iloc[0]})"
        )
    # Top-level properties go to the constructor: each method call on a finished
    # composite (resolve_scale, properties) copies the whole tree, which is what makes
    # a redraw slow. The group bars (colour = layout) and the PCA (colour = language)
    # need their own colour scales and legends; shared, they would merge into one.
    return alt.vconcat(
        *_metric_rows(tables.summary, chosen),  # flat, not a nested vconcat: one copy less
        layout_group_chart(tables.groups, chosen),
        layout_embedding_chart(tables.embeddings, chosen),
        resolve=alt.Resolve(
            scale=alt.ScaleResolveMap(color="independent"),
            legend=alt.LegendResolveMap(color="independent"),
        ),
        title=alt.Title(f"Layout sweep, chosen: {label}", subtitle=subtitle),
    )


def toy_gradient_chart(table: pd.DataFrame, layout: float) -> alt.VConcatChart:
    """The toy explainer at ``layout``: the logits with the cut z<sub>target</sub> − ℓ,
    and the gradient of the loss for each logit under HNS (bars) and CE (ticks).
    ``table`` is ``study.toy.toy_gradients(example, layout)``."""
    data = table.copy()
    data["status"] = [
        "target" if role == "target" else ("excluded" if excl else "kept (hard negative)")
        for role, excl in zip(data["role"], data["excluded"], strict=True)
    ]
    order = list(data.sort_values("token")["label"])
    x = alt.X("label:N", sort=order, title="token", axis=alt.Axis(labelAngle=0))
    color = alt.Color(
        "status:N",
        title=None,
        scale=color_scale(TOY_COLORS),
        legend=alt.Legend(orient="top"),
    )
    tooltip = [
        alt.Tooltip("label:N", title="token"),
        "status:N",
        alt.Tooltip("logit:Q", format=".2f"),
        alt.Tooltip("gap:Q", format="+.2f", title="logit − target's"),
        alt.Tooltip("prob:Q", format=".4f", title="P (full softmax)"),
        alt.Tooltip("grad:Q", format="+.4f", title="gradient, HNS"),
        alt.Tooltip("grad_ce:Q", format="+.4f", title="gradient, CE"),
    ]
    shown = layout_label(layout)
    logits = (
        alt.Chart(data)
        .mark_bar()
        .encode(x=x, y=alt.Y("logit:Q", title="logit z"), color=color, tooltip=tooltip)
    )
    top_layers: list[alt.Chart] = [logits]
    if not math.isinf(layout):
        cut = float(data.loc[data["role"] == "target", "logit"].iloc[0]) - layout
        line = pd.DataFrame({"cut": [cut], "text": [f"z(target) − ℓ = {cut:.2f}"]})
        top_layers += [
            alt.Chart(line).mark_rule(strokeDash=[5, 3], color="#333").encode(y="cut:Q"),
            alt.Chart(line)
            .mark_text(align="right", dy=-6, color="#333", fontSize=11)
            .encode(y="cut:Q", x=alt.value(418), text="text:N"),
        ]
    top = alt.layer(*top_layers).properties(
        width=420, height=170, title=f"Logits; below the dashed line HNS drops them (ℓ = {shown})"
    )
    grads = (
        alt.Chart(data)
        .mark_bar()
        .encode(x=x, y=alt.Y("grad:Q", title="∂ loss / ∂ logit"), color=color, tooltip=tooltip)
    )
    ce_ticks = (
        alt.Chart(data)
        .mark_tick(color="#333", thickness=2, size=22)
        .encode(x=x, y="grad_ce:Q", tooltip=tooltip)
    )
    bottom = alt.layer(grads, ce_ticks).properties(
        width=420,
        height=170,
        title="Gradient each logit receives: HNS (bars) and CE (black ticks)",
    )
    return alt.vconcat(top, bottom)
