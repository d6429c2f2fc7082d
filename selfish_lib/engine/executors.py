"""Executors: train many runs of the store, one after another or several at once.

Every executor ends in the same place: ``runs.get_or_train`` of each config, into one
run store, whose lock and atomic rename let any number of processes share it (a run
is trained once, whoever asks first). What differs is only where the work happens
(``train_all(executor=...)``, ``selfish reproduce --executor``):

- ``local`` with ``jobs=1``: in this process, one run after another;
- ``local`` with ``jobs`` > 1: ``jobs`` worker processes on this machine, the CPU
  threads split between them (on a machine with several GPUs, one GPU per worker);
- ``ray``: every unit of work a Ray task on a Ray cluster (``engine.distributed``: the
  resources of a task, and what the shared filesystem of the store must provide).

A run's numbers do not depend on the executor: the same config gives the same
weights and tables whichever process trains it (tests compare them).

Worker processes stop as the parent does. Ctrl-C or SIGTERM to the parent stops each
running worker at a step boundary with a checkpoint (the parent passes SIGTERM on; each
worker prints one line naming the checkpoint of the run it stopped, then ends); and
workers die with their parent, however it ends (kill -9 included): on Linux the kernel
sends each one SIGTERM when the parent dies (``prctl(PR_SET_PDEATHSIG)``), and
everywhere a watchdog thread in each worker notices that its parent is gone. A worker
that was training writes its checkpoint first, an idle one just ends; the next call
resumes every stopped run.
"""

from __future__ import annotations

import concurrent.futures as futures
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import distributed
from .corpus import Corpus, load_corpus, resolve_corpus_path
from .ensemble import ensemble_groups
from .runs import config_hash, get_or_train, get_or_train_group, results_root
from .training import TrainConfig, TrainingInterrupted, resolve_device
from .validation import ParameterError, check_choice, check_int

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Trained:
    """What an executor reports for one config: its id and whether this call trained it."""

    id: str
    trained_now: bool
    seconds: float | None


def default_jobs(device: str = "auto") -> int:
    """Worker processes that make the most of this machine: one per GPU on a CUDA device,
    else one per CPU core (each worker with one thread: small models train faster as
    separate processes than as threads of one)."""
    if resolve_device(device).type == "cuda":
        return max(1, torch.cuda.device_count())
    return max(1, os.cpu_count() or 1)


def check_executor(
    executor: str = "local", address: str | None = None, device: str | None = None
) -> str | None:
    """Check ``executor`` (one of ``EXECUTORS``) and ``address`` (a Ray cluster's, only
    with ``ray``) before any work; for ``ray``, that Ray can be imported
    (``distributed.RayNotInstalled`` says how to install it otherwise) and, when given,
    that ``device`` is one a Ray task can ask for, and that the cluster at ``address``
    answers (``distributed.check_reachable``: a couple of seconds at most). Returns the
    address, stripped."""
    check_choice("executor", executor, EXECUTORS)
    if executor != "ray":
        if address is not None:
            raise ParameterError("address", address, "None unless executor='ray'")
        return None
    address = None if address is None else distributed.check_address(address)
    if device is not None:
        distributed.task_resources(resolve_device(device).type)
    distributed.require_ray()
    if address is not None:
        distributed.check_reachable(address)
    return address


def train_all(
    configs: Sequence[TrainConfig],
    *,
    results_dir: str | os.PathLike | None = None,
    data_path: str | os.PathLike | None = None,
    corpus: Corpus | None = None,
    device: str = "auto",
    jobs: int = 1,
    progress: bool = True,
    executor: str = "local",
    address: str | None = None,
    ensemble: int = 1,
    tasks_per_gpu: int = 1,
) -> list[Trained]:
    """Train (or load) every config into the store.

    ``executor="local"``: in this process (``jobs=1``) or in ``jobs`` worker processes.
    ``executor="ray"``: every unit of ``work_units`` a Ray task (``engine.distributed``)
    on the cluster at ``address`` (None: a local cluster of ``jobs`` CPUs, started for
    this call); the corpus is read by each task from ``data_path`` (resolved here, and
    then a path every node must see), so ``corpus`` is not used. On CUDA a Ray task asks
    for 1 / ``tasks_per_gpu`` of a GPU; local worker processes each keep one GPU of
    this machine for their whole life (worker k: GPU k mod the number of GPUs).

    ``ensemble`` > 1 trains runs of one shape (seeds and objectives of one setting) in
    groups of up to that many as one batched model (``engine.ensemble``): an execution
    choice that keeps run ids, whose numbers match the solo runs' within the tolerance
    ``tests/test_ensemble.py`` states (not bit for bit).

    Duplicates are trained once. Returns one ``Trained`` per distinct config, in order.
    """
    address = check_executor(executor, address, device)
    jobs = check_int("jobs", jobs, 1)
    store = results_root(results_dir)
    kind = resolve_device(device).type
    distinct = list(dict.fromkeys(configs))
    units = work_units(distinct, ensemble)
    if executor == "ray":
        resources = distributed.task_resources(kind, tasks_per_gpu)
        data = distributed.absolute(resolve_corpus_path(data_path))
        args = (distributed.absolute(store), data, "cuda" if resources["num_gpus"] else kind)
        remote = distributed.run_units(
            units, _worker_train, args, device_kind=kind, address=address, local_cpus=jobs,
            progress=progress, tasks_per_gpu=tasks_per_gpu,
        )  # fmt: skip
        return _in_order(distinct, remote)
    if jobs == 1 or len(units) <= 1:
        corpus = corpus if corpus is not None else load_corpus(data_path)
        done: list[Trained] = []
        for unit in tqdm(units, desc="runs", unit="unit", disable=not progress):
            done += train_unit(unit, corpus, results_dir, device, progress)
        return _in_order(distinct, done)
    return _in_order(distinct, _train_in_processes(units, results_dir, data_path, device, jobs,
                                                   progress))  # fmt: skip


