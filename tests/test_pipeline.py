"""The pipeline: parameters are checked before any work, every notebook receives the
common parameters (its name included) and overrides of its own, a failing notebook is
reported precisely and leaves no report behind, and the summary gathers the notebooks'
fragments. The CLI maps bad parameters to one line on stderr and exit status 2."""

from __future__ import annotations

import json
import logging
import math

import jupytext
import nbformat
import numpy as np
import pytest

from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.validation import ParameterError
from selfish_lib.report import pipeline
from selfish_lib.report.cli import _parameter, main

OK_NOTEBOOK = """\
# %% [markdown]
# A notebook that records what it was given.

# %% tags=["parameters"]
profile = "paper"
layout: float = 2.0
unused = "default"

# %%
from selfish_lib.report.notebook import open_study

study = open_study(globals())
study.fragment({"profile": profile, "layout": layout, "name": study.name})
print(f"ran {profile} at {layout} in {device} as {notebook_name}")
"""

FAILING_NOTEBOOK = """\
# %% tags=["parameters"]
profile = "paper"

# %%
x = 1

# %%
raise ValueError("boom in " + profile)

# %%
print("never reached")
"""


def write_notebooks(folder, **notebooks):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in notebooks.items():
        (folder / f"{name}.py").write_text(text)
    return folder


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """One pipeline call over two notebooks: the first succeeds, the second fails."""
    root = tmp_path_factory.mktemp("pipeline")
    notebooks = write_notebooks(
        root / "notebooks", **{"01_ok": OK_NOTEBOOK, "02_fails": FAILING_NOTEBOOK}
    )
    with pytest.raises(pipeline.NotebookError) as info:
        pipeline.run_pipeline(
            profile="smoke",
            device="cpu",
            reports_dir=root / "reports",
            results_dir=root / "results",
            extra_parameters={"01_ok": {"layout": 0.5}},
            notebooks_dir=notebooks,
            progress=False,
        )
    return root / "reports" / "smoke", info.value


# --- validation before any work -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"profile": "nope"}, "profile"),
        ({"device": "tpu"}, "device"),
        ({"device": None}, "device"),
        ({"seeds": [-1]}, "seeds"),
        ({"seeds": []}, "seeds"),
        ({"seeds": [0, 0]}, "seeds"),
        ({"seeds": "0"}, "seeds"),
        ({"only": ["99_missing"]}, "only"),
        ({"extra_parameters": {"02_other": {"x": 1}}}, "extra_parameters"),
        ({"extra_parameters": {"01_ok": {"layuot": 1.0}}}, "extra_parameters['01_ok']"),
        ({"extra_parameters": {"01_ok": 1.0}}, "extra_parameters['01_ok']"),
    ],
)
def test_bad_parameters_raise_before_anything_is_written(tmp_path, kwargs, name):
    notebooks = write_notebooks(tmp_path / "nb", **{"01_ok": OK_NOTEBOOK})
    args = {"profile": "smoke", "device": "cpu", **kwargs}
    with pytest.raises(ParameterError) as info:
        pipeline.run_pipeline(
            **args,
            reports_dir=tmp_path / "reports",
            results_dir=tmp_path / "results",
            notebooks_dir=notebooks,
            progress=False,
        )
    assert info.value.name == name
    assert not (tmp_path / "reports").exists() and not (tmp_path / "results").exists()


def test_an_unknown_notebook_error_lists_the_notebooks_that_exist(tmp_path):
    notebooks = write_notebooks(tmp_path, **{"01_ok": OK_NOTEBOOK, "02_fails": FAILING_NOTEBOOK})
    with pytest.raises(ParameterError, match="01_ok, 02_fails"):
        pipeline.select_notebooks(["03_nope"], notebooks)
    assert [p.stem for p in pipeline.select_notebooks(["02"], notebooks)] == ["02_fails"]
    assert [p.stem for p in pipeline.select_notebooks(None, notebooks)] == ["01_ok", "02_fails"]


def test_an_unavailable_device_is_a_parameter_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ParameterError, match="available"):
        pipeline.check_device("cuda")
    assert pipeline.check_device("cpu") == "cpu"


def test_the_repository_notebooks_are_found():
    assert "01_hypothesis" in pipeline.available_notebooks()


# --- parameter injection --------------------------------------------------------------------


def test_parameter_names_reads_the_tagged_cell_only():
    nb = jupytext.reads(
        "# %%\nbefore = 1\n\n# %% tags=['parameters']\na = 1\nb: int = 2\nc = d = 3\n"
        "e.attr = 4\nprint(a)\n\n# %%\nafter = 5\n",
        fmt="py:percent",
    )
    assert pipeline.parameter_names(nb) == ["a", "b", "c", "d"]
    assert pipeline.parameter_names(jupytext.reads("# %%\nx = 1\n", fmt="py:percent")) == []


