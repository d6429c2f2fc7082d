"""Chapter 07, HNS against the field: every registered objective and the ablations of HNS,
tuned alike and compared in one harness.

The arms (``arms``):

- **CE**, the reference every difference is taken against;
- **HNS** at the layout the notebook compares, and **HNS tuned** at the layout its
  tuning chose;
- every other registered objective whose ``role`` is 'peer' (AGG, logit adjustment,
  1.5-entmax, cosine regularisation, focal loss, and any objective registered later),
  at the value of its one hyperparameter its tuning chose;
- the ablations: **HNS-rows** (HNS on the output rows only, ``role`` 'ablation'),
  **CE untied** and **HNS untied** (separate input and output embeddings).

Tuning (``tuning_configs``, ``tuning_table``): every objective with a ``tuning``
hyperparameter gets the same budget, its three candidate values, each trained once
(the first seed) on the tuning split (``Corpus.for_tuning``: the end of the training
text, never the validation split) for the profile's ``tuning_steps``. The value with
the best ``TUNING_CRITERION`` on that split is chosen (ties: the published value, in
the middle of the candidates). The runs of a tuned arm exist only once its tuning
runs do: until then ``field_plan`` lists them under ``PENDING``, at the published
value, so that ``selfish plan`` can count their cost.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..engine.evaluation import METRICS
from ..engine.objectives import REGISTRY, CrossEntropy, HardNegatives, Objective
from ..engine.profiles import Profile
from ..engine.runs import stack_runs, stored_run
from ..engine.training import TrainConfig
from ..engine.validation import ParameterError, check_choice
from . import bilingual, gradients
from .claims import claim_row
from .frequency import verdict
from .geometry import as_array, geometry_metrics
from .readings import LANGUAGE_NAMES, METRIC_NAMES, Reading, format_interval, interval_of
from .stats import RANGES, aggregate_seeds, paired_difference

REFERENCE = "CE"
HNS_TUNED = "HNS tuned"
PENDING = "pending"  # the part of a plan that waits for tuning runs
FIELD_SETTINGS = ("single", "bilingual")
ROLES = ("reference", "hns", "peer", "ablation")
# What tuning maximises, per setting: (scope, metric) on the tuning split at its last
# step. Bilingual: top-1 on the low-resource language, the quantity the chapter's
# claims are about, so that every method gets its best shot at them. One language:
# top-1 over every position. Top-1, not the loss: 1.5-entmax's softmax loss does not
# measure what it trains, and a criterion must be one every arm can be judged by.
TUNING_CRITERION = {"bilingual": ("low", "top1"), "single": ("all", "top1")}
# Entmax is trained for its own sparse distribution: its softmax loss is reported,
# flagged, and never ranked.
LOSS_NOT_COMPARABLE = ("entmax15",)


@dataclass(frozen=True)
class Arm:
    """One arm of the comparison: a name for the tables, its objective (at the published
    value until tuning chooses), its role, and whether its embeddings are tied."""

    name: str
    objective: Objective
    role: str
    tied: bool = True
    tuned: bool = False  # True: the objective's ``tuning`` hyperparameter is chosen

    @property
    def hyperparameter(self) -> str | None:
        """The tuned hyperparameter's name (None when the arm is not tuned)."""
        return self.objective.tuning[0] if self.tuned else None

    @property
    def candidates(self) -> tuple[float, ...]:
        """The values tuning tries (empty when the arm is not tuned)."""
        return tuple(self.objective.tuning[1]) if self.tuned else ()

    def with_value(self, value: float) -> Arm:
        """This arm with its tuned hyperparameter at ``value``."""
        objective = dataclasses.replace(self.objective, **{self.hyperparameter: value})
        return dataclasses.replace(self, objective=objective)

    @property
    def loss_comparable(self) -> bool:
        """False for an objective whose softmax loss is not what it trains (entmax)."""
        return self.objective.name not in LOSS_NOT_COMPARABLE


