"""The bilingual simulation: four experiments, per-language metrics, learning curves,
and where each model's probability goes.

- ``baseline``: CE on the bilingual stream (p_low of the blocks in the second alphabet);
- ``HNS``: the same stream with HNS at ``layout``;
- ``low-only HNS``: the original study's control, HNS at layout 2 on second-alphabet
  blocks only, for 50 times fewer steps (the compute a proportional split would give
  that language), with a warmup of ``LOW_ONLY_WARMUP`` steps as there;
- ``low-only CE``: the same control with CE, so that it compares with the baseline
  at the same short warmup (the profile's warmup of 100 steps would be 62% of the
  paper's 160 steps).

All four have the doubled vocabulary. Validation evaluates every window in both
alphabets, so 'high' and 'low' are the same text in two alphabets.
"""

from __future__ import annotations

import pandas as pd

from ..engine.evaluation import METRICS, aggregate, probability_profile
from ..engine.objectives import CrossEntropy, HardNegatives
from ..engine.profiles import Profile
from ..engine.runs import stack_runs
from ..engine.validation import check_float
from .claims import evidence_note
from .frequency import verdict
from .readings import (
    LANGUAGE_NAMES,
    MIXTURE,
    POOLED,
    Reading,
    clipping_note,
    format_interval,
    interval_of,
)
from .stats import aggregate_seeds, any_clipped, paired_difference

EXPERIMENTS = ("baseline", "HNS", "low-only HNS", "low-only CE")
LOW_ONLY_WARMUP = 2  # the original control's warmup (turumtaev/selfishTokens)
LOW_ONLY_LAYOUT = 2.0  # the original control's HNS layout, whatever the notebook's layout


def experiment_configs(study: Profile, layout: float) -> dict:
    """(experiment, seed) -> TrainConfig for the four experiments over the study's seeds."""
    configs = {}
    for seed in study.seeds:
        configs[("baseline", seed)] = study.config("bilingual", CrossEntropy(), seed=seed)
        configs[("HNS", seed)] = study.config("bilingual", HardNegatives(layout), seed=seed)
        for name, objective in (
            ("low-only HNS", HardNegatives(LOW_ONLY_LAYOUT)),
            ("low-only CE", CrossEntropy()),
        ):
            configs[(name, seed)] = study.config(
                "low_only", objective, seed=seed, warmup_steps=LOW_ONLY_WARMUP
            )
    return configs


def _with_overall(
    run, token_info: pd.DataFrame, p_low: float, step: int | None = None
) -> pd.DataFrame:
    ev = run.eval_tokens
    step = int(ev["step"].max()) if step is None else step
    at = ev[ev["step"] == step]
    per_lang = aggregate(at, token_info, by=["language"])
    overall = aggregate(at, token_info, by=[]).assign(language=POOLED)
    # Each alphabet scores the whole validation text, so pooling weighs them 50/50; the
    # training mixture weighs them as the training blocks do.
    by_lang = per_lang.set_index("language")
    mixture = overall.copy().assign(language=MIXTURE)
    for metric in METRICS:
        mixture[metric] = (1 - p_low) * by_lang.loc["high", metric] + p_low * by_lang.loc[
            "low", metric
        ]
    return pd.concat([per_lang, overall, mixture], ignore_index=True)


def language_metrics(runs: dict, token_info: pd.DataFrame, p_low: float = 0.02) -> pd.DataFrame:
    """Per run (experiment, seed) and language: the final whole-split validation metrics
    in 'high', 'low', ``readings.POOLED`` (every position of both alphabets, 50/50) and
    ``readings.MIXTURE`` (the two languages weighted 1 - p_low and p_low, as the
    bilingual training stream mixes them; its ``count`` is the pooled one)."""
    p_low = check_float("p_low", p_low, 0.0, 1.0)
    return stack_runs(runs, lambda r: _with_overall(r, token_info, p_low))


def learning_curves(runs: dict, token_info: pd.DataFrame) -> pd.DataFrame:
    """Per experiment, step and language: every metric at every evaluation point, mean and
    95% interval over seeds."""

    def curves(run) -> pd.DataFrame:
        return aggregate(run.eval_tokens, token_info, by=["step", "language"])

    per_seed = stack_runs(runs, curves)
    return aggregate_seeds(per_seed, ["experiment", "language", "step"], list(METRICS))


