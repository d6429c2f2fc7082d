"""Where work lands on GPUs, checked without one: Ray's share of a GPU per task, and
one GPU per local worker process for its whole life, the workers taking the GPUs in
turn."""

from __future__ import annotations

import multiprocessing

import pytest
import torch

from selfish_lib.engine import executors
from selfish_lib.engine.distributed import MAX_TASKS_PER_GPU, task_resources
from selfish_lib.engine.validation import ParameterError


def test_a_ray_task_asks_for_its_share_of_one_gpu():
    assert task_resources("cuda") == {"num_cpus": 1, "num_gpus": 1.0}
    assert task_resources("cuda", 4) == {"num_cpus": 1, "num_gpus": 0.25}
    # on the CPU the share asks for nothing
    assert task_resources("cpu", 4) == {"num_cpus": 1, "num_gpus": 0}
    for bad in (0, MAX_TASKS_PER_GPU + 1, 1.5, "2"):
        with pytest.raises(ParameterError, match="tasks_per_gpu"):
            task_resources("cuda", bad)


def test_workers_spread_over_the_gpus_in_turn():
    assert [executors.worker_gpu(slot, 3) for slot in range(7)] == [
        "cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1", "cuda:2", "cuda:0"]  # fmt: skip
    with pytest.raises(ParameterError, match="gpus"):
        executors.worker_gpu(0, 0)


def test_each_worker_takes_the_next_slot_once_and_keeps_its_gpu(monkeypatch):
    """The initializer of every worker takes one slot of the shared counter: four
    workers on two GPUs get GPUs 0, 1, 0, 1, and a unit given ``WORKER_GPU`` trains on
    its worker's GPU, whatever the order the units were submitted in."""
    monkeypatch.setitem(executors._WORKER, "device", None)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # this process's own
    slots = multiprocessing.get_context("spawn").Value("i", 0)
    seen = []
    for _ in range(4):
        executors._worker_setup(1, None, slots, 2)
        seen.append(executors._WORKER["device"])
    assert seen == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert slots.value == 4
    trained_on = []
    monkeypatch.setattr(
        executors, "train_unit", lambda unit, corpus, store, device: trained_on.append(device) or []
    )
    monkeypatch.setattr(executors, "_worker_corpus", lambda path: None)
    executors._worker_train((), None, None, executors.WORKER_GPU)
    executors._worker_train((), None, None, "cpu")
    assert trained_on == ["cuda:1", "cpu"]