def test_every_common_parameter_and_the_name_are_injected_and_overrides_are_checked():
    common = {"profile": "smoke", "device": "cpu", "seeds": None}
    params = pipeline.notebook_parameters("01_x", ["profile", "layout"], common, {"layout": 1.0})
    assert params == {**common, "notebook_name": "01_x", "layout": 1.0}
    # The common parameters come from run_pipeline's arguments, not from overrides.
    with pytest.raises(ParameterError, match="device belongs to the whole reproduction"):
        pipeline.notebook_parameters("01_x", ["profile", "layout"], common, {"device": "cpu"})
    with pytest.raises(ParameterError, match="a parameter of 01_x: layout$"):
        pipeline.notebook_parameters("01_x", ["profile", "layout"], common, {"layot": 1.0})
    # A repository notebook's own parameters are those of its row in report.parameters.
    params = pipeline.notebook_parameters("06_layout_explorer", [], common, {"top_p": 0.5})
    assert params["top_p"] == 0.5 and params["notebook_name"] == "06_layout_explorer"
    assert set(pipeline.COMMON_PARAMETERS) >= {"profile", "device", "report_dir", "notebook_name"}


def test_the_executed_notebook_received_the_common_parameters_and_its_overrides(executed):
    report, _ = executed
    nb = nbformat.read(report / "01_ok.ipynb", as_version=4)
    (injected,) = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    for line in (
        'profile = "smoke"',
        "layout = 0.5",
        f'report_dir = "{report}"',
        'notebook_name = "01_ok"',
        'device = "cpu"',
        "seeds = None",
        "progress = False",
    ):
        assert line in injected.source
    assert "unused =" not in injected.source
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert any("ran smoke at 0.5 in cpu as 01_ok" in o.get("text", "") for o in outputs)


def test_papermill_is_not_told_that_a_common_parameter_is_unknown():
    keep = pipeline._CommonParameterFilter().filter

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("papermill", logging.WARNING, __file__, 1, message, (), None)

    assert not keep(record("Passed unknown parameter: device"))
    assert not keep(record("Passed unknown parameter: notebook_name"))
    assert keep(record("Passed unknown parameter: layuot"))
    assert keep(record("Executing notebook"))


# --- failures ---------------------------------------------------------------------------------


def test_a_failing_notebook_names_the_notebook_cell_and_exception(executed):
    _, error = executed
    assert error.notebook == "02_fails"
    assert error.ename == "ValueError" and error.evalue == "boom in smoke"
    assert error.first_line == 'raise ValueError("boom in " + profile)'
    message = str(error)
    for part in ("02_fails", f"cell {error.cell_index}", "raise ValueError", "boom in smoke"):
        assert part in message
    # The tagged cell, the injected one and `x = 1` ran before it.
    assert error.execution_count == 4


def test_a_failing_notebook_leaves_its_failed_copy_and_no_report(executed):
    report, error = executed
    assert error.kept == report / "02_fails.failed.ipynb"
    failed = nbformat.read(error.kept, as_version=4)
    assert any(o.get("output_type") == "error" for c in failed.cells for o in c.get("outputs", []))
    assert not (report / "02_fails.ipynb").exists()
    assert not (report / "02_fails.html").exists()
    assert not [p.name for p in report.iterdir() if p.name.startswith(".")]  # no temp files


def test_the_summary_records_both_notebooks_and_the_fragment(executed):
    report, _ = executed
    summary = json.loads((report / "summary.json").read_text())
    assert summary["profile"] == "smoke" and summary["device"] == "cpu"
    assert summary["seeds"] == list(get_profile("smoke").seeds)
    assert summary["library_version"]
    ok, failed = summary["notebooks"]["01_ok"], summary["notebooks"]["02_fails"]
    assert ok["status"] == "ok" and ok["seconds"] > 0 and ok["html"] == "01_ok.html"
    assert ok["parameters"]["layout"] == 0.5
    assert failed["status"] == "failed" and "boom in smoke" in failed["error"]
    assert summary["fragments"] == {
        "01_ok": {"profile": "smoke", "layout": 0.5, "name": "01_ok", "pipeline_check_only": True}
    }
    assert summary["finished"] is None  # the run did not complete


def test_the_successful_notebook_has_an_offline_report(executed):
    report, _ = executed
    html = (report / "01_ok.html").read_text()
    assert "ran smoke at 0.5" in html
    assert "<script src=" not in html
    assert "mathjax" not in html.lower() and "require.js" not in html


def test_render_reports_rewrites_the_html_without_executing(executed):
    report, _ = executed
    (report / "01_ok.html").unlink()
    assert pipeline.render_reports("smoke", report.parent) == [report / "01_ok.html"]
    assert "ran smoke at 0.5" in (report / "01_ok.html").read_text()
    with pytest.raises(ParameterError):
        pipeline.render_reports("nope", report.parent)


