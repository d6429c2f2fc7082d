"""What a hostile but fair user does to the run store, to training processes and to the
engine's numbers, answered as the README's "Runs" section promises.

- A manifest or config of binary garbage, of text that is not JSON or of JSON of the
  wrong shape names the run and the file wherever it is met (verify, runs, train,
  loading), and the run is set aside like any corrupt run, so that later commands go on;
  in a read-only store it is reported and left in place.
- A run's required files follow from its config: a BPE run whose tokenizer was deleted
  and dropped from its manifest is corrupt, and trained again.
- A read-only store serves its runs: loading writes nothing (no lock, no partial folder).
- SIGTERM stops `selfish train` as the first Ctrl-C does (a checkpoint at the last full
  step, one line naming it, status 130), and no temporary checkpoint is ever left.
- Worker processes stop with their parent: SIGTERM to it stops each with a checkpoint,
  and kill -9 of it leaves no worker training.
- A lock's waiting line says who holds it (pid, host, since when; stopped or not) and
  how to proceed, and a lock whose holder is killed is taken over.
- A Ray address that answers nothing is refused within seconds, naming --address.
- The engine's ranges (one table) refuse what a run cannot honour, naming the parameter.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import selfish_lib.engine.training as training
from selfish_lib.engine import distributed, runs
from selfish_lib.engine.executors import train_all
from selfish_lib.engine.files import process_state
from selfish_lib.engine.runs import (
    CORRUPT_DIR,
    MANIFEST,
    TOKENIZER,
    CorruptRun,
    check_run,
    config_hash,
    get_or_train,
    get_or_train_group,
    list_runs,
    lock_message,
    stored_run,
    verify_store,
)
from selfish_lib.engine.training import (
    CHECKPOINT,
    TrainConfig,
    TrainingInterrupted,
    _deferred_interrupt,
    _save_atomic,
    train,
)
from selfish_lib.engine.validation import RANGES, ParameterError, check_ranged
from selfish_lib.report import cli, pipeline

HELPERS = Path(__file__).parent / "helpers"
CHILD = HELPERS / "hardening_child.py"
sys.path.insert(0, str(HELPERS))
from hardening_child import long_config  # noqa: E402


def tiny(corpus, **changes) -> TrainConfig:
    return TrainConfig.flat(
        n_layer=1, n_head=1, n_embd=8, block_size=8, batch_size=2, max_steps=6,
        warmup_steps=2, eval_interval=3, log_interval=2, checkpoint_interval=2,
        data_sha256=corpus.sha256,
    ).replace(**changes)  # fmt: skip


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, tiny_corpus):
    """A store with one finished character run and one BPE run: (root, char id, bpe id)."""
    root = tmp_path_factory.mktemp("pristine")
    char = get_or_train(tiny(tiny_corpus), corpus=tiny_corpus, results_dir=root, progress=False)
    bpe = get_or_train(tiny(tiny_corpus, tokenizer="bpe-16"), corpus=tiny_corpus,
                       results_dir=root, progress=False)  # fmt: skip
    return root, char.id, bpe.id


@pytest.fixture
def store(pristine, tmp_path):
    """A fresh copy of the pristine store: (root, char id, bpe id)."""
    root, char, bpe = pristine
    shutil.copytree(root, tmp_path / "store")
    return tmp_path / "store", char, bpe


def folder_state(root: Path) -> dict[str, int]:
    """Every path under ``root`` with its modification time: what a read changes."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


@pytest.fixture
def read_only(monkeypatch):
    """Every folder reported read-only, as an archive or a shared cluster folder is (the
    tests run as root, whom file modes do not stop; the store asks os.access)."""
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        return False if mode & os.W_OK else real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


# --- a manifest or config that is no JSON at all -------------------------------------------

