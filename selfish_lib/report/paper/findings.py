"""What the claims say, in the paper's words: the "claims at a glance" table, one sentence
per primary contrast whose wording follows its verdict, and the counts the abstract gives.

Every number comes from the rows of ``claims.json`` (``study.claims``); every verdict word
is the row's own. A primary row is worded by its verdict after Holm's correction over the
family (``verdict_holm``): *supported* and *contradicted* are findings, *inconclusive* is
written as a question left open, never as a finding. A row supported at its own 95% level
but not after the correction says so.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ...study.claims import PRIMARY_CONTRASTS
from ...study.readings import format_interval
from .chapters import chapter_anchor

VERDICTS = ("supported", "contradicted", "inconclusive")
QUESTIONS = {c.claim: c.question for c in PRIMARY_CONTRASTS}
CLAIM_ORDER = {c.claim: i for i, c in enumerate(PRIMARY_CONTRASTS)}


def final_verdict(row: Mapping[str, Any]) -> str:
    """A row's verdict as the paper states it: after Holm's correction for a primary row,
    its own for an exploratory one."""
    if row.get("family") == "primary":
        return str(row.get("verdict_holm") or row.get("verdict"))
    return str(row.get("verdict"))


def primary_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows of the primary family, in the order the family is registered."""
    primary = [r for r in rows if r.get("family") == "primary"]
    return sorted(
        primary, key=lambda r: (CLAIM_ORDER.get(str(r.get("claim")), 99), str(r.get("scope")))
    )


def exploratory_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every other row, in the order the chapters wrote them."""
    return [r for r in rows if r.get("family") != "primary"]


def effect_text(row: Mapping[str, Any]) -> str:
    """A − B with its 95% interval: '+0.0123 [+0.004, +0.0206]'."""
    return format_interval(
        _number(row.get("diff")),
        _number(row.get("diff_lo")),
        _number(row.get("diff_hi")),
        digits=3,
        sign="+",
        significant=True,
    )


def p_text(value: Any) -> str:
    """A p-value in three significant digits, 'n/a' when there is none."""
    number = _number(value)
    return "n/a" if math.isnan(number) else f"{number:.3g}"


def test_text(row: Mapping[str, Any]) -> str:
    """The test of a row: 'greater', 'not worse ±0.005', 'similar ±0.05'."""
    test = str(row.get("test", "greater"))
    margin = _number(row.get("margin"))
    words = test.replace("_", " ")
    return words if test == "greater" or math.isnan(margin) else f"{words} ±{margin:g}"


def counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many primary rows each final verdict has (every verdict present, 0 if none)."""
    tally = Counter(final_verdict(r) for r in primary_rows(rows))
    return {verdict: tally.get(verdict, 0) for verdict in VERDICTS}


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _claim_cell(row: Mapping[str, Any], chapters: Sequence[str]) -> str:
    """The claim id, a link to the chapter that computes it when the paper has it."""
    claim = html.escape(str(row.get("claim", "?")))
    source = str(row.get("source", ""))
    if source in chapters:
        return f'<a href="#{chapter_anchor(source)}">{claim}</a>'
    return claim


def glance_table(rows: Sequence[Mapping[str, Any]], chapters: Sequence[str]) -> str:
    """The "claims at a glance" table (HTML, numbered as a table): one line per row of the
    primary family with its question, scope, A − B and its 95% interval, test, seeds,
    the t test's p, Holm's adjusted p and the verdict (with the one before the correction
    when they differ)."""
    header = ("claim", "question it decides", "scope", "A − B [95% interval]", "test", "seeds",
              "p (t)", "p (Holm)", "verdict after Holm")  # fmt: skip
    lines = []
    for row in primary_rows(rows):
        verdict, after = str(row.get("verdict")), final_verdict(row)
        shown = f'<span class="verdict {after}">{after}</span>'
        if verdict != after:
            shown += f" (before: {html.escape(verdict)})"
        cells = [
            _claim_cell(row, chapters),
            html.escape(QUESTIONS.get(str(row.get("claim")), str(row.get("statement", "")))),
            html.escape(str(row.get("scope", ""))),
            f"{html.escape(effect_text(row))}<br><small>{html.escape(str(row.get('A', '')))} − "
            f"{html.escape(str(row.get('B', '')))}</small>",
            html.escape(test_text(row)),
            html.escape(str(row.get("n_seeds", ""))),
            p_text(row.get("p_value")),
            p_text(row.get("p_holm")),
            shown,
        ]
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in header)
    return (f'<table class="claims"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(lines)}</tbody></table>")  # fmt: skip


def exploratory_table(rows: Sequence[Mapping[str, Any]], chapters: Sequence[str]) -> str:
    """Every exploratory row: the claim as stated, its scope, A − B, test, seeds, p and
    verdict (no correction: these rows decide nothing of the study's questions)."""
    header = (
        "claim",
        "statement",
        "scope",
        "metric",
        "A − B [95% interval]",
        "test",
        "seeds",
        "p (t)",
        "verdict",
    )
    lines = []
    for row in exploratory_rows(rows):
        verdict = final_verdict(row)
        cells = [
            _claim_cell(row, chapters),
            html.escape(str(row.get("statement", ""))),
            html.escape(str(row.get("scope", ""))),
            html.escape(str(row.get("metric", ""))),
            html.escape(effect_text(row)),
            html.escape(test_text(row)),
            html.escape(str(row.get("n_seeds", ""))),
            p_text(row.get("p_value")),
            f'<span class="verdict {verdict}">{verdict}</span>',
        ]
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in header)
    return (
        f'<table class="claims"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(lines)}</tbody></table>"
    )


