"""One way to reject a bad parameter: name it, show the value, say what is allowed.

Every public entry point (configs, profiles, notebook parameters, the loss)
validates through these helpers so that errors read the same everywhere and
are raised before any work starts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


class ParameterError(ValueError):
    """A parameter has a value outside what is allowed."""

    def __init__(self, name: str, value: Any, allowed: str) -> None:
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(f"invalid {name}={value!r}: expected {allowed}")


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``; raise ParameterError otherwise."""
    options = list(allowed)
    if value not in options:
        raise ParameterError(name, value, "one of " + ", ".join(repr(o) for o in options))
    return value


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) and at least ``minimum``."""
    allowed = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ParameterError(name, value, allowed)
    if minimum is not None and value < minimum:
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

    NaN is always rejected; infinity only when ``allow_inf`` is set.
    """
    lo = "" if minimum is None else (f">= {minimum}" if min_inclusive else f"> {minimum}")
    hi = "" if maximum is None else f"<= {maximum}"
    rng = " and ".join(s for s in (lo, hi) if s)
    allowed = "a real number" + (f" {rng}" if rng else "") + (" (inf allowed)" if allow_inf else "")
    if not _is_real(value) or math.isnan(value):
        raise ParameterError(name, value, allowed)
    value = float(value)
    if math.isinf(value) and not (allow_inf and value > 0):
        raise ParameterError(name, value, allowed)
    if minimum is not None and (value < minimum or (not min_inclusive and value == minimum)):
        raise ParameterError(name, value, allowed)
    if maximum is not None and value > maximum:
        raise ParameterError(name, value, allowed)
    return value


def check_seeds(name: str, value: Any) -> tuple[int, ...]:
    """Return a non-empty tuple of distinct non-negative int seeds."""
    allowed = "a non-empty list of distinct non-negative integers"
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ParameterError(name, value, allowed)
    seeds = tuple(value)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ParameterError(name, value, allowed)
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise ParameterError(name, value, allowed)
    return seeds
