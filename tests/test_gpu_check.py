"""bench/gpu_check.py, the one-shot GPU check: its dry run on the CPU writes every section
(resume and determinism bit for bit, the fused HNS loss within float32 rounding of a
float64 reference), and its measures against hand-made cases: the reference loss, the
profiler counts, the differences, the projection's arithmetic, the plan read without the
notebook packages, and the section runner's errors, skips and budget."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from selfish_lib.engine.objectives import CrossEntropy, HardNegatives
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.runs import config_hash

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"
SECTIONS = (
    "environment",
    "resume",
    "step_time",
    "launches",
    "determinism",
    "hns_loss",
    "cpu_vs_gpu",
    "tf32",
    "eval_memory",
    "projection",
)


def load_script():
    """bench/gpu_check.py as a module (bench/ on the path only while it imports)."""
    bench = str(SCRIPT.parent)
    sys.path.insert(0, bench)
    try:
        spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(bench)
    return module


check = load_script()


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The script's --dry run in a process of its own: (report, stdout, seconds)."""
    out = tmp_path_factory.mktemp("gpu_check") / "check.json"
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - began
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout, seconds


# --- the dry run ---------------------------------------------------------------------------


def test_the_dry_run_records_every_section_with_a_result_or_a_reason(dry_run):
    report, stdout, _ = dry_run
    assert report["dry"] is True and report["device"] == "cpu"
    assert tuple(report["sections"]) == SECTIONS
    for name, entry in report["sections"].items():
        assert entry["seconds"] >= 0, name
        if entry["status"] == "ok":
            assert entry["result"]["summary"], name
        else:
            assert entry["status"] == "skipped" and entry["reason"], (name, entry)
        assert name in stdout  # the printed table has a row for it
    # on the CPU every section runs but the comparison with a GPU
    skipped = [n for n, e in report["sections"].items() if e["status"] != "ok"]
    assert skipped == ["cpu_vs_gpu"]
    assert "--dry" in report["sections"]["cpu_vs_gpu"]["reason"]


def test_the_dry_run_resumes_and_repeats_bit_for_bit(dry_run):
    sections = dry_run[0]["sections"]
    resume = sections["resume"]["result"]
    assert resume["identical"] is True
    for case in resume["cases"]:
        assert case["identical"] and case["weights_max_abs_diff"] == 0.0
        assert all(case["tables_identical"].values())
        # it did stop and resume from a checkpoint before the end
        assert 0 < case["resumed_from_step"] <= case["stopped_after"] < case["max_steps"]
    determinism = sections["determinism"]["result"]
    assert determinism["identical"] is True
    assert all(c["loss_curve_max_abs_diff"] == 0.0 for c in determinism["cases"])


def test_the_fused_hns_loss_is_within_float32_rounding_of_float64(dry_run):
    result = dry_run[0]["sections"]["hns_loss"]["result"]
    assert {c["path"] for c in result["cases"]} == {"fused", "kept logits + F.cross_entropy"}
    for case in result["cases"]:
        assert case["loss_rel_error"] < 1e-5, case
        assert case["grad_rel_error"] < 1e-5, case


def test_the_dry_run_measures_steps_launches_memory_and_the_plan(dry_run):
    sections = dry_run[0]["sections"]
    steps = sections["step_time"]["result"]
    assert steps["paper_solo"]["median_ms"] > 0 and steps["large_solo"]["median_ms"] > 0
    assert [r["members"] for r in steps["stacked"]][:3] == [1, 2, 3]
    launches = sections["launches"]["result"]
    assert launches["solo_step"]["aten_ops"] > 0
    assert launches["solo_step"]["kernel_launches"] == "n/a"  # no CUDA to count
    memory = sections["eval_memory"]["result"]["cases"]
    size = max(get_profile("smoke").subword["sizes"])  # the smoke profile's largest BPE
    assert [c["model_vocab"] for c in memory] == [size, 2 * size]  # single, bilingual
    tf32 = sections["tf32"]["result"]
    assert tf32["loss_max_abs_diff"] == 0.0  # the flag changes nothing on a CPU
    # the projection's totals are its shapes' steps and evaluations times their timings
    plan = sections["projection"]["result"]
    shapes = plan["shapes"]
    assert plan["runs"] == sum(s["runs"] for s in shapes)
    assert plan["steps"] == sum(s["steps"] for s in shapes)
    expected = sum(
        s["steps"] * s["step_ms"] / 1000 + s["whole_split_evaluations"] * s["eval_s"]
        for s in shapes
    )
    assert plan["solo_total_s"] == pytest.approx(expected, rel=1e-9)
    assert plan["stacked_total_s"] > 0 and plan["assumptions"]


def test_the_dry_run_takes_about_a_minute(dry_run):
    report, _, seconds = dry_run
    # the goal is a minute on a quiet 2-core machine; this bound leaves room for load
    assert report["wall_s"] < 180, report["wall_s"]
    assert seconds < 240


