"""Altair charts: the offline renderer, static copies, the shared style and the figures.

Every notebook calls ``use_offline_renderer()`` first. Each chart it displays
then carries two renderings: its Vega-Lite spec (interactive in JupyterLab,
which bundles Vega-Lite 5, so no network; see ``offline_renderer``) and an
SVG made by vl-convert (what static viewers and the HTML report fall back to).
The palettes below are shared by all notebooks so that scenario 1 / 2.1 / 2.2
and CE / HNS always have the same colours.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import vl_convert

from .pipeline import write_atomic
from .scenarios import SCENARIO_LABELS, SCENARIOS
from .validation import ParameterError

RENDERER = "selfish_offline"
THEME = "selfish"
VEGALITE_MIME = "application/vnd.vegalite.v6.json"
VEGALITE_V5_MIME = "application/vnd.vegalite.v5+json"
# The oldest Vega-Lite 5 that vl-convert ships: a spec that compiles with it is
# assumed to work with the Vega-Lite 5 bundled in JupyterLab 4.
_V5_CHECK_VERSION = "5.8"
_V5_SCHEMA = "https://vega.github.io/schema/vega-lite/v5.8.0.json"
EMBED_OPTIONS = {"actions": {"export": True, "source": False, "compiled": False, "editor": False}}
FORMATS = ("svg", "png", "html", "json")

# Keyed like selfish_lib.scenarios.SCENARIOS: input (1), target (2.1), nontarget (2.2).
SCENARIO_COLORS = dict(zip(SCENARIOS, ("#4C78A8", "#54A24B", "#E45756"), strict=True))
OBJECTIVE_COLORS = {"CE": "#7F7F7F", "HNS": "#F58518"}
# Frequency-rank groups (1-10 ... 61-65), from frequent (dark) to rare (light).
GROUP_SCHEME = "viridis"
EXCLUDED_COLOR = "#E45756"


def scenario_scale(labels: bool = False) -> alt.Scale:
    """Colour scale of the scenario keys (or, with ``labels``, of ``scenarios.SCENARIO_LABELS``)."""
    domain = [SCENARIO_LABELS[k] for k in SCENARIO_COLORS] if labels else list(SCENARIO_COLORS)
    return alt.Scale(domain=domain, range=list(SCENARIO_COLORS.values()))


def objective_scale() -> alt.Scale:
    """Colour scale of the objectives 'CE' and 'HNS'."""
    return alt.Scale(domain=list(OBJECTIVE_COLORS), range=list(OBJECTIVE_COLORS.values()))


@alt.theme.register(THEME, enable=False)
def _theme() -> alt.theme.ThemeConfig:
    # Slightly larger text than the defaults: the figures are read in reports.
    return {
        "config": {
            "font": "Helvetica, Arial, sans-serif",
            "title": {"fontSize": 15, "anchor": "start", "subtitleFontSize": 12},
            "axis": {"labelFontSize": 12, "titleFontSize": 13, "gridOpacity": 0.5},
            "header": {"labelFontSize": 13, "titleFontSize": 13},
            "legend": {"labelFontSize": 12, "titleFontSize": 12},
            "view": {"stroke": None},
        }
    }


# --- rendering -------------------------------------------------------------------


def _vl_version() -> str | None:
    """The vl-convert Vega-Lite version matching altair's schema (None = vl-convert's latest)."""
    major_minor = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    return major_minor if major_minor in vl_convert.get_vegalite_versions() else None


def _as_v5(spec: dict) -> dict | None:
    """The spec relabelled as Vega-Lite 5, or None if Vega-Lite 5 cannot compile it."""
    candidate = {**spec, "$schema": _V5_SCHEMA}
    try:
        vl_convert.vegalite_to_vega(candidate, vl_version=_V5_CHECK_VERSION)
    except Exception:  # vl-convert raises plain ValueError/RuntimeError on compile errors
        return None
    return candidate


def to_svg(spec: dict) -> str:
    """SVG of a Vega-Lite spec, rendered offline by vl-convert."""
    return vl_convert.vegalite_to_svg(spec, vl_version=_vl_version())


def offline_renderer(spec: dict, **metadata: Any) -> tuple[dict, dict]:
    """Altair renderer: the Vega-Lite spec for JupyterLab plus an SVG for static viewers.

    The spec goes under the Vega-Lite 5 MIME type when Vega-Lite 5 can compile
    it (JupyterLab 4 renders only that one; nbformat stores it as JSON), else
    as a JSON string under altair's Vega-Lite 6 type (nbformat requires a
    string there). Returns the (data, metadata) pair that IPython displays. If
    vl-convert cannot draw the SVG, a warning is issued and the spec stays.
    """
    embed = metadata.get("embed_options") or EMBED_OPTIONS
    data: dict[str, Any] = {"text/plain": "<altair chart>"}
    v5 = _as_v5(spec)
    if v5 is not None:
        data[VEGALITE_V5_MIME] = v5
        meta = {VEGALITE_V5_MIME: {"embed_options": embed}}
    else:
        data[VEGALITE_MIME] = json.dumps(spec)
        meta = {VEGALITE_MIME: {"embed_options": embed}}
    try:
        data["image/svg+xml"] = to_svg(spec)
    except Exception as exc:  # keep the interactive chart even if the static one fails
        warnings.warn(f"vl-convert could not render the chart as SVG: {exc}", stacklevel=2)
    return data, meta


def spec_of_output(data: dict) -> dict | None:
    """The Vega-Lite spec (as altair wrote it) of a displayed output's data, or None."""
    if VEGALITE_V5_MIME in data:
        return {**data[VEGALITE_V5_MIME], "$schema": alt.SCHEMA_URL}
    if VEGALITE_MIME in data:
        raw = data[VEGALITE_MIME]
        return json.loads(raw) if isinstance(raw, str) else dict(raw)
    return None


