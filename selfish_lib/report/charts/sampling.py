"""Charts of chapter 09: what HNS does to sampling (what a top-p sampler sees, calibration
raw and at the fitted temperature, the rare tokens' calibration, sampled text).

Every chart shows each objective (colour) at temperature 1 and at its run's fitted
temperature (filled and open marks, side by side), and names the seeds its means and
intervals rest on in its subtitle."""

from __future__ import annotations

import altair as alt
import pandas as pd

from ...engine.evaluation import NUCLEUS_MASSES
from ...study.readings import LANGUAGE_NAMES
from ...study.sampling import FITTED, RAW, SCALING_NAMES, seeds_label
from .core import objective_scale

# Row titles above their panels, read horizontally (long titles of rotated row headers
# would overlap)
ROW_HEADER = alt.Header(
    labelAngle=0, labelOrient="top", labelAnchor="start", labelFontWeight="bold"
)

# Quantities of the nucleus charts: column prefix -> row title.
QUANTITIES = {
    "hit": "P(a top-p sample is the target)",
    "matched": "coverage at CE's nucleus size (top k)",
    "coverage": "coverage of the target by the nucleus",
    "size": "nucleus size (symbols)",
}
SCALING_TITLES = {RAW: SCALING_NAMES[RAW], FITTED: SCALING_NAMES[FITTED]}
SERIES_ORDER = [f"{arm} · {SCALING_TITLES[s]}" for arm in ("CE", "HNS") for s in (RAW, FITTED)]