# --- its measures on hand-made cases -------------------------------------------------------


def test_the_reference_hns_loss_is_masked_cross_entropy_in_float64():
    gen = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(7, 11, generator=gen)
    targets = torch.randint(0, 11, (7,), generator=gen)
    loss, grad = check.hns_reference(logits, targets, 1.5)
    z = logits.double().requires_grad_(True)
    keep = logits >= logits.gather(1, targets[:, None]) - 1.5
    expected = F.cross_entropy(z.masked_fill(~keep, -math.inf), targets)
    expected.backward()
    assert float(loss) == pytest.approx(float(expected.detach()), rel=1e-13)
    assert torch.allclose(grad, z.grad, rtol=0, atol=1e-15)
    assert (grad[~keep] == 0).all()  # an excluded logit gets no gradient
    # an infinite layout keeps everything: plain cross-entropy
    plain, _ = check.hns_reference(logits, targets, math.inf)
    assert float(plain) == pytest.approx(float(F.cross_entropy(logits.double(), targets)))


def test_profiler_events_are_counted_by_kind():
    events = [
        ("aten::mm", "cpu"),
        ("aten::add_", "cpu"),
        ("aten::_local_scalar_dense", "cpu"),
        ("cudaLaunchKernel", "cpu"),
        ("cudaLaunchKernel", "cpu"),
        ("cudaLaunchKernelExC", "cpu"),
        ("cudaStreamSynchronize", "cpu"),
        ("cudaMemcpyAsync", "cpu"),
        ("cudaMemcpy", "cpu"),
        ("cudaGraphLaunch", "cpu"),
        ("Memcpy DtoH (Device -> Pageable)", "cuda"),
        ("Memcpy HtoD (Pageable -> Device)", "cuda"),
        ("Memset (Device)", "cuda"),
        ("ampere_sgemm_32x32", "cuda"),
        ("elementwise_kernel", "cuda"),
    ]
    counts = check.count_events(events, cuda=True)
    assert counts == {
        "aten_ops": 3,
        "scalar_reads": 1,
        "kernel_launches": 3,
        "graph_launches": 1,
        "syncs": 1,
        "cuda_memcpy_calls": 1,
        "gpu_kernels": 2,
        "memcpy_dtoh": 1,
        "memcpy_htod": 1,
    }
    on_cpu = check.count_events(events, cuda=False)
    assert on_cpu["aten_ops"] == 3 and on_cpu["syncs"] == "n/a"
    more = {"aten_ops": 30, "syncs": "n/a"}
    assert check.per_step(check.difference(more, {"aten_ops": 10, "syncs": "n/a"}), 4) == {
        "aten_ops": 5.0,
        "syncs": "n/a",
    }


def test_differences_of_weights_and_curves():
    a = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([0.5])}
    b = {"w": torch.tensor([[1.0, 2.5], [2.0, 4.0]]), "b": torch.tensor([0.5])}
    assert check.max_abs_diff(a, b) == 1.0
    assert check.max_abs_diff(a, a) == 0.0 and check.states_identical(a, dict(a))
    assert not check.states_identical(a, b)
    with pytest.raises(ValueError, match="keys"):
        check.max_abs_diff(a, {"w": a["w"]})
    x = pd.DataFrame({"step": [1, 2, 3], "loss": [3.0, 2.0, 1.0]})
    y = pd.DataFrame({"step": [1, 2, 3], "loss": [3.0, 2.25, 0.5]})
    assert check.curve_diff(x, y) == 0.5
    assert math.isnan(check.curve_diff(x, y.assign(step=[1, 2, 4])))


def test_a_stacked_group_step_is_interpolated_between_measured_sizes():
    measured = {1: 1.5, 10: 4.0, 30: 9.0}  # group step / solo step
    assert check.group_step_ratio(1, measured) == 1.0  # a group of one trains solo
    assert check.group_step_ratio(10, measured) == 4.0
    assert check.group_step_ratio(20, measured) == pytest.approx(6.5)
    assert check.group_step_ratio(4, measured) == pytest.approx(1.5 + 3 / 9 * 2.5)
    assert check.group_step_ratio(60, measured) == pytest.approx(18.0)  # per member beyond