def use_offline_renderer() -> None:
    """Enable the offline renderer and the shared theme; lift altair's 5000-row limit.

    Idempotent: calling it again changes nothing.
    """
    if RENDERER not in alt.renderers.names():
        alt.renderers.register(RENDERER, offline_renderer)
    alt.renderers.enable(RENDERER)
    alt.theme.enable(THEME)
    alt.data_transformers.disable_max_rows()


@functools.lru_cache(maxsize=1)
def javascript_bundle() -> str:
    """Vega, Vega-Lite and Vega-Embed as one inline script (sets window.vegaEmbed)."""
    return vl_convert.javascript_bundle(vl_version=_vl_version())


# --- static copies -----------------------------------------------------------------


def chart_spec(chart: alt.TopLevelMixin) -> dict:
    """The chart's Vega-Lite spec with the shared theme applied."""
    with alt.theme.enable(THEME):
        return chart.to_dict()


def save_chart(
    chart: alt.TopLevelMixin,
    path_without_suffix: str | os.PathLike,
    formats: Iterable[str] = ("svg", "png", "html"),
) -> list[Path]:
    """Save static copies of ``chart`` (svg, png at 2x, self-contained html, json spec).

    Each file is written to a temporary name and renamed, so a failure never
    leaves a half-written figure. Returns the paths written.
    """
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ParameterError("formats", formats, "a non-empty subset of " + ", ".join(FORMATS))
    spec = chart_spec(chart)
    base = Path(path_without_suffix)
    version = _vl_version()
    render = {
        "svg": lambda: vl_convert.vegalite_to_svg(spec, vl_version=version),
        "png": lambda: vl_convert.vegalite_to_png(spec, vl_version=version, scale=2),
        "html": lambda: vl_convert.vegalite_to_html(spec, vl_version=version, bundle=True),
        "json": lambda: json.dumps(spec, indent=2),
    }
    written = []
    for fmt in formats:
        path = base.with_name(f"{base.name}.{fmt}")
        write_atomic(path, render[fmt]())
        written.append(path)
    return written


def save_figure(
    chart: alt.TopLevelMixin,
    report_dir: str | os.PathLike | None,
    name: str,
    formats: Iterable[str] = ("svg", "png"),
) -> list[Path]:
    """Save ``chart`` as ``<report_dir>/figures/<name>.<format>``; nothing when report_dir is None.

    Notebooks call this unconditionally: run interactively (report_dir None)
    it does nothing, run by the pipeline it fills the report's figures folder.
    """
    if report_dir is None:
        return []
    return save_chart(chart, Path(report_dir) / "figures" / name, formats)


# --- figures of notebook 01 ---------------------------------------------------------


def _rank_order(freq: pd.DataFrame, column: str) -> list[str]:
    """Unique values of ``column`` in rank order (the sort of a categorical axis)."""
    return list(dict.fromkeys(freq.sort_values("rank")[column]))


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

    ``norms`` is ``worked_example.gradient_norms(...)`` (objective, scenario,
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


# --- notebook 02: gradient scenarios ------------------------------------------------


def _clip_for_log(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """Interval bounds usable on a log axis: a lower bound at or below zero (possible for
    a t interval over few seeds) is drawn at a hundredth of the mean."""
    out = frame.copy()
    lo, hi = f"{value}_lo", f"{value}_hi"
    floor = out[value].where(out[value] > 0) / 100
    out[f"{lo}_plot"] = out[lo].where(out[lo] > 0, floor)
    out[f"{hi}_plot"] = out[hi].where(out[hi].notna(), out[value])
    out[f"{lo}_plot"] = out[f"{lo}_plot"].where(out[f"{lo}_plot"].notna(), out[value])
    return out


def scenario_norms_by_rank(tokens: pd.DataFrame) -> alt.FacetChart:
    """Summed gradient norm of each scenario per symbol, symbols in rank order (log scale),
    one panel per objective. ``tokens`` is ``scenarios.per_token_summary(...)``."""
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
    a reference line at one half. Inputs are ``scenarios.per_group_share(...)``."""
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
    ``curves`` is ``scenarios.step_curves(...)``."""
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