DAMAGES = {
    "binary garbage": b"\xff\xfe\x00\x9c garbage \x80\x81",
    "latin-1 text": "caf\xe9".encode("latin-1"),
    "not JSON": b'{"id": "0123',
    "JSON of the wrong shape": b"[]",
    "files a list": b'{"files": []}',
    "a file outside the run": b'{"files": {"../../x": {"size": 1, "sha256": "00"}}}',
    "nested past what Python reads": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("file", [MANIFEST, "config.json"])
@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_manifest_or_config_is_a_corrupt_run_named_everywhere(
    store, tiny_corpus, capsys, file, damage
):
    root, key, _ = store
    path = root / "runs" / key
    (path / file).write_bytes(damage)
    with pytest.raises(CorruptRun) as err:
        check_run(path)
    assert err.value.path == path and file in err.value.reason, err.value.reason
    # verify and runs report it by id and file (verify exits 1), moving nothing
    assert cli.main(["verify", "--results-dir", str(root)]) == 1
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if key in row)
    assert "corrupt" in line and file in line
    listed = list_runs(root).set_index("id")
    assert listed.loc[key, "status"].startswith("corrupt: ") and file in listed.loc[key, "status"]
    assert path.exists()
    # loading it sets it aside in one line naming the run and the file ...
    assert stored_run(tiny(tiny_corpus), root) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"corrupt run {key}" in err and file in err
    kept = list((root / "runs" / CORRUPT_DIR).iterdir())
    assert [p.name.split(".")[0] for p in kept] == [key] and (kept[0] / file).exists()
    # ... and later commands go on: it is trained again, and verify is content
    run = get_or_train(tiny(tiny_corpus), corpus=tiny_corpus, results_dir=root, progress=False)
    assert run.trained_now and run.id == key
    assert set(verify_store(root)["status"]) == {"ok"}


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory):
    """A store holding the run `selfish train --profile smoke --device cpu` trains."""
    root = tmp_path_factory.mktemp("smoke")
    assert cli.main(["train", "--profile", "smoke", "--device", "cpu",
                     "--results-dir", str(root)]) == 0  # fmt: skip
    (key,) = [p.name for p in (root / "runs").iterdir() if not p.name.startswith(".")]
    return root, key


def test_selfish_train_sets_aside_a_garbage_manifest_and_trains_again(
    smoke_store, tmp_path, capsys
):
    root = tmp_path / "store"
    shutil.copytree(smoke_store[0], root)
    key = smoke_store[1]
    (root / "runs" / key / MANIFEST).write_bytes(b"\xff\xd8\xff\xe0 not a manifest")
    argv = ["train", "--profile", "smoke", "--device", "cpu", "--results-dir", str(root)]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert f"corrupt run {key} ({MANIFEST} is not UTF-8 text" in captured.err
    assert f"trained run {key}" in captured.out
    assert cli.main(argv) == 0  # the next command loads it
    assert f"loaded run {key}" in capsys.readouterr().out


def test_a_read_only_store_reports_a_corrupt_run_and_leaves_it(store, tiny_corpus, read_only,
                                                               capsys):  # fmt: skip
    root, key, _ = store
    (root / "runs" / key / MANIFEST).write_bytes(b"\x00\xff\xff")
    before = folder_state(root)
    with pytest.raises(ParameterError, match="results_dir.*read-only"):
        get_or_train(tiny(tiny_corpus), corpus=tiny_corpus, results_dir=root, progress=False)
    err = capsys.readouterr().err
    assert f"corrupt run {key} ({MANIFEST}" in err and "left in place" in err
    assert cli.main(["verify", "--results-dir", str(root)]) == 1
    assert "1 ok, 1 corrupt (the store is read-only: they stay" in capsys.readouterr().out
    assert stored_run(tiny(tiny_corpus), root) is None
    assert "read-only" in capsys.readouterr().err
    assert folder_state(root) == before  # nothing moved, nothing written


# --- required files follow from the config ------------------------------------------------


