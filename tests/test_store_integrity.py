"""The run store verifies what it serves: each corruption of a finished run is detected,
the run moved aside (never deleted) and trained again, in either table format; bad
checkpoints are discarded; one experiment has one id; `selfish verify` lists what is
wrong."""

from __future__ import annotations

import gzip
import json
import os
import shutil

import pytest
import torch

import selfish_lib.engine.training as training
from selfish_lib.engine.runs import (
    CORRUPT_DIR,
    CorruptRun,
    Run,
    check_run,
    config_hash,
    get_or_train,
    read_table,
    verify_store,
    write_table,
)
from selfish_lib.engine.training import CHECKPOINT, TrainConfig, train
from selfish_lib.report.cli import main as cli


def tiny(corpus, **changes) -> TrainConfig:
    return TrainConfig.flat(
        n_layer=1,
        n_head=1,
        n_embd=8,
        block_size=8,
        batch_size=2,
        max_steps=6,
        warmup_steps=2,
        eval_interval=3,
        log_interval=2,
        checkpoint_interval=2,
        data_sha256=corpus.sha256,
    ).replace(**changes)


def truncate_gzip_table(path, rows: int) -> None:
    """Drop the last ``rows`` lines of a gzipped CSV and write it back as valid gzip."""
    lines = gzip.decompress(path.read_bytes()).decode().splitlines(keepends=True)
    path.write_bytes(gzip.compress("".join(lines[:-rows]).encode()))


def drop_rows(path, rows: int) -> None:
    """Rewrite a binary table without its last ``rows`` rows (a valid file, shorter)."""
    frame = read_table(path.parent, path.name.removesuffix(".npz"))
    write_table(frame.iloc[:-rows], path)


def nudge_a_value(path) -> None:
    """Rewrite a binary table with one sum changed (a valid file of the same size)."""
    frame = read_table(path.parent, path.name.removesuffix(".npz"))
    frame.loc[3, "loss_sum"] += 0.5
    write_table(frame, path)


def edit_config_layout(path) -> None:
    body = json.loads(path.read_text())
    body["config"]["objective"]["layout"] = 3.0
    path.write_text(json.dumps(body, indent=2))


CORRUPTIONS = {
    "table short of rows (valid npz)": (
        lambda run: drop_rows(run / "eval_tokens.npz", 5),
        "eval_tokens.npz has",
    ),
    "table value changed (valid npz, same size)": (
        lambda run: nudge_a_value(run / "eval_tokens.npz"),
        "eval_tokens.npz differs",
    ),
    "config edited": (lambda run: edit_config_layout(run / "config.json"), "hashes to"),
    "model deleted": (lambda run: (run / "model.pt").unlink(), "model.pt is missing"),
    "model truncated": (
        lambda run: os.truncate(run / "model.pt", (run / "model.pt").stat().st_size // 2),
        "model.pt has",
    ),
    "model bytes flipped": (
        lambda run: (run / "model.pt").write_bytes(
            bytes(b ^ 0xFF for b in (run / "model.pt").read_bytes())
        ),
        "model.pt differs",
    ),
    "manifest deleted": (lambda run: (run / "manifest.json").unlink(), "no manifest.json"),
}


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory, tiny_corpus):
    """A store with one finished HNS run, copied afresh for every test that corrupts it."""
    root = tmp_path_factory.mktemp("pristine")
    run = get_or_train(
        tiny(tiny_corpus, layout=2.0), corpus=tiny_corpus, results_dir=root, progress=False
    )
    return root, run.id


def fresh_copy(trained_store, tmp_path):
    root, key = trained_store
    target = tmp_path / "store"
    shutil.copytree(root, target)
    return target, key


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_each_corruption_is_detected_moved_aside_and_retrained(
    name, trained_store, tmp_path, tiny_corpus, capsys
):
    store, key = fresh_copy(trained_store, tmp_path)
    damage, reason = CORRUPTIONS[name]
    run_dir = store / "runs" / key
    before = Run.load(run_dir).eval_tokens
    damage(run_dir)
    with pytest.raises(CorruptRun, match=reason):
        check_run(run_dir, full=True)
    listing = verify_store(store)
    assert listing.set_index("id").loc[key, "status"] == "corrupt"
    assert reason.split()[0] in listing.set_index("id").loc[key, "reason"]

    run = get_or_train(
        tiny(tiny_corpus, layout=2.0), corpus=tiny_corpus, results_dir=store, progress=False
    )
    assert run.trained_now and run.id == key
    assert run.eval_tokens.equals(before)  # retrained to the same numbers
    kept = list((store / "runs" / CORRUPT_DIR).iterdir())
    assert len(kept) == 1 and kept[0].name.startswith(key)  # moved aside, not deleted
    err = capsys.readouterr().err
    assert f"corrupt run {key}" in err and "moved to" in err
    assert verify_store(store).set_index("id").loc[key, "status"] == "ok"


