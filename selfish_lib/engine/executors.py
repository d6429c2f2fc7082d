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
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import distributed
from .corpus import Corpus, load_corpus, resolve_corpus_path
from .ensemble import ensemble_groups
from .runs import config_hash, get_or_train, get_or_train_group, results_root
from .training import TrainConfig, resolve_device
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
    that ``device`` is one a Ray task can ask for. Returns the address, stripped."""
    check_choice("executor", executor, EXECUTORS)
    if executor != "ray":
        if address is not None:
            raise ParameterError("address", address, "None unless executor='ray'")
        return None
    address = None if address is None else distributed.check_address(address)
    if device is not None:
        distributed.task_resources(resolve_device(device).type)
    distributed.require_ray()
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
) -> list[Trained]:
    """Train (or load) every config into the store.

    ``executor="local"``: in this process (``jobs=1``) or in ``jobs`` worker processes.
    ``executor="ray"``: every unit of ``work_units`` a Ray task (``engine.distributed``)
    on the cluster at ``address`` (None: a local cluster of ``jobs`` CPUs, started for
    this call); the corpus is read by each task from ``data_path`` (resolved here, and
    then a path every node must see), so ``corpus`` is not used.

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
        resources = distributed.task_resources(kind)
        data = distributed.absolute(resolve_corpus_path(data_path))
        args = (distributed.absolute(store), data, "cuda" if resources["num_gpus"] else kind)
        remote = distributed.run_units(
            units, _worker_train, args, device_kind=kind, address=address, local_cpus=jobs,
            progress=progress,
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
    train as one batched model (``engine.ensemble``; runs that cannot stay alone)."""
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


def _worker_setup(threads: int) -> None:
    torch.set_num_threads(threads)


def _worker_train(
    unit: Unit, results_dir: str | None, data_path: str | None, device: str
) -> list[Trained]:
    return train_unit(unit, _worker_corpus(data_path), results_dir, device)


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
    with futures.ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_worker_setup, initargs=(threads,)
    ) as pool:
        pending = [
            pool.submit(_worker_train, unit, store, data, f"cuda:{i % gpus}" if gpus else device)
            for i, unit in enumerate(units)
        ]
        total = sum(len(u) for u in units)
        bar = tqdm(total=total, desc=f"runs ({jobs} jobs)", unit="run",
                   disable=not progress)  # fmt: skip
        try:
            for job in futures.as_completed(pending):
                trained = job.result()
                done += trained
                bar.update(len(trained))
        except BaseException:
            for job in pending:
                job.cancel()
            raise
        finally:
            bar.close()
    return done