def test_render_reports_needs_executed_notebooks(tmp_path):
    with pytest.raises(FileNotFoundError, match="reproduce --profile smoke"):
        pipeline.render_reports("smoke", tmp_path)


# --- html and fragments --------------------------------------------------------------------------


def test_charts_and_widgets_are_made_offline_for_html():
    spec = {"mark": "bar", "title": "</script><b>x</b>", "data": {"values": []}}
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"state": {}}
    nb.cells.append(
        nbformat.v4.new_code_cell(
            outputs=[
                nbformat.v4.new_output(
                    "display_data",
                    {"application/vnd.vegalite.v5+json": spec, "image/svg+xml": "<svg>s</svg>"},
                ),
                nbformat.v4.new_output(
                    "display_data", {"application/vnd.jupyter.widget-view+json": {"model_id": "m"}}
                ),
            ]
        )
    )
    prepared, n_charts = pipeline.prepare_for_html(nb)
    assert n_charts == 1 and "widgets" not in prepared.metadata
    chart, widget = prepared.cells[0].outputs
    html = chart.data["text/html"]
    assert "<svg>s</svg>" in html and "</script><b>" not in html.split("application/json")[1]
    assert "JupyterLab" in widget.data["text/html"]
    assert "application/vnd.vegalite.v5+json" in nb.cells[0].outputs[0].data  # copy, not edit
    page = pipeline.notebook_to_html(nb, "t")
    assert "vegaEmbed" in page and "<script src=" not in page


def test_write_fragment_converts_values_and_is_a_no_op_without_a_dir(tmp_path):
    assert pipeline.write_fragment(None, "01_x", {"a": 1}) is None
    path = pipeline.write_fragment(
        tmp_path, "01_x", {"n": np.int64(3), "v": np.array([0.5]), "layout": math.inf}
    )
    assert json.loads(path.read_text()) == {"n": 3, "v": [0.5], "layout": "inf"}
    assert pipeline.read_fragments(tmp_path) == {"01_x": {"n": 3, "v": [0.5], "layout": "inf"}}
    with pytest.raises(ParameterError, match="name"):
        pipeline.write_fragment(tmp_path, "../escape", {})


# --- command line ---------------------------------------------------------------------------------


def test_cli_rejects_an_unknown_profile_with_one_line_and_status_2(capsys):
    assert main(["reproduce", "--profile", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "invalid profile='nope'" in err and "smoke" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["reproduce", "--profile", "smoke", "--device", "tpu"],
        ["reproduce", "--profile", "smoke", "--seeds", "-1"],
        ["reproduce", "--profile", "smoke", "--only", "99_nope"],
        ["reproduce", "--param", "no-equals-sign"],
        ["train", "--profile", "smoke", "--setting", "nope"],
        ["train", "--profile", "smoke", "--layout", "-1"],
        ["train", "--profile", "smoke", "--layout", "abc"],
        ["train", "--profile", "smoke", "--seed", "-3"],
        ["train", "--profile", "smoke", "--device", "tpu"],
        ["frobnicate"],
    ],
)
def test_cli_bad_parameters_exit_2_before_any_work(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert capsys.readouterr().err.strip()
    assert not list(tmp_path.iterdir())


def test_cli_param_values_are_python_literals():
    assert _parameter("01_hypothesis:layout=1.5") == ("01_hypothesis", "layout", 1.5)
    assert _parameter("01_hypothesis:layout=inf") == ("01_hypothesis", "layout", math.inf)
    assert _parameter("02_x:name=abc") == ("02_x", "name", "abc")


def test_cli_runs_and_report(tmp_path, capsys):
    assert main(["runs", "--results-dir", str(tmp_path)]) == 0
    assert "no completed runs" in capsys.readouterr().out
    assert main(["report", "--profile", "smoke", "--reports-dir", str(tmp_path)]) == 1
    assert "reproduce --profile smoke" in capsys.readouterr().err


def test_cli_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("reproduce", "report", "train", "runs"):
        assert command in out


@pytest.mark.parametrize(
    "text, expected",
    [
        ("06_layout_explorer:layouts=[1.0, 2.0, inf]", [1.0, 2.0, float("inf")]),
        ("01_hypothesis:layout=inf", float("inf")),
        ("01_hypothesis:layout=-Inf", float("-inf")),
        ("04_bilingual_simulation:top_p=0.5", 0.5),
        ("03_hns_training:note=informal", "informal"),
    ],
)
def test_notebook_parameters_parse_python_literals_and_inf(text, expected):
    from selfish_lib.report.cli import _parameter

    assert _parameter(text)[2] == expected
