"""The run store: content-addressed, trained once, visible only when complete, resumable;
tables in a binary, exact and deterministic format, runs of the earlier format still
served; a run of another device kind kept but never served."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import selfish_lib.engine.runs as runs
from selfish_lib.engine.runs import (
    MANIFEST,
    OTHER_DEVICE_DIR,
    TABLES,
    Run,
    check_run,
    config_hash,
    get_or_train,
    list_runs,
    stored_run,
    verify_store,
)
from selfish_lib.engine.training import LOG_DIR, TrainConfig, train


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


def test_tables_are_binary_exact_and_the_same_bytes_for_the_same_run(tiny_corpus, tmp_path):
    cfg = tiny(tiny_corpus, scenario_interval=4)
    first = get_or_train(cfg, corpus=tiny_corpus, results_dir=tmp_path / "a", progress=False)
    again = get_or_train(cfg, corpus=tiny_corpus, results_dir=tmp_path / "b", progress=False)
    direct = train(cfg, tiny_corpus, device="cpu", progress=False)
    manifest = json.loads((first.path / MANIFEST).read_text())
    for name in TABLES:
        file = first.path / f"{name}.npz"
        assert f"{name}.npz" in manifest["files"] and not (first.path / f"{name}.csv.gz").exists()
        # every value as trained, not rounded: the stored table is the result's
        assert getattr(first, name).equals(getattr(direct, name)), name
        with np.load(file, allow_pickle=False) as archive:  # a plain .npz: numpy reads it
            assert archive.files == list(getattr(direct, name).columns)
        assert file.read_bytes() == (again.path / f"{name}.npz").read_bytes(), name
    assert not (first.path / LOG_DIR).exists() and not (first.path / "checkpoint.pt").exists()
    assert manifest["device"]["kind"] == "cpu" and manifest["device"]["precision"] == "fp32"


def test_a_run_stored_in_the_earlier_format_is_served_and_verified(
    tiny_corpus, results_dir, monkeypatch, earlier_format
):
    cfg = tiny(tiny_corpus, scenario_interval=4)
    new = get_or_train(cfg, corpus=tiny_corpus, results_dir=results_dir, progress=False)
    tables = {name: getattr(new, name) for name in TABLES}
    earlier_format(new.path)
    assert (new.path / "eval_tokens.csv.gz").exists() and not (
        new.path / "eval_tokens.npz"
    ).exists()
    assert check_run(new.path, full=True) == cfg
    assert verify_store(results_dir)["status"].tolist() == ["ok"]
    monkeypatch.setattr(runs, "train", lambda *a, **k: pytest.fail("a stored run was retrained"))
    old = get_or_train(cfg, corpus=tiny_corpus, results_dir=results_dir, device="cpu",
                       progress=False)  # fmt: skip
    assert old.device == {"kind": "cpu", "precision": "fp32", "torch": torch.__version__}
    for name, table in tables.items():
        stored = getattr(old, name)  # the CSV kept 10 significant digits
        assert list(stored.columns) == list(table.columns) and len(stored) == len(table)
        if len(table):
            np.testing.assert_allclose(stored.to_numpy(float), table.to_numpy(float), rtol=1e-9)


def _say_trained_on(run_dir, device: dict | None, meta_device: str | None = None) -> None:
    """Edit a stored run's record of its device (the manifest is not in its own list)."""
    manifest = json.loads((run_dir / MANIFEST).read_text())
    if device is None:
        manifest.pop("device", None)
    else:
        manifest["device"] = device
    (run_dir / MANIFEST).write_text(json.dumps(manifest))
    if meta_device is not None:  # config.json is in the manifest: its hash follows
        body = json.loads((run_dir / "config.json").read_text())
        body["meta"]["device"] = meta_device
        (run_dir / "config.json").write_text(json.dumps(body, indent=2))
        manifest["files"]["config.json"] = {
            "size": (run_dir / "config.json").stat().st_size,
            "sha256": runs.sha256_of(run_dir / "config.json"),
        }
        (run_dir / MANIFEST).write_text(json.dumps(manifest))


CUDA_RECORD = {"kind": "cuda", "precision": "fp32", "gpu": "NVIDIA H200", "torch": "2.5.1"}


@pytest.mark.parametrize("how", ["manifest", "earlier format"])
def test_a_run_of_another_device_kind_is_kept_and_not_served(
    tiny_corpus, results_dir, capsys, how, earlier_format
):
    cfg = tiny(tiny_corpus)
    gpu_run = get_or_train(cfg, corpus=tiny_corpus, results_dir=results_dir, progress=False)
    if how == "manifest":
        _say_trained_on(gpu_run.path, CUDA_RECORD)
    else:  # a run stored before manifests named devices: its config.json says cuda:0
        earlier_format(gpu_run.path)
        _say_trained_on(gpu_run.path, None, meta_device="cuda:0")
    before = Run.load(gpu_run.path).eval_tokens
    capsys.readouterr()
    # a plain read may serve it; a read for the CPU does not, and leaves it where it is
    assert stored_run(cfg, results_dir) is not None
    assert stored_run(cfg, results_dir, device="cpu") is None
    assert "not served (it was trained on cuda" in capsys.readouterr().err
    run = get_or_train(cfg, corpus=tiny_corpus, results_dir=results_dir, device="cpu",
                       progress=False)  # fmt: skip
    err = capsys.readouterr().err
    assert run.trained_now and run.id == gpu_run.id and run.device["kind"] == "cpu"
    assert "not served (it was trained on cuda" in err and "request is for cpu" in err
    assert "never mixed" in err and "kept" in err
    kept = list((results_dir / "runs" / OTHER_DEVICE_DIR).iterdir())
    assert len(kept) == 1 and kept[0].name.startswith(f"{gpu_run.id}.cuda.")
    assert runs.read_table(kept[0], "eval_tokens").equals(before)  # kept whole, not deleted
    assert list_runs(results_dir)["id"].tolist() == [run.id]  # the new run is the one served


def test_the_plan_counts_a_run_of_another_device_as_missing(tiny_corpus, results_dir):
    from selfish_lib.report.plan import run_status

    cfg = tiny(tiny_corpus)
    run = get_or_train(cfg, corpus=tiny_corpus, results_dir=results_dir, progress=False)
    assert run_status(cfg, results_dir, device="cpu") == "done"
    _say_trained_on(run.path, CUDA_RECORD)
    assert runs.trained_elsewhere(run.path, "cpu")
    assert run_status(cfg, results_dir) == "done"  # without a device: any finished run
    assert run_status(cfg, results_dir, device="cpu") == "missing"  # trained again


def test_train_and_reproduce_print_the_resolved_device(tmp_path, monkeypatch, capsys):
    from selfish_lib.report import cli

    store = ["--results-dir", str(tmp_path / "results")]
    assert cli.main(["train", "--profile", "smoke", "--device", "cpu", *store]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "device: cpu (asked for cpu)"
    monkeypatch.setattr(cli, "run_pipeline", lambda **kwargs: [])
    reports = ["--reports-dir", str(tmp_path / "reports")]
    assert cli.main(["reproduce", "--profile", "smoke", *store, *reports]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line == "device: cpu (auto: SELFISH_AUTO_DEVICE=cpu)"  # what conftest pins