def final_table(per_seed: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(table, differences)``: per experiment and language each metric's mean and 95%
    interval; and per language and metric, HNS minus baseline with its interval (paired
    by seed). Intervals are clipped to the metric's range (``<metric>_clipped``,
    ``diff_clipped``)."""
    table = aggregate_seeds(per_seed, ["experiment", "language"], list(METRICS))
    diffs = []
    for metric in METRICS:
        d = paired_difference(per_seed, ["language"], metric, "experiment", "HNS", "baseline")
        columns = ["language", "diff", "diff_lo", "diff_hi", "diff_clipped"]
        diffs.append(d[columns].assign(metric=metric))
    return table, pd.concat(diffs, ignore_index=True)


def where_the_loss_goes(
    runs: dict, corpus, layout: float, device: str = "cpu"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """For the baseline and HNS runs: the histogram of non-target probabilities and the
    mass summary (evaluation.probability_profile) per language, averaged over seeds
    (the summary with 95% intervals)."""
    hists, summaries = [], []
    for (experiment, seed), run in runs.items():
        if experiment not in ("baseline", "HNS"):
            continue
        hist, summary = probability_profile(
            run.model(device), corpus.val, corpus.vocab_size, True, layout, device
        )
        hists.append(hist.assign(experiment=experiment, seed=seed))
        summaries.append(summary.assign(experiment=experiment, seed=seed))
    hist = (
        pd.concat(hists)
        .groupby(["experiment", "language", "bin_lo", "bin_hi"], as_index=False)["fraction"]
        .mean()
    )
    values = ["outside_mass", "easy_mass", "easy_count", "target_prob", "loss"]
    summary = aggregate_seeds(pd.concat(summaries), ["experiment", "language"], values)
    return hist, summary


def low_only_comparison(per_seed: pd.DataFrame) -> pd.DataFrame:
    """On the low-resource language: each low-only control minus the bilingual baseline,
    per metric, paired by seed (does the shared model help that language more than its
    own data alone, at the same short warmup?)."""
    low = per_seed[per_seed["language"] == "low"]
    parts = []
    for control in ("low-only CE", "low-only HNS"):
        if control not in set(low["experiment"]):
            continue
        for metric in METRICS:
            d = paired_difference(low, [], metric, "experiment", control, "baseline")
            parts.append(d.assign(control=control, metric=metric))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def reading(
    diffs: pd.DataFrame,
    mass: pd.DataFrame,
    claims: pd.DataFrame,
    per_seed: pd.DataFrame | None = None,
) -> Reading:
    """What the numbers say: HNS minus baseline per language and metric (paired 95%
    intervals), the mass of easy negatives, the low-only controls against the baseline
    (with ``per_seed``), and the verdict of every claim."""
    clipped = any_clipped(diffs)
    lines, summary = [], {"hns_minus_baseline": {}, "claims": {}, "intervals_clipped": clipped}
    for language in ("low", "high", POOLED, MIXTURE):
        part = diffs[diffs["language"] == language].set_index("metric")
        cells = []
        for metric in METRICS:
            if metric not in part.index:
                continue
            d = part.loc[metric]
            word = verdict(metric, d["diff_lo"], d["diff_hi"])
            summary["hns_minus_baseline"].setdefault(language, {})[metric] = {
                "diff": d["diff"],
                "ci": [d["diff_lo"], d["diff_hi"]],
                "verdict": word,
            }
            cell = format_interval(*interval_of(d, "diff"), digits=4, sign="+")
            cells.append(f"{metric} {cell} (**{word}**)")
        if cells:
            lines.append(f"- **{LANGUAGE_NAMES[language]}**: " + "; ".join(cells) + ".")
    m = mass.set_index(["experiment", "language"])
    mass_lines = []
    for language in ("high", "low"):
        if ("baseline", language) in m.index and ("HNS", language) in m.index:
            b, h = m.loc[("baseline", language)], m.loc[("HNS", language)]
            mass_lines.append(
                f"in the {LANGUAGE_NAMES[language]} language the easy negatives hold "
                f"{b['easy_mass']:.1%} of the probability under CE and {h['easy_mass']:.1%} "
                f"under HNS"
            )
    control_lines = []
    if per_seed is not None:
        controls = low_only_comparison(per_seed)
        for row in controls.to_dict("records"):
            if row["metric"] not in ("loss", "top1"):
                continue
            word = verdict(row["metric"], row["diff_lo"], row["diff_hi"])
            summary.setdefault("low_only_minus_baseline", {}).setdefault(row["control"], {})[
                row["metric"]
            ] = {"diff": row["diff"], "ci": [row["diff_lo"], row["diff_hi"]], "verdict": word}
            cell = format_interval(*interval_of(row, "diff"), digits=4, sign="+")
            control_lines.append(
                f"- **{row['control']}** minus the baseline, low-resource "
                f"{row['metric']}: {cell} (the control is **{word}**)"
            )
    verdict_lines = []
    for row in claims.to_dict("records"):
        beside = row.get("primary") is False
        key = f"{row['claim']} {row['scope']} {row['metric']}"
        if beside:
            key += f" ({row.get('test', '')}, beside)"
        summary["claims"][key] = row["verdict"]
        where = "beside the claim: " if beside else ""
        verdict_lines.append(
            f"- {row['claim']} ({where}{row['scope']}, {row['metric']}"
            + (f", test {row['test']}" if row.get("test") else "")
            + f"): **{row['verdict']}**"
            + evidence_note(row)
        )
    text = "\n".join(
        [
            "HNS minus the CE baseline on the validation split (95% intervals paired by seed; "
            "*better* means lower loss or higher accuracy):",
            "",
            *lines,
            *clipping_note(clipped),
            "",
            "Easy negatives are the tokens below the HNS margin, which HNS never pushes down: "
            + "; ".join(mass_lines)
            + ".",
            "",
            *(
                [
                    "The low-only controls (second-alphabet blocks only, 50 times fewer steps, "
                    "warmup 2) against the bilingual baseline, on the low-resource language "
                    "(*better* means the control does better than the shared model):",
                    "",
                    *control_lines,
                    "",
                ]
                if control_lines
                else []
            ),
            "The claims of the study:",
            "",
            *verdict_lines,
        ]
    )
    return Reading(text, summary)
