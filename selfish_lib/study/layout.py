"""The layout sweep of notebook 06: how large should the layout be?

Bilingual runs (2% of the training blocks in a second alphabet) over a grid of
constant layouts, CE (layout = inf) included, plus one run whose layout moves
along a schedule (e.g. cosine from 8 to 2), for every seed of the sweep. Every
run comes from the run store (``Profile.sweep_config``), so re-executing the
notebook only reads results.

Each run is an *arm* of the sweep, named by its objective label
(the objective's label: 'CE', 'HNS(layout=2)', 'HNS(layout=8→2, cosine)').
``sweep_tables`` computes, once, everything the notebook and its explorer
draw: per-seed metrics per language ('high', 'low' and ``readings.POOLED``, both
languages pooled), their means with 95% Student-t intervals over seeds, the per rank
group validation metrics, the 2-D PCA of each arm's embeddings for one seed,
and the sweep table, where every arm is compared with CE by the 95% interval
of the difference paired by seed.

The toy explainer and the nucleus-margin calculator of the same notebook, which
need no run, are in ``toy``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..engine.evaluation import METRICS
from ..engine.losses import check_layout
from ..engine.objectives import HardNegatives, objective_for_layout
from ..engine.profiles import Profile
from ..engine.training import TrainConfig
from ..engine.validation import ParameterError, check_choice, check_float, check_seeds
from .frequency import verdict
from .projection import pca_2d
from .readings import CLIPPED_NOTE, POOLED, Reading, format_interval, interval_of
from .stats import aggregate_seeds, any_clipped, paired_difference

DEFAULT_LAYOUTS = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, math.inf)
SCHEDULE_KINDS = ("linear", "cosine")
CONSTANT = "constant"
CE_ARM = "CE"
# The columns of the sweep table: (language, metric) pairs, in reading order.
TABLE_VALUES = (
    ("low", "top1"),
    ("low", "mrr"),
    ("low", "loss"),
    ("high", "top1"),
    (POOLED, "loss"),
)
# The sweep table's column of the loss pooled over both languages.
POOLED_LOSS = f"{POOLED}_loss"
ARM_COLUMNS = ("arm", "label", "schedule", "layout", "layout_end")


# --- parameters --------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """A layout schedule: ``kind`` ('linear' or 'cosine') from ``start`` to ``end``."""

    kind: str
    start: float
    end: float

    @property
    def label(self) -> str:
        """'cosine 8→2'."""
        return f"{self.kind} {self.start:g}→{self.end:g}"


def check_layouts(layouts: Any) -> tuple[float, ...]:
    """Validate the sweep's grid: distinct layouts (each >= 0 or inf) that include inf.

    Returns them as floats in ascending order (inf, the CE reference, last).
    """
    allowed = "a non-empty list of distinct layouts (reals >= 0) that includes inf (CE)"
    if isinstance(layouts, (str, bytes)) or not isinstance(layouts, Iterable):
        raise ParameterError("layouts", layouts, allowed)
    values = list(layouts)
    try:
        checked = [check_layout(v) for v in values]
    except ParameterError:
        raise ParameterError("layouts", layouts, allowed) from None
    if not checked or len(set(checked)) != len(checked) or math.inf not in checked:
        raise ParameterError("layouts", layouts, allowed)
    return tuple(sorted(checked))


def check_shown_layout(layout: Any, layouts: Iterable[float]) -> float:
    """Validate the layout the static figures show: one of the swept ``layouts``."""
    grid = check_layouts(layouts)
    allowed = "one of the swept layouts " + ", ".join(f"{v:g}" for v in grid)
    try:
        value = check_layout(layout)
    except ParameterError:
        raise ParameterError("layout", layout, allowed) from None
    if value not in grid:
        raise ParameterError("layout", layout, allowed)
    return value


def check_schedule(schedule: Any) -> Schedule | None:
    """Validate a schedule given as ``(kind, start, end)``, e.g. ``("cosine", 8.0, 2.0)``.

    ``kind`` is 'linear' or 'cosine', ``start`` and ``end`` are finite layouts >= 0
    and differ. ``None`` means no scheduled run; a ``Schedule`` is returned as it is.
    """
    if schedule is None or isinstance(schedule, Schedule):
        return schedule
    allowed = (
        "None or (kind, start, end) with kind 'linear' or 'cosine' and two different "
        "finite layouts >= 0, e.g. ('cosine', 8.0, 2.0)"
    )
    if isinstance(schedule, (str, bytes)) or not isinstance(schedule, Sequence):
        raise ParameterError("schedule", schedule, allowed)
    if len(schedule) != 3:
        raise ParameterError("schedule", schedule, allowed)
    kind, start, end = schedule
    try:
        check_choice("schedule kind", kind, SCHEDULE_KINDS)
        start = check_float("schedule start", start, 0.0)
        end = check_float("schedule end", end, 0.0)
    except ParameterError:
        raise ParameterError("schedule", schedule, allowed) from None
    if start == end:  # a constant layout: that is a point of the grid, not a schedule
        raise ParameterError("schedule", schedule, allowed)
    return Schedule(kind, start, end)


def sweep_seeds(profile: Profile, seeds: Any = None) -> tuple[int, ...]:
    """The seeds of the sweep: the profile's sweep seeds, or ``seeds`` when given."""
    if seeds is None:
        return tuple(profile.sweep["seeds"])
    return check_seeds("seeds", seeds)