def test_a_tokenizer_deleted_and_dropped_from_the_manifest_is_corrupt(store, tiny_corpus, capsys):
    root, _, key = store
    path = root / "runs" / key
    (path / TOKENIZER).unlink()
    manifest = json.loads((path / MANIFEST).read_text())
    del manifest["files"][TOKENIZER]
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CorruptRun, match=f"{TOKENIZER} is missing: the manifest lists no"):
        check_run(path)
    assert cli.main(["verify", "--results-dir", str(root)]) == 1
    assert f"{TOKENIZER} is missing" in capsys.readouterr().out
    config = tiny(tiny_corpus, tokenizer="bpe-16")
    assert runs.required_files(config)[-1] == (TOKENIZER,)
    assert (TOKENIZER,) not in runs.required_files(tiny(tiny_corpus))
    run = get_or_train(config, corpus=tiny_corpus, results_dir=root, progress=False)
    assert run.trained_now and (run.path / TOKENIZER).is_file()  # trained again, not stuck
    assert run.tokenizer().sha256 == tiny_corpus.with_tokenizer("bpe-16").tokenizer.sha256
    assert f"corrupt run {key}" in capsys.readouterr().err


def test_a_table_dropped_from_the_manifest_is_corrupt(store):
    root, key, _ = store
    path = root / "runs" / key
    manifest = json.loads((path / MANIFEST).read_text())
    del manifest["files"]["train_log.npz"]
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CorruptRun, match="train_log.npz is missing: the manifest lists no"):
        check_run(path)


# --- a read-only store is read -------------------------------------------------------------


def test_a_read_only_store_serves_its_runs_and_writes_nothing(store, tiny_corpus, read_only):
    root, char, bpe = store
    before = folder_state(root)
    run = get_or_train(tiny(tiny_corpus), corpus=tiny_corpus, results_dir=root, progress=False)
    assert run.id == char and not run.trained_now and run.eval_tokens.shape[0] > 0
    configs = [tiny(tiny_corpus), tiny(tiny_corpus, tokenizer="bpe-16")]
    assert [r.id for r in get_or_train_group(configs, corpus=tiny_corpus, results_dir=root,
                                             progress=False)] == [char, bpe]  # fmt: skip
    assert stored_run(tiny(tiny_corpus), root).id == char
    grid = runs.get_or_train_grid({"a": tiny(tiny_corpus)}, corpus=tiny_corpus, results_dir=root,
                                  progress=False)  # fmt: skip
    assert grid["a"].id == char  # what a notebook's study object asks for
    assert folder_state(root) == before  # no lock file, no partial folder, nothing moved
    with pytest.raises(ParameterError, match="results_dir.*read-only"):  # training writes
        get_or_train(tiny(tiny_corpus, seed=5), corpus=tiny_corpus, results_dir=root,
                     progress=False)  # fmt: skip
    assert folder_state(root) == before


def test_the_plan_reads_a_read_only_store(store, tiny_corpus, read_only):
    from selfish_lib.report.plan import run_status

    root, _, _ = store
    before = folder_state(root)
    assert run_status(tiny(tiny_corpus), root) == "done"
    assert run_status(tiny(tiny_corpus, seed=5), root) == "missing"
    assert folder_state(root) == before


