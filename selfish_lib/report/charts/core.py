"""Chart plumbing: the offline renderer, static copies, the shared style and palettes.

Every notebook calls ``use_offline_renderer()`` first. Each chart it displays
then carries two renderings: its Vega-Lite spec (interactive in JupyterLab,
which bundles Vega-Lite 5, so no network; see ``offline_renderer``) and an
SVG made by vl-convert (what static viewers and the HTML report fall back to).
The palettes and titles below are the only ones: every figure takes its colours
and its names of languages and metrics from here, so that scenario 1 / 2.1 / 2.2,
CE / HNS and the two languages always look and read the same.
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

from ...engine.files import write_atomic
from ...engine.scenarios import SCENARIO_LABELS, SCENARIOS
from ...engine.validation import ParameterError
from ...study.readings import LANGUAGE_NAMES, METRIC_NAMES

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

# --- palettes and titles ------------------------------------------------------------

# Keyed like engine.scenarios.SCENARIOS: input (1), target (2.1), nontarget (2.2).
SCENARIO_COLORS = dict(zip(SCENARIOS, ("#4C78A8", "#54A24B", "#E45756"), strict=True))
OBJECTIVE_COLORS = {"CE": "#7F7F7F", "HNS": "#F58518"}
# 'initial' (the weights before training) next to the CE / HNS colours.
MODEL_COLORS = {"initial": "#B8A26A", **OBJECTIVE_COLORS}
# The bilingual experiments: the baseline is CE and keeps CE's colour.
EXPERIMENT_COLORS = {
    "baseline": OBJECTIVE_COLORS["CE"],
    "HNS": OBJECTIVE_COLORS["HNS"],
    "low-only HNS": "#8E6BB0",
    "low-only CE": "#C3A6DB",
}
# The two alphabets of the bilingual simulation; distinct from the CE / HNS colours.
LANGUAGE_COLORS = {"high": "#2C7FB8", "low": "#C2185B"}
# Frequency-rank groups (1-10 ... 61-65), from frequent (dark) to rare (light).
GROUP_SCHEME = "viridis"
EXCLUDED_COLOR = "#E45756"
# HNS against CE ('better' / 'worse'), and the sign of a difference ('lower' / 'higher').
VERDICT_COLORS = {"better": "#2E7D32", "worse": "#C62828", "indistinguishable": "#9E9E9E"}
DIRECTION_COLORS = {"lower": "#2C7FB8", "indistinguishable": "#9E9E9E", "higher": "#E6550D"}
# The layout sweep: the chosen arm, the other layouts of the grid, the scheduled run.
HIGHLIGHT_COLOR = OBJECTIVE_COLORS["HNS"]
SWEEP_COLOR = "#4C78A8"
SCHEDULE_COLOR = "#B279A2"
# The tokens of the toy explainer.
TOY_COLORS = {
    "target": SCENARIO_COLORS["target"],
    "kept (hard negative)": OBJECTIVE_COLORS["HNS"],
    "excluded": EXCLUDED_COLOR,
}
# Titles of languages (keys 'high', 'low' and the pooled key) and of the validation
# metrics: the names the study's prose uses.
LANGUAGE_TITLES = LANGUAGE_NAMES
METRIC_TITLES = METRIC_NAMES


def color_scale(colors: dict[str, str], titles: dict[str, str] | None = None) -> alt.Scale:
    """Colour scale of a palette: its keys (or, with ``titles``, their titles) as the
    domain, its colours as the range."""
    domain = [titles[k] for k in colors] if titles is not None else list(colors)
    return alt.Scale(domain=domain, range=list(colors.values()))


def scenario_scale(labels: bool = False) -> alt.Scale:
    """Colour scale of the scenario keys (or, with ``labels``, of their labels,
    ``engine.scenarios.SCENARIO_LABELS``)."""
    return color_scale(SCENARIO_COLORS, SCENARIO_LABELS if labels else None)


def objective_scale() -> alt.Scale:
    """Colour scale of the objectives 'CE' and 'HNS'."""
    return color_scale(OBJECTIVE_COLORS)


def model_scale() -> alt.Scale:
    """Colour scale of 'initial', 'CE' and 'HNS'."""
    return color_scale(MODEL_COLORS)


def experiment_scale() -> alt.Scale:
    """Colour scale of the three bilingual experiments."""
    return color_scale(EXPERIMENT_COLORS)


def language_scale(titles: bool = False) -> alt.Scale:
    """Colour scale of the languages 'high' and 'low' (or, with ``titles``, of their
    ``LANGUAGE_TITLES``)."""
    return color_scale(LANGUAGE_COLORS, LANGUAGE_TITLES if titles else None)


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


def offline_renderer(spec: dict, with_svg: bool = True, **metadata: Any) -> tuple[dict, dict]:
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
    if not with_svg:
        return data, meta
    try:
        data["image/svg+xml"] = to_svg(spec)
    except Exception as exc:  # keep the interactive chart even if the static one fails
        warnings.warn(f"vl-convert could not render the chart as SVG: {exc}", stacklevel=2)
    return data, meta


def live_output(chart: alt.TopLevelMixin) -> dict:
    """A display_data output of ``chart`` for a live widget: the Vega-Lite spec only.
    The SVG copy exists for static reports; a widget redraws only in a running
    JupyterLab, which draws the spec itself, so skipping the SVG makes redraws fast."""
    data, meta = offline_renderer(chart_spec(chart), with_svg=False)
    return {"output_type": "display_data", "data": data, "metadata": meta}


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


def points_with_intervals(
    data, x, offset, color, y: alt.Y, column: str, keys: list[str], fmt: str, bounds: str = ""
) -> alt.LayerChart:
    """Means as points and their 95% intervals as bars, side by side within each group
    (``offset``, or None for one mark per x): ``column``, ``column_lo``/``_hi`` (the bars
    use ``_lo<bounds>``, e.g. ``_plot`` for a log axis). ``data`` None: the layer takes
    its parent's."""
    tooltip = [
        *keys,
        alt.Tooltip(f"{column}:Q", format=fmt, title="mean"),
        alt.Tooltip(f"{column}_lo:Q", format=fmt, title="95% CI low"),
        alt.Tooltip(f"{column}_hi:Q", format=fmt, title="95% CI high"),
        alt.Tooltip("n_seeds:Q", title="seeds"),
    ]
    chart = alt.Chart() if data is None else alt.Chart(data)
    side = {} if offset is None else {"xOffset": offset}  # None: one mark per x
    points = chart.mark_point(filled=True, size=50).encode(
        x=x, y=y, color=color, tooltip=tooltip, **side
    )
    bars = chart.mark_rule(strokeWidth=2).encode(
        x=x, y=f"{column}_lo{bounds}:Q", y2=f"{column}_hi{bounds}:Q", color=color, **side
    )
    return alt.layer(bars, points)
