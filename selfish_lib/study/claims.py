"""The claims of the study, each tested from the runs with a verdict computed from a
95% interval (stats.claim_verdict): supported, contradicted or inconclusive.

Every claim compares two per-seed quantities A and B, paired by seed; the difference
is oriented as the claim states it (see ``stats.claim_verdict`` for the rules and
the margins of the 'similar' and 'not worse' claims). Intervals are clipped to the
range of the claim's quantity (``stats.RANGES``; a difference to ``stats.difference_range``
of it) and ``intervals_clipped`` says where.

In a profile that only checks the pipeline (``readings.pipeline_check_only``: the smoke
profile), the verdicts are computed all the same; ``save_claims`` marks every row of
``claims.json`` with the profile and ``pipeline_check_only``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ..engine.files import write_atomic
from .readings import (
    CLIPPED_NOTE,
    LANGUAGE_NAMES,
    METRIC_NAMES,
    MIXTURE,
    POOLED,
    format_interval,
    interval_of,
    pipeline_check_only,
)
from .stats import RANGES, UNBOUNDED, claim_verdict, clip_interval, difference_range, mean_ci

# Equivalence margins, stated with every claim that uses one.
SIMILAR_LOSS_MARGIN = 0.05  # nats per token
NOT_WORSE_ACCURACY_MARGIN = 0.005  # absolute top-1 accuracy (half a percentage point)


def seed_series(frame: pd.DataFrame, **where) -> pd.Series:
    """Per-seed values of the rows matching ``where`` (column=value), indexed by seed."""
    mask = pd.Series(True, index=frame.index)
    value = where.pop("value")
    for column, wanted in where.items():
        mask &= frame[column] == wanted
    return frame[mask].set_index("seed")[value]


def claim_row(
    claim: str,
    statement: str,
    source: str,
    metric: str,
    scope: str,
    a_label: str,
    a: pd.Series,
    b_label: str,
    b: pd.Series,
    kind: str = "greater",
    margin: float = 0.0,
    bounds: tuple[float, float] = UNBOUNDED,
    definition: str = "",
    primary: bool = True,
) -> dict:
    """One row of the claims table: A and B over seeds, the paired difference A - B with its
    95% interval, and the verdict for ``kind`` ('greater': the claim says A - B > 0).
    ``bounds`` is the range of A and B: their intervals are clipped to it, the difference's
    to ``difference_range(bounds)``, and ``intervals_clipped`` says whether any was.
    ``definition`` says how the compared quantity is measured; ``primary`` is False for a
    row that reports the same claim under another definition or test, beside it."""
    a_mean, a_lo, a_hi, _ = mean_ci(a.to_numpy(dtype=float))
    b_mean, b_lo, b_hi, _ = mean_ci(b.to_numpy(dtype=float))
    paired = pd.concat({"a": a, "b": b}, axis=1, join="inner").dropna()
    d_mean, d_lo, d_hi, n = mean_ci((paired["a"] - paired["b"]).to_numpy())
    a_lo, a_hi, a_clipped = clip_interval(a_lo, a_hi, *bounds)
    b_lo, b_hi, b_clipped = clip_interval(b_lo, b_hi, *bounds)
    d_lo, d_hi, d_clipped = clip_interval(d_lo, d_hi, *difference_range(bounds))
    return {
        "claim": claim,
        "statement": statement,
        "source": source,
        "metric": metric,
        "scope": scope,
        "A": a_label,
        "A_mean": a_mean,
        "A_lo": a_lo,
        "A_hi": a_hi,
        "B": b_label,
        "B_mean": b_mean,
        "B_lo": b_lo,
        "B_hi": b_hi,
        "diff": d_mean,
        "diff_lo": d_lo,
        "diff_hi": d_hi,
        "n_seeds": n,
        "definition": definition,
        "primary": primary,
        "test": kind,
        "margin": margin,
        "verdict": claim_verdict(d_lo, d_hi, kind, margin),
        "intervals_clipped": a_clipped or b_clipped or d_clipped,
    }


def build_claims(
    scenario_shares: pd.DataFrame,
    single_validation: pd.DataFrame,
    bilingual_validation: pd.DataFrame,
    rare_groups=("51-60", "61-65"),
) -> pd.DataFrame:
    """The claims table C1-C7.

    Args:
        scenario_shares: per-seed scenario sums per group of the single-language runs
            (the first frame of ``gradients.per_group_share``).
        single_validation: per-seed validation metrics per group of the same runs
            (``frequency.group_validation``).
        bilingual_validation: per-seed metrics per language of the bilingual runs
            (``bilingual.language_metrics``).
        rare_groups: the 'rarest rank groups' of C1, one row each.
    """
    rows = []
    sh = scenario_shares.assign(own=scenario_shares["input"] + scenario_shares["target"])
    definitions = [("summed", "", True)]
    if "nontarget_pp" in sh:
        sh = sh.assign(own_pp=sh["input_pp"] + sh["target_pp"])
        definitions.append(("per-position", "_pp", False))
    described = {
        "summed": "per row, the norm of each scenario's gradient summed over the batch "
        "(what the optimizer receives), summed over logged steps and the group's tokens",
        "per-position": "per row, the sum over positions of the norm of each position's "
        "contribution (no cancellation), summed over logged steps and the group's tokens",
    }
    for group in rare_groups:
        for definition, suffix, primary in definitions:
            rows.append(
                claim_row(
                    "C1",
                    "For the rarest rank groups, scenario 2.2 carries more gradient than "
                    "scenarios 1 and 2.1 together (CE).",
                    "02_gradient_scenarios",
                    f"gradient norm ({definition})",
                    f"ranks {group}",
                    "2.2 non-target",
                    seed_series(sh, objective="CE", group=group, value=f"nontarget{suffix}"),
                    "1 input + 2.1 target",
                    seed_series(sh, objective="CE", group=group, value=f"own{suffix}"),
                    bounds=RANGES["norm"],
                    definition=described[definition],
                    primary=primary,
                )
            )
    sv = single_validation
    rows.append(
        claim_row(
            "C2",
            "CE has lower validation loss than HNS on the 10 most frequent tokens.",
            "03_hns_training",
            "validation loss",
            "ranks 1-10",
            "HNS",
            seed_series(sv, objective="HNS", group="1-10", value="loss"),
            "CE",
            seed_series(sv, objective="CE", group="1-10", value="loss"),
            bounds=RANGES["loss"],
        )
    )
    rows.append(
        claim_row(
            "C3",
            "HNS has lower loss than CE on ranks 41-50.",
            "03_hns_training",
            "validation loss",
            "ranks 41-50",
            "CE",
            seed_series(sv, objective="CE", group="41-50", value="loss"),
            "HNS",
            seed_series(sv, objective="HNS", group="41-50", value="loss"),
            bounds=RANGES["loss"],
        )
    )
    bv = bilingual_validation
    pooled_definitions = [
        (MIXTURE, "the two languages weighted 98/2, as the training stream mixes them", True),
        (POOLED, "every validation position of both alphabets, 50/50", False),
    ]
    for language, definition, primary in pooled_definitions:
        if language not in set(bv["language"]):
            continue
        rows.append(
            claim_row(
                "C4",
                "CE has lower overall validation loss than HNS in the bilingual setting.",
                "04_bilingual_simulation",
                "validation loss",
                LANGUAGE_NAMES[language],
                "HNS",
                seed_series(bv, experiment="HNS", language=language, value="loss"),
                "CE",
                seed_series(bv, experiment="baseline", language=language, value="loss"),
                bounds=RANGES["loss"],
                definition=definition,
                primary=primary,
            )
        )
    rows.append(
        claim_row(
            "C5",
            "On the low-resource language, CE and HNS have similar loss "
            f"(within ±{SIMILAR_LOSS_MARGIN} nats).",
            "04_bilingual_simulation",
            "validation loss",
            "low-resource language",
            "HNS",
            seed_series(bv, experiment="HNS", language="low", value="loss"),
            "CE",
            seed_series(bv, experiment="baseline", language="low", value="loss"),
            kind="similar",
            margin=SIMILAR_LOSS_MARGIN,
            bounds=RANGES["loss"],
        )
    )
    for metric in ("top1", "recall5", "mrr"):
        name = METRIC_NAMES[metric]
        rows.append(
            claim_row(
                "C6",
                f"HNS has higher {name} than CE on the low-resource language.",
                "04_bilingual_simulation",
                name,
                "low-resource language",
                "HNS",
                seed_series(bv, experiment="HNS", language="low", value=metric),
                "CE",
                seed_series(bv, experiment="baseline", language="low", value=metric),
                bounds=RANGES[metric],
            )
        )
    c7 = [
        ("greater", 0.0, True, "HNS is slightly better than CE on top-1 accuracy in the "
         "high-resource language."),
        ("not_worse", NOT_WORSE_ACCURACY_MARGIN, False, "HNS is at least as good as CE on "
         f"top-1 accuracy in the high-resource language (not worse by more than "
         f"{NOT_WORSE_ACCURACY_MARGIN})."),
    ]  # fmt: skip
    for kind, margin, primary, statement in c7:
        rows.append(
            claim_row(
                "C7",
                statement,
                "04_bilingual_simulation",
                "top-1 accuracy",
                "high-resource language",
                "HNS",
                seed_series(bv, experiment="HNS", language="high", value="top1"),
                "CE",
                seed_series(bv, experiment="baseline", language="high", value="top1"),
                kind=kind,
                margin=margin,
                bounds=RANGES["top1"],
                definition="the claim as the study states it"
                if primary
                else "the weaker test reported beside it",
                primary=primary,
            )
        )
    table = pd.DataFrame(rows)
    for claim, definition in DEFINITIONS.items():
        table.loc[(table["claim"] == claim) & (table["definition"] == ""), "definition"] = (
            definition
        )
    return table


# How the quantities of the claims without a second definition are measured.
DEFINITIONS = {
    "C2": "final whole-split validation loss over every position whose target is in the "
    "group (a ratio of sums: positions weigh equally)",
    "C3": "final whole-split validation loss over every position whose target is in the "
    "group (a ratio of sums: positions weigh equally)",
    "C5": "final whole-split validation loss of the low-resource alphabet; 'similar' means "
    f"the interval of the difference lies within ±{SIMILAR_LOSS_MARGIN} nats",
    "C6": "final whole-split validation metric of the low-resource alphabet; ranks count "
    "ties against the target",
}


def concat(tables) -> pd.DataFrame:
    """Claims tables one below the other (empty tables left out)."""
    tables = [t for t in tables if len(t)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def readable_claims(claims: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """The claims table with 'mean [low, high]' text cells (``readings.format_interval``,
    ``digits`` significant digits), for display."""
    records = claims.to_dict("records")

    def cells(name: str, suffixes: tuple[str, str, str], sign: str = "") -> list[str]:
        return [
            format_interval(
                *interval_of(r, name, suffixes), digits=digits, sign=sign, significant=True
            )
            for r in records
        ]

    out = pd.DataFrame(
        {
            "claim": claims["claim"],
            "statement": claims["statement"],
            "metric": claims["metric"],
            "scope": claims["scope"],
            "A": claims["A"] + ": " + cells("A", ("_mean", "_lo", "_hi")),
            "B": claims["B"] + ": " + cells("B", ("_mean", "_lo", "_hi")),
            "A − B": cells("diff", ("", "_lo", "_hi"), sign="+"),
            "seeds": claims["n_seeds"],
            "verdict": claims["verdict"],
        }
    )
    return out


def styled(claims: pd.DataFrame):
    """``readable_claims`` as a pandas Styler with the verdicts coloured; its caption says
    so when an interval was clipped to its quantity's range."""
    colours = {"supported": "#2E7D32", "contradicted": "#C62828", "inconclusive": "#757575"}

    def colour(verdict: str) -> str:
        return f"color: {colours.get(verdict, 'inherit')}; font-weight: bold"

    style = readable_claims(claims).style.map(colour, subset=["verdict"]).hide(axis="index")
    if "intervals_clipped" in claims and claims["intervals_clipped"].any():
        style = style.set_caption(CLIPPED_NOTE)
    return style


