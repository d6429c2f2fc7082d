"""The study object of a notebook: its parameters checked once, its profile, device and
corpus, the runs it compares, and where its figures and summary numbers go.

A notebook's setup, after its parameters cell, is its chapter's imports and one line::

    from selfish_lib.report.notebook import Markdown, charts, display, open_study
    from selfish_lib.study import frequency as cmp

    study = open_study(globals())

``open_study`` validates every parameter of the notebook (the common ones and
its own, see ``report.parameters``) before any work, writes the validated
values back into the namespace (layout 2 becomes 2.0), enables the offline
chart renderer, resolves the device and loads the corpus. The notebook's name
(``NN_name``) is the ``notebook_name`` parameter the pipeline injects; in
JupyterLab it is read from the notebook path ipykernel keeps in
``__session__``; elsewhere it is None and only the common parameters are
checked. The name prefixes the figures (``03_training_curves``) and names the
summary fragment (``03_hns_training.summary.json``).

In a profile whose numbers only check the pipeline (the smoke profile,
``readings.pipeline_check_only``), ``open_study`` displays a banner saying so at
the top of the notebook (``banner``), every fragment records the profile and
``"pipeline_check_only": true``, and ``study.conclusion`` puts the same note
before the notebook's closing reading: its verdicts are computed like any others,
and marked as what they are.

This module also hands the notebooks what every one of them displays with:
IPython's ``Markdown`` and ``display``, ``charts`` and ``widgets``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path, PurePath
from typing import Any

import altair as alt
import pandas as pd
import torch
from IPython.display import Markdown, display

from ..engine.corpus import Corpus
from ..engine.profiles import Profile, get_profile
from ..engine.runs import describe_runs, get_or_train_grid
from ..engine.training import resolve_device
from ..engine.validation import ParameterError
from ..study.readings import PIPELINE_CHECK_NOTE, Reading, pipeline_check_only
from . import charts, widgets
from .parameters import NOTEBOOK_NAME, Parameters, validate
from .pipeline import write_fragment
from .plan import declared_runs

FIGURE_NAME = re.compile(r"^\w+$")


def banner(profile: str) -> Markdown | None:
    """The banner a notebook opens with in ``profile``: a Markdown blockquote saying that
    its numbers only check the pipeline, for the smoke profile; None for the others."""
    if not pipeline_check_only(profile):
        return None
    return Markdown(f"> ⚠️ **{PIPELINE_CHECK_NOTE}**")


def notebook_name(namespace: Mapping[str, Any]) -> str | None:
    """The notebook's ``NN_name``: the ``notebook_name`` parameter if set, else the stem of
    the ``__session__`` path when it is a notebook's, else None."""
    name = namespace.get("notebook_name")
    if name is not None:
        return name
    session = namespace.get("__session__")
    if isinstance(session, str) and session:
        stem = PurePath(session).stem
        if NOTEBOOK_NAME.match(stem):
            return stem
    return None


