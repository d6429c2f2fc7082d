"""The prose-number rule: a number typed in prose states what the study *does*, never
what it *found*.

A result (a loss, an accuracy, a difference, a p-value, a share, a time) reaches a reader
only from a computed value: a cell's output, a chapter's fragment, ``claims.json``, or a
``{{ value }}`` of the paper's sources. Prose typed by hand (a notebook's Markdown cell,
the paper's own sources in ``paper_src/``) may hold numbers only in these forms:

1. **code and markup**, removed before reading: inline and fenced code, HTML tags,
   ``<sub>``/``<sup>`` (the indices and exponents of a formula), link targets, template
   expressions (``{{ value }}``, ``{% ... %}``) and citations (``[@key]``);
2. **names**: digits glued to a letter, or joined to one by ``-``, ``_``, ``@`` or ``.``
   in one word (C1, top-1, recall@5, bpe-256, WikiText-103, float64, 2V), and the names of
   the hypothesis's scenarios, 2.1 and 2.2 (``SCENARIO_NAMES``);
3. **references**: after a reference word (notebook, chapter, section, scenario, figure,
   table, claim, rank, decile, group, round, cell, step, appendix), lists and ranges
   included ("notebooks 02, 03 and 05", "scenarios 1 and 2.1", "ranks 51-65"); a
   heading's own number ("# 03 · ..."), a list item's ("1. ");
4. **years** of citations: 1900 to 2099;
5. **parameters and definitions**: after a parameter word (``PARAMETER_WORDS``: layout,
   seed, V, α, γ, τ, top-p, margin, probability, warmup, lr, ...; not p, t or T, whose
   values are results: a p-value, a t statistic, a fitted temperature), with ``=``, ``∈``,
   ``:`` or "of" between or not ("layout 2", "V = 256", "α ∈ {1.25, 1.5, 2}", "a margin
   of 0.005"); a confidence or power level ("95% interval", "95% Student-t interval", "80%
   power"); a share of
   the design ("2% of the training blocks": ``DESIGN_NOUNS``);
6. **plain integers** otherwise (counts of the design: "65 characters", "six seeds",
   "160 steps"), unless they read as a measurement: followed by a unit of time ("16 min"),
   a tally ("5 of 6"), or right after an approximation ("about 30", "≈ 4").

Any other number with a fraction or an exponent (1.93, 0.005, 1e-10), a percentage, or a
number right after an approximation word reads as a result typed by hand:
``violations`` returns each, with its line. The rule is a reading of the text, not of
its meaning: a definition that trips it is rewritten into one of the forms above (or
put in inline code), which also tells the reader it is a definition.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


def _words(text: str) -> frozenset[str]:
    """The words of ``text``, split on white space."""
    return frozenset(text.split())


# Words after which a number is a reference to a part of the study, not a value.
REFERENCE_WORDS = _words(
    "notebook notebooks chapter chapters section sections scenario scenarios figure "
    "figures fig table tables claim claims rank ranks decile deciles group groups round "
    "rounds cell cells step appendix equation eq item items row rows column columns "
    "layer version"
)
# Words (and symbols) after which a number is a parameter's value or a definition's. Not
# p, t or T: "p = 0.03", "t = 2.1" and a fitted "T = 1.3" are results.
PARAMETER_WORDS = _words(
    "layout layouts seed seeds v k n d α β γ τ λ σ ε ℓ alpha beta beta2 gamma tau lambda "
    "top-p top-k margin probability warmup bins lr rate decay clip batch context layers "
    "heads dims dimensions vocabulary size sizes iterations power threshold window "
    "perplexity budget tolerance ln log exp weight level smoothing"
)
# "2% of the training blocks": a percentage of one of these is a share of the design.
DESIGN_NOUNS = _words(
    "blocks block training text steps characters subwords vocabulary sentences split"
)
# The names of the hypothesis's scenarios (notebook 01): "(2.1) it is the target".
SCENARIO_NAMES = frozenset({"2.1", "2.2"})
APPROXIMATIONS = ("about", "roughly", "around", "nearly", "approximately", "almost", "≈", "~")
TIME_UNITS = _words("s ms min mins minute minutes h hour hours sec second seconds day days")

# A number as prose writes it: 3, 0.005, 1e-10, 32,768, 62%, −0.5.
NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+−]?\d+)?(?:\s?%)?")
# What may join the numbers of one list or range: "02, 03 and 05", "0.8 / 0.9", "51-65".
JOINER = re.compile(r"^\s*(?:,|and|or|to|/|-|–|—|×|\+)?\s*(?:,\s*)?(?:and|or)?\s*[{}(\[]?\s*$")
CONFIDENCE_LEVEL = re.compile(
    r"^\s*(?:\[|\()?\s*(?:paired\s+)?(?:Student-t|t|confidence|CI|intervals?|bootstrap|seed|"
    r"power)\b",
    re.IGNORECASE,
)
_CODE_FENCE = re.compile(r"^(\s*)(```|~~~).*?^\1\2[^\n]*$", re.MULTILINE | re.DOTALL)
_REMOVED = [
    re.compile(r"\{\{.*?\}\}", re.DOTALL),  # template values: computed
    re.compile(r"\{%.*?%\}", re.DOTALL),
    re.compile(r"\{#.*?#\}", re.DOTALL),
    re.compile(r"`[^`\n]*`"),  # inline code
    re.compile(r"<(sub|sup)>.*?</\1>", re.DOTALL | re.IGNORECASE),  # a formula's indices
    re.compile(r"<!--.*?-->", re.DOTALL),
    re.compile(r"<[^>\n]*>"),  # tags and their attributes
    re.compile(r"\[@[^\]]*\]"),  # citations
    re.compile(r"(?<=\])\([^)\s]*\)"),  # link targets
    re.compile(r"https?://\S+"),
    re.compile(r"&(?:#\d+|#x[0-9a-fA-F]+|\w+);"),  # entities (&lt; &#8722;)
]
_WORD_BEFORE = re.compile(r"([^\W\d_][\w@-]*|[α-ωℓ~≈])[\s=:∈≤≥<>{(\[]*(?:of\s+(?:the\s+)?)?$")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+$")
_LIST_ITEM = re.compile(r"^\s*$")  # nothing before a list item's number


@dataclass(frozen=True)
class Violation:
    """A number in prose that reads as a result: where it is and why it is not allowed."""

    line: int  # 1-based, in the text given to ``violations``
    number: str
    text: str  # the line, with code and markup removed
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.number!r} ({self.reason}) in: {self.text.strip()}"


def prose_of(markdown: str) -> str:
    """``markdown`` with code and markup blanked out (same lines, so line numbers hold):
    what the rule reads."""
    text = _CODE_FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), markdown)
    for pattern in _REMOVED:
        text = pattern.sub(_blank, text)
    return text.replace("*", "")


def _blank(match: re.Match) -> str:
    """A removed span: as many spaces as it had characters, and its line breaks."""
    removed = match.group(0)
    return " " * len(removed.replace("\n", "")) + "\n" * removed.count("\n")


def violations(markdown: str) -> list[Violation]:
    """Every number of ``markdown``'s prose that the rule does not allow (see the module)."""
    found = []
    for number, line_text, line_no, reason in _numbers(prose_of(markdown)):
        if reason is not None:
            found.append(Violation(line_no, number, line_text, reason))
    return found


