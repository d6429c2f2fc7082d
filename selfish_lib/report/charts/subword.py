"""Charts of chapter 08, the subword scale: the tail, the scenarios and the effect of HNS
as the vocabulary grows."""

from __future__ import annotations

import altair as alt
import pandas as pd

from ...study.readings import LANGUAGE_NAMES
from ...study.subword import (
    ACROSS_SIZES,
    CHAPTER_METRIC_NAMES,
    PER_CHARACTER,
    REFERENCE,
    TREATMENT,
    seeds_caption,
)
from .core import VERDICT_COLORS, color_scale, objective_scale, points_with_intervals

# The vocabulary sizes as an ordinal colour: light (small V) to dark (large V).
SIZE_SCHEME = "viridis"


def zipf_curves(points: pd.DataFrame) -> alt.Chart:
    """Training count against frequency rank, log-log, one line per vocabulary size."""
    data = points.assign(count_plot=points["count"].clip(lower=0.5))
    return (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=alt.X("rank:Q", scale=alt.Scale(type="log"), title="frequency rank"),
            y=alt.Y(
                "count_plot:Q", scale=alt.Scale(type="log"), title="count in the training split"
            ),  # fmt: skip
            color=alt.Color("V:O", scale=alt.Scale(scheme=SIZE_SCHEME), title="V"),
            tooltip=["V:O", "rank:Q", "count:Q", "group:N"],
        )
        .properties(
            width=420,
            height=260,
            title=alt.Title(
                "The long tail grows with V",
                subtitle="a count of 0 is drawn at 0.5: subwords the training "
                "split never produces (they only ever receive scenario 2.2)",
            ),
        )  # fmt: skip
    )


def decile_shares(shares: pd.DataFrame, language: str = "high") -> alt.FacetChart:
    """Scenario 2.2's share of the gradient (top row) and of the update (bottom row) per
    frequency decile, one colour per V, one column per objective (mean and 95% interval
    over seeds)."""
    parts = []
    for column, title in (("share_nontarget", "gradient"), ("update_share_nontarget", "update")):
        if column not in shares:
            continue
        part = shares[shares["language"] == language][
            ["V", "experiment", "decile", "n_seeds", column, f"{column}_lo", f"{column}_hi"]
        ]
        part = part.rename(columns={column: "value", f"{column}_lo": "value_lo",
                                    f"{column}_hi": "value_hi"})  # fmt: skip
        parts.append(part.assign(of=f"share of the {title}"))
    data = pd.concat(parts, ignore_index=True)
    x = alt.X("decile:O", title="frequency decile (10 = rarest)", axis=alt.Axis(labelAngle=0))
    color = alt.Color("V:O", scale=alt.Scale(scheme=SIZE_SCHEME), title="V")
    y = alt.Y("value:Q", scale=alt.Scale(domain=[0, 1]), title="scenario 2.2's share")
    marks = points_with_intervals(None, x, alt.XOffset("V:O"), color, y, "value",
                                  ["V:O", "experiment:N", "decile:O"], ".3f")  # fmt: skip
    rule = alt.Chart().mark_rule(strokeDash=[4, 4], color="#999").encode(y=alt.datum(0.5))
    return (
        alt.layer(marks, rule, data=data)
        .properties(width=300, height=170)
        .facet(row=alt.Row("of:N", title=None), column=alt.Column("experiment:N", title=None))
        .properties(
            title=alt.Title(
                "Scenario 2.2 by frequency decile, as V grows",
                subtitle=f"{LANGUAGE_NAMES.get(language, language)}; above the dashed line 2.2 "
                "outweighs the row's own contexts (scenarios 1 and 2.1)",
            )
        )  # fmt: skip
    )


def _size_axis(data: pd.DataFrame) -> alt.X:
    """V on a log axis with a tick at each size and room for the end points."""
    sizes = sorted(data["V"].unique().tolist())
    domain = [sizes[0] / 1.4, sizes[-1] * 1.4]
    scale = alt.Scale(type="log", nice=False, domain=domain)
    return alt.X("V:Q", scale=scale, title="vocabulary size V", axis=alt.Axis(values=sizes))


def _interval_note(data: pd.DataFrame, count: str) -> str:
    """'; a point without a bar rests on one seed' when some point does."""
    return "; a point without a bar rests on one seed" if (data[count] < 2).any() else ""