def sweep_configs(
    profile: Profile,
    layouts: Iterable[float] = DEFAULT_LAYOUTS,
    schedule: Any = ("cosine", 8.0, 2.0),
    seeds: Any = None,
) -> dict[tuple[str, int], TrainConfig]:
    """The sweep's run configs, keyed by (arm, seed): every layout of the grid and the
    scheduled run (if any), for every seed (the profile's sweep seeds by default)."""
    layouts = check_layouts(layouts)
    plan = check_schedule(schedule)
    seeds = sweep_seeds(profile, seeds)
    objectives = [objective_for_layout(layout) for layout in layouts]
    if plan is not None:
        objectives.append(HardNegatives(plan.start, plan.kind, plan.end))
    configs = [profile.sweep_config(obj, seed) for obj in objectives for seed in seeds]
    return {(c.objective.label, c.seed): c for c in configs}


# --- labels --------------------------------------------------------------------------------


def layout_label(layout: float) -> str:
    """Axis label of a constant layout: '0.5', '2', or '∞ (CE)'."""
    return "∞ (CE)" if math.isinf(layout) else f"{layout:g}"


def arm_fields(config: Any) -> dict[str, Any]:
    """The arm columns of a run: arm (its objective label), label (short, for axes),
    schedule ('constant', 'linear' or 'cosine'), layout (the start) and layout_end."""
    objective = config.objective
    if isinstance(objective, HardNegatives):
        schedule, start, end = objective.schedule, objective.layout, objective.layout_end
    else:  # cross-entropy: the infinite layout
        schedule, start, end = CONSTANT, math.inf, math.inf
    label = layout_label(start) if schedule == CONSTANT else Schedule(schedule, start, end).label
    return {
        "arm": objective.label,
        "label": label,
        "schedule": schedule,
        "layout": float(start),
        "layout_end": float(end),
    }


