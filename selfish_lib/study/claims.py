"""The claims of the study, each tested from the runs with a verdict computed from a
95% interval (stats.claim_verdict): supported, contradicted or inconclusive.

Every claim compares two per-seed quantities A and B, paired by seed; the difference
is oriented as the claim states it (see ``stats.claim_verdict`` for the rules and
the margins of the 'similar' and 'not worse' claims). Intervals are clipped to the
range of the claim's quantity (``stats.RANGES``; a difference to ``stats.difference_range``
of it) and ``intervals_clipped`` says where.

The study's questions are decided by one pre-registered family, ``PRIMARY_CONTRASTS``: a
row belongs to it when its claim id is listed there and it is the claim's main row
(``primary``); everything else is exploratory and says so. Each row carries the p-value of
the t test behind its interval (``stats.verdict_p``), the exact paired sign-flip test beside
it (``stats.sign_flip_p``) and, when inconclusive, the seeds that would decide it
(``stats.seeds_needed``). Holm's correction runs over the whole family as it stands in
``claims.json`` (every chapter's rows), each time a chapter writes its rows: ``p_holm`` and
``verdict_holm`` (a primary row's verdict after the correction).

In a profile that only checks the pipeline (``readings.pipeline_check_only``: the smoke
profile), the verdicts are computed all the same; ``save_claims`` marks every row of
``claims.json`` with the profile and ``pipeline_check_only``.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import pandas as pd

from ..engine.files import write_atomic
from ..engine.validation import ParameterError
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
from .stats import (
    RANGES,
    UNBOUNDED,
    claim_verdict,
    clip_interval,
    difference_range,
    holm_adjusted,
    mean_ci,
    seeds_needed,
    sign_flip_p,
    verdict_p,
)

# Equivalence margins, stated with every claim that uses one.
SIMILAR_LOSS_MARGIN = 0.05  # nats per token
NOT_WORSE_ACCURACY_MARGIN = 0.005  # absolute top-1 accuracy (half a percentage point)


@dataclass(frozen=True)
class Contrast:
    """One pre-registered primary contrast: the claim id its rows carry, the chapter that
    computes it, what is compared (A - B, oriented as the claim states it), on which metric
    and scope, the test and its margin."""

    claim: str
    source: str
    question: str
    metric: str
    scope: str
    a: str
    b: str
    test: str = "greater"
    margin: float = 0.0


# The family Holm's correction runs over. A chapter's rows of one of these claims (its main
# rows, ``primary=True``) are primary; every other row of claims.json is exploratory.
PRIMARY_CONTRASTS: tuple[Contrast, ...] = (
    Contrast("C1", "02_gradient_scenarios", "does scenario 2.2 dominate the rarest rows' "
             "gradient?", "gradient norm (summed)", "ranks 51-60, ranks 61-65 (one row each)",
             "2.2 non-target", "1 input + 2.1 target"),
    Contrast("C2", "03_hns_training", "what does HNS cost the frequent tokens?",
             "validation loss", "ranks 1-10", "HNS", "CE"),
    Contrast("C3", "03_hns_training", "does HNS help the rare tokens of one "
             "language?", "validation loss", "ranks 41-50", "CE", "HNS"),
    Contrast("C4", "04_bilingual_simulation", "what does HNS cost overall?",
             "validation loss", "the 98/2 mixture", "HNS", "CE"),
    Contrast("C6", "04_bilingual_simulation", "does HNS help a low-resource language?",
             "top-1 accuracy", "low-resource language", "HNS", "CE"),
    Contrast("F1", "07_hns_against_the_field", "does HNS beat each published remedy, each "
             "tuned alike?", "top-1 accuracy", "low-resource language (one row per peer)",
             "HNS tuned", "peer tuned"),
    Contrast("F2", "07_hns_against_the_field", "is it the output rows' gradient that does "
             "the work?", "top-1 accuracy gain over CE", "low-resource language",
             "HNS-rows - CE", "0.5 x (HNS - CE)"),
    Contrast("F3", "07_hns_against_the_field", "does untying alone give what HNS gives?",
             "top-1 accuracy gain over CE", "low-resource language", "CE untied - CE",
             "HNS - CE", "not_worse", 0.005),
    Contrast("S3", "08_subword_scale", "does the low-resource gain hold with subwords?",
             "top-1 accuracy", "low-resource language (one row per V)", "HNS", "CE"),
    Contrast("N1", "09_sampling", "does the gain reach what a nucleus sampler emits?",
             "P(top-p 0.9 sample = target)", "low-resource language", "HNS", "CE",
             "not_worse", 0.005),
    Contrast("N2", "09_sampling", "after temperature scaling, is HNS as well calibrated as "
             "CE?", "top-1 ECE at the fitted temperature", "low-resource language", "CE",
             "HNS", "not_worse", 0.01),
    Contrast("R1", "10_real_language", "does HNS help a real low-resource language?",
             "top-1 accuracy", "Nahuatl shared alphabet", "HNS", "CE"),
    Contrast("R3", "10_real_language", "does the gain replicate in a second real language?",
             "top-1 accuracy", "Otomí disjoint alphabet", "HNS", "CE"),
)  # fmt: skip
PRIMARY_IDS = frozenset(c.claim for c in PRIMARY_CONTRASTS)
_CONTRASTS = {c.claim: c for c in PRIMARY_CONTRASTS}
FAMILY_ALPHA = 0.05


def primary_contrasts() -> pd.DataFrame:
    """``PRIMARY_CONTRASTS`` as a table, one row per contrast, for display."""
    return pd.DataFrame([vars(c) for c in PRIMARY_CONTRASTS]).rename(
        columns={"a": "A", "b": "B", "question": "question it decides"}
    )


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
    if not str(definition).strip():
        raise ParameterError(
            "definition", definition, f"a sentence saying how claim {claim}'s quantity is measured"
        )
    contrast = _CONTRASTS.get(claim) if primary else None
    if contrast is not None and (kind, margin) != (contrast.test, contrast.margin):
        # the family is pre-registered: a chapter cannot test its primary row otherwise
        raise ParameterError(
            f"claim {claim}'s test", f"{kind} ±{margin:g}",
            f"the registered {contrast.test} ±{contrast.margin:g} (claims.PRIMARY_CONTRASTS)",
        )  # fmt: skip
    a_mean, a_lo, a_hi, _ = mean_ci(a.to_numpy(dtype=float))
    b_mean, b_lo, b_hi, _ = mean_ci(b.to_numpy(dtype=float))
    paired = pd.concat({"a": a, "b": b}, axis=1, join="inner").dropna()
    diffs = (paired["a"] - paired["b"]).to_numpy()
    d_mean, d_lo, d_hi, n = mean_ci(diffs)
    a_lo, a_hi, a_clipped = clip_interval(a_lo, a_hi, *bounds)
    b_lo, b_hi, b_clipped = clip_interval(b_lo, b_hi, *bounds)
    d_lo, d_hi, d_clipped = clip_interval(d_lo, d_hi, *difference_range(bounds))
    verdict = claim_verdict(d_lo, d_hi, kind, margin, n_seeds=n)
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
        "seeds": [int(seed) if isinstance(seed, Integral) else seed for seed in paired.index],
        "definition": definition,
        "primary": primary,
        "family": "primary" if primary and claim in PRIMARY_IDS else "exploratory",
        "test": kind,
        "margin": margin,
        "p_value": verdict_p(diffs, kind, margin),
        "p_signflip": sign_flip_p(diffs, kind, margin),
        "verdict": verdict,
        "seeds_needed": (
            seeds_needed(diffs, kind, margin) if verdict == "inconclusive" else math.nan
        ),
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
            definition=DEFINITIONS["C2"],
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
            definition=DEFINITIONS["C3"],
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
            definition=DEFINITIONS["C5"],
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
                definition=DEFINITIONS["C6"]
                + ("" if metric == "top1" else "; reported beside top-1, the claim's metric"),
                primary=metric == "top1",
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
    return pd.DataFrame(rows)


# How the quantities of the claims with one definition are measured.
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
            "family": claims.get("family", "exploratory"),
            "statement": claims["statement"],
            "metric": claims["metric"],
            "scope": claims["scope"],
            "A": claims["A"] + ": " + cells("A", ("_mean", "_lo", "_hi")),
            "B": claims["B"] + ": " + cells("B", ("_mean", "_lo", "_hi")),
            "A − B": cells("diff", ("", "_lo", "_hi"), sign="+"),
            "test": [_test_text(r) for r in records],
            "seeds": claims["n_seeds"],
            "p (t)": [_p_text(r.get("p_value")) for r in records],
            "p (sign-flip)": [_p_text(r.get("p_signflip")) for r in records],
            "verdict": claims["verdict"],
            "seeds needed": [_needed_text(r) for r in records],
        }
    )
    if "verdict_holm" in claims:
        out.insert(out.columns.get_loc("verdict") + 1, "after Holm", claims["verdict_holm"])
    return out


def evidence_note(record: dict) -> str:
    """What a verdict rests on, as a clause for a reading: the family, the seeds, both
    p-values and, for an inconclusive row, the seeds that would decide it."""
    parts = [record.get("family", "exploratory"), f"{record.get('n_seeds', 0)} seeds",
             f"t p = {_p_text(record.get('p_value'))}",
             f"sign-flip p = {_p_text(record.get('p_signflip'))}"]  # fmt: skip
    if record.get("verdict") == "inconclusive" and record.get("n_seeds", 0) >= 2:
        parts.append(f"seeds that would decide it: {_needed_text(record)}")
    return " (" + "; ".join(parts) + ")"


def _test_text(record: dict) -> str:
    margin = record.get("margin") or 0.0
    return record["test"] if record["test"] == "greater" else f"{record['test']} ±{margin:g}"


def _p_text(p) -> str:
    return "n/a" if p is None or (isinstance(p, float) and math.isnan(p)) else f"{p:.3g}"


def _needed_text(record: dict) -> str:
    """The seeds an inconclusive row would need ('' for a decided one)."""
    if record["verdict"] != "inconclusive":
        return ""
    needed = record.get("seeds_needed")
    if needed is None or (isinstance(needed, float) and math.isnan(needed)):
        return "n/a (no spread)"
    return "more than 10,000" if math.isinf(needed) else str(int(needed))


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
    Holm's correction then runs again over the primary family of the merged rows
    (``family_correction``). A row without a ``source`` (which no chapter would ever
    replace) is dropped with a line saying so; a damaged file (not a JSON list of rows)
    raises ``DamagedClaims``, never replaced silently: the report pipeline rebuilds it
    from the chapters' own claims."""
    path = Path(path)
    records = _with_source(records, "the rows to save")
    sources = {record["source"] for record in records}
    kept = [r for r in read_claims_file(path) if r["source"] not in sources]
    return family_correction(kept + records)


