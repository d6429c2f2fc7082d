"""The pipeline never leaves a mixed or half-written report: a failing notebook keeps
the previous good report in place, two reproductions into one reports folder take
turns (a lock) and the summary keeps every notebook's entry; and a Ctrl-C of
`selfish train` keeps the last whole step and says so."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import nbformat
import pytest
import torch

from selfish_lib.report import pipeline

GOOD = """\
# %% tags=["parameters"]
profile = "paper"
version = "first"

# %%
from selfish_lib.report.notebook import open_study

study = open_study(globals())
study.fragment({"version": version})
print("version", version)
"""


def write(folder, name, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(text)


def run(root, notebooks, only=None, **extra):
    return pipeline.run_pipeline(
        profile="smoke", device="cpu", only=only, reports_dir=root / "reports",
        results_dir=root / "results", notebooks_dir=notebooks, progress=False,
        extra_parameters=extra or None,
    )  # fmt: skip


def test_a_failing_notebook_keeps_the_previous_good_report(tmp_path):
    notebooks = tmp_path / "notebooks"
    write(notebooks, "01_report", GOOD)
    run(tmp_path, notebooks)
    report = tmp_path / "reports" / "smoke"
    before = {p: p.read_bytes() for p in report.glob("01_report*")}
    assert {p.name for p in before} == {"01_report.ipynb", "01_report.html",
                                        "01_report.summary.json"}  # fmt: skip
    write(notebooks, "01_report", GOOD.replace('print("version"', 'raise ValueError("boom")\n#'))
    with pytest.raises(pipeline.NotebookError) as err:
        run(tmp_path, notebooks)
    assert err.value.kept == report / "01_report.failed.ipynb" and err.value.kept.exists()
    for path, content in before.items():  # the last good report, untouched
        assert path.read_bytes() == content
    summary = json.loads((report / "summary.json").read_text())
    assert summary["notebooks"]["01_report"]["status"] == "failed"
    assert summary["fragments"]["01_report"]["version"] == "first"
    assert not [p.name for p in report.iterdir() if p.name.startswith(".")]  # no staging left
    # the executed notebook shows the report folder, not where it was staged
    nb = nbformat.read(report / "01_report.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])][0]
    assert f'report_dir = "{report}"' in injected.source and "staging" not in injected.source


@pytest.mark.slow  # two reproductions; the lock's own behaviour is tested in test_hardening.py
def test_two_reproductions_into_one_folder_take_turns_and_keep_every_entry(tmp_path):
    notebooks = tmp_path / "notebooks"
    write(notebooks, "01_first", GOOD)
    write(notebooks, "02_second", GOOD.replace('"first"', '"second"'))
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from selfish_lib.report import pipeline
        root = Path({str(tmp_path)!r})
        pipeline.run_pipeline(profile="smoke", device="cpu", only=[sys.argv[1]],
                              reports_dir=root / "reports", results_dir=root / "results",
                              notebooks_dir=root / "notebooks", progress=False)
    """)
    children = [
        subprocess.Popen([sys.executable, "-c", script, name], stderr=subprocess.PIPE, text=True)
        for name in ("01", "02")
    ]
    for child in children:
        assert child.wait(timeout=300) == 0, child.stderr.read()
    report = tmp_path / "reports" / "smoke"
    summary = json.loads((report / "summary.json").read_text())
    assert {k: v["status"] for k, v in summary["notebooks"].items()} == {
        "01_first": "ok", "02_second": "ok"
    }  # fmt: skip
    assert {k: v["version"] for k, v in summary["fragments"].items()} == {
        "01_first": "first", "02_second": "second"
    }  # fmt: skip
    for name in ("01_first", "02_second"):
        nb = nbformat.read(report / f"{name}.ipynb", as_version=4)
        assert f'notebook_name = "{name}"' in nb.cells[1].source + nb.cells[2].source
        assert name in (report / f"{name}.html").read_text()


def test_the_reports_lock_makes_a_second_writer_wait(tmp_path):
    folder = tmp_path / "smoke"
    folder.mkdir()
    order = []
    with pipeline._reports_lock(folder):
        waiter = threading.Thread(
            target=lambda: (pipeline._reports_lock(folder).__enter__(), order.append("second"))
        )
        waiter.start()
        time.sleep(0.5)
        order.append("first done")
    waiter.join(timeout=10)
    assert order == ["first done", "second"]


def test_a_bad_parameter_fails_before_any_kernel_or_file(tmp_path):
    notebooks = tmp_path / "notebooks"
    write(notebooks, "03_hns_training", GOOD)  # a repository name: its validators apply
    with pytest.raises(ValueError, match="invalid layout='abc'"):
        run(tmp_path, notebooks, **{"03_hns_training": {"layout": "abc"}})
    assert not (tmp_path / "reports").exists() and not (tmp_path / "results").exists()


def test_ctrl_c_in_selfish_train_keeps_the_last_step_and_exits_130(tmp_path):
    """A real SIGINT to `selfish train` at the paper scale, once training is under way."""
    child = subprocess.Popen(
        [sys.executable, "-m", "selfish_lib.report.cli", "train", "--profile", "paper",
         "--results-dir", str(tmp_path / "results"), "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    seen = ""
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            seen += child.stderr.read(1)
            steps = [int(m) for m in re.findall(r"\b(\d+)/2000\b", seen)]
            if steps and max(steps) >= 2:  # the progress bar says training is under way
                break
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 130, err
    assert "Traceback" not in err
    last = [line for line in (seen + err).splitlines() if line.strip()][-1]
    match = re.search(r"interrupted by SIGINT: checkpoint at step (\d+) of 2000 in (\S+);", last)
    assert match, last
    state = torch.load(match.group(2), weights_only=False)
    assert state["step"] == int(match.group(1)) >= 2
    assert "run the same command to resume" in last