def save_claims(
    claims: pd.DataFrame, report_dir: str | os.PathLike | None, profile: str | None = None
) -> Path | None:
    """Write the rows of ``claims`` into ``report_dir``'s ``claims.json`` (a list of rows,
    NaN as null), atomically. Rows already there from another ``source`` (another
    chapter's claims) are kept; those from the sources of ``claims`` are replaced.

    With the ``profile`` the claims were computed in, every row also records it and
    ``pipeline_check_only``: true for a profile whose numbers only check the pipeline
    (the smoke profile), whose verdicts are not results.
    """
    if report_dir is None:
        return None
    path = Path(report_dir) / "claims.json"
    records = json.loads(claims.to_json(orient="records"))
    if profile is not None:
        marks = {"profile": profile, "pipeline_check_only": pipeline_check_only(profile)}
        records = [{**record, **marks} for record in records]
    return write_atomic(path, json.dumps(merged_claims(path, records), indent=2) + "\n")


def merged_claims(path: str | os.PathLike, records: list[dict]) -> list[dict]:
    """The rows of the claims file ``path`` (if any) whose ``source`` is not among those of
    ``records``, then ``records``: one chapter's claims replace its own, not the others'.
    An unreadable file is replaced, not merged."""
    path = Path(path)
    sources = {record.get("source") for record in records}
    kept = []
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = []
        if isinstance(previous, list):
            kept = [r for r in previous if isinstance(r, dict) and r.get("source") not in sources]
    return kept + records