Unit = tuple[TrainConfig, ...]


def work_units(configs: Sequence[TrainConfig], ensemble: int = 1) -> list[Unit]:
    """The configs as units of work, each trained by one call of ``train_unit``: one run
    each, or with ``ensemble`` > 1 groups of up to that many runs of one shape that
    train as one stacked model (``engine.ensemble``)."""
    return ensemble_groups(configs, ensemble)


def train_unit(
    unit: Unit,
    corpus: Corpus,
    results_dir: str | os.PathLike | None,
    device: str,
    progress: bool = False,
) -> list[Trained]:
    """Train (or load) the configs of one unit into the store, in this process (a unit
    of several configs as one ensemble)."""
    if len(unit) > 1:
        runs = get_or_train_group(unit, corpus=corpus, results_dir=results_dir, device=device,
                                  progress=progress)  # fmt: skip
    else:
        runs = [get_or_train(unit[0], corpus=corpus, results_dir=results_dir, device=device,
                             progress=progress)]  # fmt: skip
    return [Trained(run.id, run.trained_now, run.wall_seconds) for run in runs]


def _in_order(configs: Sequence[TrainConfig], done: Sequence[Trained]) -> list[Trained]:
    """The reports of ``done`` (one per config, in unit order) in the order of ``configs``."""
    by_id = {t.id: t for t in done}
    return [by_id[config_hash(c)] for c in configs]


# How often a worker's watchdog looks for its parent, and how long a worker whose parent
# is gone may take to stop training at a step boundary and write its checkpoint.
WATCH_INTERVAL_S = 0.5
ORPHAN_GRACE_S = 60.0
EXIT_STOPPED = 130  # the status of a worker that stopped on a signal or its parent's death
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# This worker's parent (its pid, set by _worker_setup) and whether it trains a unit now.
_WORKER: dict = {"parent": None, "busy": False, "device": None}
# what a worker process is given in place of a device when it trains on its own GPU
WORKER_GPU = "cuda:worker"


def worker_gpu(slot: int, gpus: int) -> str:
    """The GPU of the worker that started ``slot``-th (0, 1, ...) on a machine with
    ``gpus`` GPUs: each worker keeps one GPU for its life, and the workers spread over
    the GPUs in turn (two workers share a GPU only when there are more workers)."""
    check_int("gpus", gpus, 1)
    return f"cuda:{check_int('slot', slot, 0) % gpus}"


class WorkerStopped(KeyboardInterrupt):
    """A worker process stopped on a signal (and said what it kept) while the others went
    on: the reproduction stops as a Ctrl-C stops it."""


def parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent dies (Linux
    ``prctl(PR_SET_PDEATHSIG)``, through ctypes); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def parent_gone() -> bool:
    """Whether the parent this worker was started by has died (the worker was adopted by
    another process since)."""
    return _WORKER["parent"] is not None and os.getppid() != _WORKER["parent"]


def _worker_signal(signum, frame) -> None:
    """SIGINT or SIGTERM in a worker outside the training loop (which defers them to a step
    boundary itself): a unit under way stops (KeyboardInterrupt); an idle worker has
    nothing to keep and ends quietly."""
    if _WORKER["busy"]:
        raise KeyboardInterrupt
    os._exit(EXIT_STOPPED)


def _watch_parent(signalled: bool) -> None:
    """The watchdog thread of a worker. Once the parent is gone: an idle worker ends at
    once; a training one is sent SIGTERM (unless the kernel sends it, ``signalled``), so
    that it stops at a step boundary with a checkpoint, and ends after it
    (``_worker_train``), or after ``ORPHAN_GRACE_S`` whatever it does."""
    while not parent_gone():
        time.sleep(WATCH_INTERVAL_S)
    if not _WORKER["busy"]:
        os._exit(EXIT_STOPPED)
    if not signalled:
        os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_GRACE_S)
    os._exit(EXIT_STOPPED)