def load_claims(
    report_dir: str | os.PathLike | None, fallback: pd.DataFrame | None = None
) -> list[dict]:
    """The rows of ``report_dir``'s claims.json (every chapter's, corrected as a family); the
    rows of ``fallback`` when there is no report folder or file (a notebook run alone).
    Rows without a ``source`` are dropped with a line saying so; a damaged file raises
    ``DamagedClaims`` (the report pipeline rebuilds it)."""
    path = None if report_dir is None else Path(report_dir) / "claims.json"
    if path is not None and path.exists():
        return family_correction(read_claims_file(path))
    records = [] if fallback is None else json.loads(fallback.to_json(orient="records"))
    return family_correction(records)


class DamagedClaims(ValueError):
    """A claims file that is not a JSON list of claim rows: truncated, or of another shape."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(
            f"{path} is damaged ({problem}): `selfish reproduce` rebuilds it from the "
            "chapters' own claims, or move it aside"
        )


def read_claims_file(path: str | os.PathLike) -> list[dict]:
    """The rows of the claims file ``path``, as stored ([] when there is none).

    A row without a ``source`` (the chapter it comes from) is dropped with a line on
    stderr that says so. ``DamagedClaims`` when the file cannot be read as a JSON list of
    objects (a truncated write, a file of another shape), never a silent empty list."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:  # a folder, unreadable, not text
        raise DamagedClaims(path, f"unreadable: {type(exc).__name__}") from None
    except json.JSONDecodeError as exc:
        raise DamagedClaims(path, f"not JSON: {exc.msg} at line {exc.lineno}") from None
    except RecursionError:
        raise DamagedClaims(path, "not JSON: nested too deeply") from None
    if not isinstance(rows, list):
        raise DamagedClaims(path, f"a JSON {type(rows).__name__}, not a list of rows")
    if not all(isinstance(row, dict) for row in rows):
        raise DamagedClaims(path, "a list that holds something other than rows")
    return _with_source(rows, str(path))


