"""One way to reject a bad parameter: name it, show the value, say what is allowed.

Every public entry point (configs, profiles, notebook parameters, the loss)
validates through these helpers so that errors read the same everywhere and
are raised before any work starts.

Every number has a range a run can honour: an integer is refused beyond what a
64-bit integer holds (``INT_MIN``..``INT_MAX``: torch, numpy and the run store keep
integers so), a real number beyond what a float holds (a huge int is refused, never
an OverflowError), NaN always, and a seed outside ``0 <= seed < 2**63``
(``check_seed``). The engine's numbers that no narrower check bounds have their range
in one table, ``RANGES`` (a layout, a sampling temperature), checked by
``check_ranged``; the notebooks' parameters and the command line take the same. A
value shown in an error is shortened when it is long.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from typing import Any

INT_MAX = 2**63 - 1  # the largest integer a run can hold (int64: torch, numpy, seeds)
INT_MIN = -(2**63)
SEED_MAX = INT_MAX  # seeds: 0 <= seed < 2**63 (torch.manual_seed takes a signed 64-bit int)
SHOWN_CHARS = 80  # a longer value is shown by its start and its length

# A layout is a margin in logits. A token it excludes has P(T) < P(target) * e^-layout,
# and beyond a layout of about 104 that is below what float32 holds: such tokens already
# contribute nothing, and a larger layout is CE under another name (say inf for CE). 1000
# leaves a wide margin above the layouts studied (0.5 to 12).
LAYOUT_MAX = 1000.0
# Below 0.01 a logit gap of 0.1 already gives odds of e^10 (the sampler is argmax); above
# 100 every symbol is about equally likely (the text is noise).
TEMPERATURE_RANGE = (0.01, 100.0)

# The one table of the engine's ranges: name -> (lowest, highest), both included, and
# what the number is. Every entry is a range a run can honour.
RANGES: dict[str, tuple[float, float, str]] = {
    "layout": (0.0, LAYOUT_MAX, "a layout (a margin in logits)"),
    "layout_end": (0.0, LAYOUT_MAX, "a layout (a margin in logits)"),
    "temperature": (*TEMPERATURE_RANGE, "a sampling temperature"),
}


def shown(value: Any) -> str:
    """``repr(value)``, shortened to its first ``SHOWN_CHARS`` characters and its length
    when longer (a 3000-character argument, an integer of 400 digits), and never an
    error (Python refuses to write an int of more than 4300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        digits = math.floor(value.bit_length() * math.log10(2)) + 1  # exact, or one too many
        digits -= abs(value) < 10 ** (digits - 1)
        return f"<{'a negative' if value < 0 else 'an'} integer of {digits} digits>"
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # holds an int too long to write, or nests too deep
        return f"<{type(value).__name__} too large or too deep to show>"
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


class ParameterError(ValueError):
    """A parameter has a value outside what is allowed."""

    def __init__(self, name: str, value: Any, allowed: str) -> None:
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(f"invalid {name}={shown(value)}: expected {allowed}")


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``; raise ParameterError otherwise."""
    options = list(allowed)
    if value not in options:
        raise ParameterError(name, value, "one of " + ", ".join(repr(o) for o in options))
    return value


def _integer_range(minimum: int | None, maximum: int | None) -> str:
    lo = "" if minimum is None else f">= {minimum}"
    hi = "" if maximum is None else f"<= {maximum}"
    rng = " and ".join(s for s in (lo, hi) if s)
    return "an integer" + (f" {rng}" if rng else "")


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) from ``minimum`` to ``maximum``
    (both inclusive, each optional) and within a 64-bit integer (``INT_MIN`` to
    ``INT_MAX``) in any case: a larger one is no count or seed a run can use."""
    allowed = _integer_range(minimum, maximum)
    if not _is_integer(value):
        raise ParameterError(name, value, allowed)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ParameterError(name, value, allowed)
    if not INT_MIN <= value <= INT_MAX:
        lo = INT_MIN if minimum is None else minimum
        hi = INT_MAX if maximum is None else maximum
        raise ParameterError(name, value, _integer_range(lo, hi) + " (a 64-bit integer)")
    return value


def check_ranged(
    name: str, value: Any, *, allow_inf: bool = False, entry: str | None = None
) -> float:
    """Return ``float(value)`` if it is a real number within the range ``RANGES`` gives
    for ``entry`` (default: ``name``), or inf when ``allow_inf`` (a layout meaning plain
    cross-entropy); ParameterError naming ``name`` with the range otherwise. Compared
    before it is converted: a huge int, NaN, a bool or a string is refused, never an
    OverflowError."""
    low, high, what = RANGES[entry or name]
    allowed = f"{what} from {low:g} to {high:g}" + (", or inf" if allow_inf else "")
    if _is_real(value) and allow_inf and value == math.inf:
        return math.inf
    if not _is_real(value) or not low <= value <= high:  # NaN fails the comparison
        raise ParameterError(name, value, allowed)
    return float(value)


def check_seed(name: str, value: Any) -> int:
    """Return ``value`` if it is a seed a run can use: an int with 0 <= seed < 2**63."""
    allowed = f"an integer >= 0 and < 2**63 ({SEED_MAX + 1})"
    if not _is_integer(value) or not 0 <= value <= SEED_MAX:
        raise ParameterError(name, value, allowed)
    return value


def check_float(
    name: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    min_inclusive: bool = True,
    allow_inf: bool = False,
) -> float:
    """Return ``float(value)`` if it is a real number in the given range.

    NaN is always rejected; infinity only when ``allow_inf`` is set; an int too large
    for a float (beyond about 1.8e308) is rejected like any value out of range.
    """
    lo = "" if minimum is None else (f">= {minimum}" if min_inclusive else f"> {minimum}")
    hi = "" if maximum is None else f"<= {maximum}"
    rng = " and ".join(s for s in (lo, hi) if s)
    allowed = "a real number" + (f" {rng}" if rng else "") + (" (inf allowed)" if allow_inf else "")
    if not _is_real(value):
        raise ParameterError(name, value, allowed)
    if isinstance(value, int) and abs(value) > sys.float_info.max:  # float() would overflow
        raise ParameterError(name, value, allowed)
    value = float(value)
    if math.isnan(value):
        raise ParameterError(name, value, allowed)
    if math.isinf(value) and not (allow_inf and value > 0):
        raise ParameterError(name, value, allowed)
    if minimum is not None and (value < minimum or (not min_inclusive and value == minimum)):
        raise ParameterError(name, value, allowed)
    if maximum is not None and value > maximum:
        raise ParameterError(name, value, allowed)
    return value


def check_seeds(name: str, value: Any) -> tuple[int, ...]:
    """Return a non-empty tuple of distinct seeds, each an int with 0 <= seed < 2**63."""
    allowed = f"a non-empty list of distinct non-negative integers below 2**63 ({SEED_MAX + 1})"
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ParameterError(name, value, allowed)
    seeds = tuple(value)
    if not seeds or not all(_is_integer(s) and 0 <= s <= SEED_MAX for s in seeds):
        raise ParameterError(name, value, allowed)
    if len(set(seeds)) != len(seeds):  # (ints only by now: a list in the list is refused)
        raise ParameterError(name, value, allowed)
    return seeds