def _worker_setup(threads: int, parent: int | None = None, slots=None, gpus: int = 0) -> None:
    """Start a worker process: its CPU threads, its GPU (with ``gpus``: the next free
    slot of the shared counter ``slots``, ``worker_gpu``), its stop signals, and that it
    dies with ``parent`` (the parent-death signal, and a watchdog thread)."""
    torch.set_num_threads(threads)
    if gpus:
        with slots.get_lock():
            slot, slots.value = slots.value, slots.value + 1
        _WORKER["device"] = worker_gpu(slot, gpus)
    if parent is None:
        return
    _WORKER["parent"] = parent
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, _worker_signal)
    signalled = parent_death_signal(signal.SIGTERM)
    if parent_gone():  # the parent died before the signal was asked for
        os._exit(EXIT_STOPPED)
    threading.Thread(target=_watch_parent, args=(signalled,), name="parent-watchdog",
                     daemon=True).start()  # fmt: skip


def _worker_train(
    unit: Unit, results_dir: str | None, data_path: str | None, device: str
) -> list[Trained]:
    """``train_unit`` in a worker process (or a Ray task). A worker of
    ``_train_in_processes`` that is stopped (Ctrl-C, SIGTERM, its parent's death) says in
    one line what it kept and ends: it is not used again, and its line is printed
    whether or not the parent is there to hear of it. A Ray task raises as it would."""
    _WORKER["busy"] = True
    if device == WORKER_GPU:
        device = _WORKER["device"]
    try:
        return train_unit(unit, _worker_corpus(data_path), results_dir, device)
    except KeyboardInterrupt as stop:  # TrainingInterrupted included
        if _WORKER["parent"] is None:  # not a worker of ours: Ray cancels its tasks so
            raise
        runs = ("runs " if len(unit) > 1 else "run ") + ", ".join(config_hash(c) for c in unit)
        if isinstance(stop, TrainingInterrupted):
            line = f"{runs}: {stop}"
        else:  # stopped outside the loop, or by a second Ctrl-C: no checkpoint of this stop
            line = f"{runs}: interrupted at once (the last checkpoint, if any, is kept)"
        why = " (the parent process is gone)" if parent_gone() else ""
        print(line + why, file=sys.stderr, flush=True)
        os._exit(EXIT_STOPPED)
    finally:
        _WORKER["busy"] = False


_CORPORA: dict[str | None, Corpus] = {}


def _worker_corpus(data_path: str | None) -> Corpus:
    """The corpus, loaded once per worker process."""
    if data_path not in _CORPORA:
        _CORPORA[data_path] = load_corpus(data_path)
    return _CORPORA[data_path]


def _train_in_processes(
    units: list[Unit],
    results_dir: str | os.PathLike | None,
    data_path: str | os.PathLike | None,
    device: str,
    jobs: int,
    progress: bool,
) -> list[Trained]:
    kind = resolve_device(device).type
    if kind == "mps":
        raise ParameterError("device", device, "cpu or cuda for more than one job")
    gpus = torch.cuda.device_count() if kind == "cuda" else 0
    threads = max(1, (os.cpu_count() or 1) // jobs)
    # Fresh interpreters: a forked copy of a process that has started torch's threads
    # (or CUDA) can deadlock.
    context = multiprocessing.get_context("spawn")
    store = None if results_dir is None else str(Path(results_dir))
    data = None if data_path is None else str(Path(data_path))
    done: list[Trained] = []
    slots = context.Value("i", 0)  # each worker takes the next GPU as it starts
    with futures.ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_worker_setup,
        initargs=(threads, os.getpid(), slots, gpus),
    ) as pool:  # fmt: skip
        pending = [
            pool.submit(_worker_train, unit, store, data, WORKER_GPU if gpus else device)
            for unit in units
        ]
        total = sum(len(u) for u in units)
        bar = tqdm(total=total, desc=f"runs ({jobs} jobs)", unit="run",
                   disable=not progress)  # fmt: skip
        try:
            for job in futures.as_completed(pending):
                trained = job.result()
                done += trained
                bar.update(len(trained))
        except BrokenProcessPool:
            # a worker ended on a signal (its line says what it kept) or was killed
            _stop_workers(pool)
            raise WorkerStopped("a worker process was stopped") from None
        except BaseException:
            for job in pending:
                job.cancel()
            _stop_workers(pool)
            raise
        finally:
            bar.close()
    return done


def _stop_workers(pool: futures.ProcessPoolExecutor) -> None:
    """After Ctrl-C, SIGTERM or a failed unit: SIGTERM every worker still alive, so that each
    run in training stops at a step boundary with a checkpoint and says so (a worker that
    Ctrl-C reached already takes it as the same stop, not as a second Ctrl-C), and wait
    until they have ended."""
    processes = dict(getattr(pool, "_processes", None) or {})  # private, hence guarded
    for pid in processes:
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            continue
    deadline = time.monotonic() + ORPHAN_GRACE_S
    for process in processes.values():
        process.join(max(0.0, deadline - time.monotonic()))
