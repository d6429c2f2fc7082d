"""The study object a notebook opens (report.notebook) and the table of notebook
parameters (report.parameters): every parameter is validated once, before any work,
with an error that names it; validated values go back into the namespace; the
notebook knows its name; figures and the summary fragment land under that name."""

from __future__ import annotations

import json
import math
from pathlib import Path

import altair as alt
import pytest

from selfish_lib.engine.objectives import CrossEntropy, HardNegatives
from selfish_lib.engine.validation import ParameterError
from selfish_lib.report import notebook, parameters, pipeline
from selfish_lib.report.notebook import NotebookStudy, notebook_name, open_study
from selfish_lib.report.plan import declared_runs
from selfish_lib.study.layout import Schedule

NOTEBOOKS = pipeline.available_notebooks()


def cell_defaults(name: str) -> dict:
    """The namespace a notebook's parameters cell leaves behind."""
    namespace: dict = {}
    exec(parameters_cell(name), namespace)
    namespace.pop("__builtins__")
    return namespace


def parameters_cell(name: str) -> str:
    nb = pipeline.read_notebook(NOTEBOOKS[name])
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return cell.source


def namespace_of(name: str, **values) -> dict:
    return {**cell_defaults(name), "notebook_name": name, "device": "cpu", **values}


# --- the table --------------------------------------------------------------------------------


def test_the_table_has_a_row_for_every_notebook_matching_its_parameters_cell():
    assert set(parameters.NOTEBOOKS) == set(NOTEBOOKS)
    for name, path in NOTEBOOKS.items():
        defined = pipeline.parameter_names(pipeline.read_notebook(path))
        own = {n for n in defined if n not in parameters.COMMON}
        assert own == set(parameters.NOTEBOOKS[name]), name


def test_every_notebook_default_is_valid():
    for name in NOTEBOOKS:
        checked = parameters.validate(name, namespace_of(name))
        assert checked["notebook_name"] == name
        assert set(parameters.NOTEBOOKS[name]) <= set(checked)


def test_missing_common_parameters_take_their_defaults():
    checked = parameters.validate(None, {})
    assert dict(checked) == {name: default for name, (default, _) in parameters.COMMON.items()} | {
        "results_dir": Path("../results")
    }


@pytest.mark.parametrize(
    ("name", "values", "bad"),
    [
        ("01_hypothesis", {"profile": "nope"}, "profile"),
        ("01_hypothesis", {"device": "tpu"}, "device"),
        ("01_hypothesis", {"seeds": [0, 0]}, "seeds"),
        ("01_hypothesis", {"progress": "yes"}, "progress"),
        ("01_hypothesis", {"results_dir": 3}, "results_dir"),
        ("01_hypothesis", {"data_path": ""}, "data_path"),
        ("01_hypothesis", {"layout": -1.0}, "layout"),
        ("01_hypothesis", {"notebook_name": "hypothesis"}, "notebook_name"),
        ("02_gradient_scenarios", {"layout": math.inf}, "layout"),
        ("03_hns_training", {"smoothing": 0}, "smoothing"),
        ("03_hns_training", {"smoothing": 2.5}, "smoothing"),
        ("04_bilingual_simulation", {"temperature": 0.0}, "temperature"),
        ("04_bilingual_simulation", {"top_p": 1.5}, "top_p"),
        ("04_bilingual_simulation", {"sample_length": 0}, "sample_length"),
        ("05_embedding_geometry", {"projection_seed": -1}, "projection_seed"),
        ("06_layout_explorer", {"layouts": [1.0, 2.0]}, "layouts"),
        ("06_layout_explorer", {"schedule": ("cosine", 2.0, 2.0)}, "schedule"),
        ("06_layout_explorer", {"layout": 5.0}, "layout"),
        ("06_layout_explorer", {"layout": 1.0, "layouts": [2.0, math.inf]}, "layout"),
        ("06_layout_explorer", {"top_p": 1.0}, "top_p"),
    ],
)
def test_a_bad_parameter_fails_in_the_setup_cell_before_any_work(monkeypatch, name, values, bad):
    def no_corpus(*args, **kwargs):
        raise AssertionError("the corpus was loaded before the parameters were checked")

    monkeypatch.setattr(parameters, "load_corpus", no_corpus)
    namespace = namespace_of(name, **values)
    before = dict(namespace)
    with pytest.raises(ParameterError) as info:
        open_study(namespace)
    assert info.value.name == bad
    message = str(info.value)
    assert f"invalid {bad}=" in message and "expected" in message
    assert namespace == before  # nothing written back