def _scope(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(scope=frame["scope"].map(lambda s: LANGUAGE_NAMES.get(s, s)))


def _series(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the scaling's title and one ``series`` per objective and scaling."""
    scaling = frame["scaling"].map(SCALING_TITLES)
    return frame.assign(scaling=scaling, series=frame["experiment"] + " · " + scaling)


def _encodings():
    color = alt.Color("experiment:N", scale=objective_scale(), title="objective")
    fill = alt.Fill(
        "scaling:N",
        scale=alt.Scale(domain=list(SCALING_TITLES.values()), range=["#333", "white"]),
        title="scaling",
        legend=alt.Legend(symbolStrokeColor="#333", symbolType="circle"),
    )
    offset = alt.XOffset("series:N", sort=SERIES_ORDER)
    return color, fill, offset


def _points(x: alt.X, y: alt.Y, column: str, tooltip: list, fmt: str = ".3f") -> alt.LayerChart:
    """Means as points (filled at temperature 1, open at the fitted one) and 95%
    intervals as bars, side by side per objective and scaling; the parent's data."""
    color, fill, offset = _encodings()
    tips = [
        *tooltip,
        alt.Tooltip(f"{column}:Q", format=fmt, title="mean"),
        alt.Tooltip(f"{column}_lo:Q", format=fmt, title="95% CI low"),
        alt.Tooltip(f"{column}_hi:Q", format=fmt, title="95% CI high"),
        alt.Tooltip("n_seeds:Q", title="seeds"),
    ]
    bars = (
        alt.Chart()
        .mark_rule(strokeWidth=2)
        .encode(x=x, xOffset=offset, y=f"{column}_lo:Q", y2=f"{column}_hi:Q", color=color)
    )
    points = (
        alt.Chart()
        .mark_point(size=55, strokeWidth=2, opacity=1)
        .encode(x=x, xOffset=offset, y=y, color=color, fill=fill, tooltip=tips)
    )
    return alt.layer(bars, points)


def nucleus_measures(
    table: pd.DataFrame,
    scopes: list[str],
    seeds,
    quantities=("hit", "matched"),
    matched: pd.DataFrame | None = None,
    title: str = "What a top-p sampler sees",
) -> alt.FacetChart:
    """Each of ``quantities`` (rows: ``QUANTITIES``) against the nucleus mass p, per
    objective, temperature 1 and fitted, and scope (columns): mean and 95% interval over
    ``seeds``. ``matched`` (``Sampling.matched``) adds CE's k to the tooltips."""
    parts = []
    for kind in quantities:
        for mass in NUCLEUS_MASSES:
            column = f"{kind}_{mass}"
            part = table[table["scope"].isin(scopes)]
            part = part[["experiment", "scope", "scaling", "n_seeds"]].assign(
                value=part[column], value_lo=part[f"{column}_lo"], value_hi=part[f"{column}_hi"]
            )
            parts.append(part.assign(p=mass, quantity=QUANTITIES[kind]))
    data = pd.concat(parts, ignore_index=True)
    if matched is not None and len(matched):
        data = data.merge(matched[["scope", "scaling", "p", "k"]], how="left")
    else:
        data = data.assign(k=float("nan"))
    data = _series(_scope(data))
    x = alt.X("p:O", title="nucleus mass p", axis=alt.Axis(labelAngle=0))
    y = alt.Y("value:Q", scale=alt.Scale(zero=False), title=None)
    tooltip = ["experiment:N", "scaling:N", "scope:N", "p:O", alt.Tooltip("k:Q", title="k")]
    return (
        alt.layer(_points(x, y, "value", tooltip), data=data)
        .properties(width=190, height=150)
        .facet(
            row=alt.Row(
                "quantity:N",
                title=None,
                sort=[QUANTITIES[k] for k in quantities],
                header=ROW_HEADER,
            ),
            column=alt.Column(
                "scope:N", sort=[LANGUAGE_NAMES.get(s, s) for s in scopes], title=None
            ),
        )
        .resolve_scale(y="independent")
        .properties(
            title=alt.Title(
                title,
                subtitle=[
                    f"mean and 95% interval over {seeds_label(seeds)}; filled: temperature 1, "
                    "open: each run's fitted temperature",
                    "k: CE's mean nucleus size at that p and scaling, rounded, the same for "
                    "both objectives",
                ],
            )
        )
    )


def nucleus_coverage(table: pd.DataFrame, scopes: list[str], seeds) -> alt.FacetChart:
    """The nucleus's coverage and size against p (``nucleus_measures``): what a flatter
    distribution gets for free, beside the measures of ``nucleus_measures``."""
    return nucleus_measures(
        table,
        scopes,
        seeds,
        ("coverage", "size"),
        title="The top-p nucleus: coverage rises for any flatter distribution",
    )


def reliability_diagram(diagrams: pd.DataFrame, scopes: list[str], seeds) -> alt.FacetChart:
    """Accuracy against mean confidence in each equal-mass bin, one line per run (seed),
    coloured by objective; one panel per scope (columns) and scaling (rows); on the
    diagonal a model is calibrated."""
    data = _series(_scope(diagrams[diagrams["scope"].isin(scopes)]))
    color = alt.Color("experiment:N", scale=objective_scale(), title="objective")
    lines = (
        alt.Chart()
        .mark_line(point=True, opacity=0.8)
        .encode(
            x=alt.X(
                "confidence:Q", scale=alt.Scale(domain=[0, 1]), title="mean confidence (top-1)"
            ),
            y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), title="accuracy"),
            color=color,
            detail="seed:N",
            tooltip=[
                "experiment:N",
                "scaling:N",
                "seed:N",
                "bin:O",
                "count:Q",
                alt.Tooltip("confidence:Q", format=".3f"),
                alt.Tooltip("accuracy:Q", format=".3f"),
            ],
        )
    )
    diagonal = alt.Chart(pd.DataFrame({"x": [0, 1]})).mark_line(color="#999", strokeDash=[4, 4])
    diagonal = diagonal.encode(x="x:Q", y="x:Q")
    return (
        alt.layer(diagonal, lines, data=data)
        .properties(width=190, height=190)
        .facet(
            row=alt.Row(
                "scaling:N", sort=list(SCALING_TITLES.values()), title=None, header=ROW_HEADER
            ),
            column=alt.Column(
                "scope:N", sort=[LANGUAGE_NAMES.get(s, s) for s in scopes], title=None
            ),
        )
        .properties(
            title=alt.Title(
                "Reliability diagram",
                subtitle=f"equal-mass bins of the top-1 probability, one line per run "
                f"({seeds_label(seeds)}); the dashed diagonal is perfect calibration",
            )
        )
    )


