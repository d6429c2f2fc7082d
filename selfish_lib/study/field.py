"""Chapter 07, HNS against the field: every registered objective and the ablations of HNS,
each tuned on its own scale, on the metric it was built for, and compared in one harness.

The arms (``arms``):

- **CE**, the reference every difference is taken against;
- **HNS** at the layout the notebook compares, and **HNS tuned** at the layout its
  tuning chose;
- every other registered objective whose ``role`` is 'peer' (AGG, logit adjustment,
  alpha-entmax, cosine regularisation, focal loss, and any objective registered later),
  at the value of its one hyperparameter its tuning chose; and, for a peer built for
  another metric than the comparison's (its ``own_target``: logit adjustment and
  balanced recall), the same peer tuned on that metric, role 'own target';
- the ablations: **HNS-rows** (HNS on the output rows only, ``role`` 'ablation'),
  **CE untied** and **HNS untied** (separate input and output embeddings).

Tuning (``tuning_table``). Every objective with a ``tuning`` hyperparameter gets the
same budget: each candidate value trains on every seed of ``profile.tuning_seeds`` on
the tuning split (``Corpus.for_tuning``: the end of the training text, never the
validation split) for the profile's ``tuning_steps``; its score is the mean over those
seeds of the criterion (``criterion``: the setting's ranked quantity, ``RANKED_BY``, or
the arm's own target). The best mean is chosen (ties: the published value, then the
smaller). A choice on the edge of the grid extends it outward, one value at a time, by
the grid's own step (``Tuning.beyond``), up to ``EXTENSION_LIMIT`` values, until the
choice is interior, the limit is reached or the next value leaves the hyperparameter's
range; the table says which. The runs of a tuned arm exist only once its tuning is
final: until then ``field_plan`` lists them under ``PENDING``, at the published value,
and the next value of an extension under 'tuning', so that ``selfish reproduce``
trains, declares again and trains until nothing is pending.

Carry-over (``carry_over``): does the short tuning run rank the candidates as the full
runs would? For HNS's layout, every candidate also trains at the profile's full length
on the tuning seeds (part ``CARRY_OVER``), and the Spearman correlation over candidates
between the tuning score and the full-length score on the validation split says how
well the one predicts the other.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from ..engine.evaluation import METRICS, aggregate
from ..engine.objectives import (
    AGG_REFERENCE_TOKENS,
    REGISTRY,
    CrossEntropy,
    HardNegatives,
    Objective,
)
from ..engine.profiles import Profile
from ..engine.runs import stack_runs, stored_run
from ..engine.training import TrainConfig
from ..engine.validation import ParameterError, check_choice
from . import bilingual, gradients
from .claims import NOT_WORSE_ACCURACY_MARGIN, claim_row
from .geometry import as_array, geometry_metrics
from .readings import (
    LANGUAGE_NAMES,
    METRIC_NAMES,
    MIXTURE,
    POOLED,
    Reading,
    format_interval,
    interval_of,
)
from .stats import RANGES, UNIT, aggregate_seeds, paired_difference
from .stats import compare as direction_of

REFERENCE = "CE"
HNS_TUNED = "HNS tuned"
PENDING = "pending"  # the part of a plan that waits for tuning runs
CARRY_OVER = "carry_over"  # full-length HNS runs at every layout candidate, tuning seeds
FIELD_SETTINGS = ("single", "bilingual")
ROLES = ("reference", "hns", "peer", "ablation")
OWN_TARGET = "own target"  # the role of a peer tuned on the metric it was built for
EXTENSION_LIMIT = 2  # values a grid may grow by when its choice lands on its edge

# The scopes of the tables. One language: each frequency group, the rare tokens (ranks
# 51-65) and the rest pooled, and every token; bilingual: each language, both pooled
# (50/50) and the training mixture (``bilingual.language_metrics``).
RARE_FROM_RANK = 51
RARE = "ranks 51-65"
REST = "ranks 1-50"
ALL = "all tokens"
# Balanced recall: the mean over the scope's tokens (those with at least one validation
# occurrence) of each token's top-1, so that every token weighs the same however rare
# it is: the metric logit adjustment minimises the error of.
BALANCED = "balanced_recall"
FIELD_METRICS = (*METRICS, BALANCED)
FIELD_METRIC_NAMES = {**METRIC_NAMES, BALANCED: "balanced recall"}
HIGHER_IS_BETTER = {"loss": False, "top1": True, "recall5": True, "mrr": True, BALANCED: True}
BOUNDS = {**RANGES, BALANCED: UNIT}

# Per setting, the scope and metric the arms are ranked by, the claims are about, and
# every arm is tuned on (bilingual: low-resource top-1; one language: the rare tokens'
# top-1), unless it has an own target. Top-1, not the loss: entmax's softmax loss does
# not measure what it trains, and a criterion must be one every arm can be judged by.
RANKED_BY = {"bilingual": ("low", "top1"), "single": (RARE, "top1")}
TUNING_CRITERION = RANKED_BY
# An own target's scope: the whole vocabulary (both alphabets, bilingual), the classes
# the objective balances over.
OWN_TARGET_SCOPE = {"bilingual": POOLED, "single": ALL}
# Entmax is trained for its own sparse distribution: its softmax loss is reported,
# flagged, and never ranked.
LOSS_NOT_COMPARABLE = ("entmax15",)


@dataclass(frozen=True)
class Arm:
    """One arm of the comparison: a name for the tables, its objective (at the published
    value until tuning chooses), its role, whether its embeddings are tied, whether it
    is tuned, and the metric it is tuned on (None: the setting's ``TUNING_CRITERION``)."""

    name: str
    objective: Objective
    role: str
    tied: bool = True
    tuned: bool = False  # True: the objective's ``tuning`` hyperparameter is chosen
    target: str | None = None  # an own target's metric (``Objective.own_target``)

    @property
    def hyperparameter(self) -> str | None:
        """The tuned hyperparameter's name (None when the arm is not tuned)."""
        return self.objective.tuning.hyperparameter if self.tuned else None

    @property
    def candidates(self) -> tuple[float, ...]:
        """The values tuning tries first (empty when the arm is not tuned)."""
        return self.objective.tuning.values if self.tuned else ()

    @property
    def published(self) -> float | None:
        """The published value of the tuned hyperparameter (None when not tuned)."""
        return self.objective.tuning.published if self.tuned else None

    def with_value(self, value: float) -> Arm:
        """This arm with its tuned hyperparameter at ``value`` (validated by the objective:
        a value outside the hyperparameter's range is a ParameterError)."""
        objective = dataclasses.replace(self.objective, **{self.hyperparameter: value})
        return dataclasses.replace(self, objective=objective)

    @property
    def loss_comparable(self) -> bool:
        """False for an objective whose softmax loss is not what it trains (entmax)."""
        return self.objective.name not in LOSS_NOT_COMPARABLE


def own_target_name(arm: str, metric: str) -> str:
    """The name of ``arm`` tuned on its own target ``metric``: 'LA (balanced recall)'."""
    return f"{arm} ({FIELD_METRIC_NAMES.get(metric, metric)})"


def arms(layout: float = 2.0) -> list[Arm]:
    """Every arm, in table order: CE, HNS at ``layout``, HNS tuned, the peers (every
    registered objective of role 'peer', by registration order, each followed by its
    own-target arm where it has one), then the ablations (registered ones at ``layout``
    where they have one, then the untied pair)."""
    layout = HardNegatives(layout).layout  # validated once, here
    hns = HardNegatives.tuning
    out = [
        Arm(REFERENCE, CrossEntropy(), "reference"),
        Arm("HNS", HardNegatives(layout), "hns"),
        Arm(HNS_TUNED, HardNegatives(hns.published), "hns", tuned=True),
    ]
    peers, ablations = [], []
    for cls in REGISTRY.values():
        if cls.role not in ROLES:
            raise ParameterError(f"{cls.__name__}.role", cls.role, "one of " + ", ".join(ROLES))
        if cls.role == "peer":
            tuned = cls.tuning is not None
            objective = cls(**({cls.tuning.hyperparameter: cls.tuning.published} if tuned else {}))
            peers.append(Arm(objective.arm, objective, "peer", tuned=tuned))
            if cls.own_target is not None:
                check_choice(f"{cls.__name__}.own_target", cls.own_target, FIELD_METRICS)
                name = own_target_name(objective.arm, cls.own_target)
                peers.append(Arm(name, objective, OWN_TARGET, tuned=tuned, target=cls.own_target))
        elif cls.role == "ablation":
            names = {f.name for f in dataclasses.fields(cls)}
            objective = cls(layout=layout) if "layout" in names else cls()
            ablations.append(Arm(objective.arm, objective, "ablation"))
    untied = [
        Arm("CE untied", CrossEntropy(), "ablation", tied=False),
        Arm("HNS untied", HardNegatives(layout), "ablation", tied=False),
    ]
    return out + peers + ablations + untied


def criterion(arm: Arm, setting: str) -> tuple[str, str]:
    """(scope, metric) ``arm`` is tuned on in ``setting``: its own target over the whole
    vocabulary, or the setting's ``TUNING_CRITERION``."""
    if arm.target is not None:
        return OWN_TARGET_SCOPE[setting], arm.target
    return TUNING_CRITERION[setting]


def criterion_label(scope: str, metric: str) -> str:
    """'top-1 accuracy (low-resource)', for tables."""
    return f"{FIELD_METRIC_NAMES[metric]} ({LANGUAGE_NAMES.get(scope, scope)})"


def _arm_config(
    profile: Profile, setting: str, arm: Arm, seed: int, tuning: bool = False
) -> TrainConfig:
    extra = {} if arm.tied else {"tie_embeddings": False}
    if tuning:
        config = profile.tuning_config(setting, arm.objective, seed)
        return config.replace(**extra) if extra else config
    return profile.config(setting, arm.objective, seed, **extra)


# --- per-run metrics -----------------------------------------------------------------------


def balanced_recall(
    token_sums: pd.DataFrame, token_info: pd.DataFrame, by: Sequence[str] = ()
) -> pd.DataFrame:
    """Balanced recall per group of ``by`` (columns of ``token_info``; () for one group):
    the mean over the group's tokens that occur at least once in ``token_sums`` (columns
    token, count, top1_sum, as ``Run.final_eval``) of their top-1, top1_sum / count."""
    by = list(by)
    merged = token_sums[["token", "count", "top1_sum"]].merge(
        token_info[["token", *[c for c in by if c != "token"]]], on="token", how="left"
    )
    seen = merged[merged["count"] > 0].assign(recall=lambda f: f["top1_sum"] / f["count"])
    if not by:
        return pd.DataFrame({BALANCED: [seen["recall"].mean() if len(seen) else math.nan]})
    out = seen.groupby(by, sort=True, observed=True)["recall"].mean().rename(BALANCED)
    return out.reset_index()


def _rare_info(token_info: pd.DataFrame) -> pd.DataFrame:
    rare = token_info["rank"] >= RARE_FROM_RANK
    return token_info.assign(group=np.where(rare, RARE, REST))


def scope_metrics(run, token_info: pd.DataFrame, setting: str, p_low: float = 0.02) -> pd.DataFrame:
    """One run's final validation metrics (``FIELD_METRICS``, with ``count``) per scope:
    bilingual, per language, both pooled and the training mixture (balanced recall of
    the mixture weighs the languages' as its other metrics do, 1 - p_low and p_low);
    one language, per frequency group, the rare tokens and the rest, and all tokens."""
    check_choice("setting", setting, FIELD_SETTINGS)
    final = run.final_eval()
    if setting == "bilingual":
        table = bilingual.language_metrics({("run", 0): run}, token_info, p_low)
        table = table.drop(columns=["experiment", "objective", "seed"])
        table = table.rename(columns={"language": "scope"})
        per_language = balanced_recall(final, token_info, ["language"])
        recall = dict(zip(per_language["language"], per_language[BALANCED], strict=True))
        recall[POOLED] = balanced_recall(final, token_info)[BALANCED].item()
        recall[MIXTURE] = (1 - p_low) * recall["high"] + p_low * recall["low"]
        return table.assign(**{BALANCED: table["scope"].map(recall)})
    parts = []
    for info, by in (
        (token_info, ["group"]),
        (_rare_info(token_info), ["group"]),
        (token_info, []),
    ):
        metrics = aggregate(final, info, by=by)
        recall = balanced_recall(final, info, by)
        part = metrics.merge(recall, on=by) if by else metrics.assign(**recall.iloc[0])
        parts.append(part.rename(columns={"group": "scope"}) if by else part.assign(scope=ALL))
    return pd.concat(parts, ignore_index=True)[["scope", "count", *FIELD_METRICS]]


SUM_OF = {"loss": "loss_sum", "top1": "top1_sum", "recall5": "top5_sum", "mrr": "rr_sum"}


def scope_value(
    token_sums: pd.DataFrame,
    token_info: pd.DataFrame,
    setting: str,
    scope: str,
    metric: str,
    p_low: float = 0.02,
) -> float:
    """One entry of ``scope_metrics`` from a run's final sums (``Run.final_eval``), without
    the whole table: the metric of the scope's tokens (a language, both pooled or the
    training mixture; a frequency group, the rare tokens or the rest, or all tokens)."""
    check_choice("metric", metric, FIELD_METRICS)
    if scope == MIXTURE:
        high, low = (
            scope_value(token_sums, token_info, setting, s, metric) for s in ("high", "low")
        )
        return (1 - p_low) * high + p_low * low
    info = _rare_info(token_info) if scope in (RARE, REST) else token_info
    merged = token_sums.merge(info[["token", "group", "language"]], on="token", how="left")
    if scope in (ALL, POOLED):
        part = merged
    elif scope in ("high", "low"):
        part = merged[merged["language"] == scope]
    else:
        part = merged[merged["group"] == scope]
    count = part["count"].to_numpy(dtype=float)
    if metric == BALANCED:
        seen = count > 0
        recall = part["top1_sum"].to_numpy(dtype=float)[seen] / count[seen]
        return float(recall.mean()) if seen.any() else math.nan
    total = count.sum()
    return float(part[SUM_OF[metric]].sum() / total) if total > 0 else math.nan


def tuning_score(run, token_info: pd.DataFrame, setting: str,
                 scope_metric: tuple[str, str] | None = None) -> float:  # fmt: skip
    """A tuning criterion (``scope_metric``, default the setting's ``TUNING_CRITERION``)
    of one run at its last evaluation (``scope_value``)."""
    check_choice("setting", setting, FIELD_SETTINGS)
    scope, metric = TUNING_CRITERION[setting] if scope_metric is None else scope_metric
    return scope_value(run.final_eval(), token_info, setting, scope, metric)


# A completed run never changes (its id is the hash of its config, its files are checked
# against its manifest): its tuning score is read once per process and criterion.
_SCORES: dict[tuple, float] = {}


# --- tuning ----------------------------------------------------------------------------------


def choose(values: Sequence[float], scores: Sequence[float], published: float) -> float | None:
    """The value with the best score; among equal scores the published value, then the
    smaller one. None while any score is missing (NaN)."""
    if any(math.isnan(s) for s in scores):
        return None
    best = max(scores)
    tied = [v for v, s in zip(values, scores, strict=True) if s == best]
    return published if published in tied else min(tied)


@dataclass
class ArmTuning:
    """One arm's tuning in one setting: the table of its candidates (``tuning_table``'s
    rows), the tuning runs of its grid as it stands ((value, seed) -> config), and the
    value it chose (None while a run is missing)."""

    rows: pd.DataFrame
    configs: dict
    chosen: float | None


# How an arm's tuning ended, in the table's ``edge`` column.
EDGE_NOTES = {
    "interior": "inside the grid",
    "waiting": "waiting for tuning runs",
    "limit": f"on the edge after {EXTENSION_LIMIT} more values",
    "range": "on the edge: the next value leaves the hyperparameter's range",
}


def tune_arm(
    profile: Profile,
    setting: str,
    arm: Arm,
    token_info: pd.DataFrame | None = None,
    results_dir: str | os.PathLike | None = None,
    score=None,
    device: str | None = None,
) -> ArmTuning:
    """Tune ``arm`` in ``setting``: score its grid (the mean over ``profile.tuning_seeds``
    of its criterion on the tuning split), choose, and while the choice lies on the
    grid's edge add the next value out (``Tuning.beyond``), up to ``EXTENSION_LIMIT``;
    stop at the first value whose runs are missing. ``score(config)`` is the score of a
    tuning run, NaN when it is not in the store (default: the stored run's
    ``tuning_score``, -inf where its scope has no token in the tuning split; without
    ``token_info`` nothing is read and nothing chosen). With ``device``, a stored run
    trained on a device of another kind or precision is not read (``runs.stored_run``):
    a tuning choice never mixes numerics."""
    tuning = arm.objective.tuning
    seeds = tuple(profile.tuning_seeds)
    scope_metric = criterion(arm, setting)
    if score is None:

        def score(config: TrainConfig) -> float:
            run = None if token_info is None else stored_run(config, results_dir, device)
            if run is None:
                return math.nan
            key = (str(getattr(run, "path", "")), setting, *scope_metric)
            value = _SCORES.get(key) if key[0] else None
            if value is None:
                value = tuning_score(run, token_info, setting, scope_metric)
                # a stored run whose criterion has no token to be computed on scores
                # -inf: never chosen over a number, and never waited for
                value = -math.inf if math.isnan(value) else value
                if key[0]:  # a stored run (not a test's stand-in): remembered
                    _SCORES[key] = value
            return value

    values: list[float] = list(arm.candidates)
    rounds = dict.fromkeys(values, 0)
    configs: dict = {}
    per_seed: dict[float, list[float]] = {}
    state = "interior"
    while True:
        for value in values:
            if value not in per_seed:
                runs = {s: _arm_config(profile, setting, arm.with_value(value), s, True)
                        for s in seeds}  # fmt: skip
                configs.update({(value, s): c for s, c in runs.items()})
                per_seed[value] = [score(c) for c in runs.values()]
        means = [float(np.mean(per_seed[v])) for v in values]
        chosen = choose(values, means, tuning.published)
        if chosen is None:
            state = "waiting"
            break
        side = "below" if chosen == min(values) else "above" if chosen == max(values) else None
        if side is None:
            state = "interior"
            break
        if len(values) - len(arm.candidates) >= EXTENSION_LIMIT:
            state = "limit"
            break
        new = tuning.beyond(tuple(sorted(values)), side)
        try:
            arm.with_value(new)
        except ParameterError:
            state = "range"
            break
        rounds[new] = len(values) - len(arm.candidates) + 1
        values.append(new)
    scope, metric = scope_metric
    rows = []
    for value in sorted(values):
        scores = per_seed[value]
        rows.append(
            {
                "setting": setting,
                "arm": arm.name,
                "hyperparameter": arm.hyperparameter,
                "value": value,
                "published": value == tuning.published,
                "round": rounds[value],
                "criterion": criterion_label(scope, metric),
                "score": float(np.mean(scores)),
                "seed_scores": [float(x) for x in scores],
                "tuning_seeds": list(seeds),
                "steps": configs[(value, seeds[0])].max_steps,
                "chosen": chosen is not None and value == chosen,
            }
        )
    table = pd.DataFrame(rows)
    ends = (table["value"] == table["value"].min()) | (table["value"] == table["value"].max())
    table["at_edge"] = table["chosen"] & ends
    table["extended"] = len(values) - len(arm.candidates)
    table["edge"] = EDGE_NOTES[state]
    return ArmTuning(table, configs, chosen)


def tuned_arms(layout: float = 2.0) -> list[Arm]:
    """The arms with a tuned hyperparameter."""
    return [arm for arm in arms(layout) if arm.tuned]


def tune_setting(
    profile: Profile,
    setting: str,
    token_info: pd.DataFrame | None = None,
    layout: float = 2.0,
    results_dir: str | os.PathLike | None = None,
    device: str | None = None,
) -> dict[str, ArmTuning]:
    """``tune_arm`` of every tuned arm in ``setting``, by arm name."""
    check_choice("setting", setting, FIELD_SETTINGS)
    return {arm.name: tune_arm(profile, setting, arm, token_info, results_dir, device=device)
            for arm in tuned_arms(layout)}  # fmt: skip


def tuning_configs(
    profile: Profile,
    setting: str,
    layout: float = 2.0,
    token_info: pd.DataFrame | None = None,
    results_dir: str | os.PathLike | None = None,
    device: str | None = None,
) -> dict:
    """(arm, value, seed) -> the tuning run of that candidate and tuning seed, for every
    tuned arm and every value of its grid as it stands (without ``token_info``: the
    first grids)."""
    tuned = tune_setting(profile, setting, token_info, layout, results_dir, device)
    return {(name, value, seed): config
            for name, result in tuned.items()
            for (value, seed), config in result.configs.items()}  # fmt: skip


def tuning_table(
    profile: Profile,
    setting: str,
    token_info: pd.DataFrame,
    layout: float = 2.0,
    results_dir: str | os.PathLike | None = None,
    device: str | None = None,
) -> pd.DataFrame:
    """One row per tuned arm and candidate: its criterion, its mean score over the tuning
    seeds (NaN while a run is not in the store) and each seed's, ``round`` (0: the first
    grid; k: the k-th value added), ``chosen`` for the value the arm's tuning picked (none
    until all its candidates are scored), ``at_edge`` where the chosen value is the
    smallest or largest tried, ``extended`` (values added to the arm's grid) and
    ``edge`` (how its tuning ended: ``EDGE_NOTES``)."""
    tuned = tune_setting(profile, setting, token_info, layout, results_dir, device)
    return pd.concat([t.rows for t in tuned.values()], ignore_index=True)


def tuning_tables(
    profile: Profile,
    settings: Sequence[str],
    token_infos: Mapping[str, pd.DataFrame],
    layout: float = 2.0,
    results_dir: str | os.PathLike | None = None,
    device: str | None = None,
) -> pd.DataFrame:
    """``tuning_table`` of every setting of ``settings``, one below the other."""
    tables = [tuning_table(profile, s, token_infos[s], layout, results_dir, device)
              for s in settings]  # fmt: skip
    return pd.concat(tables, ignore_index=True)


def tuning_summary(tuning: pd.DataFrame) -> pd.DataFrame:
    """One row per setting and tuned arm: its criterion, the values tried, the chosen
    one and its score, how many values the grid grew by, whether the choice is still on
    the edge and how the tuning ended, and the tuning seeds."""
    rows = []
    for (setting, name), part in tuning.groupby(["setting", "arm"], sort=False):
        chosen = part[part["chosen"]]
        first = part.iloc[0]
        rows.append(
            {
                "setting": setting,
                "arm": name,
                "hyperparameter": first["hyperparameter"],
                "criterion": first["criterion"],
                "values tried": ", ".join(f"{v:g}" for v in part["value"]),
                "published": f"{part.loc[part['published'], 'value'].iloc[0]:g}",
                "chosen": f"{chosen['value'].iloc[0]:g}" if len(chosen) else "",
                "score": chosen["score"].iloc[0] if len(chosen) else math.nan,
                "extended by": int(first["extended"]),
                "still on the edge": bool(chosen["at_edge"].any()),
                "ended": first["edge"],
                "tuning seeds": ", ".join(str(s) for s in first["tuning_seeds"]),
            }
        )
    return pd.DataFrame(rows)


def tuning_view(tuning: pd.DataFrame) -> pd.DataFrame:
    """The tuning table for reading: setting, arm, value, round, criterion, the mean score,
    each tuning seed's score as text, chosen and at the edge."""
    seeds = [
        ", ".join(f"{s}: {x:.4f}" for s, x in zip(row["tuning_seeds"], row["seed_scores"],
                                                 strict=True))
        for row in tuning.to_dict("records")
    ]  # fmt: skip
    columns = ["setting", "arm", "value", "round", "criterion", "score", "chosen", "at_edge"]
    view = tuning[columns].copy()
    view.insert(6, "score per tuning seed", seeds)
    return view


def chosen_arms(
    profile: Profile,
    setting: str,
    token_info: pd.DataFrame,
    layout: float = 2.0,
    results_dir: str | os.PathLike | None = None,
    tuned: Mapping[str, ArmTuning] | None = None,
    device: str | None = None,
) -> tuple[list[Arm], list[Arm]]:
    """``(ready, pending)``: every arm with its tuned value where tuning has chosen one
    (with the untuned arms), and the tuned arms still waiting for their tuning runs (at
    their published value)."""
    if tuned is None:
        tuned = tune_setting(profile, setting, token_info, layout, results_dir, device)
    ready, pending = [], []
    for arm in arms(layout):
        if not arm.tuned:
            ready.append(arm)
        elif tuned[arm.name].chosen is not None:
            ready.append(arm.with_value(tuned[arm.name].chosen))
        else:
            pending.append(arm)
    return ready, pending


def carry_over_configs(profile: Profile, setting: str, values: Sequence[float]) -> dict:
    """(layout, seed) -> the full-length HNS run at each layout of ``values``, for every
    seed of ``profile.tuning_seeds``: the runs the tuning scores are checked against."""
    return {(value, seed): profile.config(setting, HardNegatives(value), seed)
            for value in values for seed in profile.tuning_seeds}  # fmt: skip


def field_plan(
    profile: Profile,
    settings: Sequence[str],
    token_infos: Mapping[str, pd.DataFrame],
    layout: float = 2.0,
    results_dir: str | os.PathLike | None = None,
    device: str | None = None,
) -> dict[str, dict]:
    """The runs of chapter 07 by part: ``tuning`` ((setting, arm, value, seed) -> config,
    every grid as it stands), ``CARRY_OVER`` ((setting, layout, seed) -> config, HNS at
    full length at every layout its tuning tried), one part per setting ((arm, seed) ->
    config, every arm that is ready) and ``PENDING`` (the tuned arms whose tuning is not
    final, at their published value: what they will cost, not what they will be)."""
    grids: dict[str, dict] = {"tuning": {}, CARRY_OVER: {}}
    pending_part: dict = {}
    for setting in settings:
        tuned = tune_setting(profile, setting, token_infos[setting], layout, results_dir, device)
        for name, result in tuned.items():
            for (value, seed), config in result.configs.items():
                grids["tuning"][(setting, name, value, seed)] = config
        hns_values = sorted({value for value, _ in tuned[HNS_TUNED].configs})
        for key, config in carry_over_configs(profile, setting, hns_values).items():
            grids[CARRY_OVER][(setting, *key)] = config
        ready, pending = chosen_arms(profile, setting, token_infos[setting], layout,
                                     results_dir, tuned)  # fmt: skip
        grids[setting] = {
            (arm.name, seed): _arm_config(profile, setting, arm, seed)
            for arm in ready
            for seed in profile.seeds
        }
        for arm in pending:
            for seed in profile.seeds:
                pending_part[(setting, arm.name, seed)] = _arm_config(profile, setting, arm, seed)
    if pending_part:
        grids[PENDING] = pending_part
    return grids


def agg_scale(profile: Profile) -> str:
    """AGG's alpha on this profile's scale, in a sentence: the tokens of one step, those
    of the reference's update, and how a per-step alpha translates into the reference's
    (a * 32768 / tokens per step) and back."""
    batch, block = profile.optim["batch_size"], profile.model.block_size
    step = batch * block
    ratio = AGG_REFERENCE_TOKENS / step
    return (
        f"A step of the {profile.name} profile is {batch} × {block} = {step} tokens, the "
        f"reference's update about {AGG_REFERENCE_TOKENS:,}. A per-step α = a is α = a × "
        f"{AGG_REFERENCE_TOKENS:,} / {step} = {ratio:.1f} a on the reference's scale: the "
        f"per-step 0.01 is {0.01 * ratio:.2f} here, and the reference's 0.03 is "
        f"{0.03 / ratio:.5f} per step."
    )


def arm_table(layout: float = 2.0) -> pd.DataFrame:
    """The arms as a table: name, role, objective, tied, tuned hyperparameter, its first
    candidates and published value, and the metric it is tuned on (for the notebook's
    first cell)."""
    rows = []
    for arm in arms(layout):
        targets = {s: criterion_label(*criterion(arm, s)) for s in FIELD_SETTINGS}
        rows.append(
            {
                "arm": arm.name,
                "role": arm.role,
                "objective": arm.objective.label,
                "embeddings": "tied" if arm.tied else "untied",
                "tuned": arm.hyperparameter or "",
                "candidates": ", ".join(f"{v:g}" for v in arm.candidates),
                "published": "" if arm.published is None else f"{arm.published:g}",
                "tuned on (one language)": targets["single"] if arm.tuned else "",
                "tuned on (bilingual)": targets["bilingual"] if arm.tuned else "",
            }
        )
    return pd.DataFrame(rows)


# --- does the tuning score carry over to the full runs? --------------------------------------


@dataclass
class CarryOver:
    """HNS's layout candidates scored twice: per candidate (``table``: setting, layout,
    tuning score, full-length score, seeds), and per setting (``summary``: the Spearman
    correlation over candidates, the candidates it rests on, and ``note``, which says
    why it is NaN when it is)."""

    table: pd.DataFrame
    summary: pd.DataFrame


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, str]:
    """Spearman's rank correlation of ``x`` and ``y`` (scipy.stats.spearmanr) and a note:
    NaN with fewer than 3 pairs, or when either side is the same for every pair."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3:
        return math.nan, f"NaN: {len(x)} candidates with both scores; a rank correlation needs 3"
    if np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan, "NaN: one of the two scores is the same for every candidate"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = float(scipy_stats.spearmanr(x, y).statistic)
    return rho, f"over {len(x)} candidates"


def carry_over(
    profile: Profile,
    settings: Sequence[str],
    token_infos: Mapping[str, pd.DataFrame],
    layout: float = 2.0,
    results_dir: str | os.PathLike | None = None,
    device: str | None = None,
) -> CarryOver:
    """For every layout HNS's tuning tried: its tuning score (the mean over the tuning
    seeds on the tuning split) and its full-length score (the same criterion on the
    validation split after the profile's steps, the mean over the same seeds), and per
    setting the Spearman correlation between the two over the candidates that have both."""
    rows, summary = [], []
    hns = next(arm for arm in tuned_arms(layout) if arm.name == HNS_TUNED)
    for setting in settings:
        info = token_infos[setting]
        tuned = tune_arm(profile, setting, hns, info, results_dir, device=device)
        scope_metric = criterion(hns, setting)
        full = carry_over_configs(profile, setting, list(tuned.rows["value"]))
        for rec in tuned.rows.to_dict("records"):
            scores = []
            for seed in profile.tuning_seeds:
                run = stored_run(full[(rec["value"], seed)], results_dir, device)
                scores.append(math.nan if run is None else
                              tuning_score(run, info, setting, scope_metric))  # fmt: skip
            rows.append(
                {
                    "setting": setting,
                    "layout": rec["value"],
                    "tuning score": rec["score"],
                    "full-length score": float(np.mean(scores)),
                    "criterion": rec["criterion"],
                    "tuning steps": rec["steps"],
                    "full steps": profile.steps[setting],
                    "seeds": ", ".join(str(s) for s in profile.tuning_seeds),
                    "chosen": rec["chosen"],
                }
            )
        part = pd.DataFrame(rows)
        part = part[(part["setting"] == setting)].dropna(
            subset=["tuning score", "full-length score"]
        )
        rho, note = spearman(part["tuning score"], part["full-length score"])
        summary.append({"setting": setting, "arm": HNS_TUNED, "candidates": len(part),
                        "spearman": rho, "note": note})  # fmt: skip
    return CarryOver(pd.DataFrame(rows), pd.DataFrame(summary))


# --- the comparison -----------------------------------------------------------------------

GEOMETRY = ("isotropy", "language_centroid_distance", "mean_cosine", "effective_rank")
SHARES = ("share_nontarget", "update_share_nontarget", "update_over_grad")
MOST_OF_THE_GAIN = 0.5  # "keeps most of HNS's gain": more than half of it
# F3: untying gives as much as HNS when its gain is not below HNS's by more than this
UNTYING_MARGIN = NOT_WORSE_ACCURACY_MARGIN


def roles(runs: Mapping) -> dict[str, str]:
    """arm name -> role, for the arms of ``runs`` (keys (arm, seed))."""
    known = {arm.name: arm.role for arm in arms()}
    return {key[0]: known.get(key[0], "peer") for key in runs}


def metrics_per_seed(runs: Mapping, token_info: pd.DataFrame, setting: str,
                     p_low: float = 0.02) -> pd.DataFrame:  # fmt: skip
    """Per run (``experiment`` = arm, seed): the final whole-split validation metrics
    (``FIELD_METRICS``) per scope (``scope_metrics``)."""
    check_choice("setting", setting, FIELD_SETTINGS)
    return stack_runs(dict(runs), lambda r: scope_metrics(r, token_info, setting, p_low))


def summary(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per arm and scope: each metric's mean and 95% interval over seeds, and
    ``loss_comparable`` (False for entmax, whose softmax loss it does not train)."""
    table = aggregate_seeds(per_seed, ["experiment", "scope"], list(FIELD_METRICS),
                            bounds=BOUNDS)  # fmt: skip
    objective = per_seed.groupby("experiment", sort=False)["objective"].first()
    table["loss_comparable"] = [
        objective[e] not in _arms_not_comparable() for e in table["experiment"]
    ]
    return table


def _arms_not_comparable() -> set[str]:
    return {REGISTRY[name].arm for name in LOSS_NOT_COMPARABLE if name in REGISTRY}


def verdict(metric: str, diff_lo: float, diff_hi: float) -> str:
    """'better', 'worse' or 'indistinguishable' for an arm minus CE, from the interval
    of the difference (lower loss, higher everything else is better)."""
    direction = direction_of(diff_lo, diff_hi)
    if direction == "indistinguishable":
        return direction
    return "better" if (direction == "higher") == HIGHER_IS_BETTER[metric] else "worse"


def differences(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per arm (but CE), scope and metric: the arm minus CE, paired by seed, with its 95%
    interval, p-value and verdict ('better', 'worse' or 'indistinguishable'). A loss
    difference of entmax is marked ``loss_comparable`` False."""
    parts = []
    comparable = _arms_not_comparable()
    objective = per_seed.groupby("experiment", sort=False)["objective"].first()
    for experiment in per_seed["experiment"].unique():
        if experiment == REFERENCE:
            continue
        for metric in FIELD_METRICS:
            d = paired_difference(per_seed, ["scope"], metric, "experiment", experiment,
                                  REFERENCE, bounds=BOUNDS[metric])  # fmt: skip
            d = d.assign(experiment=experiment, metric=metric)
            d["verdict"] = [verdict(metric, lo, hi) for lo, hi in zip(d["diff_lo"], d["diff_hi"],
                                                                      strict=True)]  # fmt: skip
            d["loss_comparable"] = metric != "loss" or objective[experiment] not in comparable
            parts.append(d)
    return pd.concat(parts, ignore_index=True)


def difference_table(diffs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One metric's arm-minus-CE differences as text cells, 'diff [lo, hi]' with the
    verdict's mark (+ better, − worse), one row per arm and one column per scope."""
    marks = {"better": " (+)", "worse": " (−)", "indistinguishable": ""}
    part = diffs[diffs["metric"] == metric]
    if metric == "loss":
        part = part[part["loss_comparable"]]
    cells = part.assign(
        cell=[
            format_interval(*interval_of(r, "diff"), digits=4, sign="+") + marks[r["verdict"]]
            for r in part.to_dict("records")
        ]  # fmt: skip
    )
    table = cells.pivot(index="experiment", columns="scope", values="cell")
    table = table.reindex(index=list(dict.fromkeys(part["experiment"])))
    table = table[list(dict.fromkeys(part["scope"]))]
    table.columns = [LANGUAGE_NAMES.get(c, c) for c in table.columns]
    return table.rename_axis(f"{FIELD_METRIC_NAMES[metric]}, arm − CE").reset_index()


def scenario_view(runs: Mapping, token_info: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scenario 2.2's share of the gradient and of AdamW's update, per arm, for the rare
    tokens (ranks 51-65) and the rest, per language: ``(per seed, mean and interval)``.
    Runs without a scenario log are left out."""
    logged = {k: r for k, r in runs.items() if len(r.scenarios)}
    if not logged:
        return pd.DataFrame(), pd.DataFrame()
    info = _rare_info(token_info)
    per_seed = stack_runs(
        logged, lambda r: gradients.group_shares(gradients.token_totals(r.scenarios), info)
    )
    values = [c for c in SHARES if c in per_seed]
    return per_seed, aggregate_seeds(per_seed, ["experiment", "language", "group"], values)


def geometry_view(runs: Mapping, token_info: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The output embedding's geometry per arm (isotropy, the distance between the two
    languages' centroids, mean pairwise cosine, effective rank): ``(per seed, mean and
    interval)``."""
    rows = []
    for (experiment, seed), run in runs.items():
        metrics = geometry_metrics(as_array(run.model().embedding), token_info)
        rows.append({"experiment": experiment, "seed": seed,
                     **{k: metrics[k] for k in GEOMETRY}})  # fmt: skip
    per_seed = pd.DataFrame(rows)
    values = [g for g in GEOMETRY if per_seed[g].notna().any()]
    return per_seed, aggregate_seeds(per_seed, ["experiment"], values)


def ranking(table: pd.DataFrame, diffs: pd.DataFrame, setting: str,
            role_of: Mapping[str, str]) -> pd.DataFrame:  # fmt: skip
    """The arms ranked by the setting's ``RANKED_BY`` metric (mean over seeds, best
    first), with its interval, the paired difference to CE and its verdict, and on the
    same (rare) scope the balanced recall and the loss (marked where it is not
    comparable), then the balanced recall over the whole vocabulary."""
    scope, metric = RANKED_BY[setting]
    whole = OWN_TARGET_SCOPE[setting]
    part = table[table["scope"] == scope].copy()
    overall = table[table["scope"] == whole].set_index("experiment")
    d = diffs[(diffs["scope"] == scope) & (diffs["metric"] == metric)].set_index("experiment")
    where = LANGUAGE_NAMES.get(scope, scope)
    rows = []
    for rec in part.sort_values(metric, ascending=False).to_dict("records"):
        name = rec["experiment"]
        has_diff = name in d.index
        loss = format_interval(*interval_of(rec, "loss"), digits=4)
        rows.append(
            {
                "arm": name,
                "role": role_of.get(name, "peer"),
                FIELD_METRIC_NAMES[metric]: format_interval(*interval_of(rec, metric), digits=4),
                "minus CE": format_interval(*interval_of(d.loc[name], "diff"), digits=4, sign="+")
                if has_diff
                else "",  # fmt: skip
                "verdict": d.loc[name, "verdict"] if has_diff else "reference",
                f"balanced recall ({where})": format_interval(
                    *interval_of(rec, BALANCED), digits=4
                ),  # fmt: skip
                f"loss ({where})": loss if rec["loss_comparable"] else f"{loss} (not comparable)",
                f"balanced recall ({LANGUAGE_NAMES.get(whole, whole)})": format_interval(
                    *interval_of(overall.loc[name], BALANCED), digits=4
                )
                if name in overall.index
                else "",  # fmt: skip
                "seeds": int(rec["n_seeds"]),
            }
        )
    out = pd.DataFrame(rows)
    out.insert(0, "rank", range(1, len(out) + 1))
    out.attrs["scope"], out.attrs["metric"] = scope, metric
    return out


def own_target_table(table: pd.DataFrame, diffs: pd.DataFrame, setting: str) -> pd.DataFrame:
    """Each peer with an own target, tuned on the common criterion and on its own: per
    arm, its own target over the whole vocabulary and the ranked quantity, each with
    its interval and its difference to CE (paired by seed)."""
    scope, metric = RANKED_BY[setting]
    whole = OWN_TARGET_SCOPE[setting]
    rows = []
    for arm in arms():
        if arm.target is None:
            continue
        base = next(a.name for a in arms() if a.role == "peer" and a.objective.name ==
                    arm.objective.name)  # fmt: skip
        for name, tuned_on in ((base, criterion_label(scope, metric)),
                               (arm.name, criterion_label(whole, arm.target))):  # fmt: skip
            cells = {"arm": name, "tuned on": tuned_on}
            for where, what in ((whole, arm.target), (scope, metric)):
                rec = table[(table["experiment"] == name) & (table["scope"] == where)]
                dif = diffs[(diffs["experiment"] == name) & (diffs["scope"] == where)
                            & (diffs["metric"] == what)]  # fmt: skip
                label = criterion_label(where, what)
                cells[label] = (format_interval(*interval_of(rec.iloc[0], what), digits=4)
                                if len(rec) else "")  # fmt: skip
                cells[f"{label} − CE"] = (format_interval(*interval_of(dif.iloc[0], "diff"),
                                                          digits=4, sign="+")
                                          if len(dif) else "")  # fmt: skip
            rows.append(cells)
    return pd.DataFrame(rows)


def _per_seed(per_seed: pd.DataFrame, experiment: str, scope: str, metric: str) -> pd.Series:
    part = per_seed[(per_seed["experiment"] == experiment) & (per_seed["scope"] == scope)]
    return part.set_index("seed")[metric]


def field_claims(per_seed: pd.DataFrame, setting: str = "bilingual",
                 role_of: Mapping[str, str] | None = None) -> pd.DataFrame:  # fmt: skip
    """The chapter's claims, on the setting's ``RANKED_BY`` quantity (bilingual:
    low-resource top-1), each paired by seed:

    - F1, one row per peer: "HNS beats <peer>". The claim as made compares the tuned
      arms (HNS tuned against the peer at its tuned value); beside it, HNS at the
      notebook's layout against the same peer, and HNS tuned against a peer tuned on
      its own target.
    - F2: "the embedding-only ablation keeps most of HNS's gain": per seed,
      (HNS-rows − CE) − 0.5 (HNS − CE) > 0, both at the notebook's layout; beside it,
      HNS's own gain (HNS − CE > 0), without which 'most of it' means nothing.
    - F3: "untying alone gives as much as HNS", a difference of differences: per seed,
      (CE untied − CE) − (HNS − CE), tested for non-inferiority (not below
      −``UNTYING_MARGIN``); beside it, whether HNS still adds to an untied model
      (HNS untied − CE untied > 0).
    """
    scope, metric = RANKED_BY[setting]
    name = FIELD_METRIC_NAMES[metric]
    where = LANGUAGE_NAMES.get(scope, scope)
    source = "07_hns_against_the_field"
    role_of = dict(role_of or {})
    present = list(per_seed["experiment"].unique())
    rows = []
    bounds = BOUNDS[metric]
    gain_bounds = (-1.0, 1.0)  # a difference of two shares

    def series(arm: str) -> pd.Series:
        return _per_seed(per_seed, arm, scope, metric)

    own_targets = {
        arm.name: criterion_label(*criterion(arm, setting))
        for arm in arms()
        if arm.target is not None
    }

    for peer in present:
        role = role_of.get(peer)
        if role not in ("peer", OWN_TARGET):
            continue
        pairs = [(HNS_TUNED, role == "peer"), ("HNS", False)] if role == "peer" else [
            (HNS_TUNED, False)]  # fmt: skip
        for hns, primary in pairs:
            if hns not in present:
                continue
            if role == OWN_TARGET:
                definition = (
                    f"{name} ({where}) per seed; HNS tuned on it, {peer} tuned on its own "
                    f"target, {own_targets.get(peer, 'another metric')}"
                )
            elif primary:
                definition = (
                    f"{name} ({where}) per seed; both arms at the value their tuning chose on it"
                )
            else:
                definition = (
                    f"{name} ({where}) per seed; HNS at the notebook's layout, "
                    "the peer at the value its tuning chose"
                )
            rows.append(
                claim_row(
                    "F1", f"HNS beats {peer} on {name} ({where}).", source, name, where,
                    hns, series(hns), peer, series(peer), bounds=bounds,
                    definition=definition, primary=primary,
                )
            )  # fmt: skip
    if {"HNS-rows", "HNS", REFERENCE} <= set(present):
        ce, hns, rows_only = series(REFERENCE), series("HNS"), series("HNS-rows")
        rows.append(
            claim_row(
                "F2",
                "HNS on the embedding gradient only keeps most (more than half) of HNS's "
                f"gain over CE on {name} ({where}).",
                source, f"{name} gain over CE", where, "HNS-rows − CE", rows_only - ce,
                f"{MOST_OF_THE_GAIN:g} × (HNS − CE)", MOST_OF_THE_GAIN * (hns - ce),
                bounds=gain_bounds,
                definition=f"per seed, (HNS-rows − CE) − {MOST_OF_THE_GAIN:g} (HNS − CE) on "
                f"{name} ({where}), both at the notebook's layout; supported when its 95% "
                "interval lies above 0",
            )
        )  # fmt: skip
        rows.append(
            claim_row(
                "F2",
                f"HNS itself gains over CE on {name} ({where}): the premise of F2.",
                source, name, where, "HNS", hns, REFERENCE, ce, bounds=bounds,
                definition=f"HNS minus CE on {name} ({where}), paired by seed", primary=False,
            )
        )  # fmt: skip
    if {"CE untied", "HNS", REFERENCE} <= set(present):
        ce, hns, untied = series(REFERENCE), series("HNS"), series("CE untied")
        rows.append(
            claim_row(
                "F3",
                f"Untying the embeddings alone gives as much {name} ({where}) as HNS: its "
                f"gain over CE is not smaller than HNS's by more than {UNTYING_MARGIN:g}.",
                source, f"{name} gain over CE", where, "CE untied − CE", untied - ce,
                "HNS − CE", hns - ce, kind="not_worse", margin=UNTYING_MARGIN,
                bounds=gain_bounds,
                definition=f"per seed, (CE untied − CE) − (HNS − CE) on {name} ({where}), "
                "HNS at the notebook's layout; non-inferiority: supported when the 95% "
                f"interval of that difference lies above −{UNTYING_MARGIN:g}, contradicted "
                "when it lies below",
            )
        )  # fmt: skip
        if "HNS untied" in present:
            rows.append(
                claim_row(
                    "F3",
                    f"HNS still gains over CE on {name} ({where}) when the embeddings are "
                    "untied.",
                    source, name, where, "HNS untied", series("HNS untied"), "CE untied",
                    untied, bounds=bounds,
                    definition=f"HNS untied minus CE untied on {name} ({where}), paired by "
                    "seed, HNS at the notebook's layout",
                    primary=False,
                )
            )  # fmt: skip
    return pd.DataFrame(rows)


@dataclass
class Comparison:
    """Everything chapter 07 shows for one setting (see ``compare``)."""

    setting: str
    roles: dict[str, str]
    order: list[str]  # the arms in table order
    scopes: list[str]  # the scopes the charts show
    seeds: list[int]  # the seeds the comparison rests on
    per_seed: pd.DataFrame
    table: pd.DataFrame
    diffs: pd.DataFrame
    ranking: pd.DataFrame
    own_target: pd.DataFrame
    shares: pd.DataFrame
    geometry: pd.DataFrame
    claims: pd.DataFrame


CHART_SCOPES = {"bilingual": ["high", "low"], "single": [REST, RARE]}


def compare(runs: Mapping, token_info: pd.DataFrame, setting: str,
            p_low: float = 0.02) -> Comparison:  # fmt: skip
    """Metrics, differences to CE, ranking, the own-target view, scenario shares,
    geometry and (bilingual) the claims of the arms in ``runs`` ((arm, seed) -> Run) in
    ``setting``."""
    role_of = roles(runs)
    order = list(dict.fromkeys(key[0] for key in runs))
    seeds = sorted({key[1] for key in runs})
    per_seed = metrics_per_seed(runs, token_info, setting, p_low)
    table = summary(per_seed)
    diffs = differences(per_seed)
    _, shares = scenario_view(runs, token_info)
    _, geometry = geometry_view(runs, token_info)
    found = field_claims(per_seed, setting, role_of) if setting == "bilingual" else pd.DataFrame()
    return Comparison(
        setting, role_of, order, CHART_SCOPES[setting], seeds, per_seed, table, diffs,
        ranking(table, diffs, setting, role_of), own_target_table(table, diffs, setting),
        shares, geometry, found,
    )  # fmt: skip


def reading(claims: pd.DataFrame, rankings: Mapping[str, pd.DataFrame],
            tuning: pd.DataFrame, carried: CarryOver | None = None) -> Reading:  # fmt: skip
    """What the chapter found: the chosen hyperparameters (and the grids that grew or
    stayed on their edge), how well the tuning score ranked HNS's layouts at full
    length, the top of each ranking, and every claim's verdict with its figures."""
    summary: dict = {"chosen": {}, "ranking": {}, "claims": {}}
    lines = []
    chosen = tuning[tuning["chosen"]]
    if len(chosen):
        seeds = ", ".join(str(s) for s in chosen["tuning_seeds"].iloc[0])
        cells = []
        for rec in chosen.to_dict("records"):
            summary["chosen"].setdefault(rec["setting"], {})[rec["arm"]] = {
                rec["hyperparameter"]: rec["value"], "score": rec["score"],
                "extended": int(rec["extended"]), "at_edge": bool(rec["at_edge"])}  # fmt: skip
            cells.append(f"{rec['arm']} {rec['hyperparameter']}={rec['value']:g} "
                         f"({rec['setting']})")  # fmt: skip
        lines += [f"Tuning (the mean over tuning seeds {seeds}) chose: " + "; ".join(cells) + "."]
        grown = chosen[chosen["extended"] > 0]
        if len(grown):
            names = ", ".join(f"{r['arm']} ({r['setting']}, +{r['extended']})"
                              for r in grown.to_dict("records"))  # fmt: skip
            lines.append(f"Grids extended past their first edge: {names}.")
        edge = chosen[chosen["at_edge"]]
        if len(edge):
            names = ", ".join(f"{r['arm']} ({r['setting']}: {r['edge']})"
                              for r in edge.to_dict("records"))  # fmt: skip
            lines.append(f"Still on the edge of what was tried: {names}; their best value "
                         "may lie beyond it, so their comparison is with the best of the "
                         "values tried, not necessarily their best.")  # fmt: skip
            summary["at_edge"] = list(edge["arm"] + " (" + edge["setting"] + ")")
        lines.append("")
    if carried is not None and len(carried.summary):
        summary["carry_over"] = {}
        for rec in carried.summary.to_dict("records"):
            rho = rec["spearman"]
            summary["carry_over"][rec["setting"]] = None if math.isnan(rho) else rho
            said = (f"Spearman {rho:+.2f} {rec['note']}" if not math.isnan(rho)
                    else rec["note"])  # fmt: skip
            lines.append(f"- Does the tuning score rank HNS's layouts as the full runs do "
                         f"({rec['setting']})? {said}.")  # fmt: skip
        lines.append("")
    for setting, table in rankings.items():
        if table.empty:
            continue
        metric = FIELD_METRIC_NAMES[table.attrs["metric"]]
        scope = LANGUAGE_NAMES.get(table.attrs["scope"], table.attrs["scope"])
        order = list(table["arm"])
        summary["ranking"][setting] = order
        top = ", ".join(f"{r['arm']} {r[metric]}" for r in table.head(3).to_dict("records"))
        lines.append(f"- **{setting}**, ranked by {metric} ({scope}; mean and 95% interval "
                     f"over {int(table['seeds'].min())} seeds): {top}; CE is "
                     f"{order.index(REFERENCE) + 1} of {len(order)}.")  # fmt: skip
    if len(claims):
        lines += ["", "The claims of this chapter:", ""]
        for rec in claims.to_dict("records"):
            beside = not rec["primary"]
            key = f"{rec['claim']} {rec['A']} vs {rec['B']}" + (" (beside)" if beside else "")
            summary["claims"][key] = rec["verdict"]
            cell = format_interval(*interval_of(rec, "diff"), digits=4, sign="+")
            lines.append(f"- {rec['claim']}{' (beside)' if beside else ''}: {rec['statement']} "
                         f"{rec['A']} minus {rec['B']}: {cell} over {rec['n_seeds']} seeds, "
                         f"**{rec['verdict']}**.")  # fmt: skip
    return Reading("\n".join(lines), summary)


__all__ = [
    "ALL",
    "BALANCED",
    "CARRY_OVER",
    "EDGE_NOTES",
    "EXTENSION_LIMIT",
    "FIELD_METRICS",
    "FIELD_METRIC_NAMES",
    "FIELD_SETTINGS",
    "GEOMETRY",
    "HNS_TUNED",
    "LOSS_NOT_COMPARABLE",
    "METRICS",
    "OWN_TARGET",
    "OWN_TARGET_SCOPE",
    "PENDING",
    "RANKED_BY",
    "REFERENCE",
    "TUNING_CRITERION",
    "Arm",
    "ArmTuning",
    "CarryOver",
    "Comparison",
    "agg_scale",
    "arm_table",
    "arms",
    "balanced_recall",
    "carry_over",
    "carry_over_configs",
    "choose",
    "chosen_arms",
    "compare",
    "criterion",
    "difference_table",
    "differences",
    "field_claims",
    "field_plan",
    "geometry_view",
    "metrics_per_seed",
    "own_target_table",
    "ranking",
    "reading",
    "roles",
    "scenario_view",
    "scope_metrics",
    "scope_value",
    "spearman",
    "summary",
    "tune_arm",
    "tune_setting",
    "tuned_arms",
    "tuning_configs",
    "tuning_score",
    "tuning_summary",
    "tuning_table",
    "tuning_tables",
    "tuning_view",
]