def finding(row: Mapping[str, Any]) -> str:
    """One sentence (Markdown) on a primary row, worded by its verdict after Holm's
    correction: a supported or contradicted claim is stated as a finding, an inconclusive
    one as a question the data leave open (with the seeds that would decide it)."""
    claim = str(row.get("claim", "?"))
    scope = str(row.get("scope", ""))
    statement = str(row.get("statement", "")).strip().rstrip(".")
    evidence = (
        f"A − B = {effect_text(row)} ({row.get('A')} − {row.get('B')}, "
        f"{row.get('metric')}); {row.get('n_seeds')} seeds, {test_text(row)} test, "
        f"t p = {p_text(row.get('p_value'))}, sign-flip p = {p_text(row.get('p_signflip'))}, "
        f"Holm p = {p_text(row.get('p_holm'))}"
    )
    head = f"**{claim}** ({scope})"
    verdict, own = final_verdict(row), str(row.get("verdict"))
    if verdict == "supported":
        return f"{head}: supported. {statement}. {evidence}."
    if verdict == "contradicted":
        against = f"The data go against the claim that {_lower(statement)}"
        return f"{head}: contradicted. {against}. {evidence}."
    if own in ("supported", "contradicted"):
        return (
            f"{head}: not a finding. At its own 95% level the claim that {_lower(statement)} "
            f"is {own}, but not after Holm's correction over the family. {evidence}."
        )
    needed = _needed(row)
    return (
        f"{head}: not decided. The data leave open whether {_lower(statement)}. {evidence}{needed}."
    )


def _needed(row: Mapping[str, Any]) -> str:
    needed = _number(row.get("seeds_needed"))
    if math.isnan(needed):
        return ""
    if math.isinf(needed):
        return "; no number of seeds would decide it if the observed mean held"
    return f"; about {int(needed)} paired seeds would decide it if the observed effect held"


def _lower(statement: str) -> str:
    """A statement inside a sentence: its first letter lowered unless it starts a name (HNS, CE)."""
    first = statement.split(" ", 1)[0]
    if first[:2].isupper() or any(ch.isdigit() for ch in first):  # HNS, HNS's, CE, C1
        return statement
    return statement[:1].lower() + statement[1:]


def findings_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The findings section's list: one ``finding`` per primary row, supported and
    contradicted ones first."""
    primary = primary_rows(rows)
    order = {"supported": 0, "contradicted": 1, "inconclusive": 2}
    primary = sorted(primary, key=lambda r: order.get(final_verdict(r), 3))
    return "\n".join(f"- {finding(r)}" for r in primary) or "- No primary contrast was computed."


def family_sentence(rows: Sequence[Mapping[str, Any]]) -> str:
    """One sentence on the whole family after Holm's correction: how many contrasts it
    holds and how many are supported, contradicted and left open."""
    tally = counts(rows)
    total = sum(tally.values())
    if total == 0:
        return "No primary contrast was computed in this report."
    noun = "contrast" if total == 1 else "contrasts"
    parts = [
        f"{_count(tally['supported'])} supported",
        f"{_count(tally['contradicted'])} contradicted",
        f"{_count(tally['inconclusive'])} not decided",
    ]
    return (
        f"Of the family's {total} primary {noun}, after Holm's correction {parts[0]}, "
        f"{parts[1]} and {parts[2]}."
    )


def _count(n: int) -> str:
    """'none' for 0, else the number, for the family sentence ('none supported')."""
    return "none" if n == 0 else str(n)


def statements_with(rows: Sequence[Mapping[str, Any]], verdict: str) -> list[str]:
    """The claim ids with ``verdict`` after the correction, each once, in family order."""
    return list(
        dict.fromkeys(
            str(r.get("claim")) for r in primary_rows(rows) if final_verdict(r) == verdict
        )
    )
