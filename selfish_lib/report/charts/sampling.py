"""Charts of chapter 09: what HNS does to sampling (nucleus, calibration, sampled text)."""

from __future__ import annotations

import altair as alt
import pandas as pd

from ...engine.evaluation import NUCLEUS_MASSES
from ...study.readings import LANGUAGE_NAMES
from .core import objective_scale, points_with_intervals


def _scope(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(scope=frame["scope"].map(lambda s: LANGUAGE_NAMES.get(s, s)))


def nucleus_coverage(table: pd.DataFrame, scopes: list[str]) -> alt.FacetChart:
    """Coverage (top row: the share of targets inside the top-p nucleus) and mean nucleus
    size (bottom row) against p, per objective and scope (mean and 95% interval)."""
    parts = []
    for kind, title in (("coverage", "coverage of the target"), ("size", "nucleus size")):
        for mass in NUCLEUS_MASSES:
            column = f"{kind}_{mass}"
            part = table[table["scope"].isin(scopes)][["experiment", "scope", "n_seeds"]].copy()
            part["value"] = table[column]
            part["value_lo"], part["value_hi"] = table[f"{column}_lo"], table[f"{column}_hi"]
            parts.append(part.assign(p=mass, quantity=title))
    data = _scope(pd.concat(parts, ignore_index=True))
    x = alt.X("p:O", title="nucleus mass p", axis=alt.Axis(labelAngle=0))
    color = alt.Color("experiment:N", scale=objective_scale(), title="objective")
    y = alt.Y("value:Q", scale=alt.Scale(zero=False), title=None)
    marks = points_with_intervals(None, x, alt.XOffset("experiment:N"), color, y, "value",
                                  ["experiment:N", "scope:N", "p:O"], ".3f")  # fmt: skip
    return (
        alt.layer(marks, data=data)
        .properties(width=170, height=150)
        .facet(row=alt.Row("quantity:N", title=None),
               column=alt.Column("scope:N", sort=[LANGUAGE_NAMES.get(s, s) for s in scopes],
                                 title=None))  # fmt: skip
        .resolve_scale(y="independent")
        .properties(title=alt.Title("The top-p nucleus of the full softmax",
                                    subtitle="mean and 95% interval over seeds"))
    )  # fmt: skip


def reliability_diagram(diagrams: pd.DataFrame, scopes: list[str]) -> alt.FacetChart:
    """Accuracy against mean confidence in each equal-mass bin, one line per run (seed),
    coloured by objective, one panel per scope; on the diagonal a model is calibrated."""
    data = _scope(diagrams[diagrams["scope"].isin(scopes)])
    color = alt.Color("experiment:N", scale=objective_scale(), title="objective")
    lines = alt.Chart().mark_line(point=True, opacity=0.8).encode(
        x=alt.X("confidence:Q", scale=alt.Scale(domain=[0, 1]), title="mean confidence (top-1)"),
        y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), title="accuracy"),
        color=color, detail="seed:N",
        tooltip=["experiment:N", "seed:N", "bin:O", "count:Q",
                 alt.Tooltip("confidence:Q", format=".3f"),
                 alt.Tooltip("accuracy:Q", format=".3f")],
    )  # fmt: skip
    diagonal = alt.Chart(pd.DataFrame({"x": [0, 1]})).mark_line(color="#999", strokeDash=[4, 4])
    diagonal = diagonal.encode(x="x:Q", y="x:Q")
    return (
        alt.layer(diagonal, lines, data=data)
        .properties(width=200, height=200)
        .facet(column=alt.Column("scope:N", sort=[LANGUAGE_NAMES.get(s, s) for s in scopes],
                                 title=None))  # fmt: skip
        .properties(title=alt.Title("Reliability diagram",
                                    subtitle="equal-mass bins of the top-1 probability; "
                                    "the dashed diagonal is perfect calibration"))
    )  # fmt: skip


def unseen_bigrams(samples: pd.DataFrame, floor: float) -> alt.LayerChart:
    """The share of sampled bigrams never seen in training, per objective and language,
    one point per seed, with the validation text's own rate as the floor (dashed)."""
    data = _scope(samples)
    color = alt.Color("experiment:N", scale=objective_scale(), title="objective")
    points = alt.Chart(data).mark_point(filled=True, size=60).encode(
        x=alt.X("scope:N", title=None), xOffset="experiment:N", color=color,
        y=alt.Y("unseen_bigrams:Q", title="bigrams never seen in training"),
        tooltip=["experiment:N", "scope:N", "seed:N",
                 alt.Tooltip("unseen_bigrams:Q", format=".4f"),
                 alt.Tooltip("in_alphabet:Q", format=".3f")],
    )  # fmt: skip
    rule = alt.Chart(pd.DataFrame({"floor": [floor]})).mark_rule(strokeDash=[4, 4], color="#555")
    rule = rule.encode(y="floor:Q", tooltip=[alt.Tooltip("floor:Q", format=".4f")])
    return alt.layer(rule, points).properties(
        width=260, height=200,
        title=alt.Title("Noise in sampled text (top-p 0.9, temperature 1)",
                        subtitle="dashed: the validation text's own rate, the floor"),
    )  # fmt: skip