def test_selfish_train_loads_a_run_from_a_read_only_store(smoke_store, read_only, capsys):
    root, key = smoke_store
    before = folder_state(root)
    argv = ["train", "--profile", "smoke", "--device", "cpu", "--results-dir", str(root)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"loaded run {key} (" in out and "from the store" in out
    assert folder_state(root) == before


# --- checkpoints are written whole ---------------------------------------------------------


def test_a_checkpoint_write_cut_by_a_signal_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / CHECKPOINT
    _save_atomic({"step": 1}, path)
    real_save = torch.save

    def cut(obj, target):  # the first bytes are written, then a second signal arrives
        Path(target).write_bytes(b"PK\x03\x04")
        raise KeyboardInterrupt

    monkeypatch.setattr(training.torch, "save", cut)
    with pytest.raises(KeyboardInterrupt):
        _save_atomic({"step": 2}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]
    monkeypatch.setattr(training.torch, "save", real_save)
    assert torch.load(path, weights_only=False) == {"step": 1}  # the previous one, whole


def test_a_temporary_checkpoint_left_by_kill_9_is_removed(tiny_corpus, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / f"{CHECKPOINT}.tmp").write_bytes(b"")  # what a kill -9 during a write leaves
    train(tiny(tiny_corpus), tiny_corpus, work, progress=False, stop_after=3)
    assert not (work / f"{CHECKPOINT}.tmp").exists() and (work / CHECKPOINT).exists()
    config = tiny(tiny_corpus)  # and in the store, where the lock is taken
    partial = tmp_path / "runs" / f".{config_hash(config)}.partial"
    partial.mkdir(parents=True)
    (partial / f"{CHECKPOINT}.tmp").write_bytes(b"")
    run = get_or_train(config, corpus=tiny_corpus, results_dir=tmp_path, progress=False)
    assert run.trained_now and not partial.exists()


# --- signals: SIGTERM is the first Ctrl-C ---------------------------------------------------


def test_sigterm_is_deferred_to_the_step_boundary_and_a_second_ctrl_c_is_not():
    before = signal.getsignal(signal.SIGTERM)
    with _deferred_interrupt() as flag:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs between bytecodes of the main thread
        assert flag == {"raised": True, "signal": "SIGTERM"}
        os.kill(os.getpid(), signal.SIGTERM)  # again (a process manager's second try)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after SIGTERM: the same stop
        time.sleep(0.05)
        assert flag["signal"] == "SIGTERM"
    with pytest.raises(KeyboardInterrupt), _deferred_interrupt() as flag:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert flag == {"raised": True, "signal": "SIGINT"}
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C stops at once
        time.sleep(0.05)
    assert signal.getsignal(signal.SIGTERM) == before  # restored


def test_an_interruption_crosses_processes_whole():
    stop = TrainingInterrupted(7, 10, Path("/x/checkpoint.pt"), "SIGTERM")
    again = pickle_round_trip(stop)
    assert (again.step, again.max_steps, again.checkpoint, again.signal_name) == (
        7, 10, Path("/x/checkpoint.pt"), "SIGTERM"
    )  # fmt: skip
    assert str(again) == "interrupted by SIGTERM: checkpoint at step 7 of 10 in /x/checkpoint.pt"


def pickle_round_trip(value):
    import pickle

    return pickle.loads(pickle.dumps(value))


def child(*arguments: str) -> subprocess.Popen:
    """A real process of ``hardening_child.py``, on the CPU, unbuffered."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SELFISH_AUTO_DEVICE": "cpu"}
    return subprocess.Popen([sys.executable, str(CHILD), *arguments], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip


def wait_for(predicate, timeout: float, what: str, process: subprocess.Popen | None = None):
    """Poll ``predicate`` until it holds; fail naming ``what`` (and the child's stderr)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the child ended before {what}: {process.stderr.read()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def training_in(partial: Path) -> bool:
    """Whether a run trains in ``partial``: its first training rows are logged."""
    log = partial / training.LOG_DIR / "train_log.npy"
    return log.is_file() and log.stat().st_size > 0


def assert_checkpoint_at_a_whole_step(partial: Path) -> int:
    state = torch.load(partial / CHECKPOINT, weights_only=False)
    assert state["step"] >= 1
    assert not list(partial.glob("*.tmp"))
    return state["step"]


def test_sigterm_stops_training_at_a_whole_step_with_one_line(tmp_path):
    store = tmp_path / "store"
    process = child("train-one", str(store))
    partial = store / "runs" / f".{config_hash(long_config(0))}.partial"
    try:
        wait_for(lambda: training_in(partial), 120, "training to start", process)
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=60)
        out, err = process.stdout.read(), process.stderr.read()
    finally:
        process.kill()
    step = assert_checkpoint_at_a_whole_step(partial)
    assert status == 130, err
    assert out.strip() == (
        f"interrupted by SIGTERM: checkpoint at step {step} of {10**6} in {partial / CHECKPOINT}"
    )


@pytest.mark.slow  # the `selfish` command's imports take about ten seconds on a busy CPU
def test_sigterm_stops_selfish_train_like_the_first_ctrl_c(tmp_path):
    store = tmp_path / "store"
    process = child("train-cli", str(store))
    try:
        wait_for(lambda: any(training_in(p) for p in (store / "runs").glob(".*.partial")),
                 120, "training to start", process)  # fmt: skip
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=60)
        err = process.stderr.read()
    finally:
        process.kill()
    (partial,) = (store / "runs").glob(".*.partial")
    step = assert_checkpoint_at_a_whole_step(partial)
    last = err.strip().splitlines()[-1]
    assert status == cli.EXIT_INTERRUPTED, err
    assert last == (
        f"selfish train: interrupted by SIGTERM: checkpoint at step {step} of "
        f"{10**6} in {partial / CHECKPOINT}; run the same command to resume"
    )
    assert "Traceback" not in err


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not reaped by its new parent, does not)."""
    return process_state(pid) not in (None, "Z", "X")


linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


@linux_only
@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "kill -9"])
def test_workers_stop_with_their_parent(tmp_path, how):
    """Two runs training in two worker processes: SIGTERM to the parent stops each at a
    step boundary with a checkpoint and a line naming it (status 130); kill -9 of the
    parent stops them too (the parent-death signal), and no process of it is left."""
    store = tmp_path / "store"
    process = child("train-all", str(store))
    partials = [store / "runs" / f".{config_hash(long_config(seed))}.partial" for seed in (0, 1)]
    try:
        wait_for(lambda: all(training_in(p) for p in partials), 180, "both workers to train",
                 process)  # fmt: skip
        workers = children_of(process.pid)
        assert len(workers) >= 2  # the two workers (and the resource tracker)
        if how == "SIGTERM":
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 130
            out, err = process.stdout.read(), process.stderr.read()
            assert out.strip().splitlines()[-1] == "interrupted"
        else:
            process.kill()
            process.wait(timeout=10)
        wait_for(lambda: not any(alive(pid) for pid in workers), 60, "the workers to end")
    finally:
        process.kill()
    for seed, partial in zip((0, 1), partials, strict=True):
        step = assert_checkpoint_at_a_whole_step(partial)
        if how == "SIGTERM":
            line = (f"run {config_hash(long_config(seed))}: interrupted by SIGTERM: checkpoint "
                    f"at step {step} of {10**6} in {partial / CHECKPOINT}")  # fmt: skip
            assert line in err.splitlines(), err


# --- a lock says who holds it ---------------------------------------------------------------


def test_a_lock_held_by_a_stopped_process_names_it_and_is_taken_over_when_it_dies(
    tiny_corpus, tmp_path, capsys
):
    config = tiny(tiny_corpus)
    key = config_hash(config)
    holder = child("hold-lock", str(tmp_path), key)
    result: dict = {}
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()
        holder.send_signal(signal.SIGSTOP)
        # a signal is delivered, not obeyed at once: wait until the holder is stopped
        wait_for(lambda: process_state(holder.pid) in ("T", "t"), 10, "the holder stopped")
        waiter = threading.Thread(target=lambda: result.update(run=get_or_train(
            config, corpus=tiny_corpus, results_dir=tmp_path, progress=False)))  # fmt: skip
        waiter.start()
        said = []

        def told() -> bool:
            said.append(capsys.readouterr().err)
            return "waiting for another process" in "".join(said)

        wait_for(told, 30, "the waiting line")
        line = "".join(said).strip()
        assert line.count("\n") == 0, line
        assert f"training run {key}: pid {holder.pid} on {socket.gethostname()}, since " in line
        assert "it is stopped (Ctrl-Z or SIGSTOP)" in line
        assert f"let it go on (`kill -CONT {holder.pid}`) and wait" in line
        assert f"end it (`kill {holder.pid}; kill -CONT {holder.pid}`" in line
        assert "a lock whose holder is gone is taken over automatically" in line
        assert waiter.is_alive()  # it waits; then its holder is killed, as the line says
        holder.kill()
        waiter.join(timeout=60)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert not waiter.is_alive() and result["run"].trained_now and result["run"].id == key


def test_the_lock_line_for_a_holder_elsewhere_or_unrecorded():
    holder = {"pid": 4321, "host": "node-7", "since": "2030-01-02 03:04:05 +0000"}
    line = lock_message("0123456789abcdef", holder, Path("/s/runs/.x.partial/lock"))
    assert "pid 4321 on node-7, since 2030-01-02 03:04:05 +0000" in line
    assert "end it (`kill 4321` on node-7: it stops at a step boundary" in line
    assert "stopped (" not in line
    for unknown in (None, {}, {"pid": "x"}, [1, 2]):
        line = lock_message("0123456789abcdef", unknown, Path("/s/runs/.x.partial/lock"))
        assert "not recorded in /s/runs/.x.partial/lock" in line and "taken over" in line


def test_the_holder_is_recorded_in_the_lock_file(tmp_path):
    partial = tmp_path / ".0123456789abcdef.partial"
    with runs._training_lock(partial):
        record = json.loads((partial / "lock").read_text())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert record["since"][:4].isdigit()


# --- a Ray address is checked first --------------------------------------------------------

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install -e '.[ray]')")  # fmt: skip


def unused_local_port() -> int:
    """A port on this machine that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def no_calibration(monkeypatch):
    """The plan's calibration fails the test: the address is checked before it."""

    def calibrate(*args, **kwargs):
        raise AssertionError("the plan was calibrated before the address was checked")

    monkeypatch.setattr(pipeline, "calibrate", calibrate)


