"""Throughput of the executors at the paper config: one run after another in this
process, against two worker processes and ensembles (runs batched as one model), side
by side on the same runs; and the training loop's overhead over its bare steps.

    python bench/throughput.py [--steps 60]

Prints a table of seconds and ratios (higher throughput is better).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import machine, median_ms, print_table, setup, synchronize

import selfish_lib.engine.training as training
from selfish_lib.engine.corpus import load_corpus
from selfish_lib.engine.evaluation import evaluate_split
from selfish_lib.engine.executors import train_all
from selfish_lib.engine.objectives import CrossEntropy, HardNegatives
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.training import cpu_training_threads, learning_rate, train, training_step


def executors(steps: int, corpus) -> list[list[object]]:
    profile = get_profile("paper")
    configs = [
        profile.config("single", objective, seed=seed, max_steps=steps, eval_interval=steps)
        for objective in (CrossEntropy(), HardNegatives(2.0))
        for seed in (0, 1)
    ]
    rows = []
    times = {}
    arms = [("jobs=1, 1 thread (the executor's solo run)", 1, 1, 1),
            ("jobs=1, 2 threads (one process using both cores)", 1, 2, 1),
            ("jobs=2, 1 thread each", 2, 1, 1),
            (f"one ensemble of {len(configs)}, 1 thread", 1, 1, len(configs)),
            ("jobs=2, ensembles of 2, 1 thread each", 2, 1, 2)]  # fmt: skip
    for label, jobs, threads, ensemble in arms:
        training.CPU_TRAINING_THREADS = threads  # the 2-thread arm is a reference only
        with tempfile.TemporaryDirectory() as store:
            began = time.perf_counter()
            train_all(configs, results_dir=Path(store), corpus=corpus, device="cpu", jobs=jobs,
                      ensemble=ensemble, progress=False)  # fmt: skip
            times[label] = time.perf_counter() - began
        training.CPU_TRAINING_THREADS = 1
    total_steps = steps * len(configs)
    reference = times[arms[0][0]]
    for label, seconds in times.items():
        rows.append([f"{len(configs)} runs, {label}", f"{seconds:.1f} s",
                     f"{total_steps / seconds:.1f} steps/s",
                     f"{reference / seconds:.2f}x"])  # fmt: skip
    return rows


def loop_overhead(steps: int, corpus) -> list[list[object]]:
    device = torch.device("cpu")
    config, model, optimizer, sampler = setup("paper", "single", 2.0, corpus, device)
    config = config.replace(max_steps=steps, eval_interval=10 * steps, log_interval=10)
    with cpu_training_threads(device):
        batches = [sampler.sample() for _ in range(steps)]
        bare = []
        for step, (x, y) in enumerate(batches):
            began = time.perf_counter()
            training_step(model, optimizer, x, y, config, learning_rate(step, config), step=step)
            synchronize(device)
            bare.append(time.perf_counter() - began)
    began = time.perf_counter()
    result = train(config, corpus, device="cpu", progress=False)
    loop = time.perf_counter() - began
    evals = 2  # the loop evaluates at step 0 and at the last step
    per_eval = None
    if result is not None:
        began = time.perf_counter()
        with cpu_training_threads(device):
            evaluate_split(result.model, corpus.val, corpus.vocab_size, False, device)
        per_eval = time.perf_counter() - began
    loop_ms = (loop - evals * (per_eval or 0.0)) / steps * 1000
    bare_ms = median_ms(bare)
    return [
        ["bare training_step (median)", f"{bare_ms:.1f} ms/step", "", "1.00x"],
        [
            "train() loop, evaluations excluded",
            f"{loop_ms:.1f} ms/step",
            "",
            f"{loop_ms / bare_ms:.2f}x",
        ],  # fmt: skip
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    corpus = load_corpus()
    print(machine(torch.device("cpu")))
    rows = executors(args.steps, corpus) + loop_overhead(args.steps, corpus)
    print_table(["what (paper config, CPU)", "time", "throughput", "ratio"], rows)


if __name__ == "__main__":
    main()
