"""The executors give one reproduction: a smoke reproduction trained through
``executor="ray"`` (a local Ray cluster of 2 CPUs) or through two worker processes has
the run ids, the stored tables and weights, and the report of the serial one (the
session's smoke reproduction). Two Ray tasks given one config train it once (the run
store's lock), a failing task names its run, and the options are checked before any
work: an unknown executor, an address without Ray, Ray not installed.

The Ray tests need the ray package (the project's ray extra); without it they are
skipped, unless ``SELFISH_REQUIRE_RAY=1`` (set by CI, which installs it), where they fail.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import pytest

from selfish_lib.engine import distributed, executors
from selfish_lib.engine.distributed import RayNotInstalled, RayRunError
from selfish_lib.engine.executors import train_all
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.runs import MARKER, TABLES, config_hash, table_file
from selfish_lib.engine.validation import ParameterError
from selfish_lib.report import cli, pipeline

REQUIRED = os.environ.get("SELFISH_REQUIRE_RAY", "") == "1"
MISSING = importlib.util.find_spec("ray") is None
needs_ray = [
    pytest.mark.ray,
    pytest.mark.skipif(
        MISSING and not REQUIRED,
        reason="ray is not installed (pip install -e '.[ray]'); CI requires it",
    ),
]
NOTEBOOK = "03_hns_training"  # the smallest notebook that trains runs: 4 of 30 steps


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for this module (never one found on the machine),
    shut down after its tests."""
    if MISSING:
        pytest.fail("SELFISH_REQUIRE_RAY=1 but the ray package is not installed", pytrace=False)
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        yield ray
    finally:
        ray.shutdown()


# --- what "the same reproduction" means ------------------------------------------------


def assert_same_runs(store: Path, reference: Path) -> set[str]:
    """Every completed run of ``store`` is in ``reference`` with bitwise the same tables
    (their files: they carry no time stamp), weights and config."""
    ids = {p.parent.name for p in (store / "runs").glob(f"*/{MARKER}")}
    assert ids
    for key in sorted(ids):
        mine, theirs = store / "runs" / key, reference / "runs" / key
        for table in TABLES:
            texts = [table_file(f, table).read_bytes() for f in (mine, theirs)]
            assert texts[0] == texts[1], f"{key}/{table} differs"
        assert (mine / "model.pt").read_bytes() == (theirs / "model.pt").read_bytes(), key
        config = [json.loads((f / "config.json").read_text())["config"] for f in (mine, theirs)]
        assert config[0] == config[1]
    assert not [p for p in (store / "runs").iterdir() if p.name.endswith(".partial")]
    return ids


def notebook_outputs(report: Path, root: Path) -> list[str]:
    """The outputs of the report's notebook, without what varies from one execution to the
    next: the folders, pandas' random table ids, object addresses, and the table of
    wall-clock training times."""
    nb = json.loads((report / f"{NOTEBOOK}.ipynb").read_text())
    shown = []
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            text = json.dumps(output, sort_keys=True).replace(str(root), "ROOT")
            if "train_seconds" in text:
                continue
            text = re.sub(r"T_[0-9a-f]{5}", "T_id", text)
            shown.append(re.sub(r" at 0x[0-9a-f]+", " at 0x", text))
    return shown


def assert_same_report(report: Path, root: Path, reference: Path, reference_root: Path) -> None:
    """The notebook's numbers (its summary fragment), figures and outputs are the same."""
    fragments = [json.loads((r / f"{NOTEBOOK}.summary.json").read_text()) for r in
                 (report, reference)]  # fmt: skip
    assert fragments[0] == fragments[1]
    summary = json.loads((report / "summary.json").read_text())
    assert summary["fragments"][NOTEBOOK] == fragments[1]
    figures = sorted(p.name for p in (report / "figures").iterdir())
    assert figures and all(name.startswith(NOTEBOOK[:3]) for name in figures)
    for name in figures:
        assert (report / "figures" / name).read_bytes() == (
            reference / "figures" / name
        ).read_bytes(), name
    assert notebook_outputs(report, root) == notebook_outputs(reference, reference_root)