def test_the_projection_adds_steps_and_evaluations_per_shape():
    smoke = get_profile("smoke")
    # two runs that stack (one shape), one of another shape (bilingual)
    a = smoke.config("single", CrossEntropy(), seed=0, max_steps=100, eval_interval=50)
    b = smoke.config("single", HardNegatives(2.0), seed=1, max_steps=100, eval_interval=50)
    c = smoke.config("bilingual", CrossEntropy(), seed=0, max_steps=40, eval_interval=40)
    shape = lambda config: config.bilingual
    timings = {False: (0.01, 2.0), True: (0.02, 3.0)}  # (s/step, s/evaluation)
    out = check.projection_of([a, b, c], timings, shape, {2: 1.2}, group_size=2)
    # evaluations at steps 0 and 50 (a, b) and 0 (c) score a 1/4 of the windows (the smoke
    # profile's stride), the last one all of them
    assert smoke.interim_eval_stride == 4
    evals = 2 * (2 / 4 + 1) * 2.0 + (1 / 4 + 1) * 3.0
    assert out["eval_s"] == pytest.approx(evals)
    assert out["solo_train_s"] == pytest.approx(2 * 100 * 0.01 + 40 * 0.02)
    assert out["whole_split_evaluations"] == 4.25
    assert out["steps"] == 240 and out["runs"] == 3
    # a and b as one group of two (1.2 solo steps a step), c alone
    assert out["groups"] == 2 and out["runs_in_groups"] == 2
    assert out["stacked_train_s"] == pytest.approx(100 * 0.01 * 1.2 + 40 * 0.02)
    assert out["stacked_total_s"] == pytest.approx(out["stacked_train_s"] + evals)


def test_the_parameters_cell_is_cut_out_of_a_py_percent_source():
    source = (
        '# %% [markdown]\n# text\n\n# %% tags=["parameters"]\nprofile = "smoke"\n'
        "layout = 2.0\n\n# %%\nprint(layout)\n"
    )
    assert check.parameters_cell(source) == 'profile = "smoke"\nlayout = 2.0\n'
    assert check.parameters_cell("# %%\nx = 1\n") == ""  # no cell tagged parameters


def test_a_failing_section_is_recorded_and_the_budget_skips_the_rest():
    def fine(ctx):
        return {"summary": "fine"}

    def broken(ctx):
        raise RuntimeError("out of memory, say")

    def not_here(ctx):
        raise check.SkipSection("not on this device")

    now = [0.0]

    def clock():
        now[0] += 10.0  # every reading of the clock is ten seconds later
        return now[0]

    saved = []
    ctx = check.Context(
        device=torch.device("cpu"),
        dry=True,
        sizes=check.DRY_SIZES,
        data_path=None,
        scratch=Path("."),
    )
    report = {"sections": {}}
    sections = [("a", fine), ("b", broken), ("c", not_here), ("d", fine), ("e", fine)]
    check.run_sections(
        sections,
        ctx,
        report,
        budget_s=105.0,
        began=0.0,
        clock=clock,
        save=lambda r: saved.append(list(r["sections"])),
    )
    entries = report["sections"]
    assert [entries[k]["status"] for k in "abcde"] == ["ok", "error", "skipped", "ok", "skipped"]
    assert entries["b"]["error"] == "RuntimeError: out of memory, say"
    assert "broken" in entries["b"]["traceback"]
    assert entries["c"]["reason"] == "not on this device"
    assert entries["e"]["reason"].startswith("time budget spent")
    assert saved == [list("abcde"[: i + 1]) for i in range(5)]  # written after each
    rows = check.table_rows(report)
    assert [r[:2] for r in rows][1] == ["b", "error"]


def test_an_unavailable_device_is_refused_before_any_work(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exit_:
        check.parse_args(["--device", "cuda"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "device" in err and "--dry" in err
    assert check.parse_args(["--dry", "--device", "cuda"]).device == "cpu"  # dry forces the CPU


BLOCKED_PLAN = """
import importlib.abc, json, sys, tempfile
from pathlib import Path

BLOCKED = {"altair", "jupytext", "papermill", "nbformat", "nbconvert", "vl_convert",
           "ipywidgets", "IPython", "ipykernel"}


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}")


sys.meta_path.insert(0, Blocker())
sys.path.insert(0, sys.argv[1])
import gpu_check
from selfish_lib.engine.runs import config_hash

grids, how = gpu_check.declared_plan("smoke", Path(tempfile.mkdtemp()), None)
hashes = {n: {p: sorted(map(config_hash, c.values())) for p, c in g.items()}
          for n, g in grids.items()}
print(json.dumps({"how": how, "grids": hashes}))
"""


def test_the_plan_is_read_where_the_notebook_packages_are_missing(tmp_path):
    """A GPU machine may lack what executing notebooks needs (altair, jupytext): the plan
    is then read from the parameters cells, the same runs."""
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_PLAN, str(SCRIPT.parent)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["how"].startswith("notebook parameter cells")
    from selfish_lib.report.pipeline import prepare

    prepared = prepare(
        profile="smoke",
        device="cpu",
        results_dir=tmp_path / "results",
        reports_dir=tmp_path / "reports",
    )
    expected = {
        n: {p: sorted(map(config_hash, c.values())) for p, c in g.items()}
        for n, g in prepared.grids.items()
    }
    assert found["grids"] == expected