@pytest.mark.parametrize(
    ("values", "bound"),
    [
        ({"perplexity": 130.0}, "perplexity=130.0: expected a real number > 0 and < 130"),
        ({"n_rare": 65}, "n_rare=65: expected an integer >= 1 and < 65"),
    ],
)
def test_checks_against_the_corpus_say_what_the_corpus_allows(values, bound):
    with pytest.raises(ParameterError, match=f"invalid {bound}"):
        open_study(namespace_of("05_embedding_geometry", **values))


def test_the_pipeline_can_check_a_notebook_override_on_its_own():
    with pytest.raises(ParameterError, match="one of the swept layouts"):
        parameters.validate("06_layout_explorer", {"layout": 5.0})
    assert parameters.validate("06_layout_explorer", {"layout": 12})["layout"] == 12.0


# --- the notebook's name ------------------------------------------------------------------------


def test_the_name_is_the_injected_parameter_else_the_session_path():
    assert notebook_name({"notebook_name": "03_hns_training", "__session__": "x/01_a.py"}) == (
        "03_hns_training"
    )
    assert notebook_name({"__session__": "/home/u/notebooks/03_hns_training.ipynb"}) == (
        "03_hns_training"
    )
    assert notebook_name({"__session__": "notebooks/05_embedding_geometry.py"}) == (
        "05_embedding_geometry"
    )
    assert notebook_name({"__session__": "Untitled1.ipynb"}) is None
    assert notebook_name({}) is None


def test_the_pipeline_injects_the_name_into_every_notebook():
    common = {"profile": "smoke", "report_dir": "/r"}
    for name, path in NOTEBOOKS.items():
        names = pipeline.parameter_names(pipeline.read_notebook(path))
        assert "notebook_name" not in names  # not in the cell: injected all the same
        params = pipeline.notebook_parameters(name, names, common)
        assert params["notebook_name"] == name


def test_without_a_name_only_the_common_parameters_are_checked():
    checked = parameters.validate(None, {"layout": -1, "device": "cpu"})
    assert "layout" not in checked and checked["notebook_name"] is None


# --- an opened study ----------------------------------------------------------------------------


@pytest.fixture
def opened(tmp_path):
    namespace = namespace_of(
        "03_hns_training", layout=2, report_dir=str(tmp_path), results_dir=str(tmp_path / "r")
    )
    return open_study(namespace), namespace


def test_validated_values_are_written_back_into_the_namespace(opened):
    study, namespace = opened
    assert isinstance(study, NotebookStudy) and "03_hns_training" in repr(study)
    assert namespace["layout"] == 2.0 and isinstance(namespace["layout"], float)
    assert namespace["notebook_name"] == "03_hns_training"
    assert namespace["seeds"] is None and namespace["progress"] is True  # common defaults
    assert study.params["layout"] == 2.0 and study.params["smoothing"] == 5
    assert study.name == "03_hns_training" and study.profile.name == "smoke"
    assert study.seeds == study.profile.seeds and str(study.device) == "cpu"
    assert study.corpus.vocab_size == 65
    assert len(study.token_info(bilingual=True)) == 130
    assert study.token_info() is study.token_info()  # computed once


def test_a_schedule_parameter_becomes_a_schedule():
    namespace = namespace_of("06_layout_explorer", seeds=[3])
    study = open_study(namespace)
    assert namespace["schedule"] == Schedule("cosine", 8.0, 2.0)
    assert namespace["layouts"][-1] == math.inf and study.seeds == (3,)


def test_fragment_writes_the_notebooks_summary_file(opened, tmp_path):
    study, _ = opened  # the smoke profile: the fragment says its numbers check the pipeline
    path = study.fragment({"layout": math.inf, "n": 3})
    assert path == tmp_path / "03_hns_training.summary.json"
    written = {"profile": "smoke", "layout": "inf", "n": 3, "pipeline_check_only": True}
    assert json.loads(path.read_text()) == written
    assert pipeline.read_fragments(tmp_path) == {"03_hns_training": written}


def test_a_fragment_of_another_profile_is_written_as_given(tmp_path):
    study = open_study(namespace_of("03_hns_training", profile="paper", report_dir=tmp_path))
    path = study.fragment({"layout": 2.0})
    assert json.loads(path.read_text()) == {"layout": 2.0}


# --- the smoke profile says what its numbers are ------------------------------------------------