# the session's own reproduction trains with two jobs: the local case only checks that a
# second one gives the same numbers (slow); the Ray case checks another executor
@pytest.mark.parametrize(
    "executor",
    [pytest.param("ray", marks=needs_ray),
     pytest.param("local", id="jobs=2", marks=pytest.mark.slow)],
)  # fmt: skip
def test_a_smoke_reproduction_is_the_same_through_ray_and_two_jobs(
    smoke_reproduction, executor, request, tmp_path
):
    if executor == "ray":
        request.getfixturevalue("ray_cluster")
    planned = pipeline.prepare(profile="smoke", device="cpu", only=[NOTEBOOK],
                               results_dir=tmp_path / "results",
                               reports_dir=tmp_path / "reports").configs()  # fmt: skip
    htmls = pipeline.run_pipeline(
        profile="smoke", device="cpu", only=[NOTEBOOK], reports_dir=tmp_path / "reports",
        results_dir=tmp_path / "results", progress=False, jobs=2, executor=executor,
    )  # fmt: skip
    assert htmls == [tmp_path / "reports" / "smoke" / f"{NOTEBOOK}.html"]
    ids = assert_same_runs(tmp_path / "results", smoke_reproduction / "results")
    assert ids == {config_hash(c) for c in planned}
    assert_same_report(tmp_path / "reports" / "smoke", tmp_path,
                       smoke_reproduction / "reports" / "smoke", smoke_reproduction)  # fmt: skip


# --- the Ray executor itself -----------------------------------------------------------


def smoke_config(**overrides):
    return get_profile("smoke").config("single", seed=0, **overrides)


def ray_test(function):
    """Marked ``ray``, and skipped without ray unless it is required."""
    for mark in needs_ray:
        function = mark(function)
    return function


@ray_test
def test_two_ray_tasks_given_one_config_train_it_once(ray_cluster, tmp_path):
    config = smoke_config(max_steps=150)  # a few seconds: the second task finds it in progress
    store = tmp_path / "results"
    data = distributed.absolute(os.environ["SELFISH_DATA"])
    args = (distributed.absolute(store), data, "cpu")
    both = distributed.run_units([(config,), (config,)], executors._worker_train, args,
                                 device_kind="cpu", progress=False)  # fmt: skip
    assert [t.id for t in both] == [config_hash(config)] * 2
    assert sorted(t.trained_now for t in both) == [False, True]  # one trained, one loaded
    assert [p.name for p in (store / "runs").iterdir()] == [config_hash(config)]
    again = train_all([config, config], results_dir=store, device="cpu", executor="ray",
                      progress=False)  # fmt: skip
    assert [(t.id, t.trained_now) for t in again] == [(config_hash(config), False)]


@ray_test
def test_a_ray_task_trains_a_whole_ensemble(ray_cluster, tmp_path):
    """With ``ensemble``, a unit of several runs is one task and one batched model."""
    configs = [get_profile("smoke").config("single", seed=s, max_steps=10) for s in (0, 1, 2)]
    store = tmp_path / "results"
    done = train_all(configs, results_dir=store, device="cpu", executor="ray", ensemble=2,
                     progress=False)  # fmt: skip
    assert [t.id for t in done] == [config_hash(c) for c in configs]
    executions = [
        json.loads((store / "runs" / t.id / "config.json").read_text())["meta"]["execution"]
        for t in done
    ]
    assert [e["executor"] for e in executions] == ["ensemble", "ensemble", "solo"]


@ray_test
def test_a_failing_ray_task_names_its_run(ray_cluster, tmp_path):
    good, bad = smoke_config(max_steps=2), smoke_config(max_steps=2, data_sha256="0" * 64)
    with pytest.raises(RayRunError, match=f"run {config_hash(bad)} failed in a Ray task") as err:
        train_all([good, bad], results_dir=tmp_path / "results", device="cpu", executor="ray",
                  progress=False)  # fmt: skip
    assert isinstance(err.value.cause, ValueError) and "data_sha256" in str(err.value)
    assert err.value.ids == [config_hash(bad)]


