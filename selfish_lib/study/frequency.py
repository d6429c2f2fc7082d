"""CE versus HNS per frequency group: training curves, the validation table, the reading.

One averaging rule for curves and tables: a group's number is a ratio of sums over the
*positions* whose target is in the group (every position weighs the same, so a frequent
symbol of the group weighs more than a rare one). Training curves use the full-softmax
cross-entropy of the training batches (recorded for both objectives, so they compare;
an HNS run's own objective is a lower bound of it), summed per logging window and
smoothed with a trailing moving average; ``average="tokens"`` gives the mean over the
group's symbols of each symbol's mean instead (named so wherever it is used).

Validation numbers are whole-split metrics per group (ratios of sums, see
evaluation.aggregate); intervals are over seeds and differences are paired by seed
(stats.paired_difference), each clipped to its metric's range (stats.RANGES). A group
with fewer than ``SMALL_GROUP`` validation positions is marked: its seed interval hides
how few positions it rests on, so ``position_bootstrap`` adds an interval over
positions. The table makes one comparison per group and metric; ``holm_<metric>`` says
which survive Holm's correction over all of them (stats.holm).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..engine.evaluation import METRICS, position_values
from ..engine.runs import stack_runs
from ..engine.validation import ParameterError, check_choice, check_int
from .readings import METRIC_NAMES, Reading, clipping_note, format_interval, interval_of
from .stats import aggregate_seeds, any_clipped, compare, holm, paired_difference

SMALL_GROUP = 100  # validation positions under which a group is marked
AVERAGES = ("positions", "tokens")

# For each metric, whether a larger value is better.
HIGHER_IS_BETTER = {"loss": False, "top1": True, "recall5": True, "mrr": True}


def group_training_curves(
    runs: dict,
    token_info: pd.DataFrame,
    window: int = 5,
    loss: str = "ce",
    average: str = "positions",
) -> pd.DataFrame:
    """Per objective, seed, group and logged step: the smoothed mean training loss.

    ``loss`` is 'ce' (comparable across objectives) or 'objective' (what each run
    minimized). ``window`` is the moving-average width in logged steps. ``average``
    'positions' (the tables' rule: sum of the group's losses over its positions in the
    window) or 'tokens' (mean over the group's symbols of each symbol's mean loss).
    """
    window = check_int("window", window, 1)
    check_choice("loss", loss, ("ce", "objective"))
    check_choice("average", average, AVERAGES)
    tokens = stack_runs(runs, lambda r: r.train_tokens)
    tokens = tokens.drop(columns="experiment")
    merged = tokens.merge(token_info[["token", "group", "language"]], on="token")
    keys = ["objective", "seed", "language", "group", "step"]
    if average == "positions":
        sums = merged.groupby(keys, observed=True)[[f"{loss}_sum", "count"]].sum()
        curves = (sums[f"{loss}_sum"] / sums["count"]).rename("token_loss").reset_index()
    else:
        merged["token_loss"] = merged[f"{loss}_sum"] / merged["count"]
        curves = merged.groupby(keys, observed=True)["token_loss"].mean().reset_index()
    curves = curves.sort_values("step")
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
        names = {c: c.replace("diff", f"diff_{metric}", 1) for c in columns}
        diff = diff[[*by, *columns, "p_value"]].rename(columns={**names, "p_value": f"p_{metric}"})
        table = table.merge(diff, on=by, how="left")
        table[f"verdict_{metric}"] = [
            verdict(metric, lo, hi)
            for lo, hi in zip(table[f"diff_{metric}_lo"], table[f"diff_{metric}_hi"], strict=True)
        ]
    table["small_group"] = table["count"] < SMALL_GROUP
    # one comparison per group and metric: Holm over all of them
    flat = table[[f"p_{metric}" for metric in METRICS]].to_numpy(dtype=float).ravel()
    survives = holm(flat).reshape(len(table), len(METRICS))
    for j, metric in enumerate(METRICS):
        table[f"holm_{metric}"] = survives[:, j]
    table.attrs["comparisons"] = int(np.isfinite(flat).sum())
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
            row = {
                "group": rec["group"] + (" *" if rec.get("small_group") else ""),
                "val positions": rec["count"],
                "metric": metric,
                reference: cell(rec, f"{reference}_{metric}"),
                arm: cell(rec, f"{arm}_{metric}"),
                f"{arm} − {reference}": cell(rec, f"diff_{metric}", sign="+"),
            }
            if f"boot_{metric}" in rec:
                row["over positions"] = cell(rec, f"boot_{metric}", sign="+")
            row[f"{arm} is"] = rec[f"verdict_{metric}"]
            if f"holm_{metric}" in rec:
                row["after Holm"] = "survives" if rec[f"holm_{metric}"] else "—"
            rows.append(row)
    return pd.DataFrame(rows)


def position_bootstrap(
    runs: dict,
    corpus,
    token_info: pd.DataFrame,
    groups,
    *,
    arm: str = "HNS",
    reference: str = "CE",
    device: str = "cpu",
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """A 95% percentile interval over validation positions of the seed-averaged
    difference ``arm`` minus ``reference``, per group of ``groups`` and metric.

    Every run scores the same positions, so one resample of the group's positions serves
    every run: the difference of the seed means is computed on it, ``n_boot`` times
    (seeded: the same interval every time). Columns: group, boot_<metric>,
    boot_<metric>_lo, boot_<metric>_hi (the point value is the difference on all the
    positions). This interval reflects the few positions of a small group; the seed
    interval reflects training noise: they answer different questions and are shown
    side by side.
    """
    n_boot = check_int("n_boot", n_boot, 1)
    wanted = token_info[token_info["group"].isin(list(groups))][["token", "group"]]
    per_run: dict[tuple, pd.DataFrame] = {}
    for key, run in runs.items():
        values = position_values(run.model(device), corpus.val, device)
        per_run[key] = values.merge(wanted, on="token", how="inner")
    rng = np.random.default_rng(seed)
    rows = []
    for group in groups:
        arrays = {}
        for (objective, _seed), values in per_run.items():
            part = values[values["group"] == group]
            arrays.setdefault(objective, []).append(part[list(METRICS)].to_numpy(dtype=float))
        if arm not in arrays or reference not in arrays or not len(arrays[arm][0]):
            continue
        treated, control = np.stack(arrays[arm]), np.stack(arrays[reference])  # seed x pos x m
        n = treated.shape[1]
        point = treated.mean(axis=(0, 1)) - control.mean(axis=(0, 1))
        draws = rng.integers(0, n, size=(n_boot, n))
        boot = np.stack(
            [treated[:, idx].mean(axis=(0, 1)) - control[:, idx].mean(axis=(0, 1)) for idx in draws]
        )
        lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
        row = {"group": group, "positions": n}
        for j, metric in enumerate(METRICS):
            row.update({f"boot_{metric}": point[j], f"boot_{metric}_lo": lo[j],
                        f"boot_{metric}_hi": hi[j]})  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def with_position_intervals(table: pd.DataFrame, boot: pd.DataFrame) -> pd.DataFrame:
    """``validation_table`` with the ``position_bootstrap`` columns of the groups it has
    (NaN for the others); attributes kept."""
    if boot.empty:
        return table
    out = table.merge(boot.drop(columns="positions"), on="group", how="left")
    out.attrs = dict(table.attrs)
    return out


def multiplicity_note(table: pd.DataFrame) -> str:
    """One paragraph: how many comparisons the table makes, and which survive Holm's
    correction (family-wise error 5% over all of them)."""
    survivors = [
        f"{row['group']} {METRIC_NAMES[m]}"
        for row in table.to_dict("records")
        for m in METRICS
        if row.get(f"holm_{m}")
    ]
    n = table.attrs.get("comparisons", 0)
    small = table.loc[table["small_group"], "group"].tolist() if "small_group" in table else []
    text = (
        f"The table makes **{n} comparisons** (one per group with validation positions and "
        "metric), each at 95%: about one in twenty of them would look different by chance "
        f"alone. After Holm's correction over all {n} (family-wise error 5%), "
        + (
            f"{len(survivors)} survive: " + ", ".join(survivors) + "."
            if survivors
            else "none survives."
        )
    )
    if small:
        text += (
            f" Groups marked * have fewer than {SMALL_GROUP} validation positions "
            f"({', '.join(small)}); their 'over positions' column is a 95% bootstrap "
            "interval over those positions of the seed-averaged difference, beside the "
            "interval over seeds."
        )
    return text


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
        record = row._asdict()
        summary["validation"][g] = {
            "count": int(row.count),
            "small_group": bool(record.get("small_group", False)),
            **{
                m: {
                    "diff": getattr(row, f"diff_{m}"),
                    "ci": [getattr(row, f"diff_{m}_lo"), getattr(row, f"diff_{m}_hi")],
                    "verdict": getattr(row, f"verdict_{m}"),
                    "p_value": record.get(f"p_{m}"),
                    "survives_holm": bool(record.get(f"holm_{m}", False)),
                    **(
                        {"ci_over_positions": [record[f"boot_{m}_lo"], record[f"boot_{m}_hi"]]}
                        if record.get(f"boot_{m}_lo") == record.get(f"boot_{m}_lo")
                        and f"boot_{m}_lo" in record
                        else {}
                    ),
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
            "",
            multiplicity_note(table),
            *clipping_note(clipped),
        ]
    )
    summary["comparisons"] = int(table.attrs.get("comparisons", 0))
    return Reading(text, summary)