def _arm_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Constant layouts in ascending order (CE last), then the scheduled arms."""
    key = frame["schedule"].ne(CONSTANT).astype(int)
    return (
        frame.assign(_key=key)
        .sort_values(["_key", "layout"], kind="stable")
        .drop(columns="_key")
        .reset_index(drop=True)
    )


# --- tables --------------------------------------------------------------------------------


def per_seed_metrics(runs: dict, token_info: pd.DataFrame) -> pd.DataFrame:
    """One row per run and language ('high', 'low', ``POOLED`` = both pooled): the arm
    columns, seed, language, count and the final validation metrics."""
    frames = []
    for run in runs.values():
        by_language = run.metrics(token_info, by=["language"])
        pooled = run.metrics(token_info, by=[]).assign(language=POOLED)
        part = pd.concat([by_language, pooled], ignore_index=True)
        for key, value in reversed(arm_fields(run.config).items()):
            part.insert(0, key, value)
        part.insert(len(ARM_COLUMNS), "seed", run.config.seed)
        frames.append(part)
    return pd.concat(frames, ignore_index=True)[
        [*ARM_COLUMNS, "seed", "language", "count", *METRICS]
    ]


def per_seed_groups(runs: dict, token_info: pd.DataFrame) -> pd.DataFrame:
    """One row per run, language and frequency-rank group: the final validation metrics."""
    frames = []
    for run in runs.values():
        part = run.metrics(token_info, by=["language", "group"])
        for key, value in reversed(arm_fields(run.config).items()):
            part.insert(0, key, value)
        part.insert(len(ARM_COLUMNS), "seed", run.config.seed)
        frames.append(part)
    return pd.concat(frames, ignore_index=True)


def summarize_seeds(per_seed: pd.DataFrame, by: Sequence[str] = ("language",)) -> pd.DataFrame:
    """Means and 95% intervals over seeds of every metric, per arm and ``by``."""
    keys = [*ARM_COLUMNS, *by]
    values = [m for m in METRICS if m in per_seed.columns]
    return aggregate_seeds(per_seed, keys, values)


def embedding_projections(
    runs: dict, token_info: pd.DataFrame, seed: int | None = None
) -> pd.DataFrame:
    """The 2-D PCA (``projection.pca_2d``) of each arm's tied embedding for one seed
    (the smallest by default): arm columns, seed, token, display, language, rank, group,
    pc1, pc2."""
    seeds = sorted({run.config.seed for run in runs.values()})
    if seed is None:
        seed = seeds[0]
    elif seed not in seeds:
        raise ParameterError("seed", seed, "one of the sweep's seeds " + repr(seeds))
    info = token_info.set_index("token")
    frames = []
    for run in runs.values():
        if run.config.seed != seed:
            continue
        coords = pca_2d(run.model().embedding, seed=seed)
        tokens = np.arange(len(coords))
        part = pd.DataFrame(
            {
                **arm_fields(run.config),
                "seed": seed,
                "token": tokens,
                "display": info.loc[tokens, "display"].to_numpy(),
                "language": info.loc[tokens, "language"].to_numpy(),
                "rank": info.loc[tokens, "rank"].to_numpy(),
                "group": info.loc[tokens, "group"].to_numpy(),
                "pc1": coords[:, 0],
                "pc2": coords[:, 1],
            }
        )
        frames.append(part)
    return pd.concat(frames, ignore_index=True)


def sweep_table(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per arm (constant layouts ascending, CE, then the schedule): for each
    (language, metric) of ``TABLE_VALUES`` the mean over seeds with its 95% interval
    (``low_top1``, ``low_top1_lo``, ``low_top1_hi``, ...), the difference from CE paired
    by seed with its interval (``low_top1_diff``, ``_diff_lo``, ``_diff_hi``) and the
    verdict ``low_top1_vs_ce``: 'better', 'worse' or 'indistinguishable' ('reference'
    for CE itself). Intervals are clipped to the metric's range (``low_top1_clipped``,
    ``low_top1_diff_clipped``). ``per_seed`` is ``per_seed_metrics``'s table."""
    if CE_ARM not in set(per_seed["arm"]):
        raise ParameterError("per_seed", "runs without CE", "a sweep that includes layout = inf")
    arms = _arm_order(per_seed[list(ARM_COLUMNS)].drop_duplicates("arm"))
    n_seeds = per_seed.groupby("arm")["seed"].nunique()
    table = arms.assign(n_seeds=arms["arm"].map(n_seeds).astype(int))
    summary = summarize_seeds(per_seed).set_index(["arm", "language"])
    for language, metric in TABLE_VALUES:
        name = f"{language}_{metric}"
        part = per_seed[per_seed["language"] == language]
        for suffix in ("", "_lo", "_hi", "_clipped"):
            table[name + suffix] = [
                summary.loc[(arm, language), metric + suffix] for arm in table["arm"]
            ]
        diffs = {
            arm: paired_difference(part, [], metric, "arm", arm, CE_ARM).iloc[0]
            for arm in table["arm"]
            if arm != CE_ARM
        }
        for suffix in ("", "_lo", "_hi"):
            table[f"{name}_diff{suffix}"] = [
                diffs[arm][f"diff{suffix}"] if arm in diffs else math.nan for arm in table["arm"]
            ]
        table[f"{name}_diff_clipped"] = [
            bool(diffs[arm]["diff_clipped"]) if arm in diffs else False for arm in table["arm"]
        ]
        table[f"{name}_vs_ce"] = [
            "reference"
            if arm == CE_ARM
            else verdict(metric, diffs[arm]["diff_lo"], diffs[arm]["diff_hi"])
            for arm in table["arm"]
        ]
    return table