CALIBRATION = {
    "ece": ("ECE of the top-1 probability", "ece_floor"),
    "rare_ece": ("rare tokens: class-wise ECE, mean over tokens", "rare_ece_floor"),
    "brier": ("Brier score", None),
}


def calibration_summary(table: pd.DataFrame, scopes: list[str], seeds) -> alt.FacetChart:
    """Per scope (columns): the top-1 ECE, the rare tokens' pooled class-wise ECE and the
    Brier score (rows), per objective at temperature 1 and at the fitted one (mean and
    95% interval over ``seeds``), each ECE with its floor (the expected ECE of a
    perfectly calibrated model with the same confidences) as a grey tick."""
    parts = []
    for column, (title, floor) in CALIBRATION.items():
        part = table[table["scope"].isin(scopes) & table[column].notna()]
        part = part[["experiment", "scope", "scaling", "n_seeds"]].assign(
            value=part[column],
            value_lo=part[f"{column}_lo"],
            value_hi=part[f"{column}_hi"],
            floor=part[floor] if floor else float("nan"),
        )
        parts.append(part.assign(quantity=title))
    data = _series(_scope(pd.concat(parts, ignore_index=True)))
    x = alt.X("experiment:N", title=None, axis=alt.Axis(labelAngle=0))
    y = alt.Y("value:Q", scale=alt.Scale(zero=False), title=None)
    _, _, offset = _encodings()
    ticks = (
        alt.Chart()
        .mark_tick(color="#777", thickness=2, size=14)
        .encode(
            x=x,
            xOffset=offset,
            y="floor:Q",
            tooltip=[
                "experiment:N",
                "scaling:N",
                alt.Tooltip("floor:Q", format=".4f", title="floor (calibrated model)"),
            ],
        )
    )
    tooltip = ["experiment:N", "scaling:N", "scope:N"]
    return (
        alt.layer(_points(x, y, "value", tooltip, ".4f"), ticks, data=data)
        .properties(width=150, height=140)
        .facet(
            row=alt.Row(
                "quantity:N",
                title=None,
                sort=[t for t, _ in CALIBRATION.values()],
                header=ROW_HEADER,
            ),
            column=alt.Column(
                "scope:N", sort=[LANGUAGE_NAMES.get(s, s) for s in scopes], title=None
            ),
        )
        .resolve_scale(y="independent")
        .properties(
            title=alt.Title(
                "Calibration, at temperature 1 (filled) and at the fitted temperature (open)",
                subtitle=f"mean and 95% interval over {seeds_label(seeds)}; grey ticks: the "
                "ECE floor, what a perfectly calibrated model scores at this sample size",
            )
        )
    )


def rare_token_calibration(rare_table: pd.DataFrame, seeds) -> alt.FacetChart:
    """The class-wise ECE of each rare token (x, rarest right) per objective and scaling
    (mean and 95% interval over ``seeds``), with its floor as a grey tick; one row of
    panels per language scope."""
    data = rare_table.assign(
        value=rare_table["ece"],
        value_lo=rare_table["ece_lo"],
        value_hi=rare_table["ece_hi"],
        symbol=rare_table["display"].astype(str) + " (" + rare_table["rank"].astype(str) + ")",
    )
    order = list(dict.fromkeys(data.sort_values("rank")["symbol"]))
    data = _series(_scope(data))
    x = alt.X("symbol:N", sort=order, title="rare token (training rank)")
    y = alt.Y("value:Q", scale=alt.Scale(zero=True), title="class-wise ECE")
    _, _, offset = _encodings()
    ticks = (
        alt.Chart()
        .mark_tick(color="#777", thickness=2, size=10)
        .encode(
            x=x,
            xOffset=offset,
            y="floor:Q",
            tooltip=["symbol:N", alt.Tooltip("floor:Q", format=".5f", title="floor")],
        )
    )
    tooltip = [
        "experiment:N",
        "scaling:N",
        "symbol:N",
        alt.Tooltip("occurrences:Q", format=".1f", title="targets (mean over seeds)"),
    ]
    return (
        alt.layer(_points(x, y, "value", tooltip, ".5f"), ticks, data=data)
        .properties(width=620, height=150)
        .facet(row=alt.Row("scope:N", title=None, header=ROW_HEADER))
        .properties(
            title=alt.Title(
                "Calibration of each rare token: all positions binned by p(k | x)",
                subtitle=f"mean and 95% interval over {seeds_label(seeds)}; filled: "
                "temperature 1, open: fitted; grey ticks: a calibrated model's floor",
            )
        )
    )


