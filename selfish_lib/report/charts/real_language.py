"""Figures of notebook 10: a real low-resource language beside English and the cipher."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from ...engine.evaluation import METRICS
from ...study.readings import LANGUAGE_NAMES as SIDE_TITLES  # 'high', 'low' in prose
from ...study.real_language import ARMS, COMPARISONS, ENGLISH, LANGUAGE_TITLES, ROW_TITLES
from .core import (
    LANGUAGE_COLORS,
    METRIC_TITLES,
    OBJECTIVE_COLORS,
    VERDICT_COLORS,
    color_scale,
    points_with_intervals,
)
from .field import seeds_text

# The arms: CE and HNS in their colours everywhere, untied CE in the ablations' green.
ARM_COLORS = {"CE": OBJECTIVE_COLORS["CE"], "HNS": OBJECTIVE_COLORS["HNS"], "CE untied": "#54A24B"}
# The corpora: English and the chapter's language in the two alphabets' colours.
CORPUS_COLORS = {
    ENGLISH: LANGUAGE_COLORS["high"],
    LANGUAGE_TITLES["nahuatl"]: LANGUAGE_COLORS["low"],
    LANGUAGE_TITLES["otomi"]: "#8E6BB0",
    LANGUAGE_TITLES["mixtec"]: "#B8A26A",
}
COMPARISON_COLORS = dict(zip(COMPARISONS.values(), (ARM_COLORS["HNS"], ARM_COLORS["CE untied"]),
                             strict=True))  # fmt: skip


def _over(seeds: Sequence[int] | None) -> str:
    return f"over {seeds_text(seeds)}" if seeds else "over seeds"


def _long(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per key and metric: ``value`` (the mean) and ``value_lo``/``value_hi``."""
    parts = []
    for metric in METRICS:
        names = {metric: "value", f"{metric}_lo": "value_lo", f"{metric}_hi": "value_hi"}
        part = table[[*keys, *names, "n_seeds"]].rename(columns=names)
        parts.append(part.assign(metric=METRIC_TITLES[metric]))
    out = pd.concat(parts, ignore_index=True)
    out["value_lo"] = out["value_lo"].fillna(out["value"])
    out["value_hi"] = out["value_hi"].fillna(out["value"])
    return out


def corpus_frequencies(frequencies: pd.DataFrame) -> alt.Chart:
    """Each corpus's characters by frequency rank (share of the text, log scale), English
    and the real languages overlaid; a filled point is a character English also has.
    ``frequencies`` is ``real_language.corpora_frequencies(...)``."""
    data = frequencies.assign(
        english=frequencies["in_english"].map({True: "English has it", False: "English lacks it"})
    )
    color = alt.Color("language:N", scale=color_scale(CORPUS_COLORS), title="corpus")
    x = alt.X("rank:Q", title="frequency rank in its corpus")
    y = alt.Y("share:Q", scale=alt.Scale(type="log"), title="share of the text",
              axis=alt.Axis(format="~e"))  # fmt: skip
    line = alt.Chart(data).mark_line(strokeWidth=1.2, opacity=0.6).encode(x=x, y=y, color=color)
    points = (
        alt.Chart(data)
        .mark_point(size=22)
        .encode(
            x=x,
            y=y,
            color=color,
            fill=alt.condition("datum.in_english", color, alt.value("white")),
            # the subtitle says what the shapes are: a legend of hollow symbols draws blank
            shape=alt.Shape("english:N", scale=alt.Scale(range=["circle", "square"]), legend=None),
            tooltip=[
                "language:N",
                "display:N",
                "rank:Q",
                alt.Tooltip("count:Q", format=","),
                alt.Tooltip("share:Q", format=".2e"),
                "english:N",
            ],  # fmt: skip
        )
    )
    return alt.layer(line, points).properties(
        width=520,
        height=260,
        title=alt.Title(
            "The corpora side by side",
            subtitle="every character by its frequency rank; a filled circle: English has "
            "the character, an open square: it does not",
        ),
    )


def language_metrics(table: pd.DataFrame, cells: Sequence[str], seeds=None) -> alt.FacetChart:
    """Each metric per cell and arm (mean and 95% interval), on English's validation text
    (top row) and on the second language's (bottom row). ``table`` is the first frame
    of ``real_language.final_table(...)``; ``cells`` the order of the cells."""
    data = _long(table, ["cell", "arm", "side"])
    data["side"] = data["side"].map(SIDE_TITLES)
    x = alt.X("cell:N", sort=list(cells), title=None, axis=alt.Axis(labelAngle=-30))
    offset = alt.XOffset("arm:N", sort=list(ARMS))
    color = alt.Color("arm:N", scale=color_scale(ARM_COLORS), title="arm")
    y = alt.Y("value:Q", scale=alt.Scale(zero=False), title=None)
    marks = points_with_intervals(None, x, offset, color, y, "value",
                                  ["cell:N", "arm:N", "side:N", "metric:N"], ".4f")  # fmt: skip
    return (
        alt.layer(marks, data=data)
        .properties(width=alt.Step(16), height=150)
        .facet(
            row=alt.Row("side:N", sort=[SIDE_TITLES[k] for k in ("high", "low")], title=None),
            column=alt.Column("metric:N", sort=[METRIC_TITLES[m] for m in METRICS], title=None),
        )
        .resolve_scale(y="independent")
        .properties(
            title=alt.Title(
                "Final validation metrics, each language on its own text",
                subtitle=f"mean and 95% interval {_over(seeds)}, clipped to each metric's range",
            )
        )
    )


