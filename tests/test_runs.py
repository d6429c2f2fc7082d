"""The run store: content-addressed, trained once, visible only when complete, resumable."""

from __future__ import annotations

import pytest
import torch

import selfish_lib.engine.runs as runs
from selfish_lib.engine.runs import Run, config_hash, get_or_train, list_runs
from selfish_lib.engine.training import TrainConfig


def tiny(corpus, **changes) -> TrainConfig:
    return TrainConfig.flat(
        n_layer=1,
        n_head=1,
        n_embd=8,
        block_size=8,
        batch_size=2,
        max_steps=8,
        warmup_steps=2,
        eval_interval=4,
        log_interval=2,
        checkpoint_interval=3,
        data_sha256=corpus.sha256,
    ).replace(**changes)


def test_hash_is_stable_and_changes_with_every_field(tiny_corpus):
    cfg = tiny(tiny_corpus)
    assert config_hash(cfg) == config_hash(tiny(tiny_corpus))
    changed = {
        "seed": 1,
        "layout": 2.0,
        "max_steps": 9,
        "n_embd": 16,
        "learning_rate": 2e-3,
        "bilingual": True,
        "eval_interval": 2,
        "data_sha256": "0" * 64,
    }
    hashes = {config_hash(cfg.replace(**{k: v})) for k, v in changed.items()}
    assert len(hashes) == len(changed) and config_hash(cfg) not in hashes


def test_trains_once_then_loads(tiny_corpus, results_dir, monkeypatch):
    cfg = tiny(tiny_corpus)
    first = get_or_train(cfg, corpus=tiny_corpus, results_dir=results_dir, progress=False)
    assert (first.path / "COMPLETE").exists() and first.id == config_hash(cfg)

    def no_training(*args, **kwargs):
        raise AssertionError("a completed run was trained again")

    monkeypatch.setattr(runs, "train", no_training)
    again = get_or_train(cfg, corpus=tiny_corpus, results_dir=results_dir, progress=False)
    assert again.config == cfg
    assert again.eval_tokens.equals(first.eval_tokens)
    a, b = first.model(), again.model()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    table = list_runs(results_dir)
    assert table["id"].tolist() == [first.id]


def test_run_tables_and_metrics(tiny_corpus, results_dir):
    run = get_or_train(
        tiny(tiny_corpus), corpus=tiny_corpus, results_dir=results_dir, progress=False
    )
    assert run.train_log["step"].tolist() == [2, 4, 6, 8]
    final = run.final_eval()
    assert final["count"].sum() == len(tiny_corpus.val) - 1
    by_lang = run.metrics(tiny_corpus.token_info(), by=["language"])
    assert by_lang["language"].tolist() == ["high"]
    assert by_lang["count"].iloc[0] == len(tiny_corpus.val) - 1
    assert run.meta["device"] == "cpu" and run.meta["train_seconds"] > 0


def test_interrupted_run_is_invisible_then_resumes_exactly(tiny_corpus, tmp_path, monkeypatch):
    cfg = tiny(tiny_corpus, dropout=0.1)
    reference = get_or_train(cfg, corpus=tiny_corpus, results_dir=tmp_path / "ref", progress=False)
    real_train = runs.train

    def interrupted(*args, **kwargs):
        real_train(*args, stop_after=5, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "train", interrupted)
    store = tmp_path / "store"
    with pytest.raises(KeyboardInterrupt):
        get_or_train(cfg, corpus=tiny_corpus, results_dir=store, progress=False)
    key = config_hash(cfg)
    assert not (store / "runs" / key).exists()
    assert (store / "runs" / f".{key}.partial" / "checkpoint.pt").exists()
    assert list_runs(store).empty
    with pytest.raises(runs.CorruptRun, match="no COMPLETE marker"):
        Run.load(store / "runs" / f".{key}.partial")

    monkeypatch.setattr(runs, "train", real_train)
    resumed = get_or_train(cfg, corpus=tiny_corpus, results_dir=store, progress=False)
    ref_state, new_state = reference.model().state_dict(), resumed.model().state_dict()
    assert all(torch.equal(ref_state[k], new_state[k]) for k in ref_state)
    assert resumed.eval_tokens.equals(reference.eval_tokens)
    assert not (store / "runs" / f".{key}.partial").exists()
    assert not (resumed.path / "checkpoint.pt").exists()


def test_a_new_field_at_its_default_keeps_existing_ids(tiny_corpus, monkeypatch):
    """Fields at their default are not hashed: adding one later keeps old run ids."""
    cfg = tiny(tiny_corpus)
    explicit_default = cfg.replace(scenario_interval=TrainConfig.flat().scenario_interval)
    assert config_hash(explicit_default) == config_hash(cfg)
    before = config_hash(cfg)
    monkeypatch.setattr(runs, "NUMERICS_VERSION", runs.NUMERICS_VERSION + 1)
    assert config_hash(cfg) != before  # a numerics bump retrains everything


def test_scenario_log_is_stored_with_the_run(tiny_corpus, results_dir):
    run = get_or_train(
        tiny(tiny_corpus, scenario_interval=4),
        corpus=tiny_corpus,
        results_dir=results_dir,
        progress=False,
    )
    table = run.scenario_table(tiny_corpus.token_info())
    assert sorted(table["step"].unique()) == [4, 8]
    assert {"step", "token", "symbol", "rank", "scenario", "value"} <= set(table.columns)
    nontarget = table[table["scenario"] == "nontarget"]
    assert len(nontarget) == 2 * tiny_corpus.vocab_size and (nontarget["value"] > 0).all()


def test_a_run_being_trained_elsewhere_is_waited_for_not_trained_twice(
    tiny_corpus, tmp_path, monkeypatch
):
    import fcntl
    import shutil
    import threading

    cfg = tiny(tiny_corpus)
    done = get_or_train(cfg, corpus=tiny_corpus, results_dir=tmp_path / "other", progress=False)
    store, key = tmp_path / "store", config_hash(cfg)
    partial = store / "runs" / f".{key}.partial"
    partial.mkdir(parents=True)
    calls = []
    monkeypatch.setattr(runs, "train", lambda *args, **kwargs: calls.append(args))
    result = {}

    def ask() -> None:
        result["run"] = get_or_train(cfg, corpus=tiny_corpus, results_dir=store, progress=False)

    with open(partial / "lock", "w") as held:  # another process is training this run
        fcntl.flock(held, fcntl.LOCK_EX)
        waiter = threading.Thread(target=ask)
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive()  # blocked on the lock
        shutil.copytree(done.path, store / "runs" / key)  # the other process finishes
        fcntl.flock(held, fcntl.LOCK_UN)
    waiter.join(timeout=60)
    assert not waiter.is_alive() and calls == []  # loaded, not trained a second time
    assert result["run"].id == key and not partial.exists()
    assert not (done.path / "lock").exists()  # a finished run carries no lock file