def fitted_temperatures(fits: pd.DataFrame, seeds) -> alt.LayerChart:
    """Each run's temperature fitted on the tuning split (filled) and the one the
    validation split itself would choose (open, in-sample), per objective."""
    long = pd.concat(
        [
            fits[["experiment", "seed"]].assign(
                value=fits["temperature"], fitted_on="tuning split (used)"
            ),
            fits[["experiment", "seed"]].assign(
                value=fits["validation_temperature"], fitted_on="validation split (in-sample)"
            ),
        ],
        ignore_index=True,
    )
    color = alt.Color("experiment:N", scale=objective_scale(), title="objective")
    fill = alt.Fill(
        "fitted_on:N",
        scale=alt.Scale(
            domain=["tuning split (used)", "validation split (in-sample)"], range=["#333", "white"]
        ),
        title="fitted on",
        legend=alt.Legend(symbolStrokeColor="#333", symbolType="circle"),
    )
    points = (
        alt.Chart(long)
        .mark_point(size=60, strokeWidth=2, opacity=1)
        .encode(
            x=alt.X("experiment:N", title=None, axis=alt.Axis(labelAngle=0)),
            xOffset="fitted_on:N",
            y=alt.Y("value:Q", scale=alt.Scale(zero=False), title="temperature"),
            color=color,
            fill=fill,
            tooltip=["experiment:N", "seed:N", "fitted_on:N", alt.Tooltip("value:Q", format=".3f")],
        )
    )
    one = alt.Chart(pd.DataFrame({"t": [1.0]})).mark_rule(strokeDash=[4, 4], color="#999")
    return alt.layer(one.encode(y="t:Q"), points).properties(
        width=220,
        height=180,
        title=alt.Title(
            "The fitted temperature of each run",
            subtitle=f"one point per run ({seeds_label(seeds)}); dashed: temperature 1",
        ),
    )


def unseen_bigrams(samples: pd.DataFrame, floor: float, seeds, top_p: float) -> alt.LayerChart:
    """The share of bigrams never seen in training in text sampled at ``top_p``, per
    objective, scaling and language, one point per seed, with the validation text's own
    rate as the floor (dashed)."""
    data = _series(_scope(samples))
    color, fill, offset = _encodings()
    points = (
        alt.Chart(data)
        .mark_point(size=55, strokeWidth=2, opacity=1)
        .encode(
            x=alt.X("scope:N", title=None),
            xOffset=offset,
            color=color,
            fill=fill,
            y=alt.Y("unseen_bigrams:Q", title="bigrams never seen in training"),
            tooltip=[
                "experiment:N",
                "scaling:N",
                "scope:N",
                "seed:N",
                alt.Tooltip("temperature:Q", format=".3f"),
                alt.Tooltip("unseen_bigrams:Q", format=".4f"),
                alt.Tooltip("in_alphabet:Q", format=".3f"),
            ],
        )
    )
    rule = alt.Chart(pd.DataFrame({"floor": [floor]})).mark_rule(strokeDash=[4, 4], color="#555")
    rule = rule.encode(y="floor:Q", tooltip=[alt.Tooltip("floor:Q", format=".4f")])
    return alt.layer(rule, points).properties(
        width=300,
        height=200,
        title=alt.Title(
            f"Noise in sampled text (top-p {top_p})",
            subtitle=f"one point per run ({seeds_label(seeds)}); filled: the notebook's "
            "temperature, open: times the run's fitted one; dashed: the validation text's rate",
        ),
    )