@needs_ray
def test_a_ray_address_where_nothing_listens_is_refused_at_once(tmp_path, capsys, no_calibration):
    address = f"127.0.0.1:{unused_local_port()}"
    started = time.monotonic()
    with pytest.raises(distributed.RayClusterUnreachable) as err:
        train_all([long_config(0)], results_dir=tmp_path / "r", device="cpu", executor="ray",
                  address=address, progress=False)  # fmt: skip
    assert err.value.name == "address" and isinstance(err.value, ParameterError)
    argv = ["reproduce", "--profile", "smoke", "--device", "cpu", "--only", "03",
            "--executor", "ray", "--address", address, "--results-dir", str(tmp_path / "r"),
            "--reports-dir", str(tmp_path / "reports")]  # fmt: skip
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert time.monotonic() - started < 20  # Ray's own retries take a minute and more
    assert len(err.splitlines()) == 1 and err.startswith(f"selfish reproduce: --address {address}:")
    assert "no Ray cluster answers" in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "reports").exists()


@needs_ray
def test_ray_address_auto_without_a_cluster_is_refused_naming_it(monkeypatch, tmp_path, capsys,
                                                                 no_calibration):  # fmt: skip
    from ray._private import services

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if services.find_gcs_addresses() or services.find_bootstrap_address(None):
        pytest.skip("a Ray cluster runs on this machine")
    argv = ["reproduce", "--profile", "smoke", "--device", "cpu", "--only", "03",
            "--executor", "ray", "--address", "auto", "--results-dir", str(tmp_path / "r"),
            "--reports-dir", str(tmp_path / "reports")]  # fmt: skip
    started = time.monotonic()
    assert cli.main(argv) == cli.EXIT_USAGE
    assert time.monotonic() - started < 20
    err = capsys.readouterr().err.strip()
    assert err.startswith("selfish reproduce: --address auto: no Ray cluster runs on this node")
    assert len(err.splitlines()) == 1 and not (tmp_path / "r").exists()


