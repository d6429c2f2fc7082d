"""Chapter 05, embedding geometry: every measure per model, over seeds, and the reading.

The measures themselves are in ``matrix`` (scale, distances, isotropy of one
matrix), ``projection`` (PCA and t-SNE pictures) and ``probe`` (the unigram
probe); this module applies them to the models of a grid of runs, aggregates
them over seeds with paired differences, and says what the numbers show.

Rows are tokens. In a bilingual model, row ``i`` (high-resource language) and
row ``i + V`` (low-resource language, V symbols per alphabet) are *twins*; the
``token_info`` tables of ``corpus.Corpus.token_info`` say which row is which
(columns token, base_token, rank, language). Distances are in units of each
matrix's scale (``matrix.normalized``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as st

from ..engine.training import initial_model
from ..engine.validation import ParameterError
from .matrix import (
    ZERO_EIGENVALUE_RTOL,
    ArrayLike,
    as_array,
    centroid_distance,
    check_matrix,
    effective_rank,
    mean_pairwise_cosine,
    normalized,
    partition_isotropy,
    row_norms,
)
from .probe import probe_unigram
from .projection import rarest_base_tokens
from .readings import Reading, clipping_note, format_interval, interval_of
from .stats import (
    NON_NEGATIVE,
    UNBOUNDED,
    UNIT,
    aggregate_seeds,
    any_clipped,
    clip_to_range,
    compare,
    difference_range,
    paired_difference,
)

OBJECTIVES = ("initial", "CE", "HNS")  # 'initial': the weights a run starts from

# Per-model scalar metrics: column name -> (label, what a larger value means).
METRICS: dict[str, tuple[str, str]] = {
    "twin_distance": ("mean twin distance", "twins farther apart"),
    "language_centroid_distance": ("distance between language centroids", "languages farther"),
    "rare_centroid_distance_high": (
        "rarest-to-rest centroid distance (high)",
        "rare symbols farther from the rest",
    ),
    "rare_centroid_distance_low": (
        "rarest-to-rest centroid distance (low)",
        "rare symbols farther from the rest",
    ),
    "norm_rank_spearman_high": (
        "Spearman(norm, rank), high",
        "rarer symbols have larger norms",
    ),
    "norm_rank_spearman_low": ("Spearman(norm, rank), low", "rarer symbols have larger norms"),
    "mean_cosine": ("mean pairwise cosine", "rows share a common direction"),
    "effective_rank": ("effective rank (centred)", "more directions used"),
    "isotropy": ("partition isotropy I(W)", "more isotropic"),
    "probe_kl": ("unigram probe KL(f ‖ f̂)", "frequency harder to read off"),
}
# The range of each metric, to which its intervals over seeds are clipped (a difference
# of two values of one metric lies in ``stats.difference_range`` of it).
RANGES: dict[str, tuple[float, float]] = {
    "twin_distance": NON_NEGATIVE,
    "language_centroid_distance": NON_NEGATIVE,
    "rare_centroid_distance_high": NON_NEGATIVE,
    "rare_centroid_distance_low": NON_NEGATIVE,
    "norm_rank_spearman_high": (-1.0, 1.0),
    "norm_rank_spearman_low": (-1.0, 1.0),
    "mean_cosine": (-1.0, 1.0),
    "effective_rank": NON_NEGATIVE,
    "isotropy": UNIT,
    "probe_kl": NON_NEGATIVE,
}
DISTANCE_METRICS = (
    "twin_distance",
    "language_centroid_distance",
    "rare_centroid_distance_high",
    "rare_centroid_distance_low",
)
NORM_METRICS = ("norm_rank_spearman_high", "norm_rank_spearman_low")
ISOTROPY_METRICS = ("mean_cosine", "effective_rank", "isotropy")


# --- per model and over seeds ---------------------------------------------------------


def model_weights(runs: Mapping, base_vocab_size: int, include_initial: bool = True) -> dict:
    """{(objective, seed): embedding matrix} of a grid of runs, objective 'CE' or 'HNS'
    (the run's arm); with ``include_initial`` also ('initial', seed): the matrix
    a run of that seed starts from (the same for both objectives)."""
    out: dict = {}
    for run in runs.values():
        seed = run.config.seed
        out[(run.config.objective.arm, seed)] = as_array(run.model().embedding)
        if include_initial and ("initial", seed) not in out:
            out[("initial", seed)] = as_array(initial_model(run.config, base_vocab_size).embedding)
    return dict(sorted(out.items(), key=lambda kv: (OBJECTIVES.index(kv[0][0]), kv[0][1])))


def _language_rows(info: pd.DataFrame, language: str) -> pd.DataFrame:
    return info[info["language"] == language]


def geometry_metrics(weight: ArrayLike, token_info: pd.DataFrame, n_rare: int = 5) -> dict:
    """Every scalar of ``METRICS`` but the probe's for one matrix, plus ``n_zero``
    (zero-eigenvalue directions left out of I(W)).

    Distances and I(W) are computed on the scale-normalized matrix. Metrics that
    need the low-resource language are NaN for a single-language matrix.
    """
    w = check_matrix(weight)
    info = token_info.sort_values("token").reset_index(drop=True)
    if len(info) != len(w) or not (info["token"].to_numpy() == np.arange(len(w))).all():
        raise ParameterError(
            "token_info", f"a table of {len(info)} tokens", f"one row per token 0..{len(w) - 1}"
        )
    rare = set(rarest_base_tokens(info, n_rare))
    w_norm = normalized(w)
    norms = np.linalg.norm(w_norm, axis=1)
    out: dict = {}
    high, low = _language_rows(info, "high"), _language_rows(info, "low")
    if len(low):
        twins = high.merge(low, on="base_token", suffixes=("_h", "_l"))
        d = np.linalg.norm(w_norm[twins["token_h"]] - w_norm[twins["token_l"]], axis=1)
        out["twin_distance"] = float(d.mean())
        out["language_centroid_distance"] = centroid_distance(w, high["token"], low["token"])
    else:
        out["twin_distance"] = out["language_centroid_distance"] = math.nan
    for language, rows in (("high", high), ("low", low)):
        is_rare = rows["base_token"].isin(rare)
        if len(rows) and is_rare.any() and (~is_rare).any():
            out[f"rare_centroid_distance_{language}"] = centroid_distance(
                w, rows.loc[is_rare, "token"], rows.loc[~is_rare, "token"]
            )
            rho = st.spearmanr(norms[rows["token"]], rows["rank"]).statistic
            out[f"norm_rank_spearman_{language}"] = float(rho)
        else:
            out[f"rare_centroid_distance_{language}"] = math.nan
            out[f"norm_rank_spearman_{language}"] = math.nan
    out["mean_cosine"] = mean_pairwise_cosine(w)
    out["effective_rank"] = effective_rank(w)
    iso = partition_isotropy(w_norm)
    out["isotropy"], out["n_zero"] = iso.value, iso.n_zero
    return out


def metrics_table(
    weights: Mapping,
    token_info: pd.DataFrame,
    target: ArrayLike,
    *,
    n_rare: int = 5,
    **probe: Any,
) -> pd.DataFrame:
    """One row per (objective, seed) of ``weights`` (see ``model_weights``): every
    metric of ``METRICS``, ``n_zero`` and ``n_rows``, ``n_dims``. ``probe`` passes
    steps, lr and seed to ``probe_unigram`` (one batched fit for all matrices)."""
    keys = list(weights)
    stack = np.stack([as_array(weights[k]) for k in keys])
    fit = probe_unigram(stack, target, **probe)
    rows = []
    for k, key in enumerate(keys):
        objective, seed = key
        row = {"objective": objective, "seed": seed}
        row.update(geometry_metrics(stack[k], token_info, n_rare))
        row["probe_kl"] = float(fit.kl[k])
        row["n_rows"], row["n_dims"] = stack.shape[1], stack.shape[2]
        rows.append(row)
    return pd.DataFrame(rows)


def norm_table(weights: Mapping, token_info: pd.DataFrame) -> pd.DataFrame:
    """Per objective and token: the row norm in units of the scale, mean over seeds with
    its 95% interval (columns norm, norm_lo, norm_hi, n_seeds), with rank and language."""
    info = token_info.sort_values("token").reset_index(drop=True)
    frames = []
    for (objective, seed), weight in weights.items():
        part = info[["token", "symbol", "display", "rank", "language"]].copy()
        part["objective"], part["seed"], part["norm"] = objective, seed, row_norms(weight)
        frames.append(part)
    per_seed = pd.concat(frames, ignore_index=True)
    keys = ["objective", "token", "symbol", "display", "rank", "language"]
    return aggregate_seeds(per_seed, keys, ["norm"])


def long_metrics(per_seed: pd.DataFrame) -> pd.DataFrame:
    """``metrics_table`` in long form: objective, seed, metric, label, value."""
    present = [m for m in METRICS if m in per_seed and per_seed[m].notna().any()]
    long = per_seed.melt(["objective", "seed"], present, var_name="metric", value_name="value")
    long["label"] = long["metric"].map(lambda m: METRICS[m][0])
    return long


def summarize(per_seed: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Means with 95% intervals over seeds per objective and metric, and HNS minus CE
    per metric paired by seed (columns diff, diff_lo, diff_hi, n_pairs, direction).
    Intervals are clipped to each metric's range (``RANGES``); ``value_clipped`` and
    ``diff_clipped`` say where."""
    long = long_metrics(per_seed)
    means = aggregate_seeds(long, ["objective", "metric", "label"], ["value"])
    ranges = means["metric"].map(lambda m: RANGES.get(m, UNBOUNDED))
    means = clip_to_range(means, "value", [r[0] for r in ranges], [r[1] for r in ranges])
    diffs = paired_difference(long, ["metric", "label"], "value", "objective", "HNS", "CE")
    ranges = diffs["metric"].map(lambda m: difference_range(RANGES.get(m, UNBOUNDED)))
    diffs = clip_to_range(diffs, "diff", [r[0] for r in ranges], [r[1] for r in ranges])
    diffs["direction"] = [
        compare(lo, hi) for lo, hi in zip(diffs["diff_lo"], diffs["diff_hi"], strict=True)
    ]
    return means, diffs


def for_seed(weights: Mapping, seed: int, objectives: Sequence[str] = ("CE", "HNS")) -> dict:
    """{objective: matrix} of one seed from ``model_weights``'s dict."""
    missing = [o for o in objectives if (o, seed) not in weights]
    if missing:
        seeds = sorted({s for _, s in weights})
        raise ParameterError("seed", seed, f"one of the seeds with every model: {seeds}")
    return {o: weights[(o, seed)] for o in objectives}


def comparison_table(
    means: pd.DataFrame, diffs: pd.DataFrame, metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per metric (``summarize``'s outputs): each model's mean with its 95%
    interval as text (``readings.format_interval``, three significant digits), HNS − CE
    with its paired interval, and the direction."""
    metrics = list(diffs["metric"]) if metrics is None else list(metrics)
    m = means.set_index(["objective", "metric"])
    d = diffs.set_index("metric")

    def cell(rec: pd.Series, name: str, sign: str = "") -> str:
        return format_interval(*interval_of(rec, name), sign=sign, significant=True)

    rows = []
    for metric in metrics:
        if metric not in d.index:
            continue
        row = {"metric": METRICS[metric][0]}
        for obj in OBJECTIVES:
            if (obj, metric) in m.index:
                r = m.loc[(obj, metric)]
                row[obj] = cell(r, "value")
        r = d.loc[metric]
        row["HNS − CE"] = cell(r, "diff", "+")
        row["direction"] = r["direction"]
        row["a larger value means"] = METRICS[metric][1]
        rows.append(row)
    return pd.DataFrame(rows)


def isotropy_note(per_seed: pd.DataFrame) -> str:
    """Markdown: the shape of the matrices and how many zero-eigenvalue directions of
    WᵀW were left out of I(W), per model (from ``metrics_table``)."""
    n, d = int(per_seed["n_rows"].iloc[0]), int(per_seed["n_dims"].iloc[0])
    zero = per_seed.groupby("objective", sort=False)["n_zero"].agg(["min", "max"])
    counts = ", ".join(
        f"{obj}: {lo}" if lo == hi else f"{obj}: {lo} to {hi}"
        for obj, lo, hi in zip(zero.index, zero["min"], zero["max"], strict=True)
    )
    bound = max(0, d - n)
    return (
        f"Here every W is {n} × {d}, so WᵀW is {d} × {d} with rank at most "
        f"min({n}, {d}) = {min(n, d)}: at least {bound} of its {d} eigenvalues must be zero. "
        f"An eigenvalue counts as zero at or below {ZERO_EIGENVALUE_RTOL:g} times the largest. "
        f"Zero-eigenvalue directions found and left out of I(W), per model over seeds: "
        f"{counts}."
    )


# --- the reading ------------------------------------------------------------------------


_CLOSER = {"lower": "closer", "higher": "farther", "indistinguishable": "indistinguishable"}


def reading(
    per_seed: pd.DataFrame,
    means: pd.DataFrame,
    diffs: pd.DataFrame,
    base_vocab_size: int,
    n_rare: int = 5,
) -> Reading:
    """Does HNS bring the languages and the rare symbols closer than CE does, and how do
    isotropy and the unigram probe differ? Verdicts come from the paired 95% intervals
    of HNS minus CE (``summarize``); 'indistinguishable' when the interval holds 0."""
    m = means.set_index(["objective", "metric"])
    d = diffs.set_index("metric")
    n_pairs = int(d["n_pairs"].min()) if len(d) else 0
    clipped = any_clipped(means, diffs)
    summary: dict = {
        "n_seeds": n_pairs,
        "intervals_clipped": clipped,
        "metrics": {},
        "verdicts": {},
        "zero_directions": {
            obj: int(per_seed.loc[per_seed["objective"] == obj, "n_zero"].max())
            for obj in OBJECTIVES
            if (per_seed["objective"] == obj).any()
        },
        "shape": [int(per_seed["n_rows"].iloc[0]), int(per_seed["n_dims"].iloc[0])],
    }
    for metric in d.index:
        entry = {
            obj: {
                "mean": m.loc[(obj, metric), "value"],
                "ci": [m.loc[(obj, metric), "value_lo"], m.loc[(obj, metric), "value_hi"]],
            }
            for obj in OBJECTIVES
            if (obj, metric) in m.index
        }
        row = d.loc[metric]
        entry["hns_minus_ce"] = {
            "diff": row["diff"],
            "ci": [row["diff_lo"], row["diff_hi"]],
            "direction": row["direction"],
        }
        summary["metrics"][metric] = entry

    def verdict(metric: str, words: Mapping[str, str]) -> str:
        row = d.loc[metric]
        ce, hns = m.loc[("CE", metric), "value"], m.loc[("HNS", metric), "value"]
        word = words[row["direction"]]
        summary["verdicts"][metric] = word
        diff = format_interval(*interval_of(row, "diff"), sign="+", significant=True)
        return f"CE {ce:.3g}, HNS {hns:.3g}; HNS − CE {diff}: **{word}**"

    lines = [
        f"Over {n_pairs} paired seed{'s' if n_pairs != 1 else ''}, with distances in units "
        "of each matrix's scale:",
        "",
    ]
    moved: dict[str, list[str]] = {"closer": [], "farther": [], "indistinguishable": []}
    subjects = {
        "twin_distance": (
            f"**Twins** (*i*, *i* + {base_vocab_size}), mean distance",
            "the twins",
        ),
        "language_centroid_distance": (
            "**Language centroids**, distance",
            "the two languages' centroids",
        ),
        "rare_centroid_distance_high": (
            f"**The {n_rare} rarest symbols, high-resource language**, distance of their "
            "centroid from the rest of the language",
            "the rare high-resource symbols to the rest of their language",
        ),
        "rare_centroid_distance_low": (
            f"**The {n_rare} rarest symbols, low-resource language**, distance of their "
            "centroid from the rest of the language",
            "the rare low-resource symbols to the rest of their language",
        ),
    }
    for metric, (title, name) in subjects.items():
        if metric in d.index:
            lines.append(f"- {title}: {verdict(metric, _CLOSER)}.")
            moved[summary["verdicts"][metric]].append(name)
    iso_words = {
        "mean_cosine": ("mean pairwise cosine", {"lower": "lower", "higher": "higher"}),
        "effective_rank": ("effective rank", {"lower": "lower", "higher": "higher"}),
        "isotropy": ("I(W)", {"lower": "less isotropic", "higher": "more isotropic"}),
    }
    iso = [
        f"{label} {verdict(metric, {'indistinguishable': 'indistinguishable', **words})}"
        for metric, (label, words) in iso_words.items()
        if metric in d.index
    ]
    if iso:
        rows, dims = summary["shape"]
        zero = ", ".join(f"{k} {v}" for k, v in summary["zero_directions"].items())
        lines.append(
            "- **Isotropy**: " + "; ".join(iso) + f". (I(W) on the scale-normalized {rows} × "
            f"{dims} matrices; zero-eigenvalue directions left out: {zero}.)"
        )
    if "probe_kl" in d.index:
        probe_words = {
            "lower": "HNS encodes unigram frequency more closely",
            "higher": "CE encodes unigram frequency more closely",
            "indistinguishable": "indistinguishable",
        }
        start = ""
        if ("initial", "probe_kl") in m.index:
            start = f"; {m.loc[('initial', 'probe_kl'), 'value']:.3g} at initialization"
        lines.append(
            "- **Unigram probe**, KL(f ‖ softmax(W x)) in nats: "
            + verdict("probe_kl", probe_words)
            + start
            + "."
        )

    def listed(names: list[str]) -> str:
        return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]

    # Every item names a pair without 'and', so the list reads unambiguously.
    openings = {
        "closer": "HNS brings closer than CE does: ",
        "farther": "HNS sets farther apart than CE does: ",
        "indistinguishable": "CE and HNS cannot be told apart for ",
    }
    short = [openings[word] + listed(names) for word, names in moved.items() if names]
    lines += [
        "",
        ("**In short:** " + "; ".join(short) + ".") if short else "",
        "",
        "*Closer* or *farther* (and *higher* or *lower*) means the whole 95% interval of the "
        "paired difference lies below or above zero; otherwise the objectives are "
        "*indistinguishable* at this number of seeds.",
        *clipping_note(clipped),
    ]
    return Reading("\n".join(lines), summary)