# The marks of ``readable_sweep_table``: the verdict of the paired difference from CE.
VERDICT_MARKS = {"better": " ▲", "worse": " ▼", "indistinguishable": "", "reference": ""}


def readable_sweep_table(table: pd.DataFrame) -> pd.DataFrame:
    """``sweep_table`` for reading: one row per arm, 'mean [low, high]' cells (accuracies
    and MRR in percent, losses in nats), each followed by ▲ when it is better than CE
    by the paired 95% interval, ▼ when it is worse, and nothing otherwise."""
    names = {
        "low_top1": "low-resource top-1 (%)",
        "low_mrr": "low-resource MRR (%)",
        "low_loss": "low-resource loss",
        "high_top1": "high-resource top-1 (%)",
        POOLED_LOSS: "overall loss",
    }
    rows = []
    for rec in table.to_dict("records"):
        row = {"layout": rec["label"], "seeds": rec["n_seeds"]}
        for language, metric in TABLE_VALUES:
            name = f"{language}_{metric}"
            factor, digits = (1.0, 3) if metric == "loss" else (100.0, 2)
            values = (v * factor for v in interval_of(rec, name))
            cell = format_interval(*values, digits=digits)
            row[names[name]] = cell + VERDICT_MARKS[rec[f"{name}_vs_ce"]]
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class SweepTables:
    """Everything the sweep's figures and explorer draw, computed once.

    ``per_seed``: ``per_seed_metrics``; ``summary``: its means and intervals per arm and
    language; ``groups``: means and intervals per arm, language and rank group;
    ``embeddings``: ``embedding_projections``; ``table``: ``sweep_table``.
    """

    per_seed: pd.DataFrame
    summary: pd.DataFrame
    groups: pd.DataFrame
    embeddings: pd.DataFrame
    table: pd.DataFrame

    @property
    def layouts(self) -> list[float]:
        """The constant layouts of the sweep, ascending (inf last)."""
        constant = self.table[self.table["schedule"] == CONSTANT]
        return [float(v) for v in constant["layout"]]

    @property
    def schedules(self) -> list[str]:
        """'constant', then the kind of each scheduled arm."""
        kinds = self.table.loc[self.table["schedule"] != CONSTANT, "schedule"]
        return [CONSTANT, *dict.fromkeys(kinds)]

    def arm(self, layout: float, schedule: str = CONSTANT) -> str:
        """The arm shown for a slider ``layout`` and a ``schedule`` choice: the constant arm
        at ``layout``, or the scheduled arm of that kind (the layout is then ignored)."""
        check_choice("schedule", schedule, self.schedules)
        rows = self.table[self.table["schedule"] == schedule]
        if schedule == CONSTANT:
            layout = check_layout(layout)
            rows = rows[rows["layout"] == layout]
            if rows.empty:
                allowed = "one of the swept layouts " + ", ".join(f"{v:g}" for v in self.layouts)
                raise ParameterError("layout", layout, allowed)
        return str(rows["arm"].iloc[0])

    def label(self, arm: str) -> str:
        """The short label of an arm ('2', '∞ (CE)', 'cosine 8→2')."""
        return str(self.table.set_index("arm").loc[arm, "label"])


def sweep_tables(runs: dict, token_info: pd.DataFrame, seed: int | None = None) -> SweepTables:
    """Compute every table of the sweep from its runs (the explorer only filters them).
    ``seed`` is the seed whose embeddings are projected (default: the smallest)."""
    per_seed = per_seed_metrics(runs, token_info)
    groups = per_seed_groups(runs, token_info)
    return SweepTables(
        per_seed=per_seed,
        summary=summarize_seeds(per_seed),
        groups=summarize_seeds(groups, by=("language", "group")),
        embeddings=embedding_projections(runs, token_info, seed),
        table=sweep_table(per_seed),
    )


