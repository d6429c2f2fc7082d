"""CE versus HNS per frequency group: training curves, the validation table, the reading.

Training curves use the full-softmax cross-entropy of each target token on
the training batches (recorded for both objectives, so they are comparable;
an HNS run's own objective is a lower bound of it). A group's curve is the
mean over its tokens of each token's mean loss in a logging window (tokens
absent from a window are skipped), smoothed with a trailing moving average.

Validation numbers are whole-split metrics per group (ratios of sums, see
evaluation.aggregate); intervals are over seeds and differences are paired by
seed (stats.paired_difference), each clipped to its metric's range (stats.RANGES).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..engine.evaluation import METRICS
from ..engine.runs import stack_runs
from ..engine.validation import ParameterError, check_int
from .readings import METRIC_NAMES, Reading, clipping_note, format_interval, interval_of
from .stats import aggregate_seeds, any_clipped, compare, paired_difference

# For each metric, whether a larger value is better.
HIGHER_IS_BETTER = {"loss": False, "top1": True, "recall5": True, "mrr": True}


def group_training_curves(
    runs: dict, token_info: pd.DataFrame, window: int = 5, loss: str = "ce"
) -> pd.DataFrame:
    """Per objective, seed, group and logged step: the smoothed mean training loss.

    ``loss`` is 'ce' (comparable across objectives) or 'objective' (what each run
    minimized). ``window`` is the moving-average width in logged steps.
    """
    window = check_int("window", window, 1)
    if loss not in ("ce", "objective"):
        raise ValueError(f"invalid loss={loss!r}: expected one of 'ce', 'objective'")
    tokens = stack_runs(runs, lambda r: r.train_tokens)
    tokens = tokens.drop(columns="experiment")
    tokens["token_loss"] = tokens[f"{loss}_sum"] / tokens["count"]
    merged = tokens.merge(token_info[["token", "group", "language"]], on="token")
    curves = (
        merged.groupby(["objective", "seed", "language", "group", "step"], observed=True)[
            "token_loss"
        ]
        .mean()
        .reset_index()
        .sort_values("step")
    )
    curves["loss"] = curves.groupby(["objective", "seed", "language", "group"], observed=True)[
        "token_loss"
    ].transform(lambda s: s.rolling(window, min_periods=1).mean())
    return curves.drop(columns="token_loss").reset_index(drop=True)


def curve_bands(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% interval over seeds of ``group_training_curves`` (for bands); a loss is
    never negative, so the lower bound of the band is clipped at 0 (``loss_clipped``)."""
    return aggregate_seeds(curves, ["objective", "language", "group", "step"], ["loss"])


def group_validation(runs: dict, token_info: pd.DataFrame, by=("language", "group")):
    """Per run (objective, seed) and group: the final whole-split validation metrics."""
    return stack_runs(runs, lambda r: r.metrics(token_info, by=list(by))).drop(columns="experiment")


def validation_table(
    per_seed: pd.DataFrame, by=("language", "group"), arm: str = "HNS", reference: str = "CE"
) -> pd.DataFrame:
    """Per group: token count, and for each metric the ``reference`` and ``arm`` means with
    intervals (columns ``<arm>_<metric>``), the paired arm minus reference difference with
    its interval (``diff_<metric>``) and the arm's verdict (``verdict_<metric>``). Any two
    arms of ``per_seed``'s ``objective`` column compare: CE and HNS by default. Intervals
    are clipped to the metric's range; ``<arm>_<metric>_clipped`` and
    ``diff_<metric>_clipped`` say where."""
    by = list(by)
    present = sorted(set(per_seed["objective"]))
    for name, value in (("arm", arm), ("reference", reference)):
        if value not in present:
            raise ParameterError(name, value, "an arm of the runs: " + ", ".join(present))
    agg = aggregate_seeds(per_seed, ["objective", *by], list(METRICS))
    counts = per_seed.groupby(by, observed=True)["count"].first().reset_index()
    table = counts
    for objective in (reference, arm):
        part = agg[agg["objective"] == objective].drop(columns=["objective", "n_seeds"])
        part = part.rename(columns={c: f"{objective}_{c}" for c in part.columns if c not in by})
        table = table.merge(part, on=by, how="left")
    for metric in METRICS:
        diff = paired_difference(per_seed, by, metric, "objective", arm, reference)
        columns = ("diff", "diff_lo", "diff_hi", "diff_clipped")
        diff = diff[[*by, *columns]].rename(
            columns={c: c.replace("diff", f"diff_{metric}", 1) for c in columns}
        )
        table = table.merge(diff, on=by, how="left")
        table[f"verdict_{metric}"] = [
            verdict(metric, lo, hi)
            for lo, hi in zip(table[f"diff_{metric}_lo"], table[f"diff_{metric}_hi"], strict=True)
        ]
    n_seeds = per_seed.groupby("objective")["seed"].nunique()
    table.attrs["n_seeds"] = {k: int(v) for k, v in n_seeds.items()}
    table.attrs["arm"], table.attrs["reference"] = arm, reference
    return table