def effect_by_size(diffs: pd.DataFrame, scopes: dict[str, str],
                   metrics=ACROSS_SIZES) -> alt.FacetChart:  # fmt: skip
    """HNS − CE against V (log axis), paired by seed with its 95% interval, coloured by
    verdict: one column per scope (``scopes``: scope -> title), one row per metric (by
    default the loss per character, which compares across V, and top-1 per token, which
    compares within a V). The subtitle names the seeds each point rests on."""
    data = diffs[diffs["scope"].isin(scopes) & diffs["metric"].isin(metrics)].copy()
    caption = seeds_caption(data, scopes)
    data["scope"] = data["scope"].map(scopes)
    order = [CHAPTER_METRIC_NAMES[m] for m in metrics]
    data["metric"] = data["metric"].map(CHAPTER_METRIC_NAMES)
    data = data.assign(n_seeds=data["n_pairs"])
    x = _size_axis(data)
    color = alt.Color("verdict:N", scale=color_scale(VERDICT_COLORS), title="HNS vs CE")
    y = alt.Y("diff:Q", title=None)
    marks = points_with_intervals(None, x, None, color, y, "diff",
                                  ["V:Q", "scope:N", "metric:N", "verdict:N", "seeds:N"],
                                  "+.4f")  # fmt: skip
    line = alt.Chart().mark_line(color="#bbb").encode(x=x, y="diff:Q")
    zero = alt.Chart().mark_rule(color="#7F7F7F").encode(y=alt.datum(0))
    subtitle = [f"paired by seed, 95% interval; 0 is CE; {caption}"
                f"{_interval_note(data, 'n_seeds')}",
                "loss in nats per character of the validation text (one unit at every V); "
                "top-1 per token of that V (compare within a V only)"]  # fmt: skip
    return (
        alt.layer(line, zero, marks, data=data)
        .properties(width=220, height=150)
        .facet(row=alt.Row("metric:N", sort=order, title=None),
               column=alt.Column("scope:N", sort=list(scopes.values()), title=None))
        .resolve_scale(y="independent")
        .properties(title=alt.Title("HNS minus CE as the vocabulary grows", subtitle=subtitle))
    )  # fmt: skip


def loss_per_character(levels: pd.DataFrame, scopes: dict[str, str]) -> alt.FacetChart:
    """CE's and HNS's validation loss in nats per character against V (log axis), mean and
    95% interval over seeds, one column per scope (``scopes``: scope -> title). The one
    loss that compares across vocabularies; the subtitle names the seeds."""
    data = levels[levels["scope"].isin(scopes)].copy()
    caption = seeds_caption(data, scopes)
    data["scope"] = data["scope"].map(scopes)
    # an ordinal axis, so that the two objectives stand side by side at each V
    x = alt.X("V:O", title="vocabulary size V", axis=alt.Axis(labelAngle=0))
    color = alt.Color("experiment:N", scale=objective_scale(), title="objective",
                      sort=[REFERENCE, TREATMENT])  # fmt: skip
    y = alt.Y(f"{PER_CHARACTER}:Q", title="loss (nats per character)",
              scale=alt.Scale(zero=False))  # fmt: skip
    marks = points_with_intervals(None, x, alt.XOffset("experiment:N"), color, y, PER_CHARACTER,
                                  ["V:Q", "scope:N", "experiment:N", "seeds:N"], ".4f")  # fmt: skip
    line = alt.Chart().mark_line(opacity=0.5).encode(x=x, y=f"{PER_CHARACTER}:Q", color=color)
    return (
        alt.layer(line, marks, data=data)
        .properties(width=220, height=170)
        .facet(column=alt.Column("scope:N", sort=list(scopes.values()), title=None))
        .resolve_scale(y="independent")
        .properties(title=alt.Title(
            "Validation loss per character as the vocabulary grows",
            subtitle=f"mean and 95% interval over {caption}"
                     f"{_interval_note(data, 'n_seeds')}; the summed token loss over the "
                     "characters the tokens spell"))
    )  # fmt: skip


def probe_by_size(probe: pd.DataFrame) -> alt.HConcatChart:
    """The unigram probe per V and objective: its KL (left) and the rarest decile's mass
    in the reconstruction over the truth (right, 1 = exact), each seed a point."""
    color = alt.Color("experiment:N", scale=objective_scale(), title="objective")
    x = alt.X("V:O", title="vocabulary size V")
    base = alt.Chart(probe).encode(
        x=x,
        color=color,
        xOffset="experiment:N",
        tooltip=[
            "V:O",
            "experiment:N",
            "seed:Q",
            alt.Tooltip("kl:Q", format=".4f"),
            alt.Tooltip("tail_ratio:Q", format=".3f"),
        ],
    )
    kl = base.mark_point(filled=True, size=50).encode(y=alt.Y("kl:Q", title="KL (nats)"))
    tail = base.mark_point(filled=True, size=50).encode(
        y=alt.Y(
            "tail_ratio:Q",
            scale=alt.Scale(type="log"),
            title="rarest decile: reconstructed / true mass",
        )
    )
    one = alt.Chart().mark_rule(strokeDash=[4, 4], color="#999").encode(y=alt.datum(1))
    return alt.hconcat(
        kl.properties(width=220, height=200, title="the probe's KL"),
        alt.layer(tail, one).properties(width=220, height=200, title="the tail's mass"),
    ).properties(title=alt.Title("The unigram probe at each V",
                                 subtitle="one point per seed; chapter 05's probe, one "
                                 "direction of the output embedding"))  # fmt: skip