# --- the reading ---------------------------------------------------------------------------


def _judged(rec: dict, name: str, unit: str, factor: float, digits: int) -> str:
    """'+1.23 [+0.10, +2.40] points, better than CE' for a row of the sweep table."""
    diff = [v * factor for v in interval_of(rec, f"{name}_diff")]
    word = rec[f"{name}_vs_ce"]
    judgement = "indistinguishable from CE" if word == "indistinguishable" else f"{word} than CE"
    if math.isnan(diff[1]) or math.isnan(diff[2]):  # a single seed: no interval to judge with
        judgement = "not testable with one seed"
    return f"{format_interval(*diff, digits=digits, sign='+')}{unit}, {judgement}"


def _listing(labels: list[str], notes: Sequence[str] | None = None) -> str:
    """'**2** (note), **3** (note)' or 'none'."""
    if not labels:
        return "none"
    notes = notes if notes is not None else [""] * len(labels)
    return ", ".join(
        f"**{label}**" + (f" ({note})" if note else "")
        for label, note in zip(labels, notes, strict=True)
    )


def _trend(values: Sequence[float]) -> str:
    """'decreases steadily', 'increases steadily' or 'does not move monotonically'."""
    steps = np.diff(np.asarray(values, dtype=float))
    if len(steps) and (steps < 0).all():
        return "decreases steadily"
    if len(steps) and (steps > 0).all():
        return "increases steadily"
    return "does not move monotonically"


