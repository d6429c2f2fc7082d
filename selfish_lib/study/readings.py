"""One vocabulary for every chapter: the reading a chapter ends with, the 'mean [lo, hi]'
cell of its tables and prose, and the names of the languages and metrics.

``format_interval`` is the only way a mean and its 95% interval become text, and it
follows one rule for missing numbers (``stats`` gives a NaN mean for no values and a
NaN interval for fewer than two):

- a NaN mean is ``"n/a"``: there is no data;
- a finite mean without an interval (either bound NaN) is the mean followed by
  ``"(1 seed)"``: one value says nothing about the spread;
- otherwise ``"mean [lo, hi]"``.

Two sentences go with the numbers wherever they apply: ``CLIPPED_NOTE`` when an
interval was clipped to its metric's range (``stats.clip_interval``), and
``PIPELINE_CHECK_NOTE`` for a profile that only checks the pipeline (the smoke
profile, ``pipeline_check_only``): its verdicts are computed like any others but
say nothing about the study's claims.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..engine.files import jsonable
from ..engine.validation import ParameterError, check_choice, check_int

# The language key of metrics pooled over every position of both alphabets.
POOLED = "both"
# The languages in prose (and in chart titles): the two alphabets, then the pool.
# The training mixture: each language weighted by its share of the training blocks
# (98/2 in the bilingual setting), the loss the bilingual models are trained on.
MIXTURE = "mixture"
LANGUAGE_NAMES = {
    "high": "high-resource",
    "low": "low-resource",
    POOLED: "both languages",
    MIXTURE: "training mixture",
}
# The validation metrics (``evaluation.METRICS``) in prose, in the same order.
METRIC_NAMES = {"loss": "loss", "top1": "top-1 accuracy", "recall5": "recall@5", "mrr": "MRR"}

# Profiles whose numbers only check that the pipeline runs end to end.
PIPELINE_CHECK_PROFILES = frozenset({"smoke"})
PIPELINE_CHECK_NOTE = (
    "Smoke profile: a tiny model trained for a few dozen steps. These numbers and verdicts "
    "only check that the pipeline runs; they are not results."
)
CLIPPED_NOTE = (
    "Intervals that reached past their metric's range are clipped to it: accuracies, MRR "
    "and shares to [0, 1], differences of two of them to [−1, 1], losses and norms to ≥ 0."
)

NO_DATA = "n/a"
NO_INTERVAL = "(1 seed)"
SIGNS = ("", "+")


@dataclass(frozen=True)
class Reading:
    """What a chapter's numbers say: Markdown ``text`` for the notebook and a
    ``summary`` for the report's fragment.

    The summary is stored JSON-safe (``engine.files.jsonable``: numpy scalars become
    Python numbers, NaN and inf become the strings 'nan' and 'inf'), so it can be
    written with strict JSON as it is.
    """

    text: str
    summary: dict

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise ParameterError("text", self.text, "a Markdown string")
        if not isinstance(self.summary, Mapping):
            raise ParameterError("summary", self.summary, "a mapping (a JSON object)")
        object.__setattr__(self, "summary", jsonable(self.summary))


def pipeline_check_only(profile: str) -> bool:
    """Whether the numbers of ``profile`` only check the pipeline (the smoke profile)."""
    return profile in PIPELINE_CHECK_PROFILES


def clipping_note(clipped: bool) -> list[str]:
    """The lines to end a reading with: ``["", CLIPPED_NOTE]`` when an interval was clipped
    to its metric's range, none otherwise."""
    return ["", CLIPPED_NOTE] if clipped else []


def format_interval(
    mean: float,
    lo: float = math.nan,
    hi: float = math.nan,
    *,
    digits: int = 3,
    sign: str = "",
    percent: bool = False,
    significant: bool = False,
) -> str:
    """A mean and its 95% interval as one cell: '0.512 [0.498, 0.526]'.

    Missing numbers follow the module's rule: 'n/a' for a NaN mean, the mean and
    '(1 seed)' when the interval is missing.

    Args:
        mean, lo, hi: the mean and the bounds of its interval.
        digits: decimals, or significant digits with ``significant``.
        sign: '+' to sign every number (for differences), '' otherwise.
        percent: show each number times 100 followed by '%'.
        significant: ``digits`` counts significant digits (format 'g'), not decimals.
    """
    digits = check_int("digits", digits, 0)
    sign = check_choice("sign", sign, SIGNS)
    spec = f"{sign}.{digits}{'g' if significant else 'f'}"
    factor, unit = (100.0, "%") if percent else (1.0, "")

    def number(value: float) -> str:
        return f"{float(value) * factor:{spec}}{unit}"

    if math.isnan(mean):
        return NO_DATA
    if math.isnan(lo) or math.isnan(hi):
        return f"{number(mean)} {NO_INTERVAL}"
    return f"{number(mean)} [{number(lo)}, {number(hi)}]"


def interval_of(
    record: Mapping[str, Any], name: str, suffixes: tuple[str, str, str] = ("", "_lo", "_hi")
) -> tuple[float, float, float]:
    """``(mean, lo, hi)`` of the value ``name`` in a table row: the entries ``name``,
    ``name_lo`` and ``name_hi`` (or ``name`` with other ``suffixes``), as
    ``format_interval`` takes them."""
    mean, lo, hi = (float(record[name + s]) for s in suffixes)
    return mean, lo, hi