def _with_source(rows: list[dict], where: str) -> list[dict]:
    """``rows`` less those without a ``source`` (a non-empty string), with a line on stderr
    naming how many were dropped and where from."""
    kept, dropped = [], []
    for row in rows:
        source = row.get("source")
        (kept if isinstance(source, str) and source.strip() else dropped).append(row)
    if dropped:
        ids = ", ".join(sorted({str(row.get("claim")) for row in dropped}))
        print(
            f"dropped {len(dropped)} claims row(s) without a source from {where} "
            f"(claim {ids}): no chapter could ever replace them",
            file=sys.stderr,
        )
    return kept


def family_correction(records: list[dict], alpha: float = FAMILY_ALPHA) -> list[dict]:
    """``records`` (claims rows) with Holm's correction over the primary family: every row
    whose ``family`` is 'primary' gets ``p_holm`` (its Holm-adjusted ``p_value`` among them)
    and ``verdict_holm``, its verdict if the adjusted p is at most ``alpha`` and
    'inconclusive' otherwise; exploratory rows get no adjusted p and keep their verdict,
    with ``family_size`` (the number of primary rows corrected together) on every row."""
    primary = [i for i, r in enumerate(records) if r.get("family") == "primary"]
    adjusted = holm_adjusted([_as_p(records[i].get("p_value")) for i in primary])
    out = [{**r, "p_holm": None, "verdict_holm": r.get("verdict")} for r in records]
    for i, p in zip(primary, adjusted, strict=True):
        decided = not math.isnan(p) and p <= alpha
        out[i]["p_holm"] = None if math.isnan(p) else float(p)
        out[i]["verdict_holm"] = out[i].get("verdict") if decided else "inconclusive"
    for r in out:
        r["family_size"] = len(primary)
    return out


def _as_p(value) -> float:
    return math.nan if value is None else float(value)


def family_table(records: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """The primary family as it stands (rows of claims.json, or a claims table), corrected:
    one line per primary row with its test, seeds, p-values, verdicts and seeds needed."""
    rows = records.to_dict("records") if isinstance(records, pd.DataFrame) else list(records)
    rows = family_correction([r for r in rows if r.get("family") == "primary"])
    return readable_claims(pd.DataFrame(rows)) if rows else pd.DataFrame()
