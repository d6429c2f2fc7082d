"""The plan: the runs the notebooks read are declared once, listed before any training
with their status and an estimate, trained first by the reproduction, and trained to the
same numbers by worker processes as by the serial executor."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from selfish_lib.engine.executors import train_all
from selfish_lib.engine.runs import MARKER, config_hash, read_table
from selfish_lib.engine.training import CHECKPOINT, train
from selfish_lib.report import pipeline, plan
from selfish_lib.report.cli import main as cli
from selfish_lib.report.plan import estimate_seconds, format_duration, plan_table, run_status


def smoke_plan(results_dir, **kwargs):
    return pipeline.prepare(profile="smoke", device="cpu", results_dir=results_dir,
                            reports_dir=results_dir.parent / "plan-reports", **kwargs)  # fmt: skip


def test_the_plan_is_what_the_notebooks_read(smoke_results):
    prepared = smoke_plan(smoke_results)
    planned = {config_hash(c) for c in prepared.configs()}
    stored = {p.parent.name for p in (smoke_results / "runs").glob(f"*/{MARKER}")}
    assert planned == stored  # every run a notebook read was planned, and nothing else
    table = plan_table(prepared.grids, smoke_results)
    assert set(table["status"]) == {"done"} and len(table) == len(planned)
    readers = {frozenset(n.split(", ")) for n in table["notebooks"]}
    # the cipher's bilingual runs are read again by chapter 10, beside its real languages
    assert {frozenset({"02", "03", "04", "07", "09"}), frozenset({"04", "05", "07", "09", "10"}),
            frozenset({"06"}), frozenset({"07"}), frozenset({"08"}), frozenset({"10"})
            } <= readers  # fmt: skip


def test_selfish_plan_prints_the_table_and_the_totals(smoke_results, capsys):
    assert cli(["plan", "--profile", "smoke", "--results-dir", str(smoke_results),
                "--no-estimate"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    n = len({p.name for p in (smoke_results / "runs").iterdir() if not p.name.startswith(".")})
    assert f"{n} runs: {n} done, 0 partial, 0 missing" in out
    assert "HNS(layout=8→2, cosine)" in out


def test_plan_status_missing_partial_and_estimate(tmp_path, tiny_corpus):
    prepared = smoke_plan(tmp_path / "results", only=["03"])
    config = prepared.configs()[0]
    assert run_status(config, tmp_path / "results") == "missing"
    partial = tmp_path / "results" / "runs" / f".{config_hash(config)}.partial"
    small = config.replace(data_sha256=tiny_corpus.sha256)
    train(small, tiny_corpus, partial, progress=False, stop_after=10)
    state = torch.load(partial / CHECKPOINT, weights_only=False)
    state["config"] = config.to_dict()
    torch.save(state, partial / CHECKPOINT)
    assert run_status(config, tmp_path / "results") == "partial at step 10"
    timings = {plan.shape_of(config): (0.5, 2.0)}
    table = plan_table(prepared.grids, tmp_path / "results", timings)
    row = table.set_index("id").loc[config_hash(config)]
    left = config.max_steps - 10
    # the evaluations before the last score a k-th of the windows: a k-th of the cost
    interim = config.max_steps // config.eval_interval / config.interim_eval_stride
    evals = (interim + 1) * left / config.max_steps
    assert config.interim_eval_stride > 1
    assert row["estimate_s"] == pytest.approx(left * 0.5 + evals * 2.0)
    assert estimate_seconds(config, (0.5, 2.0), config.max_steps) == 0.0
    assert [format_duration(v) for v in (12, 600, 9000, None)] == ["12 s", "10 min", "2.5 h", "?"]


def test_two_worker_processes_train_the_same_runs_as_one_process(smoke_results, tmp_path):
    configs = smoke_plan(smoke_results, only=["03", "05"]).configs()
    trained = train_all(configs, results_dir=tmp_path / "store", device="cpu", jobs=2,
                        progress=False)  # fmt: skip
    assert [t.id for t in trained] == [config_hash(c) for c in configs]
    assert all(t.trained_now for t in trained)
    for t in trained:
        for table in ("train_log", "train_tokens", "eval_tokens", "scenarios"):
            mine = read_table(tmp_path / "store" / "runs" / t.id, table)
            serial = read_table(smoke_results / "runs" / t.id, table)
            pd.testing.assert_frame_equal(mine, serial)
    again = train_all(configs, results_dir=tmp_path / "store", device="cpu", jobs=2,
                      progress=False)  # fmt: skip
    assert not any(t.trained_now for t in again)  # loaded from the store