def sweep_reading(per_seed: pd.DataFrame, table: pd.DataFrame) -> Reading:
    """Which layout gives the best low-resource top-1, whether it is distinguishable from
    CE (paired 95% interval over seeds), how the overall loss moves with the layout, and
    how the scheduled run compares with CE and with the best constant layout."""
    rows = {rec["arm"]: rec for rec in table.to_dict("records")}
    ce = rows[CE_ARM]
    hns = table[table["arm"] != CE_ARM]
    if hns.empty:
        raise ParameterError("table", "CE only", "a sweep with at least one finite layout")
    best = rows[str(hns.loc[hns["low_top1"].idxmax(), "arm"])]
    constant = table[table["schedule"] == CONSTANT]
    lowest = rows[str(table.loc[table[POOLED_LOSS].idxmin(), "arm"])]
    highest = rows[str(table.loc[table[POOLED_LOSS].idxmax(), "arm"])]
    n_seeds = int(table["n_seeds"].min())

    def labels_where(column: str, word: str) -> list[str]:
        return [str(v) for v in table.loc[table[column] == word, "label"]]

    def loss_notes(labels: list[str]) -> list[str]:
        diffs = table.set_index("label").loc[labels, f"{POOLED_LOSS}_diff"]
        return [f"{d:+.3g} nats" for d in diffs]

    top1_better = labels_where("low_top1_vs_ce", "better")
    top1_worse = labels_where("low_top1_vs_ce", "worse")
    loss_better = labels_where(f"{POOLED_LOSS}_vs_ce", "better")
    loss_worse = labels_where(f"{POOLED_LOSS}_vs_ce", "worse")
    constant_hns = constant[constant["arm"] != CE_ARM]
    trend = _trend(list(constant[POOLED_LOSS]))

    clipped = any_clipped(table)
    lines = [
        f"Over {n_seeds} seed(s) per arm, 95% intervals; differences are paired by seed.",
        "",
        f"- **Low-resource top-1.** The highest mean is at layout **{best['label']}**: "
        f"{format_interval(*interval_of(best, 'low_top1'), digits=2, percent=True)} "
        f"against {format_interval(*interval_of(ce, 'low_top1'), digits=2, percent=True)} "
        f"for CE; the difference is "
        f"{_judged(best, 'low_top1', ' points', 100.0, 2)}. This layout was picked "
        "as the best after looking at the sweep, so its interval is optimistic.",
        f"- Layouts whose low-resource top-1 is better than CE: {_listing(top1_better)}; "
        f"worse: {_listing(top1_worse)}; the others are indistinguishable from CE.",
        f"- **Overall loss** (both languages pooled) is lowest at **{lowest['label']}** "
        f"({lowest[POOLED_LOSS]:.3f} nats) and highest at **{highest['label']}** "
        f"({highest[POOLED_LOSS]:.3f}); CE has {ce[POOLED_LOSS]:.3f}. From the smallest "
        f"layout to CE it {trend}. Layouts with a lower overall loss than CE: "
        f"{_listing(loss_better, loss_notes(loss_better))}; higher: "
        f"{_listing(loss_worse, loss_notes(loss_worse))}.",
    ]
    summary: dict[str, Any] = {
        "n_seeds": n_seeds,
        "best_low_top1": {
            "layout": best["label"],
            "low_top1": best["low_top1"],
            "ci": [best["low_top1_lo"], best["low_top1_hi"]],
            "diff_vs_ce": best["low_top1_diff"],
            "diff_ci": [best["low_top1_diff_lo"], best["low_top1_diff_hi"]],
            "verdict": best["low_top1_vs_ce"],
        },
        "ce": {"low_top1": ce["low_top1"], POOLED_LOSS: ce[POOLED_LOSS]},
        "low_top1_better_than_ce": top1_better,
        "low_top1_worse_than_ce": top1_worse,
        f"{POOLED_LOSS}_lowest": lowest["label"],
        f"{POOLED_LOSS}_highest": highest["label"],
        f"{POOLED_LOSS}_trend": trend,
        f"{POOLED_LOSS}_better_than_ce": loss_better,
        f"{POOLED_LOSS}_worse_than_ce": loss_worse,
    }
    scheduled = table[table["schedule"] != CONSTANT]
    if not scheduled.empty and not constant_hns.empty:
        sched = rows[str(scheduled["arm"].iloc[0])]
        best_constant = rows[str(constant_hns.loc[constant_hns["low_top1"].idxmax(), "arm"])]
        part = per_seed[per_seed["language"] == "low"]
        vs_best = paired_difference(
            part, [], "top1", "arm", sched["arm"], best_constant["arm"]
        ).iloc[0]
        word = verdict("top1", vs_best["diff_lo"], vs_best["diff_hi"])
        if vs_best["n_pairs"] < 2:
            word = "not testable with one seed"
        diff_text = format_interval(
            *(100 * v for v in interval_of(vs_best, "diff")), digits=2, sign="+"
        )
        lines.append(
            f"- **Schedule {sched['label']}.** Low-resource top-1 against CE: "
            f"{_judged(sched, 'low_top1', ' points', 100.0, 2)}; against the best constant "
            f"layout ({best_constant['label']}): {diff_text} points, {word}. "
            f"Overall loss against CE: {_judged(sched, POOLED_LOSS, ' nats', 1.0, 3)}."
        )
        summary["schedule"] = {
            "label": sched["label"],
            "low_top1": sched["low_top1"],
            "low_top1_vs_ce": sched["low_top1_vs_ce"],
            "best_constant": best_constant["label"],
            "low_top1_diff_vs_best_constant": vs_best["diff"],
            "diff_ci": [vs_best["diff_lo"], vs_best["diff_hi"]],
            "verdict_vs_best_constant": word,
            f"{POOLED_LOSS}_vs_ce": sched[f"{POOLED_LOSS}_vs_ce"],
        }
        clipped |= bool(vs_best["diff_clipped"])
    summary["intervals_clipped"] = clipped
    if clipped:  # said with the method, above the list the notebook may go on with
        lines[0] += " " + CLIPPED_NOTE
    return Reading("\n".join(lines), summary)


def fragment_table(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The sweep table as JSON-safe records for the pipeline's summary: per arm its label,
    schedule, layouts, seeds, and each value with its interval and verdict against CE."""
    keep = ["label", "schedule", "layout", "layout_end", "n_seeds"]
    for language, metric in TABLE_VALUES:
        name = f"{language}_{metric}"
        keep += [name, f"{name}_lo", f"{name}_hi", f"{name}_diff", f"{name}_vs_ce"]
    return table[keep].to_dict("records")
