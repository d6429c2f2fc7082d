"""What a hostile but fair user tries, refused or repaired as the README promises.

Every parameter of every notebook's table (``report.parameters``, the one validator
table) refuses huge integers, huge floats, integers beyond 64 bits and deep nesting
with a ParameterError that names it; every number has a range a run can honour;
a ``-p`` nested past what Python reads is one error naming the parameter, and a
repeated ``-p`` is refused naming it. Seeds are bounded (0 <= seed < 2**63) wherever
they enter, ``--jobs`` by the machine. A damaged ``summary.json`` or ``claims.json``
is set aside and rebuilt from the chapters' own outputs with one line saying so, and
claims rows without a source are dropped with a line.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest

from selfish_lib.engine.validation import INT_MAX, ParameterError, check_seed, check_seeds
from selfish_lib.report import parameters, pipeline
from selfish_lib.report.cli import _extra_parameters, _parameter, main
from selfish_lib.report.plan import parameter_defaults
from selfish_lib.study import claims

# --- every parameter of the table -----------------------------------------------------------

# (notebook, parameter): the notebooks' own, then the common ones (checked for any notebook;
# notebook_name is set by validate itself, whatever the values hold)
OWN = [(notebook, name) for notebook, own in parameters.NOTEBOOKS.items() for name in own]
COMMON = [("01_hypothesis", name) for name in parameters.COMMON if name != "notebook_name"]
IDS = [f"{notebook}:{name}" for notebook, name in OWN + COMMON]


def nested(depth: int) -> list:
    value: list = [1.0]
    for _ in range(depth):
        value = [value]
    return value


HOSTILE = {
    "huge int": 10**400,
    "huge negative int": -(10**400),
    "int past 64 bits": 2**63,
    "int of 10**18": 10**18,
    "huge float": 1e300,
    "huge int in a list": [10**400],
    "deeply nested list": nested(3000),
}


def test_the_table_lists_every_notebook_and_the_cases_cover_it():
    assert {notebook for notebook, _ in OWN} == set(parameters.NOTEBOOKS)
    assert len(OWN) == sum(len(own) for own in parameters.NOTEBOOKS.values())


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize(("notebook", "name"), OWN + COMMON, ids=IDS)
def test_every_parameter_refuses_hostile_values_naming_itself(notebook, name, value):
    with pytest.raises(ParameterError) as err:
        parameters.validate(notebook, {name: value})
    assert err.value.name == name
    message = str(err.value)
    assert message.startswith(f"invalid {name}=") and "expected" in message
    assert len(message) < 400, message  # the value is shown shortened, never 400 digits


@pytest.mark.parametrize(("notebook", "name"), OWN, ids=[f"{n}:{p}" for n, p in OWN])
def test_a_parameter_nested_past_what_python_reads_is_one_error_naming_it(notebook, name):
    with pytest.raises(Exception) as err:  # argparse's type error: a usage error naming it
        _parameter(f"{notebook}:{name}=" + "-" * 3000 + "1")
    assert type(err.value).__name__ == "ArgumentTypeError"
    assert f"{name}=" in str(err.value) and "nested too deeply" in str(err.value)
    assert len(str(err.value)) < 400
    # brackets nested as deep are no literal Python reads either: a string, refused by name
    _, _, text = _parameter(f"{name}=" + "[" * 3000 + "]" * 3000)
    assert isinstance(text, str)
    with pytest.raises(ParameterError) as refused:
        parameters.validate(notebook, {name: text})
    assert refused.value.name == name


@pytest.mark.parametrize(("notebook", "name"), OWN, ids=[f"{n}:{p}" for n, p in OWN])
def test_a_repeated_parameter_is_refused_naming_it(notebook, name):
    given = [(None, name, 1), (notebook[:2], name, 2)]  # the same one, written two ways
    with pytest.raises(ParameterError) as err:
        _extra_parameters(given, [notebook])
    assert f"{notebook}:{name}" in str(err.value) and "once" in str(err.value)
    assert _extra_parameters(given[:1], [notebook]) == {notebook: {name: 1}}


# --- the ranges: each number one a run can honour -------------------------------------------

LIMITED = [
    (notebook, name, check.limits, check.closed)
    for notebook, own in parameters.NOTEBOOKS.items()
    for name, check in own.items()
    if hasattr(check, "limits")
]


def test_every_number_of_the_notebooks_has_a_stated_range():
    numbers = {(n, p) for n, p, _, _ in LIMITED}
    # the corpus decides perplexity and n_rare (below its rows and symbols), the profile
    # the smoothing window, 06's grid the layout its figures show: tested apart
    decided_elsewhere = {
        ("05_embedding_geometry", "perplexity"),
        ("05_embedding_geometry", "n_rare"),
        ("03_hns_training", "smoothing"),
        ("06_layout_explorer", "layout"),
    }
    lists = {"layouts", "schedule", "settings", "sizes"}
    words = {"language", "alphabet"}  # one of a few names, no number
    numeric = {(n, p) for n, p in OWN if p not in lists | words}
    assert numeric == numbers | decided_elsewhere
    assert all(math.isfinite(high) for _, _, (_, high), _ in LIMITED)


def step(value, up: bool):
    """The next value above (``up``) or below ``value`` (an int's by one)."""
    if isinstance(value, int):
        return value + (1 if up else -1)
    return math.nextafter(value, math.inf if up else -math.inf)


@pytest.mark.parametrize(("notebook", "name", "limits", "closed"), LIMITED,
                         ids=[f"{n}:{p}" for n, p, _, _ in LIMITED])  # fmt: skip
def test_each_range_takes_its_ends_and_refuses_past_them(notebook, name, limits, closed):
    for end, up, included in zip(limits, (False, True), closed, strict=True):
        inside, outside = (end, step(end, up)) if included else (step(end, not up), end)
        assert parameters.validate(notebook, {name: inside})[name] == inside
        with pytest.raises(ParameterError) as err:
            parameters.validate(notebook, {name: outside})
        assert err.value.name == name


@pytest.mark.parametrize(("profile", "widest"), [("smoke", 6), ("paper", 200)])
def test_the_smoothing_window_is_at_most_the_logged_curve(profile, widest):
    values = {"profile": profile, "smoothing": widest}
    assert parameters.validate("03_hns_training", values)["smoothing"] == widest
    with pytest.raises(ParameterError, match=f"<= {widest} .the logged steps of a {profile}"):
        parameters.validate("03_hns_training", {**values, "smoothing": widest + 1})


def test_notebook_06s_shown_layout_default_is_the_tables():
    source = pipeline.parameters_source(pipeline.read_notebook(
        pipeline.NOTEBOOKS_DIR / "06_layout_explorer.py"))  # fmt: skip
    assert parameter_defaults(source)["layout"] == parameters.SHOWN_LAYOUT_DEFAULT


def test_a_grid_that_leaves_out_the_shown_layout_names_the_grid_as_given():
    with pytest.raises(ParameterError) as err:
        parameters.validate("06_layout_explorer", {"layouts": [1.0, math.inf], "layout": 2.0})
    assert err.value.name == "layouts" and err.value.value == [1.0, math.inf]
    assert "layout=2.0" in str(err.value) and "1, inf" in str(err.value)
    # a shown layout set apart from its default is what the user chose: it is named
    with pytest.raises(ParameterError) as err:
        parameters.validate("06_layout_explorer", {"layouts": [1.0, math.inf], "layout": 3.0})
    assert err.value.name == "layout"


@pytest.mark.parametrize(
    "values",
    [
        {"layouts": [0.5, 1001.0, math.inf]},
        {"schedule": ("cosine", 2000.0, 2.0)},
        {"layout": 1e300},
    ],
)
def test_notebook_06_bounds_every_layout_it_takes(values):
    with pytest.raises(ParameterError) as err:
        parameters.validate("06_layout_explorer", values)
    name = next(iter(values))
    assert err.value.name == name
    assert ("1000" if name != "layout" else "one of the swept layouts") in str(err.value)


# --- seeds, wherever they enter -------------------------------------------------------------


def test_a_seed_is_below_2_to_the_63():
    assert check_seed("seed", INT_MAX) == INT_MAX and check_seeds("seeds", [0, INT_MAX])
    for bad in (2**63, 10**20, -1, True, 1.0):
        with pytest.raises(ParameterError, match="invalid seed="):
            check_seed("seed", bad)
        with pytest.raises(ParameterError, match="invalid seeds="):
            check_seeds("seeds", [0, bad])


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    return lines[-1]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_selfish_train_refuses_a_huge_seed_before_writing_anything(in_tmp, capsys):
    assert main(["train", "--seed", "9" * 20, "--results-dir", str(in_tmp / "r")]) == 2
    last = one_line(capsys.readouterr().err)
    assert last.startswith("selfish train: invalid seed=99999999999999999999") and "2**63" in last
    assert not list(in_tmp.iterdir())  # no store, no .partial/lock


@pytest.mark.parametrize("command", ["plan", "reproduce"])
def test_plan_and_reproduce_refuse_a_huge_seed(in_tmp, capsys, command):
    argv = [command, "--profile", "smoke", "--only", "01", "--seeds", "9" * 20]
    if command == "reproduce":
        argv += ["--reports-dir", str(in_tmp / "reports")]
    assert main(argv) == 2
    assert "invalid seeds=[99999999999999999999]" in one_line(capsys.readouterr().err)
    assert not list(in_tmp.iterdir())


# --- the command line, in process: a few representative cases -------------------------------


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["--only", "01", "-p", "layout=" + "-" * 3000 + "1"], "layout="),
        (["--only", "01", "-p", "layout=" + "9" * 400], "layout=<an integer of 400 digits>"),
        (["--only", "04", "-p", "temperature=" + "9" * 400], "temperature=<an integer of 400"),
        (["--only", "09", "-p", "bins=" + "9" * 400], "bins=<an integer of 400 digits>"),
        (["--only", "03", "-p", "smoothing=1e400"], "smoothing=inf"),
        (["--only", "04", "-p", "sample_length=1000000000"], "sample_length=1000000000"),
        (["--only", "03", "-p", "layout=2", "-p", "03:layout=3"], "03_hns_training:layout"),
        (["--only", "06", "-p", "layouts=[1.0, inf]"], "layouts=[1.0, inf]"),
    ],
    ids=["deep nesting", "huge layout", "huge temperature", "huge bins", "inf smoothing",
         "a billion symbols", "repeated -p", "grid without the shown layout"],
)  # fmt: skip
def test_the_cli_refuses_hostile_parameters_in_one_line(in_tmp, capsys, argv, shown):
    status = main(["plan", "--profile", "smoke", "--no-estimate", *argv])
    last = one_line(capsys.readouterr().err)
    assert status == 2 and shown in last, last
    assert len(last) < 500
    assert not list(in_tmp.iterdir())


