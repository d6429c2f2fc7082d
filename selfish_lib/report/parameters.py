"""Notebook parameters: one validator per parameter, in one table, checked before any work.

Every notebook takes the ``COMMON`` parameters: the pipeline injects them into
each notebook, and a notebook run by hand gets the defaults below unless its
parameters cell sets them. Its own parameters (defaults in its parameters
cell) are listed under its name in ``NOTEBOOKS``.

A validator is called as ``validator(name, value, checked)`` and returns the
value the notebook goes on with (layout 2 -> 2.0, a schedule tuple -> a
``Schedule``), or raises ParameterError naming the parameter, the value and
what is allowed. ``checked`` is the ``Parameters`` being filled: the values
validated before (the common ones first, then the notebook's in table order,
so 06's ``layout`` is checked against its ``layouts``) and, loaded on first
use, the corpus that a few checks depend on (05's ``perplexity`` and
``n_rare``).

``validate(notebook, values)`` runs them all. The study object of a notebook
(``report.notebook.open_study``) calls it on the notebook's namespace; the
pipeline can call it on a notebook's parameters before starting a kernel.

Every number has a range a run can honour, stated in its error: a layout from 0 to
``LAYOUT_MAX`` (or inf where CE is meant), a temperature in ``TEMPERATURE_RANGE``, a
sample of at most ``SAMPLE_LENGTH_MAX`` symbols, at most ``BINS_MAX`` bins, a smoothing
window no wider than the profile's training curve, seeds below 2**63 and a projection
seed below 2**32 (what scikit-learn takes). A value of the wrong type, NaN, an infinity
where none is meant and an integer too large for a float are refused the same way.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..engine.corpus import Corpus, load_corpus
from ..engine.languages import check_alphabet, check_installed_language
from ..engine.losses import check_layout
from ..engine.profiles import PROFILE_NAMES, Profile, get_profile
from ..engine.training import resolve_device
from ..engine.validation import ParameterError, check_choice, check_float, check_int, check_seeds
from ..study import field, layout, projection, real_language, subword

Validator = Callable[[str, Any, "Parameters"], Any]

DEVICES = ("auto", "cpu", "cuda", "mps")
NOTEBOOK_NAME = re.compile(r"^\d\d_\w+$")  # NN_name, the stem of notebooks/NN_name.py

# The ranges of the notebooks' numbers (each a range a run can honour; see the module doc).
# A layout is a margin in logits. A token it excludes has P(T) < P(target) * e^-layout,
# and beyond a layout of about 104 that is below what float32 holds: such tokens already
# contribute nothing, and a larger layout is CE under another name (say inf for CE). 1000
# leaves a wide margin above the layouts studied (0.5 to 12).
LAYOUT_MAX = 1000.0
# Below 0.01 a logit gap of 0.1 already gives odds of e^10 (the sampler is argmax); above
# 100 every symbol is about equally likely (the text is noise).
TEMPERATURE_RANGE = (0.01, 100.0)
# Symbols sampled per text: 50 times notebook 09's default; each costs a forward pass
# per run and language, so a billion would not end.
SAMPLE_LENGTH_MAX = 100_000
# Equal-mass bins of a calibration error: each must hold positions enough to have an
# accuracy; 1000 bins of a language's validation text (about 110,000 positions of Tiny
# Shakespeare) leave about a hundred each.
BINS_MAX = 1000
# The projections' seed goes to scikit-learn's random_state, which takes 0 .. 2**32 - 1.
PROJECTION_SEED_MAX = 2**32 - 1
# Notebook 06's default for the layout its static figures show (its parameters cell).
SHOWN_LAYOUT_DEFAULT = 2.0


class Parameters(Mapping):
    """Validated notebook parameters by name, plus the corpus their checks may need.

    The corpus is loaded from the ``data_path`` parameter when a check (or the
    notebook) first asks for it, and then kept, so a notebook loads it once.
    """

    def __init__(self, notebook: str | None, values: Mapping[str, Any] | None = None) -> None:
        self.notebook = notebook
        self.values: dict[str, Any] = dict(values or {})
        # each parameter as it was given, before its check (an error about one parameter
        # that depends on another shows the other as the user wrote it)
        self.given: dict[str, Any] = dict(values or {})
        self._corpus: Corpus | None = None
        self._token_info: dict[tuple[bool, str], pd.DataFrame] = {}

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"Parameters({self.notebook!r}, {self.values!r})"

    @property
    def corpus(self) -> Corpus:
        """The corpus of the ``data_path`` parameter (loaded once)."""
        if self._corpus is None:
            self._corpus = load_corpus(self.values.get("data_path"))
        return self._corpus

    def token_info(self, bilingual: bool = False, tokenizer: str = "char") -> pd.DataFrame:
        """``corpus.token_info(bilingual=...)`` under ``tokenizer`` ('char' or 'bpe-V'),
        computed once per alphabet setting and tokenizer."""
        key = (bilingual, tokenizer)
        if key not in self._token_info:
            corpus = self.corpus.with_tokenizer(tokenizer)
            self._token_info[key] = corpus.token_info(bilingual=bilingual)
        return self._token_info[key]


# --- validators ------------------------------------------------------------------------


def check_device(device: str) -> str:
    """Validate ``device`` (auto, cpu, cuda, mps, optionally 'cuda:N') and its availability."""
    kind = str(device).split(":")[0] if isinstance(device, str) else device
    check_choice("device", kind, DEVICES)
    try:
        resolve_device(device)
    except ValueError as exc:  # valid name, but not on this machine
        reason = str(exc).split(": ", 1)[-1]  # drop resolve_device's own "invalid device=..."
        raise ParameterError("device", device, f"a device available here ({reason})") from None
    return device


def check_study(profile: str, seeds, device: str) -> Profile:
    """Validate the profile, seeds and device and return the profile (with the
    ``seeds`` if given), so that a typo fails before any work with a clear message."""
    study = get_profile(profile, seeds)
    check_device(device)
    return study


def _path(optional: bool) -> Validator:
    allowed = "a path (str or os.PathLike)" + (" or None" if optional else "")

    def check(name: str, value: Any, checked: Parameters) -> Path | None:
        if value is None and optional:
            return None
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            raise ParameterError(name, value, allowed)
        return Path(value)

    return check


def _flag(name: str, value: Any, checked: Parameters) -> bool:
    if not isinstance(value, bool):
        raise ParameterError(name, value, "True or False")
    return value


def _notebook_name(name: str, value: Any, checked: Parameters) -> str | None:
    if value is not None and not (isinstance(value, str) and NOTEBOOK_NAME.match(value)):
        raise ParameterError(name, value, "None or a notebook name such as '01_hypothesis'")
    return value


def _seeds(name: str, value: Any, checked: Parameters) -> tuple[int, ...] | None:
    return None if value is None else check_seeds(name, value)


def _ranged(check: Validator, low: float, high: float, closed=(True, True)) -> Validator:
    """``check``, marked with the range it allows (``limits``, and whether each end is
    included: ``closed``), so that the ranges can be listed and tested from the table."""
    check.limits, check.closed = (low, high), closed
    return check


def _integer(minimum: int, maximum: int) -> Validator:
    """An integer from ``minimum`` to ``maximum`` (both included)."""

    def check(name: str, value: Any, checked: Parameters) -> int:
        return check_int(name, value, minimum, maximum)

    return _ranged(check, minimum, maximum)


def _real(minimum: float, maximum: float, min_inclusive: bool = True) -> Validator:
    """A real number from ``minimum`` (excluded unless ``min_inclusive``) to ``maximum``."""

    def check(name: str, value: Any, checked: Parameters) -> float:
        return check_float(name, value, minimum, maximum, min_inclusive=min_inclusive)

    return _ranged(check, minimum, maximum, (min_inclusive, True))


def _projection_seed(name: str, value: Any, checked: Parameters) -> int:
    """A seed scikit-learn's projections take (and torch's probe): 0 .. 2**32 - 1."""
    return check_int(name, value, 0, PROJECTION_SEED_MAX)


_ranged(_projection_seed, 0, PROJECTION_SEED_MAX)


def _smoothing(name: str, value: Any, checked: Parameters) -> int:
    """A moving-average window from 1 to the logged points of the profile's
    single-language runs (a wider window averages nothing more)."""
    profile = get_profile(checked.get("profile", "smoke"))
    widest = max(1, profile.steps["single"] // profile.log_interval)
    try:
        return check_int(name, value, 1, widest)
    except ParameterError as exc:
        raise ParameterError(
            name, value, f"{exc.allowed} (the logged steps of a {profile.name} run)"
        ) from None


def _open_unit(name: str, value: Any, checked: Parameters) -> float:
    """Strictly between 0 and 1 (a nucleus that leaves something out)."""
    allowed = "a real number strictly between 0 and 1"
    try:
        value = check_float(name, value, 0.0, 1.0, min_inclusive=False)
    except ParameterError:
        raise ParameterError(name, value, allowed) from None
    if value >= 1.0:
        raise ParameterError(name, value, allowed)
    return value


_ranged(_open_unit, 0.0, 1.0, (False, False))


def _bounded_layout(name: str, value: Any, finite: bool) -> float:
    """A layout from 0 to ``LAYOUT_MAX``, or inf (plain cross-entropy) unless ``finite``."""
    allowed = f"a layout from 0 to {LAYOUT_MAX:g}" + ("" if finite else ", or inf (CE)")
    try:
        checked = check_layout(value, finite=finite)
    except ParameterError:
        raise ParameterError(name, value, allowed) from None
    if math.isfinite(checked) and checked > LAYOUT_MAX:
        raise ParameterError(name, value, allowed)
    return checked


def _layout(name: str, value: Any, checked: Parameters) -> float:
    """A layout from 0 to ``LAYOUT_MAX``, or inf (plain cross-entropy)."""
    return _bounded_layout(name, value, finite=False)


def _hns_layout(name: str, value: Any, checked: Parameters) -> float:
    """A finite layout from 0 to ``LAYOUT_MAX``: the HNS arm compared with CE."""
    return _bounded_layout(name, value, finite=True)


_ranged(_layout, 0.0, LAYOUT_MAX)
_ranged(_hns_layout, 0.0, LAYOUT_MAX)


def _layouts(name: str, value: Any, checked: Parameters) -> tuple[float, ...]:
    grid = layout.check_layouts(value)
    if any(math.isfinite(v) and v > LAYOUT_MAX for v in grid):
        raise ParameterError(
            name, value, f"a list of distinct layouts from 0 to {LAYOUT_MAX:g} that includes inf"
        )
    return grid


def _schedule(name: str, value: Any, checked: Parameters) -> layout.Schedule | None:
    schedule = layout.check_schedule(value)
    if schedule is not None and max(schedule.start, schedule.end) > LAYOUT_MAX:
        raise ParameterError(
            name, value, f"None or (kind, start, end) with start and end from 0 to {LAYOUT_MAX:g}"
        )
    return schedule


def _shown_layout(name: str, value: Any, checked: Parameters) -> float:
    """One of the swept ``layouts``. When the grid was changed and ``layout`` is still its
    default, the grid is what left it out: the error names ``layouts``, as it was given."""
    grid = checked.get("layouts", layout.DEFAULT_LAYOUTS)
    try:
        return layout.check_shown_layout(value, grid)
    except ParameterError as exc:
        grid_changed = tuple(grid) != tuple(layout.DEFAULT_LAYOUTS)
        if exc.name != "layout" or not grid_changed or value != SHOWN_LAYOUT_DEFAULT:
            raise
        raise ParameterError(
            "layouts", checked.given.get("layouts", grid),
            f"a grid that includes {name}={value!r}, the layout the static figures show "
            f"(or set {name} to one of " + ", ".join(f"{v:g}" for v in grid) + ")",
        ) from None  # fmt: skip


def _settings(name: str, value: Any, checked: Parameters) -> tuple[str, ...]:
    """A non-empty list of distinct settings of chapters 07 to 09 ('single', 'bilingual')."""
    allowed = "a non-empty list of distinct settings among " + ", ".join(field.FIELD_SETTINGS)
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ParameterError(name, value, allowed)
    if not all(isinstance(v, str) for v in value):  # (a list in the list is not hashable)
        raise ParameterError(name, value, allowed)
    if len(set(value)) != len(value) or not set(value) <= set(field.FIELD_SETTINGS):
        raise ParameterError(name, value, allowed)
    return tuple(value)


def _sizes(name: str, value: Any, checked: Parameters) -> tuple[int, ...] | None:
    """None (the profile's sizes) or distinct BPE vocabulary sizes the corpus supports
    (each tokenizer is trained here, so that a bad size fails before any run)."""
    return None if value is None else subword.check_sizes(name, value, checked.corpus)


def _perplexity(name: str, value: Any, checked: Parameters) -> float:
    """A real number > 0 and below the number of embedding rows (of the corpus, which is
    loaded only for a value that could be one)."""
    check_float(name, value, 0.0, min_inclusive=False)
    return projection.check_perplexity(value, len(checked.token_info(bilingual=True)))


def _n_rare(name: str, value: Any, checked: Parameters) -> int:
    """An integer >= 1 and below the number of symbols (of the corpus, loaded only for a
    value that could be one)."""
    check_int(name, value, 1)
    projection.rarest_base_tokens(checked.token_info(bilingual=True), value)
    return value


def _real_language(name: str, value: Any, checked: Parameters) -> str:
    """A real language whose text is installed (elotl): 'nahuatl', 'otomi' or 'mixtec'
    (chapter 10 shows the cipher beside it anyway)."""
    return check_installed_language(name, real_language.check_chapter_language(name, value))


def _alphabet(name: str, value: Any, checked: Parameters) -> str:
    """'disjoint' or 'shared': how the language's characters get their ids."""
    return check_alphabet(name, value)


# --- the table ----------------------------------------------------------------------------

# name -> (default, validator), in the order they are checked.
COMMON: dict[str, tuple[Any, Validator]] = {
    "profile": ("smoke", lambda name, value, checked: check_choice(name, value, PROFILE_NAMES)),
    "seeds": (None, _seeds),  # None: the profile's
    "device": ("auto", lambda name, value, checked: check_device(value)),
    "results_dir": ("../results", _path(optional=False)),  # the run store the notebooks share
    "data_path": (None, _path(optional=True)),  # None: $SELFISH_DATA, the cache or a download
    "progress": (True, _flag),  # progress bars while training
    "report_dir": (None, _path(optional=True)),  # set by the pipeline: figures and fragments
    "notebook_name": (None, _notebook_name),  # set by the pipeline: NN_name
}

# notebook -> {parameter -> validator}: the parameters its parameters cell defines, in the
# order they are checked (one may depend on those before it).
NOTEBOOKS: dict[str, dict[str, Validator]] = {
    "01_hypothesis": {"layout": _layout},
    "02_gradient_scenarios": {"layout": _hns_layout},
    "03_hns_training": {"layout": _hns_layout, "smoothing": _smoothing},
    "04_bilingual_simulation": {
        "layout": _hns_layout,
        "temperature": _real(*TEMPERATURE_RANGE),
        "top_p": _real(0.0, 1.0, min_inclusive=False),
        "sample_length": _integer(1, SAMPLE_LENGTH_MAX),
    },
    "05_embedding_geometry": {  # the checks against the corpus last: a typo fails sooner
        "layout": _hns_layout,
        "projection_seed": _projection_seed,
        "perplexity": _perplexity,
        "n_rare": _n_rare,
    },
    "06_layout_explorer": {
        "layouts": _layouts,
        "schedule": _schedule,
        "layout": _shown_layout,
        "top_p": _open_unit,
    },
    "07_hns_against_the_field": {"layout": _hns_layout, "settings": _settings},
    "08_subword_scale": {"layout": _hns_layout, "settings": _settings, "sizes": _sizes},
    "09_sampling": {
        "layout": _hns_layout,
        "settings": _settings,
        "temperature": _real(*TEMPERATURE_RANGE),
        "top_p": _open_unit,
        "sample_length": _integer(2, SAMPLE_LENGTH_MAX),
        "bins": _integer(1, BINS_MAX),
    },
    "10_real_language": {
        "language": _real_language,
        "alphabet": _alphabet,
        "layout": _hns_layout,
        "temperature": _real(*TEMPERATURE_RANGE),
        "top_p": _open_unit,
        "sample_length": _integer(1, SAMPLE_LENGTH_MAX),
    },
}


def own_parameters(notebook: str | None) -> tuple[str, ...]:
    """The parameters notebook ``notebook`` has besides the common ones (none if unknown)."""
    return tuple(NOTEBOOKS.get(notebook, {})) if notebook is not None else ()


def validate(notebook: str | None, values: Mapping[str, Any]) -> Parameters:
    """Validate the parameters of ``notebook`` found in ``values`` (e.g. its namespace).

    Every common parameter is checked, its default standing in when ``values``
    lacks it; then each of the notebook's own that ``values`` has (a notebook
    missing from ``NOTEBOOKS``, or None, has only the common ones). The first
    bad value raises ParameterError. Returns the validated values, with
    ``notebook_name`` set to ``notebook``.
    """
    checked = Parameters(notebook)
    values = {**values, "notebook_name": notebook}
    for name, (default, check) in COMMON.items():
        checked.given[name] = values.get(name, default)
        checked.values[name] = check(name, checked.given[name], checked)
    for name, check in NOTEBOOKS.get(notebook, {}).items() if notebook is not None else ():
        if name in values:
            checked.given[name] = values[name]
            checked.values[name] = check(name, values[name], checked)
    return checked