def arms(layout: float = 2.0) -> list[Arm]:
    """Every arm, in table order: CE, HNS at ``layout``, HNS tuned, the peers (every
    registered objective of role 'peer', by registration order), then the ablations
    (registered ones at ``layout`` where they have one, then the untied pair)."""
    layout = HardNegatives(layout).layout  # validated once, here
    out = [
        Arm(REFERENCE, CrossEntropy(), "reference"),
        Arm("HNS", HardNegatives(layout), "hns"),
        Arm(HNS_TUNED, HardNegatives(HardNegatives.tuning[1][1]), "hns", tuned=True),
    ]
    peers, ablations = [], []
    for cls in REGISTRY.values():
        if cls.role not in ROLES:
            raise ParameterError(f"{cls.__name__}.role", cls.role, "one of " + ", ".join(ROLES))
        if cls.role == "peer":
            objective = cls()
            peers.append(Arm(objective.arm, objective, "peer", tuned=cls.tuning is not None))
        elif cls.role == "ablation":
            names = {f.name for f in dataclasses.fields(cls)}
            objective = cls(layout=layout) if "layout" in names else cls()
            ablations.append(Arm(objective.arm, objective, "ablation"))
    untied = [
        Arm("CE untied", CrossEntropy(), "ablation", tied=False),
        Arm("HNS untied", HardNegatives(layout), "ablation", tied=False),
    ]
    return out + peers + ablations + untied


def _arm_config(
    profile: Profile, setting: str, arm: Arm, seed: int, tuning: bool = False
) -> TrainConfig:
    extra = {} if arm.tied else {"tie_embeddings": False}
    if tuning:
        config = profile.tuning_config(setting, arm.objective, seed)
        return config.replace(**extra) if extra else config
    return profile.config(setting, arm.objective, seed, **extra)


def tuning_configs(profile: Profile, setting: str, layout: float = 2.0) -> dict:
    """(arm, value) -> the tuning run of that candidate, for every tuned arm: the first
    seed, the tuning split, the profile's ``tuning_steps``."""
    check_choice("setting", setting, FIELD_SETTINGS)
    seed = profile.seeds[0]
    return {
        (arm.name, value): _arm_config(profile, setting, arm.with_value(value), seed, True)
        for arm in arms(layout)
        if arm.tuned
        for value in arm.candidates
    }


def tuning_score(run, token_info: pd.DataFrame, setting: str) -> float:
    """The tuning criterion of one run at its last evaluation (``TUNING_CRITERION``)."""
    scope, metric = TUNING_CRITERION[setting]
    if scope == "all":
        return float(run.metrics(token_info, by=[])[metric].iloc[0])
    table = run.metrics(token_info, by=["language"]).set_index("language")
    return float(table.loc[scope, metric])