def test_a_damaged_table_of_the_earlier_format_is_detected_and_retrained(
    trained_store, tmp_path, tiny_corpus, earlier_format, capsys
):
    store, key = fresh_copy(trained_store, tmp_path)
    run_dir = store / "runs" / key
    earlier_format(run_dir)
    check_run(run_dir, full=True)  # sound as it was stored
    truncate_gzip_table(run_dir / "eval_tokens.csv.gz", 5)
    with pytest.raises(CorruptRun, match="eval_tokens.csv.gz"):
        check_run(run_dir, full=True)
    run = get_or_train(
        tiny(tiny_corpus, layout=2.0), corpus=tiny_corpus, results_dir=store, progress=False
    )
    assert run.trained_now and (run.path / "eval_tokens.npz").exists()
    assert f"corrupt run {key}" in capsys.readouterr().err


def test_verify_command_lists_corrupt_runs_and_exits_1(trained_store, tmp_path, capsys):
    store, key = fresh_copy(trained_store, tmp_path)
    assert cli(["verify", "--results-dir", str(store)]) == 0
    assert "ok" in capsys.readouterr().out
    (store / "runs" / key / "model.pt").unlink()
    assert cli(["verify", "--results-dir", str(store)]) == 1
    out = capsys.readouterr().out
    assert key in out and "corrupt" in out and "model.pt is missing" in out


def bad_checkpoints(config, good: dict):
    """(name, writer) pairs, each leaving an unusable checkpoint.pt in a folder."""
    wrong_shapes = dict(good)
    wrong_shapes["model"] = {k: torch.zeros(3) for k in good["model"]}
    beyond = dict(good, step=config.max_steps + 5)
    other = dict(good, config=config.replace(seed=99).to_dict())
    return {
        "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 3]),
        "random bytes": lambda p: p.write_bytes(os.urandom(4096)),
        "empty": lambda p: p.write_bytes(b""),
        "wrong shapes": lambda p: torch.save(wrong_shapes, p),
        "step beyond max_steps": lambda p: torch.save(beyond, p),
        "another config": lambda p: torch.save(other, p),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "truncated",
        "random bytes",
        "empty",
        "wrong shapes",
        "step beyond max_steps",
        "another config",
    ],
)
def test_a_bad_checkpoint_is_discarded_and_training_restarts(kind, tiny_corpus, tmp_path, capsys):
    config = tiny(tiny_corpus, layout=2.0)
    reference = train(config, tiny_corpus, progress=False)
    work = tmp_path / "partial"
    assert train(config, tiny_corpus, work, progress=False, stop_after=2) is None
    train(config, tiny_corpus, work, progress=False, stop_after=0)  # no-op: keeps step 2
    ckpt = work / CHECKPOINT
    good = torch.load(ckpt, weights_only=False)
    bad_checkpoints(config, good)[kind](ckpt)
    result = train(config, tiny_corpus, work, progress=False)
    err = capsys.readouterr().err
    assert f"discarded checkpoint {ckpt}" in err and "from step 0" in err
    assert (work / "checkpoint.rejected.pt").exists()
    ref, got = reference.model.state_dict(), result.model.state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref)  # a clean restart, same numbers


def test_a_store_run_with_a_bad_checkpoint_completes(tiny_corpus, tmp_path):
    config = tiny(tiny_corpus)
    partial = tmp_path / "runs" / f".{config_hash(config)}.partial"
    partial.mkdir(parents=True)
    (partial / CHECKPOINT).write_bytes(b"not a checkpoint")
    run = get_or_train(config, corpus=tiny_corpus, results_dir=tmp_path, progress=False)
    assert run.config == config and check_run(run.path, full=True) == config


def test_a_full_disk_at_a_checkpoint_says_so(tiny_corpus, tmp_path, monkeypatch):
    def no_space(obj, path):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    monkeypatch.setattr(training.torch, "save", no_space)
    monkeypatch.setattr(training.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 0))
    with pytest.raises(OSError, match=r"could not write the checkpoint .*no space left"):
        train(tiny(tiny_corpus), tiny_corpus, tmp_path / "work", progress=False)
    assert not list((tmp_path / "work").glob("*.tmp"))  # nothing half-written left


def test_verify_names_a_mistyped_store_and_leaves_unrelated_folders_alone(tmp_path, capsys):
    main = cli
    typo = tmp_path / "reslts"
    assert main(["verify", "--results-dir", str(typo)]) == 2
    err = capsys.readouterr().err
    assert "results_dir" in err and "does not exist" in err
    (tmp_path / "store" / "runs" / "my-notes").mkdir(parents=True)
    assert main(["verify", "--results-dir", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "not a run" in out and "0 corrupt" in out and "left alone" in out


def test_a_read_only_store_can_be_verified_and_listed(trained_store, monkeypatch, capsys):
    """Reading needs no write: with every folder reported read-only (as an archive or a
    shared cluster folder is), the store is still verified and listed."""
    real_access = os.access

    def read_only(path, mode, *args, **kwargs):
        return False if mode & os.W_OK else real_access(path, mode, *args, **kwargs)

    store, key = trained_store
    monkeypatch.setattr(os, "access", read_only)
    assert verify_store(store)["status"].tolist() == ["ok"]
    assert cli(["verify", "--results-dir", str(store)]) == 0
    assert cli(["runs", "--results-dir", str(store)]) == 0
    out = capsys.readouterr().out
    assert "1 ok, 0 corrupt" in out and key in out