def readable_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``validation_table`` as a long, readable table: one row per group and metric, with
    'mean [low, high]' cells for CE, HNS and their difference, and the verdict.
    Cells follow ``readings.format_interval``: 'n/a' for a group without validation
    tokens, the mean and '(1 seed)' without an interval."""

    def cell(rec: dict, name: str, sign: str = "") -> str:
        return format_interval(*interval_of(rec, name), digits=digits, sign=sign)

    arm, reference = table.attrs.get("arm", "HNS"), table.attrs.get("reference", "CE")
    rows = []
    for rec in table.to_dict("records"):
        for metric in METRICS:
            rows.append(
                {
                    "group": rec["group"],
                    "val tokens": rec["count"],
                    "metric": metric,
                    reference: cell(rec, f"{reference}_{metric}"),
                    arm: cell(rec, f"{arm}_{metric}"),
                    f"{arm} − {reference}": cell(rec, f"diff_{metric}", sign="+"),
                    f"{arm} is": rec[f"verdict_{metric}"],
                }
            )
    return pd.DataFrame(rows)


def verdict(metric: str, diff_lo: float, diff_hi: float) -> str:
    """'better', 'worse' or 'indistinguishable' for HNS, from the interval of HNS - CE."""
    direction = compare(diff_lo, diff_hi)
    if direction == "indistinguishable":
        return direction
    return "better" if (direction == "higher") == HIGHER_IS_BETTER[metric] else "worse"


def final_training_loss(curves: pd.DataFrame, last_fraction: float = 0.1) -> pd.DataFrame:
    """Per objective, seed and group: the mean smoothed training loss over the last
    ``last_fraction`` of the logged steps (the end of training, less noisy than one step)."""
    steps = np.sort(curves["step"].unique())
    cut = steps[max(0, int(len(steps) * (1 - last_fraction)) - 1)]
    tail = curves[curves["step"] >= cut]
    return (
        tail.groupby(["objective", "seed", "language", "group"], observed=True)["loss"]
        .mean()
        .reset_index()
    )


def group_reading(train_final: pd.DataFrame, table: pd.DataFrame) -> Reading:
    """For which groups HNS is better, worse or indistinguishable, on the end-of-training
    loss and on each validation metric (95% paired intervals over seeds)."""
    train_diff = paired_difference(
        train_final, ["language", "group"], "loss", "objective", "HNS", "CE"
    )
    train_diff["verdict"] = [
        verdict("loss", lo, hi)
        for lo, hi in zip(train_diff["diff_lo"], train_diff["diff_hi"], strict=True)
    ]
    clipped = any_clipped(table, train_diff)
    summary: dict = {"training_loss": {}, "validation": {}, "intervals_clipped": clipped}
    lines = [
        "| group | training loss | val loss | top-1 | recall@5 | MRR |",
        "|---|---|---|---|---|---|",
    ]
    train_by_group = train_diff.set_index("group")
    for row in table.itertuples(index=False):
        g = row.group
        t = train_by_group.loc[g] if g in train_by_group.index else None
        t_verdict = t["verdict"] if t is not None else "n/a"
        summary["training_loss"][g] = {
            "diff": None if t is None else t["diff"],
            "ci": None if t is None else [t["diff_lo"], t["diff_hi"]],
            "verdict": t_verdict,
        }
        summary["validation"][g] = {
            "count": int(row.count),
            **{
                m: {
                    "diff": getattr(row, f"diff_{m}"),
                    "ci": [getattr(row, f"diff_{m}_lo"), getattr(row, f"diff_{m}_hi")],
                    "verdict": getattr(row, f"verdict_{m}"),
                }
                for m in METRICS
            },
        }
        cells = [t_verdict] + [getattr(row, f"verdict_{m}") for m in METRICS]
        lines.append(f"| {g} (n={int(row.count):,}) | " + " | ".join(cells) + " |")

    def groups_where(key: str, word: str) -> list[str]:
        source = summary["training_loss"] if key == "train" else summary["validation"]
        if key == "train":
            return [g for g, v in source.items() if v["verdict"] == word]
        return [g for g, v in source.items() if v[key]["verdict"] == word]

    sentences = []
    for key, name in (
        ("train", f"training {METRIC_NAMES['loss']}"),
        ("loss", f"validation {METRIC_NAMES['loss']}"),
        ("top1", METRIC_NAMES["top1"]),
    ):
        better, worse = groups_where(key, "better"), groups_where(key, "worse")
        sentences.append(
            f"- On **{name}**, HNS is better for "
            f"{', '.join(better) if better else 'no group'}, worse for "
            f"{', '.join(worse) if worse else 'no group'}, and indistinguishable elsewhere."
        )
    text = "\n".join(
        [
            "How HNS compares with CE, per frequency group (95% intervals of the paired "
            "difference over seeds; *better* means lower loss or higher accuracy):",
            "",
            *lines,
            "",
            *sentences,
            *clipping_note(clipped),
        ]
    )
    return Reading(text, summary)