class NotebookStudy:
    """What the cells of one notebook share.

    Attributes: ``params`` (every validated parameter, by name), ``name`` (the
    notebook's ``NN_name`` or None), ``profile`` (the Profile, with the
    ``seeds`` parameter applied), ``device`` (resolved), ``corpus``,
    ``results_dir``, ``report_dir`` (None: figures and fragment are not
    written) and ``progress``.
    """

    def __init__(self, params: Parameters) -> None:
        self.params = params
        self.name: str | None = params["notebook_name"]
        self.profile: Profile = get_profile(params["profile"], params["seeds"])
        self.device: torch.device = resolve_device(params["device"])
        self.results_dir: Path = params["results_dir"]
        self.report_dir: Path | None = params["report_dir"]
        self.progress: bool = params["progress"]
        self.corpus: Corpus = params.corpus

    def __repr__(self) -> str:
        return (
            f"NotebookStudy({self.name!r}, profile={self.profile.name!r}, "
            f"seeds={self.seeds}, device={str(self.device)!r})"
        )

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds the notebook runs over (the profile's unless ``seeds`` was given)."""
        return self.profile.seeds

    def token_info(self, bilingual: bool = False, tokenizer: str = "char") -> pd.DataFrame:
        """The corpus's token table (both alphabets if ``bilingual``) under ``tokenizer``
        ('char' or 'bpe-V'), computed once."""
        return self.params.token_info(bilingual, tokenizer)

    def runs(self, configs: Mapping[Any, Any], *, show: bool = True) -> dict:
        """Train what is missing of ``configs`` (key -> TrainConfig) and load the rest from the
        run store; display one row per run (``describe_runs``) unless ``show`` is False."""
        runs = get_or_train_grid(
            dict(configs),
            corpus=self.corpus,
            results_dir=self.results_dir,
            device=self.params["device"],
            progress=self.progress,
        )
        if show:
            bilingual = any(config.bilingual for config in configs.values())
            for tokenizer in dict.fromkeys(c.tokenizer for c in configs.values()):
                part = {k: runs[k] for k, c in configs.items() if c.tokenizer == tokenizer}
                display(describe_runs(part, self.token_info(bilingual, tokenizer)))
        return runs

    def planned_runs(self, part: str = "runs", *, show: bool = True) -> dict:
        """The runs this notebook declares in ``report.plan`` (its ``part``, 'runs' unless
        it declares more), for its parameters: the list ``selfish plan`` shows and
        ``selfish reproduce`` trains before the notebook runs, so here they load."""
        grids = declared_runs(self.name, self.params)
        if part not in grids:
            allowed = f"a part {self.name or 'this notebook'} declares: " + (
                ", ".join(grids) or "(none: report.plan.DECLARED has no runs for it)"
            )
            raise ParameterError("part", part, allowed)
        return self.runs(grids[part], show=show)

    def figure(self, chart: alt.TopLevelMixin, name: str) -> alt.TopLevelMixin:
        """Save ``chart`` as the report figure ``<NN>_<name>`` (``figures/03_training_curves.svg``
        and ``.png`` for notebook 03) and return it, so that a cell can end with it."""
        if not (isinstance(name, str) and FIGURE_NAME.match(name)):
            raise ParameterError("name", name, "a figure name of letters, digits and '_'")
        if self.report_dir is not None:
            number = self._require_name().split("_", 1)[0]
            charts.save_figure(chart, self.report_dir, f"{number}_{name}")
        return chart

    @property
    def pipeline_check_only(self) -> bool:
        """Whether this profile's numbers only check the pipeline (the smoke profile)."""
        return pipeline_check_only(self.profile.name)

    def fragment(self, data: Mapping[str, Any]) -> Path | None:
        """Write ``data`` as ``<report_dir>/<NN_name>.summary.json`` for the pipeline's summary;
        returns the path, or None when there is no report_dir (an interactive run).

        In a profile that only checks the pipeline, the fragment also records the
        ``profile`` (unless ``data`` has one) and ``"pipeline_check_only": true``.
        """
        if self.report_dir is None:
            return None
        if self.pipeline_check_only:
            data = {"profile": self.profile.name, **data, "pipeline_check_only": True}
        return write_fragment(self.report_dir, self._require_name(), data)

    def conclusion(self, reading: Reading | str) -> str:
        """The Markdown a notebook ends with: ``reading``'s text (or ``reading`` itself),
        after a one-line note in a profile whose numbers only check the pipeline."""
        text = reading.text if isinstance(reading, Reading) else reading
        if not isinstance(text, str):
            raise ParameterError("reading", reading, "a Reading or a Markdown string")
        if self.pipeline_check_only:
            return f"> *{PIPELINE_CHECK_NOTE}*\n\n{text}"
        return text

    def _require_name(self) -> str:
        if self.name is None:
            raise ParameterError(
                "notebook_name", None, "a notebook name such as '01_hypothesis' with a report_dir"
            )
        return self.name


def open_study(namespace: MutableMapping[str, Any]) -> NotebookStudy:
    """The study object of the notebook whose namespace (``globals()``) is ``namespace``.

    Validates every parameter first (ParameterError names the first bad one),
    then writes the validated values into ``namespace``, enables the offline
    chart renderer, resolves the device and loads the corpus; in the smoke
    profile it then displays the ``banner`` that says its numbers only check
    the pipeline.
    """
    params = validate(notebook_name(namespace), namespace)
    namespace.update(params)
    charts.use_offline_renderer()
    study = NotebookStudy(params)
    shown = banner(study.profile.name)
    if shown is not None:
        display(shown)
    return study


__all__ = [
    "Markdown",
    "NotebookStudy",
    "banner",
    "charts",
    "display",
    "notebook_name",
    "open_study",
    "widgets",
]