def test_jobs_are_bounded_by_the_machine(in_tmp, capsys, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    argv = ["reproduce", "--profile", "smoke", "--only", "01", "--jobs"]
    assert main([*argv, "1000"]) == 2
    last = one_line(capsys.readouterr().err)
    assert "--jobs '1000'" in last and "from 1 to 8" in last and "2 here" in last
    with pytest.raises(ParameterError, match="invalid jobs=9: expected an integer >= 1 and <= 8"):
        pipeline.run_pipeline(
            profile="smoke",
            device="cpu",
            only=["01"],
            jobs=9,
            reports_dir=in_tmp / "reports",
            results_dir=in_tmp / "results",
        )
    assert not list(in_tmp.iterdir())


def test_the_plan_line_says_how_many_jobs_run(monkeypatch, capsys, tiny_corpus):
    """The time estimate divides by the workers that run (never more than the runs)."""
    from selfish_lib.engine.training import TrainConfig

    configs = [TrainConfig.flat(seed=s, max_steps=10) for s in range(3)]
    prepared = pipeline.Prepared("smoke", "cpu", None, None, None, None, [], {}, {})
    monkeypatch.setattr(pipeline, "run_status", lambda config, store: "missing")
    monkeypatch.setattr(pipeline, "load_corpus", lambda path: tiny_corpus)
    monkeypatch.setattr(pipeline, "calibrate", lambda missing, corpus, device: {None: (1, 1)})
    monkeypatch.setattr(pipeline, "shape_of", lambda config: None)
    monkeypatch.setattr(pipeline, "estimate_seconds", lambda config, timing: 60.0)
    monkeypatch.setattr(pipeline, "train_all", lambda configs, **kwargs: [])
    pipeline._train_round(prepared, configs, "cpu", 16, False, "local", None, 1)
    line = capsys.readouterr().out
    assert "3 to train" in line and "with 3 job(s), one per run to train (16 allowed)" in line
    assert "about 60 s" in line  # 180 s of runs over the 3 workers that run


# --- the report folder: damaged files rebuilt from the chapters' outputs --------------------

CHAPTER = """\
# %% tags=["parameters"]
profile = "paper"
version = "first"

# %%
import pandas as pd
from selfish_lib.report.notebook import open_study
from selfish_lib.study import claims

study = open_study(globals())
study.fragment({{"version": version}})
rows = pd.DataFrame([{{"claim": "{claim}", "statement": "s", "source": study.name,
                      "verdict": "supported", "family": "exploratory", "p_value": 0.01,
                      "version": version}}])
claims.save_claims(rows, study.report_dir, profile=study.profile.name)
"""
NAMES = {"01_first": "X1", "02_second": "X2"}


def reproduce(root, only=None, **extra):
    return pipeline.run_pipeline(
        profile="smoke", device="cpu", only=only, reports_dir=root / "reports",
        results_dir=root / "results", notebooks_dir=root / "notebooks", progress=False,
        extra_parameters=extra or None,
    )  # fmt: skip


@pytest.fixture(scope="module")
def good_report(tmp_path_factory):
    """A reproduction of two chapters, each with a fragment and a claims row: its root."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "notebooks").mkdir()
    for name, claim in NAMES.items():
        (root / "notebooks" / f"{name}.py").write_text(CHAPTER.format(claim=claim))
    reproduce(root)
    return root


@pytest.fixture
def report(good_report, tmp_path):
    """A copy of the good reproduction: its report folder (reports/smoke)."""
    shutil.copytree(good_report, tmp_path / "copy")
    return tmp_path / "copy" / "reports" / "smoke"


def stored(path):
    return json.loads(path.read_text())


def test_the_pipeline_keeps_each_chapters_claims_beside_claims_json(report):
    merged = stored(report / "claims.json")
    assert sorted(r["claim"] for r in merged) == ["X1", "X2"]
    for name, claim in NAMES.items():
        assert [r["claim"] for r in stored(report / f"{name}.claims.json")] == [claim]


@pytest.mark.parametrize(
    "damage", ["{\n  \"profile\": \"smo", "[]", '{"notebooks": []}', '{"notebooks": {"x": 1}}',
               "null", "\x00\xff"],
    ids=["truncated", "a list", "notebooks a list", "a bad entry", "null", "not text"],
)  # fmt: skip
def test_a_damaged_summary_is_rebuilt_from_the_executed_notebooks(report, capsys, damage):
    before = stored(report / "summary.json")
    (report / "summary.json").write_bytes(damage.encode("latin-1"))
    pipeline.check_report_files(report)
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "summary.json was damaged" in err and "rebuilt" in err
    summary = stored(report / "summary.json")
    assert set(summary["notebooks"]) == set(NAMES)
    for name in NAMES:
        entry, was = summary["notebooks"][name], before["notebooks"][name]
        assert entry["status"] == "ok" and entry["ipynb"] == was["ipynb"]
        assert entry["html"] == was["html"]
        # what the notebook was given, the report folder where its files lie now
        assert entry["parameters"] == {**was["parameters"], "report_dir": str(report)}
        assert entry["seconds"] > 0
    assert summary["fragments"] == before["fragments"]
    kept = [p for p in report.iterdir() if p.name.endswith(".damaged")]
    assert len(kept) == 1 and kept[0].read_bytes() == damage.encode("latin-1")
    pipeline.check_report_files(report)  # sound now: nothing more to say
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "damage",
    ['[\n  {\n    "claim": "X1",\n    "stat', '{"rows": []}', "[1, 2]", "null"],
    ids=["truncated", "an object", "not rows", "null"],
)
def test_a_damaged_claims_file_is_rebuilt_from_the_chapters_claims(report, capsys, damage):
    before = stored(report / "claims.json")
    (report / "claims.json").write_text(damage)
    pipeline.check_report_files(report)
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "claims.json was damaged" in err
    assert "01_first, 02_second" in err and "2 rows" in err
    assert stored(report / "claims.json") == before  # every chapter's rows, corrected alike
    assert [p.read_text() for p in report.glob("claims.json.*.damaged")] == [damage]


def test_a_chapter_without_its_claims_file_is_named_to_run_again(report, capsys):
    (report / "claims.json").write_text("[")
    (report / "01_first.claims.json").unlink()
    pipeline.check_report_files(report)
    err = capsys.readouterr().err
    assert "claims of 02_second" in err and "run 01_first again" in err
    assert [r["claim"] for r in stored(report / "claims.json")] == ["X2"]


def test_readers_refuse_a_damaged_claims_file_in_one_line(report, capsys):
    (report / "claims.json").write_text('[{"claim": "X1"')
    with pytest.raises(claims.DamagedClaims) as err:
        claims.merged_claims(report / "claims.json", [{"claim": "X3", "source": "03_c"}])
    assert "claims.json is damaged" in str(err.value) and "rebuilds it" in str(err.value)
    with pytest.raises(claims.DamagedClaims):
        claims.load_claims(report)
    argv = ["claims", "--profile", "smoke", "--reports-dir", str(report.parent)]
    assert main(argv) == 2
    assert "claims.json is damaged" in one_line(capsys.readouterr().err)


def test_claims_rows_without_a_source_are_dropped_with_a_line(report, capsys):
    rows = stored(report / "claims.json")
    orphans = [{"claim": "Z9", "verdict": "supported"}, {"claim": "Z8", "source": " "}]
    (report / "claims.json").write_text(json.dumps(rows + orphans))
    assert [r["claim"] for r in claims.load_claims(report)] == ["X1", "X2"]
    assert "dropped 2 claims row(s) without a source" in capsys.readouterr().err
    merged = claims.merged_claims(report / "claims.json", [{"claim": "X3", "source": "03_c"}])
    assert [r["claim"] for r in merged] == ["X1", "X2", "X3"]
    assert "claim Z8, Z9" in capsys.readouterr().err
    pipeline.check_report_files(report)  # the file itself loses them, once
    assert "dropped 2" in capsys.readouterr().err
    assert [r["claim"] for r in stored(report / "claims.json")] == ["X1", "X2"]
    pipeline.check_report_files(report)
    assert capsys.readouterr().err == ""


def test_a_damaged_fragment_is_set_aside_with_a_line(report, capsys):
    (report / "01_first.summary.json").write_text('{"version": ')
    pipeline.check_report_files(report)
    err = capsys.readouterr().err
    assert "01_first.summary.json is damaged" in err and "set aside" in err
    assert set(pipeline.read_fragments(report)) == {"02_second"}


def test_sound_files_are_only_read(report, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in report.iterdir()}
    pipeline.check_report_files(report)
    assert {p.name: p.stat().st_mtime_ns for p in report.iterdir()} == before
    assert capsys.readouterr().err == ""


# one damage in the default run, the other with the slow tests (a reproduction each)
@pytest.mark.parametrize(
    "damage", ["[]", pytest.param('{"notebooks": []}', marks=pytest.mark.slow)]
)
def test_a_reproduction_over_a_damaged_summary_completes(report, capsys, damage):
    """Valid JSON of the wrong shape: rebuilt before any work, and the reproduction then
    records its notebook and its end (no AttributeError, no TypeError, no finished: null)."""
    (report / "summary.json").write_text(damage)
    (report / "claims.json").write_text('[{"claim": "X1", "sou')
    root = report.parent.parent
    reproduce(root, only=["02"], **{"02_second": {"version": "second"}})
    err = capsys.readouterr().err
    assert "summary.json was damaged" in err and "claims.json was damaged" in err
    summary = stored(report / "summary.json")
    assert summary["finished"] is not None and summary["profile"] == "smoke"
    assert {k: v["status"] for k, v in summary["notebooks"].items()} == {
        "01_first": "ok", "02_second": "ok"
    }  # fmt: skip
    assert summary["notebooks"]["02_second"].get("rebuilt") is None  # this run's own entry
    assert summary["fragments"]["02_second"]["version"] == "second"
    rows = {r["claim"]: r for r in stored(report / "claims.json")}
    assert set(rows) == {"X1", "X2"} and rows["X2"]["version"] == "second"


def test_a_sound_reproduction_sets_nothing_aside(report, capsys):
    reproduce(report.parent.parent, only=["01"])
    assert "damaged" not in capsys.readouterr().err
    assert not [p for p in report.iterdir() if p.name.endswith(".damaged")]
    assert sorted(r["claim"] for r in stored(report / "claims.json")) == ["X1", "X2"]