@pytest.mark.parametrize("address", ["nohost", "host:port", "host:0", "host:70000", ":80"])
def test_a_ray_address_that_is_no_host_and_port_is_refused(address):
    with pytest.raises(ParameterError, match=r"invalid address=.*auto or HOST:PORT"):
        distributed.check_reachable(address)


# --- the engine's ranges: one table ----------------------------------------------------------


def hostile(low: float, high: float) -> dict[str, object]:
    """Values past the ends of [low, high], and values that are no number at all."""
    return {"below": math.nextafter(low, -math.inf), "above": math.nextafter(high, math.inf),
            "huge int": 10**400, "huge negative int": -(10**400), "1e300": 1e300,
            "nan": math.nan, "-inf": -math.inf, "a bool": True, "a string": "2",
            "deeply nested": [[[[1.0]]]]}  # fmt: skip


CASES = [(name, label, value) for name, (low, high, _) in RANGES.items()
         for label, value in hostile(low, high).items()]  # fmt: skip


@pytest.mark.parametrize(("name", "label", "value"), CASES,
                         ids=[f"{n}:{label}" for n, label, _ in CASES])  # fmt: skip
def test_every_range_of_the_table_refuses_past_its_ends_naming_the_parameter(name, label, value):
    with pytest.raises(ParameterError) as err:
        check_ranged(name, value)
    low, high, _ = RANGES[name]
    assert err.value.name == name and f"from {low:g} to {high:g}" in str(err.value)
    assert len(str(err.value)) < 300