def language_effects(diffs: pd.DataFrame, cells: Sequence[str]) -> alt.FacetChart:
    """HNS − CE and untied CE − CE on the second language's validation text, per cell
    (the cipher beside the real languages) and metric, with 95% paired intervals and a
    zero line. ``diffs`` is the second frame of ``real_language.final_table(...)``."""
    data = diffs[diffs["side"] == "low"].copy()
    data["metric"] = data["metric"].map(METRIC_TITLES)
    data["diff_lo"] = data["diff_lo"].fillna(data["diff"])
    data["diff_hi"] = data["diff_hi"].fillna(data["diff"])
    data["n_seeds"] = data["n_pairs"]
    x = alt.X("cell:N", sort=list(cells), title=None, axis=alt.Axis(labelAngle=-30))
    offset = alt.XOffset("comparison:N", sort=list(COMPARISONS.values()))
    color = alt.Color("comparison:N", scale=color_scale(COMPARISON_COLORS), title="difference")
    y = alt.Y("diff:Q", title="difference from CE")
    zero = alt.Chart().mark_rule(strokeDash=[4, 4], color="#333").encode(y=alt.datum(0))
    marks = points_with_intervals(None, x, offset, color, y, "diff",
                                  ["cell:N", "comparison:N", "metric:N", "verdict:N"],
                                  "+.4f")  # fmt: skip
    return (
        alt.layer(zero, marks, data=data)
        .properties(width=alt.Step(22), height=170)
        .facet(
            facet=alt.Facet("metric:N", sort=[METRIC_TITLES[m] for m in METRICS], title=None),
            columns=4,
        )  # fmt: skip
        .resolve_scale(y="independent")
        .properties(
            title=alt.Title(
                "The low-resource language: each arm minus CE",
                subtitle="95% intervals paired by seed; lower loss and higher accuracy are "
                "better; the cipher is chapter 04's simulation",
            )
        )
    )


def group_effects(
    diffs: pd.DataFrame, cells: Sequence[str], metric: str = "top1"
) -> alt.FacetChart:
    """HNS − CE of ``metric`` per frequency group of the second language (its own ranks),
    one panel per cell (in the order of ``cells``), coloured by HNS's verdict. ``diffs``
    is ``real_language.group_differences(...)``."""
    data = diffs[diffs["metric"] == metric].dropna(subset=["diff"]).copy()
    data["diff_lo"] = data["diff_lo"].fillna(data["diff"])
    data["diff_hi"] = data["diff_hi"].fillna(data["diff"])
    data["n_seeds"] = data["n_pairs"]
    order = list(dict.fromkeys(data.sort_values("order")["group"]))
    x = alt.X("group:N", sort=order, title="frequency rank group in the language",
              axis=alt.Axis(labelAngle=-40))  # fmt: skip
    color = alt.Color("verdict:N", scale=color_scale(VERDICT_COLORS), title="HNS vs CE")
    y = alt.Y("diff:Q", title=f"HNS − CE, {METRIC_TITLES[metric]}")
    zero = alt.Chart().mark_rule(strokeDash=[4, 4], color="#333").encode(y=alt.datum(0))
    marks = points_with_intervals(None, x, None, color, y, "diff", ["cell:N", "group:N"],
                                  "+.4f")  # fmt: skip
    return (
        alt.layer(zero, marks, data=data)
        .properties(width=alt.Step(18), height=170)
        .facet(column=alt.Column("cell:N", sort=list(cells), title=None))
        .resolve_scale(x="independent")
        .properties(
            title=alt.Title(
                f"HNS minus CE inside the low-resource language ({METRIC_TITLES[metric]})",
                subtitle="per frequency group of the language's own ranks; 95% intervals "
                "paired by seed",
            )
        )
    )


def row_shares(shares: pd.DataFrame, cells: Sequence[str]) -> alt.FacetChart:
    """Scenario 2.2's share of the gradient of the embedding rows by what they serve
    (English only, both languages, the second language only), per arm and cell, mean
    and 95% interval. ``shares`` is the second frame of
    ``real_language.nontarget_shares(...)``."""
    names = {"share_nontarget": "value", "share_nontarget_lo": "value_lo",
             "share_nontarget_hi": "value_hi"}  # fmt: skip
    data = shares.rename(columns=names)
    data["value_lo"] = data["value_lo"].fillna(data["value"])
    data["value_hi"] = data["value_hi"].fillna(data["value"])
    data["rows"] = data["rows"].map(ROW_TITLES)
    x = alt.X("rows:N", sort=list(ROW_TITLES.values()), title="rows that serve",
              axis=alt.Axis(labelAngle=-30))  # fmt: skip
    offset = alt.XOffset("arm:N", sort=list(ARMS))
    color = alt.Color("arm:N", scale=color_scale(ARM_COLORS), title="arm")
    y = alt.Y("value:Q", title="share of scenario 2.2", axis=alt.Axis(format="%"),
              scale=alt.Scale(domain=[0, 1]))  # fmt: skip
    marks = points_with_intervals(None, x, offset, color, y, "value",
                                  ["cell:N", "rows:N", "arm:N"], ".3f")  # fmt: skip
    return (
        alt.layer(marks, data=data)
        .properties(width=alt.Step(22), height=170)
        .facet(column=alt.Column("cell:N", sort=list(cells), title=None))
        .properties(
            title=alt.Title(
                "Scenario 2.2 by the rows' language",
                subtitle="its share of the summed gradient norms over the logged steps",
            )
        )
    )