def _numbers(prose: str) -> Iterable[tuple[str, str, int, str | None]]:
    """Each number of ``prose``: (text, its line, line number, why it is not allowed or None).

    A number joined to the one before it (``JOINER``: "02, 03 and 05", "51-65") inherits
    that one's reference or parameter word."""
    lines = prose.split("\n")
    for line_no, line in enumerate(lines, 1):
        following = lines[line_no] if line_no < len(lines) else ""
        run_by_word = False  # the list this number may continue was opened by such a word
        previous_end = None
        for match in NUMBER.finditer(line):
            start, end = match.span()
            number, before = match.group(0), line[:start]
            after = line[end:] + " " + following  # "95%" at a line's end, "interval" next
            joined = previous_end is not None and JOINER.match(line[previous_end:start])
            inherited = run_by_word and joined is not None
            reason = _judge(number, before, after, inherited)
            run_by_word = reason is None and (inherited or _word_allows(before))
            previous_end = end
            yield number, line, line_no, reason


def _is_plain_integer(number: str) -> bool:
    return re.fullmatch(r"\d+(?:,\d{3})*", number) is not None


def _judge(number: str, before: str, after: str, in_allowed_list: bool) -> str | None:
    """Why ``number`` (between ``before`` and ``after`` on its line) is not allowed, or None."""
    if before and (before[-1].isalpha() or before[-1] in "_@"):
        return None  # glued to a name: C1, recall@5, float64
    if len(before) >= 2 and before[-1] in "-." and before[-2].isalnum():
        return None  # joined to a name or a number: top-1, bpe-256, WikiText-103, 51-65
    if after[:1].isalpha():
        word = re.match(r"[^\W\d]+", after).group(0)
        if word.lower() not in TIME_UNITS:
            return None  # glued to a letter after it: 2V, 3D, 1st
    if _HEADING.match(before) or (_LIST_ITEM.match(before) and after.startswith(". ")):
        return None  # a heading's number, a list item's
    if _word_allows(before) or in_allowed_list:
        return None
    if number in SCENARIO_NAMES:
        return None  # the scenarios of the hypothesis are named 1, 2.1 and 2.2
    stripped = number.rstrip("%").strip()
    if _is_plain_integer(stripped) and 1900 <= int(stripped.replace(",", "")) <= 2099:
        return None  # a year, as citations give it
    approximate = _approximation_before(before)
    percent = number.endswith("%")
    if percent and CONFIDENCE_LEVEL.match(after):
        return None  # the level of an interval: a definition
    if percent and _design_share(after):
        return None
    if approximate:
        return f"an approximate value ('{approximate}')"
    if percent:
        return "a percentage"
    if not _is_plain_integer(number):
        return "a number with a fraction or an exponent"
    unit = re.match(r"\s*([^\W\d]+)", after)
    if unit and unit.group(1).lower() in TIME_UNITS:
        return "a duration"
    if re.match(r"\s+of\s+(?:the\s+)?\d", after):
        return "a tally ('k of n')"
    return None


def _word_allows(before: str) -> bool:
    """Whether the word right before a number (across '=', '∈', ':', 'of', brackets) is a
    reference or a parameter word."""
    match = _WORD_BEFORE.search(before)
    if match is None:
        return False
    word = match.group(1).lower().rstrip("-")
    if match.group(0)[len(match.group(1)) :].strip().startswith("of"):
        return word in PARAMETER_WORDS  # "a margin of 0.005"; "a share of 0.3" is no definition
    return word in REFERENCE_WORDS or word in PARAMETER_WORDS


def _approximation_before(before: str) -> str | None:
    tail = before.rstrip().lower()
    for word in APPROXIMATIONS:
        if tail.endswith(word) and (len(tail) == len(word) or not tail[-len(word) - 1].isalpha()):
            return word
    return None


def _design_share(after: str) -> bool:
    """'2% of the training blocks': a percentage of a noun of the design (a few words on)."""
    match = re.match(r"\s+of\s+(?:the\s+)?((?:[\w-]+\s+){0,3})", after + " ")
    if match is None:
        return False
    words = re.findall(r"[\w-]+", after[match.start(1) :])[:4]
    return any(w.lower() in DESIGN_NOUNS for w in words)