def test_selfish_reproduce_reports_a_failed_ray_task_in_one_line(monkeypatch, capsys):
    def fail(**kwargs):
        raise RayRunError(["0123456789abcdef"], ValueError("no"), "ValueError: no")

    monkeypatch.setattr(cli, "run_pipeline", fail)
    argv = ["reproduce", "--profile", "smoke", "--device", "cpu", "--executor", "ray"]
    assert cli.main(argv) == cli.EXIT_FAILURE
    err = capsys.readouterr().err.strip()
    assert err == "selfish reproduce: run 0123456789abcdef failed in a Ray task: ValueError: no"


# --- checked before any work -----------------------------------------------------------


def test_an_unknown_executor_or_an_address_without_ray_is_refused(tmp_path):
    config = smoke_config(max_steps=2)
    with pytest.raises(ParameterError, match="invalid executor='dask'.*'local', 'ray'"):
        train_all([config], results_dir=tmp_path / "results", executor="dask")
    with pytest.raises(ParameterError, match="invalid address='auto'.*executor='ray'"):
        train_all([config], results_dir=tmp_path / "results", address="auto")
    with pytest.raises(ParameterError, match="invalid executor='dask'"):
        pipeline.run_pipeline(profile="smoke", device="cpu", only=[NOTEBOOK], executor="dask",
                              reports_dir=tmp_path / "reports",
                              results_dir=tmp_path / "results")  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_missing_ray_says_how_to_install_it_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    config = smoke_config(max_steps=2)
    with pytest.raises(RayNotInstalled, match=re.escape('pip install -e ".[ray]"')) as err:
        train_all([config], results_dir=tmp_path / "results", executor="ray")
    assert "--executor ray" in str(err.value) and isinstance(err.value, ParameterError)
    argv = ["reproduce", "--profile", "smoke", "--device", "cpu", "--only", NOTEBOOK,
            "--executor", "ray", "--results-dir", str(tmp_path / "results"),
            "--reports-dir", str(tmp_path / "reports")]  # fmt: skip
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install -e ".[ray]"' in err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def pipeline_calls(monkeypatch):
    """The keyword arguments of every run_pipeline call ``cli.main`` makes (nothing runs)."""
    calls: list[dict] = []
    monkeypatch.setattr(cli, "run_pipeline", lambda **kwargs: calls.append(kwargs) or [])
    return calls


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--address", "auto"], "--address ADDR is for --executor ray only"),
        (["--executor", "local", "--address", "auto"], "--address ADDR is for --executor ray"),
        (["--executor", "ray", "--address", "auto", "--jobs", "2"], "--jobs sizes the local"),
        (["--executor", "dask"], "invalid choice: 'dask'"),
        (["--ensemble", "0"], "invalid --ensemble '0': expected an integer >= 1"),
        (["--ensemble", "many"], "invalid --ensemble 'many'"),
    ],
)
def test_reproduce_refuses_options_that_do_not_go_together(pipeline_calls, capsys, argv, message):
    assert cli.main(["reproduce", "--profile", "smoke", *argv]) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err
    assert pipeline_calls == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {"executor": "local", "address": None}),
        (["--executor", "ray"], {"executor": "ray", "address": None, "jobs": 3}),
        (["--executor", "ray", "--address", "auto"], {"executor": "ray", "address": "auto"}),
        (["--executor", "ray", "--jobs", "2"], {"executor": "ray", "jobs": 2}),
        ([], {"ensemble": 1}),
        (["--ensemble", "5", "--executor", "ray"], {"ensemble": 5, "executor": "ray"}),
    ],
)
def test_reproduce_passes_the_executor_on(pipeline_calls, monkeypatch, argv, expected):
    monkeypatch.setattr(cli, "default_jobs", lambda device: 3)
    assert cli.main(["reproduce", "--profile", "smoke", "--device", "cpu", *argv]) == 0
    assert [{k: call[k] for k in expected} for call in pipeline_calls] == [expected]


def test_the_task_resources_are_one_cpu_and_one_gpu_on_cuda():
    assert distributed.task_resources("cpu") == {"num_cpus": 1, "num_gpus": 0}
    assert distributed.task_resources("cuda") == {"num_cpus": 1, "num_gpus": 1}
    with pytest.raises(ParameterError, match="cpu or cuda with executor='ray'"):
        distributed.task_resources("mps")