def tuning_table(
    profile: Profile,
    setting: str,
    token_info: pd.DataFrame,
    layout: float = 2.0,
    results_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """One row per tuned arm and candidate: its tuning score (NaN while the run is not in
    the store), ``chosen`` for the value each arm's tuning picked (no value is chosen
    for an arm until all its candidates are scored), and ``at_edge`` where that value is
    the smallest or largest candidate (the best one may lie beyond the range tried)."""
    rows = []
    by_name = {arm.name: arm for arm in arms(layout)}
    for (name, value), config in tuning_configs(profile, setting, layout).items():
        run = stored_run(config, results_dir)
        score = math.nan if run is None else tuning_score(run, token_info, setting)
        arm = by_name[name]
        rows.append(
            {
                "setting": setting,
                "arm": name,
                "hyperparameter": arm.hyperparameter,
                "value": value,
                "published": value == arm.candidates[len(arm.candidates) // 2],
                "criterion": "{} {}".format(*TUNING_CRITERION[setting]),
                "score": score,
                "steps": config.max_steps,
            }
        )
    table = pd.DataFrame(rows)
    table["chosen"] = False
    for _, part in table.groupby("arm", sort=False):
        if part["score"].isna().any():
            continue
        # best score; among equal scores the published value, then the smaller one
        order = part.assign(tie=~part["published"]).sort_values(
            ["score", "tie", "value"], ascending=[False, True, True]
        )
        table.loc[order.index[0], "chosen"] = True
    # a choice at the end of the candidates says the best value may lie beyond them
    ends = (
        table.groupby("arm")["value"].transform("min"),
        table.groupby("arm")["value"].transform("max"),
    )
    table["at_edge"] = table["chosen"] & ((table["value"] == ends[0]) | (table["value"] == ends[1]))
    return table


def tuning_tables(
    profile: Profile,
    settings: Sequence[str],
    token_infos: Mapping[str, pd.DataFrame],
    layout: float = 2.0,
    results_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """``tuning_table`` of every setting of ``settings``, one below the other."""
    tables = [tuning_table(profile, s, token_infos[s], layout, results_dir) for s in settings]
    return pd.concat(tables, ignore_index=True)


def chosen_arms(
    profile: Profile,
    setting: str,
    token_info: pd.DataFrame,
    layout: float = 2.0,
    results_dir: str | os.PathLike | None = None,
) -> tuple[list[Arm], list[Arm]]:
    """``(ready, pending)``: every arm with its tuned value where tuning has chosen one
    (with the untuned arms), and the tuned arms still waiting for their tuning runs (at
    their published value)."""
    table = tuning_table(profile, setting, token_info, layout, results_dir)
    chosen = {r["arm"]: r["value"] for r in table.to_dict("records") if r["chosen"]}
    ready, pending = [], []
    for arm in arms(layout):
        if not arm.tuned:
            ready.append(arm)
        elif arm.name in chosen:
            ready.append(arm.with_value(chosen[arm.name]))
        else:
            pending.append(arm)
    return ready, pending


def field_plan(
    profile: Profile,
    settings: Sequence[str],
    token_infos: Mapping[str, pd.DataFrame],
    layout: float = 2.0,
    results_dir: str | os.PathLike | None = None,
) -> dict[str, dict]:
    """The runs of chapter 07 by part: ``tuning`` ((setting, arm, value) -> config),
    one part per setting ((arm, seed) -> config, every arm that is ready) and
    ``PENDING`` (the tuned arms whose tuning is not in the store yet, at their
    published value: what they will cost, not what they will be)."""
    grids: dict[str, dict] = {"tuning": {}}
    pending_part: dict = {}
    for setting in settings:
        for (name, value), config in tuning_configs(profile, setting, layout).items():
            grids["tuning"][(setting, name, value)] = config
        ready, pending = chosen_arms(profile, setting, token_infos[setting], layout, results_dir)
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


def arm_table(layout: float = 2.0) -> pd.DataFrame:
    """The arms as a table: name, role, objective, tied, tuned hyperparameter and its
    candidates (for the notebook's first cell)."""
    return pd.DataFrame(
        [
            {
                "arm": arm.name,
                "role": arm.role,
                "objective": arm.objective.label,
                "embeddings": "tied" if arm.tied else "untied",
                "tuned": arm.hyperparameter or "",
                "candidates": ", ".join(f"{v:g}" for v in arm.candidates),
            }
            for arm in arms(layout)
        ]
    )


# --- the comparison -----------------------------------------------------------------------

RARE_FROM_RANK = 51  # one language: ranks 51-65 pooled are "the rare tokens"
RARE = "ranks 51-65"
REST = "ranks 1-50"
# per setting: the scope and metric the arms are ranked by, and the claims are about
RANKED_BY = {"bilingual": ("low", "top1"), "single": (RARE, "top1")}
GEOMETRY = ("isotropy", "language_centroid_distance", "mean_cosine", "effective_rank")
SHARES = ("share_nontarget", "update_share_nontarget", "update_over_grad")
MOST_OF_THE_GAIN = 0.5  # "keeps most of HNS's gain": more than half of it


def roles(runs: Mapping) -> dict[str, str]:
    """arm name -> role, for the arms of ``runs`` (keys (arm, seed))."""
    known = {arm.name: arm.role for arm in arms()}
    return {key[0]: known.get(key[0], "peer") for key in runs}


def _rare_info(token_info: pd.DataFrame) -> pd.DataFrame:
    rare = token_info["rank"] >= RARE_FROM_RANK
    return token_info.assign(group=np.where(rare, RARE, REST))


def metrics_per_seed(runs: Mapping, token_info: pd.DataFrame, setting: str,
                     p_low: float = 0.02) -> pd.DataFrame:  # fmt: skip
    """Per run (``experiment`` = arm, seed): the final whole-split validation metrics.
    Bilingual: per language ('high', 'low', both pooled, the training mixture) in column
    ``scope``; one language: per frequency group, and the rare tokens (ranks 51-65) and
    the rest pooled, in ``scope``."""
    check_choice("setting", setting, FIELD_SETTINGS)
    if setting == "bilingual":
        table = bilingual.language_metrics(dict(runs), token_info, p_low)
        return table.rename(columns={"language": "scope"})
    groups = stack_runs(dict(runs), lambda r: r.metrics(token_info, by=["group"]))
    pooled = stack_runs(dict(runs), lambda r: r.metrics(_rare_info(token_info), by=["group"]))
    return pd.concat([groups, pooled], ignore_index=True).rename(columns={"group": "scope"})


def summary(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per arm and scope: each metric's mean and 95% interval over seeds, the arm's role,
    and ``loss_comparable`` (False for entmax, whose softmax loss it does not train)."""
    table = aggregate_seeds(per_seed, ["experiment", "scope"], list(METRICS))
    objective = per_seed.groupby("experiment", sort=False)["objective"].first()
    table["loss_comparable"] = [
        objective[e] not in _arms_not_comparable() for e in table["experiment"]
    ]
    return table


def _arms_not_comparable() -> set[str]:
    return {REGISTRY[name].arm for name in LOSS_NOT_COMPARABLE if name in REGISTRY}


def differences(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per arm (but CE), scope and metric: the arm minus CE, paired by seed, with its 95%
    interval, p-value and verdict ('better', 'worse' or 'indistinguishable'; lower loss
    and higher accuracy are better). A loss difference of entmax is marked
    ``loss_comparable`` False."""
    parts = []
    comparable = _arms_not_comparable()
    objective = per_seed.groupby("experiment", sort=False)["objective"].first()
    for experiment in per_seed["experiment"].unique():
        if experiment == REFERENCE:
            continue
        for metric in METRICS:
            d = paired_difference(per_seed, ["scope"], metric, "experiment", experiment,
                                  REFERENCE)  # fmt: skip
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
    return table.rename_axis(f"{METRIC_NAMES[metric]}, arm − CE").reset_index()


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
    first), with its interval, the paired difference to CE and its verdict, and the
    loss on the same scope (marked where it is not comparable)."""
    scope, metric = RANKED_BY[setting]
    part = table[table["scope"] == scope].copy()
    d = diffs[(diffs["scope"] == scope) & (diffs["metric"] == metric)].set_index("experiment")
    rows = []
    for rec in part.sort_values(metric, ascending=False).to_dict("records"):
        name = rec["experiment"]
        has_diff = name in d.index
        loss = format_interval(*interval_of(rec, "loss"), digits=4)
        rows.append(
            {
                "arm": name,
                "role": role_of.get(name, "peer"),
                METRIC_NAMES[metric]: format_interval(*interval_of(rec, metric), digits=4),
                "minus CE": format_interval(*interval_of(d.loc[name], "diff"), digits=4, sign="+")
                if has_diff
                else "",  # fmt: skip
                "verdict": d.loc[name, "verdict"] if has_diff else "reference",
                "loss": loss if rec["loss_comparable"] else f"{loss} (not comparable)",
                "seeds": int(rec["n_seeds"]),
            }
        )
    out = pd.DataFrame(rows)
    out.insert(0, "rank", range(1, len(out) + 1))
    out.attrs["scope"], out.attrs["metric"] = scope, metric
    return out


def _per_seed(per_seed: pd.DataFrame, experiment: str, scope: str, metric: str) -> pd.Series:
    part = per_seed[(per_seed["experiment"] == experiment) & (per_seed["scope"] == scope)]
    return part.set_index("seed")[metric]


def field_claims(per_seed: pd.DataFrame, setting: str = "bilingual",
                 role_of: Mapping[str, str] | None = None) -> pd.DataFrame:  # fmt: skip
    """The chapter's claims, on the setting's ``RANKED_BY`` quantity (bilingual:
    low-resource top-1), each paired by seed:

    - F1, one row per peer: "HNS beats <peer>". The claim as made compares the tuned
      arms (HNS tuned against the peer at its tuned value); HNS at the notebook's layout
      against the same peer is the row beside it.
    - F2: "the embedding-only ablation keeps most of HNS's gain": per seed,
      (HNS-rows − CE) − 0.5 (HNS − CE) > 0, both at the notebook's layout; beside it,
      HNS's own gain (HNS − CE > 0), without which 'most of it' means nothing.
    """
    scope, metric = RANKED_BY[setting]
    name = METRIC_NAMES[metric]
    where = LANGUAGE_NAMES.get(scope, scope)
    source = "07_hns_against_the_field"
    role_of = dict(role_of or {})
    present = list(per_seed["experiment"].unique())
    rows = []
    bounds = RANGES[metric]
    for peer in present:
        if role_of.get(peer) != "peer":
            continue
        for hns, primary in ((HNS_TUNED, True), ("HNS", False)):
            if hns not in present:
                continue
            rows.append(
                claim_row(
                    "F1",
                    f"HNS beats {peer} on {name} ({where}).",
                    source, name, where, hns, _per_seed(per_seed, hns, scope, metric),
                    peer, _per_seed(per_seed, peer, scope, metric), bounds=bounds,
                    definition="both arms at their tuned values" if primary else
                    "HNS at the notebook's layout, the peer at its tuned value",
                    primary=primary,
                )
            )  # fmt: skip
    if {"HNS-rows", "HNS", REFERENCE} <= set(present):
        ce = _per_seed(per_seed, REFERENCE, scope, metric)
        hns = _per_seed(per_seed, "HNS", scope, metric)
        rows_only = _per_seed(per_seed, "HNS-rows", scope, metric)
        rows.append(
            claim_row(
                "F2",
                "HNS on the embedding gradient only keeps most (more than half) of HNS's "
                f"gain over CE on {name} ({where}).",
                source, f"{name} gain over CE", where, "HNS-rows − CE", rows_only - ce,
                f"{MOST_OF_THE_GAIN:g} × (HNS − CE)", MOST_OF_THE_GAIN * (hns - ce),
                bounds=(-1.0, 1.0),
                definition="per seed, (HNS-rows − CE) − 0.5 (HNS − CE), both at the "
                "notebook's layout",
            )
        )  # fmt: skip
        rows.append(
            claim_row(
                "F2",
                f"HNS itself gains over CE on {name} ({where}): the premise of F2.",
                source, name, where, "HNS", hns, REFERENCE, ce, bounds=bounds,
                definition="HNS minus CE, paired by seed", primary=False,
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
    per_seed: pd.DataFrame
    table: pd.DataFrame
    diffs: pd.DataFrame
    ranking: pd.DataFrame
    shares: pd.DataFrame
    geometry: pd.DataFrame
    claims: pd.DataFrame


CHART_SCOPES = {"bilingual": ["high", "low"], "single": [REST, RARE]}


def compare(runs: Mapping, token_info: pd.DataFrame, setting: str,
            p_low: float = 0.02) -> Comparison:  # fmt: skip
    """Metrics, differences to CE, ranking, scenario shares, geometry and (bilingual)
    the claims of the arms in ``runs`` ((arm, seed) -> Run) in ``setting``."""
    role_of = roles(runs)
    order = list(dict.fromkeys(key[0] for key in runs))
    per_seed = metrics_per_seed(runs, token_info, setting, p_low)
    table = summary(per_seed)
    diffs = differences(per_seed)
    _, shares = scenario_view(runs, token_info)
    _, geometry = geometry_view(runs, token_info)
    found = field_claims(per_seed, setting, role_of) if setting == "bilingual" else pd.DataFrame()
    return Comparison(
        setting, role_of, order, CHART_SCOPES[setting], per_seed, table, diffs,
        ranking(table, diffs, setting, role_of), shares, geometry, found,
    )  # fmt: skip


def reading(claims: pd.DataFrame, rankings: Mapping[str, pd.DataFrame],
            tuning: pd.DataFrame) -> Reading:  # fmt: skip
    """What the chapter found: the chosen hyperparameters, the top of each ranking, and
    every claim's verdict with its figures."""
    summary: dict = {"chosen": {}, "ranking": {}, "claims": {}}
    lines = []
    chosen = tuning[tuning["chosen"]]
    if len(chosen):
        cells = []
        for rec in chosen.to_dict("records"):
            summary["chosen"].setdefault(rec["setting"], {})[rec["arm"]] = {
                rec["hyperparameter"]: rec["value"], "score": rec["score"]}  # fmt: skip
            cells.append(f"{rec['arm']} {rec['hyperparameter']}={rec['value']:g} "
                         f"({rec['setting']})")  # fmt: skip
        lines += ["Tuning chose: " + "; ".join(cells) + "."]
        edge = chosen[chosen["at_edge"]]
        if len(edge):
            names = ", ".join(f"{r['arm']} ({r['setting']})" for r in edge.to_dict("records"))
            lines.append(f"At the end of its range of three: {names}; the best value of "
                         "these may lie beyond it, so their comparison is with the best "
                         "of the values tried, not necessarily their best.")  # fmt: skip
            summary["at_edge"] = list(edge["arm"] + " (" + edge["setting"] + ")")
        lines.append("")
    for setting, table in rankings.items():
        if table.empty:
            continue
        metric = METRIC_NAMES[table.attrs["metric"]]
        scope = LANGUAGE_NAMES.get(table.attrs["scope"], table.attrs["scope"])
        order = list(table["arm"])
        summary["ranking"][setting] = order
        top = ", ".join(f"{r['arm']} {r[metric]}" for r in table.head(3).to_dict("records"))
        lines.append(f"- **{setting}**, ranked by {metric} ({scope}): {top}; "
                     f"CE is {order.index(REFERENCE) + 1} of {len(order)}.")  # fmt: skip
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
    "FIELD_SETTINGS",
    "GEOMETRY",
    "HNS_TUNED",
    "RANKED_BY",
    "LOSS_NOT_COMPARABLE",
    "METRICS",
    "PENDING",
    "REFERENCE",
    "TUNING_CRITERION",
    "Arm",
    "Comparison",
    "compare",
    "arm_table",
    "arms",
    "chosen_arms",
    "difference_table",
    "differences",
    "field_claims",
    "field_plan",
    "geometry_view",
    "metrics_per_seed",
    "ranking",
    "reading",
    "roles",
    "scenario_view",
    "summary",
    "tuning_configs",
    "tuning_score",
    "tuning_table",
    "tuning_tables",
]