@pytest.mark.parametrize("name", sorted(RANGES))
def test_every_range_takes_its_ends_and_inf_only_where_allowed(name):
    low, high, _ = RANGES[name]
    assert check_ranged(name, low) == low and check_ranged(name, high) == high
    assert check_ranged(name, math.inf, allow_inf=True) == math.inf
    with pytest.raises(ParameterError, match=", or inf"):
        check_ranged(name, -1e308, allow_inf=True)
    with pytest.raises(ParameterError):
        check_ranged(name, math.inf)


def test_the_notebooks_take_the_engines_ranges():
    from selfish_lib.engine import validation
    from selfish_lib.report import parameters

    assert parameters.LAYOUT_MAX == validation.LAYOUT_MAX
    assert parameters.TEMPERATURE_RANGE == validation.TEMPERATURE_RANGE


@pytest.mark.parametrize(
    ("layout", "said"),
    [("1e300", "selfish train: invalid layout=1e+300: expected a layout (a margin in logits) "
               "from 0 to 1000, or inf"),
     ("1000.5", "invalid layout=1000.5"),
     ("1e400", "invalid layout '1e400': expected a number from 0 to 1000, or inf"),
     ("nan", "invalid layout=nan"),
     ("-2", "invalid layout=-2.0")],
)  # fmt: skip
def test_selfish_train_bounds_the_layout_before_any_work(tmp_path, monkeypatch, capsys, layout,
                                                         said):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    argv = ["train", f"--layout={layout}", "--results-dir", str(tmp_path / "r")]
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no store, no lock


# The engine's own entry points take the ranges of the same table (the loss function
# itself takes any layout >= 0: it is what they call).


def engine_entry_points():
    from selfish_lib.engine.model import GPT, ModelConfig
    from selfish_lib.engine.objectives import make_objective, objective_for_layout

    model = GPT(ModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=4), 5)
    prompt = torch.zeros(1, 1, dtype=torch.long)
    hns = {"layout": 2.0, "schedule": "linear"}
    return {
        "selfish train's layout": (lambda: objective_for_layout(1e300), "layout"),
        "HNS layout_end": (lambda: make_objective("hns", **hns, layout_end=1e300), "layout_end"),
        "HNS-rows layout": (lambda: make_objective("hns-rows", layout=1001.0), "layout"),
        "sampling temperature": (
            lambda: model.generate(prompt, 1, temperature=1e300),
            "temperature",
        ),  # fmt: skip
        "tiny temperature": (
            lambda: model.generate(prompt, 1, temperature=1e-300),
            "temperature",
        ),  # fmt: skip
        "objective name a list": (lambda: make_objective(["ce"]), "objective"),
    }


@pytest.mark.parametrize("case", [
    "selfish train's layout", "HNS layout_end", "HNS-rows layout",
    "sampling temperature", "tiny temperature", "objective name a list"])  # fmt: skip
def test_the_engines_entry_points_refuse_what_the_table_refuses(case):
    call, name = engine_entry_points()[case]
    try:
        call()
    except ParameterError as err:
        assert err.name == name, str(err)
    except Exception as err:  # noqa: BLE001 - a crash is a failure of this test, said so
        raise AssertionError(f"{type(err).__name__}: {err}") from None
    else:
        raise AssertionError(f"{case} was accepted")
