"""Notebooks executed at once: results in plan order, publishing one at a time, the
first failure in plan order raised and the notebooks not started yet left alone."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from selfish_lib.report import pipeline


def plan_of(*names: str) -> list[tuple[Path, dict]]:
    return [(Path(f"{name}.py"), {}) for name in names]


def test_notebooks_run_at_once_and_come_back_in_plan_order(monkeypatch, tmp_path):
    active, most = [0], [0]
    lock = threading.Lock()

    def fake_run_one(path, params, report_dir, folder, progress):
        assert progress is False  # one bar for all: no per-cell bars interleaved
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.2 if path.stem == "01" else 0.05)  # the first finishes last
        with lock:
            active[0] -= 1
        return report_dir / f"{path.stem}.html"

    monkeypatch.setattr(pipeline, "_run_one", fake_run_one)
    htmls = pipeline._run_notebooks(plan_of("01", "02", "03"), tmp_path, tmp_path, False, 2,
                                    "smoke")  # fmt: skip
    assert htmls == [tmp_path / f"{n}.html" for n in ("01", "02", "03")]
    assert most[0] == 2  # two at once, never more than jobs


def test_the_first_failure_in_plan_order_is_raised_and_later_ones_do_not_start(
    monkeypatch, tmp_path
):
    started = []

    def fake_run_one(path, params, report_dir, folder, progress):
        started.append(path.stem)
        if path.stem in ("01", "02"):
            time.sleep(0.1 if path.stem == "01" else 0.0)
            raise RuntimeError(f"{path.stem} failed")
        return report_dir / f"{path.stem}.html"

    monkeypatch.setattr(pipeline, "_run_one", fake_run_one)
    with pytest.raises(RuntimeError, match="01 failed"):
        pipeline._run_notebooks(plan_of("01", "02", "03", "04", "05"), tmp_path, tmp_path,
                                False, 2, "smoke")  # fmt: skip
    assert started[:2] == ["01", "02"]
    assert len(started) < 5  # what was not started when a failure came stays so


def test_one_job_runs_them_one_after_another_with_their_own_bars(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(pipeline, "_run_one", lambda path, params, report_dir, folder,
                        progress: calls.append((path.stem, progress)) or path)  # fmt: skip
    pipeline._run_notebooks(plan_of("01", "02"), tmp_path, tmp_path, True, 1, "smoke")
    assert calls == [("01", True), ("02", True)]