def opened_showing(monkeypatch, **values) -> tuple[NotebookStudy, list]:
    """A study opened from a namespace without training, and what open_study displayed."""
    shown: list = []
    monkeypatch.setattr(notebook, "display", shown.append)
    return open_study(namespace_of("03_hns_training", **values)), shown


def test_the_smoke_profile_opens_with_a_banner(monkeypatch):
    study, shown = opened_showing(monkeypatch)
    assert study.profile.name == "smoke" and study.pipeline_check_only
    (banner,) = shown
    assert isinstance(banner, notebook.Markdown)
    assert banner.data.startswith("> ") and "Smoke profile" in banner.data
    assert "only check that the pipeline runs" in banner.data and "not results" in banner.data


@pytest.mark.parametrize("profile", ["paper", "large"])
def test_other_profiles_open_without_a_banner(monkeypatch, profile):
    study, shown = opened_showing(monkeypatch, profile=profile)
    assert shown == [] and not study.pipeline_check_only
    assert notebook.banner(profile) is None
    assert notebook.banner("smoke") is not None


def test_the_conclusion_carries_the_note_only_in_the_smoke_profile(monkeypatch):
    from selfish_lib.study.readings import PIPELINE_CHECK_NOTE, Reading

    reading = Reading("- HNS is **better** for ranks 61-65.", {"verdict": "better"})
    smoke, _ = opened_showing(monkeypatch)
    text = smoke.conclusion(reading)
    assert text.startswith(f"> *{PIPELINE_CHECK_NOTE}*") and text.endswith(reading.text)
    assert smoke.conclusion("plain text").endswith("plain text")
    paper, _ = opened_showing(monkeypatch, profile="paper")
    assert paper.conclusion(reading) == reading.text
    with pytest.raises(ParameterError, match="reading"):
        paper.conclusion(3)


def test_without_a_report_dir_nothing_is_written(tmp_path):
    study = open_study(namespace_of("03_hns_training", notebook_name=None))
    chart = alt.Chart(alt.Data(values=[{"x": 1}])).mark_point().encode(x="x:Q")
    assert study.fragment({"a": 1}) is None and study.figure(chart, "c") is chart


def test_a_report_dir_needs_a_name(tmp_path):
    study = open_study(namespace_of("03_hns_training", notebook_name=None, report_dir=tmp_path))
    with pytest.raises(ParameterError, match="notebook_name"):
        study.fragment({"a": 1})


def test_figures_keep_the_report_names(opened, tmp_path):
    study, _ = opened
    chart = alt.Chart(alt.Data(values=[{"x": 1}])).mark_point().encode(x="x:Q")
    assert study.figure(chart, "training_curves") is chart
    saved = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert saved == ["03_training_curves.png", "03_training_curves.svg"]
    with pytest.raises(ParameterError, match="name"):
        study.figure(chart, "../escape")


def test_planned_runs_train_ce_against_hns_at_the_notebooks_layout(opened, monkeypatch):
    study, _ = opened
    calls, shown = [], []

    def fake_grid(configs, **kwargs):
        calls.append((configs, kwargs))
        return {key: f"run {key}" for key in configs}

    monkeypatch.setattr(notebook, "get_or_train_grid", fake_grid)
    monkeypatch.setattr(notebook, "describe_runs", lambda runs, info: (sorted(runs), len(info)))
    monkeypatch.setattr(notebook, "display", shown.append)
    runs = study.planned_runs()
    ((configs, kwargs),) = calls
    assert set(runs) == {(arm, seed) for arm in ("CE", "HNS") for seed in study.seeds}
    assert configs[("CE", 0)].objective == CrossEntropy()
    assert configs[("HNS", 1)].objective == HardNegatives(2.0)
    assert kwargs["corpus"] is study.corpus and kwargs["device"] == "cpu"
    assert kwargs["results_dir"] == study.results_dir and kwargs["progress"] is True
    assert shown == [(sorted(runs), 65)]  # one row per run, single-language token table
    assert configs == declared_runs("03_hns_training", study.params)["runs"]  # the plan's
    with pytest.raises(ParameterError, match="part='single'"):
        study.planned_runs("single")


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_a_notebooks_setup_is_its_imports_and_the_study(name):
    cells = [c for c in pipeline.read_notebook(NOTEBOOKS[name]).cells if c.cell_type == "code"]
    index = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    setup = [line for line in cells[index + 1].source.splitlines() if line.strip()]
    assert len(setup) <= 3, setup
    assert setup[-1].startswith("study = open_study(globals())")
    assert all(line.startswith("from selfish_lib.") for line in setup[:-1])
