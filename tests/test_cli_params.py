"""``selfish reproduce -p``: a notebook's own parameters, as papermill takes them.

``-p NAME=VALUE`` and ``-p NAME VALUE`` need no notebook prefix when ``--only``
selects one notebook; with several selected, a parameter without a prefix is one
line on stderr naming them, and exit status 2. ``--param NB:NAME=VALUE`` (NB the
full name or its number) keeps working. The pipeline itself is replaced by a
recorder: these tests only check what reaches it.
"""

from __future__ import annotations

import math

import pytest

from selfish_lib.report import cli
from selfish_lib.report.cli import _parameter, main
from selfish_lib.report.pipeline import available_notebooks


@pytest.fixture
def pipeline_calls(monkeypatch):
    """The keyword arguments of every run_pipeline call ``main`` makes (nothing runs)."""
    calls: list[dict] = []

    def record(**kwargs):
        calls.append(kwargs)
        return []

    monkeypatch.setattr(cli, "run_pipeline", record)
    return calls


def reproduce(*argv: str) -> list[str]:
    return ["reproduce", "--profile", "smoke", "--device", "cpu", *argv]


@pytest.mark.parametrize(
    "argv",
    [
        ["--only", "03", "-p", "layout=4"],
        ["--only", "03", "-p", "layout", "4"],
        ["--only", "03_hns_training", "--param", "layout=4"],
        ["-p", "layout", "4", "--only", "03"],
        ["--only", "03", "--param", "03_hns_training:layout=4"],
        ["--only", "03", "--param", "03:layout=4"],
        ["--only", "03", "-p", "03:layout", "4"],
        ["--param", "03_hns_training:layout=4", "--only", "03"],
    ],
)
def test_one_notebook_selected_takes_a_parameter_with_or_without_prefix(pipeline_calls, argv):
    assert main(reproduce(*argv)) == 0
    assert [call["extra_parameters"] for call in pipeline_calls] == [
        {"03_hns_training": {"layout": 4}}
    ]


def test_the_prefixed_form_still_works_for_every_notebook(pipeline_calls):
    argv = reproduce(
        "--param", "03_hns_training:layout=4.0",
        "--param", "06_layout_explorer:layouts=[1.0, 2.0, inf]",
        "-p", "01:layout", "inf",
    )  # fmt: skip
    assert main(argv) == 0
    assert pipeline_calls[0]["extra_parameters"] == {
        "03_hns_training": {"layout": 4.0},
        "06_layout_explorer": {"layouts": [1.0, 2.0, math.inf]},
        "01_hypothesis": {"layout": math.inf},
    }
    assert pipeline_calls[0]["only"] is None


def test_values_given_apart_are_python_literals_too(pipeline_calls):
    argv = reproduce("--only", "06", "-p", "layouts", "[1.0, inf]", "-p", "schedule", "None")
    assert main(argv) == 0
    assert pipeline_calls[0]["extra_parameters"] == {
        "06_layout_explorer": {"layouts": [1.0, math.inf], "schedule": None}
    }


@pytest.mark.parametrize(
    "only, chosen",
    [
        (["01", "03"], ["01_hypothesis", "03_hns_training"]),
        ([], list(available_notebooks())),  # no --only: every notebook
    ],
)
def test_an_unprefixed_parameter_with_several_notebooks_names_them(
    pipeline_calls, capsys, only, chosen
):
    argv = reproduce(*(["--only", *only] if only else []), "-p", "layout", "4")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("selfish reproduce: invalid --param='layout'")
    assert "NOTEBOOK:layout=VALUE" in err
    for name in chosen:
        assert name in err
    assert not pipeline_calls


@pytest.mark.parametrize(
    "param",
    [
        ["layout"],  # no value
        ["layout=4", "5"],  # a value twice
        ["layout", "4", "5"],
        [":layout=4"],  # an empty notebook
        ["03:=4"],  # an empty name
        ["not a name=4"],
    ],
)
def test_malformed_parameters_exit_2_before_any_work(pipeline_calls, capsys, param):
    assert main(reproduce("--only", "03", "-p", *param)) == 2
    assert "--param" in capsys.readouterr().err
    assert not pipeline_calls


def test_a_prefix_for_a_notebook_not_selected_is_refused_by_the_pipeline(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    argv = reproduce("--only", "03", "-p", "01:layout=1.0", "--reports-dir", str(tmp_path / "r"))
    assert main([*argv, "--results-dir", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "01_hypothesis" in err and "03_hns_training" in err
    assert not list(tmp_path.iterdir())


def test_parameter_parsing():
    assert _parameter("layout=4") == (None, "layout", 4)
    assert _parameter("layout", "4") == (None, "layout", 4)
    assert _parameter("03:layout", "inf") == ("03", "layout", math.inf)
    assert _parameter("01_hypothesis:layout=1.5") == ("01_hypothesis", "layout", 1.5)
    assert _parameter("note", "a=b") == (None, "note", "a=b")
    assert _parameter("note=a=b") == (None, "note", "a=b")
