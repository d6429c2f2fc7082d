"""Throughput of the executors at the paper config: one run after another in this
process, against two worker processes and ensembles (runs batched as one model), side
by side on the same runs; the training loop's overhead over its bare steps; and the
share of a whole paper run spent writing checkpoints and tables, and evaluating, the
way the store writes them against the way it wrote them before.

    python bench/throughput.py [--steps 60] [--part executors loop io]
    python bench/throughput.py --part io [--io-steps 2000] [--setting single]

Prints tables of seconds and ratios (higher throughput is better).

The io part trains one paper-profile run (HNS, layout 2; every interval of the profile:
logs every 10 steps, scenario records, evaluations, checkpoints every 500 steps) into a
store, timing on the training thread what the checkpoints and the final files cost and
what the evaluations cost. The earlier way is replayed on the same run's rows in the
same process: a checkpoint that pickles every row logged so far (its cost grows with the
step, so a run's total grows with the square of its steps), and tables written as
gzipped CSV; and evaluations of the whole validation split at every evaluation point
(this run scores every ``interim_eval_stride``-th window before its last evaluation),
each costing what this run's last, whole-split, evaluation cost. The earlier run's time
is this run's with its writing and evaluations swapped for those.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import machine, median_ms, print_table, setup, synchronize

import selfish_lib.engine.runs as runs
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


class Timers:
    """Seconds spent in wrapped functions, by label (the training thread's time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.last: dict[str, float] = {}  # seconds of the last call

    def wrap(self, owner, name: str, label: str, keep: list | None = None) -> None:
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.last[label] = time.perf_counter() - began
                self.seconds[label] += self.last[label]
                self.calls[label] += 1
                if keep is not None:
                    keep.append(args)

        setattr(owner, name, timed)


def _seconds(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def earlier_checkpoint(state: dict, tables: dict[str, pd.DataFrame]) -> float:
    """Seconds the earlier loop spent on the checkpoint of ``state``: it kept every row
    logged so far in the checkpoint (rows as dicts, the evaluations concatenated and
    turned into lists at each checkpoint), then pickled it all."""
    step = state["step"]
    rows = {n: t[t["step"] <= step] for n, t in tables.items()}
    legacy = {k: v for k, v in state.items() if k not in ("format", "logs", "device")}
    legacy["train_log"] = rows["train_log"].to_dict("records")  # in memory already then
    legacy["train_tokens"] = {"records": rows["train_tokens"].to_dict("records"),
                              "sums": state["train_tokens"]["sums"]}  # fmt: skip
    legacy["scenarios"] = rows["scenarios"].to_dict("records")
    evals = [frame for _, frame in rows["eval_tokens"].groupby("step", sort=True)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / training.CHECKPOINT

        def write() -> None:
            legacy["eval_tokens"] = pd.concat(evals).to_dict("list")
            training._save_atomic(legacy, path)

        return _seconds(write)


def earlier_final_files(tables: dict[str, pd.DataFrame], model_path: Path) -> tuple[float, int]:
    """Seconds and bytes of the earlier final tables: gzipped CSV at 10 significant
    digits (gzip level 9, pandas' default), each hashed for the manifest."""
    with tempfile.TemporaryDirectory() as folder:
        began = time.perf_counter()
        size = 0
        for name, frame in tables.items():
            path = Path(folder) / f"{name}.csv.gz"
            frame.to_csv(path, index=False, float_format="%.10g")
            hashlib.sha256(path.read_bytes()).hexdigest()
            size += path.stat().st_size
        hashlib.sha256(model_path.read_bytes()).hexdigest()
        return time.perf_counter() - began, size


def appends_seconds(tables: dict[str, pd.DataFrame], chunks: dict[str, int]) -> float:
    """Seconds the log writer's thread spends appending a run's rows (off the training
    thread): the rows of each table in as many chunks as the run logged."""
    stream = io.BytesIO()
    began = time.perf_counter()
    for name, frame in tables.items():
        rows = frame.to_records(index=False)
        for chunk in np.array_split(rows, max(1, chunks[name])):
            np.save(stream, chunk, allow_pickle=False)
    return time.perf_counter() - began


def io_share(setting: str, steps: int | None, corpus) -> list[list[object]]:
    """One paper run into a store, and the shares of its time (see the module's doc)."""
    config = get_profile("paper").config(setting, HardNegatives(2.0), seed=0)
    if steps is not None:
        config = config.replace(max_steps=steps)
    timers, states, written = Timers(), [], []
    saved = (training._save_atomic, training.RunLogs.offsets, training.evaluate_split,
             runs._write_into)  # fmt: skip
    timers.wrap(training, "_save_atomic", "checkpoint", keep=states)
    timers.wrap(training.RunLogs, "offsets", "checkpoint")  # waits for the log writer
    timers.wrap(training, "evaluate_split", "evaluation")
    timers.wrap(runs, "_write_into", "final files", keep=written)
    try:
        with tempfile.TemporaryDirectory() as store:
            began = time.perf_counter()
            run = runs.get_or_train(config, corpus=corpus, results_dir=store, device="cpu",
                                    progress=False)  # fmt: skip
            total = time.perf_counter() - began
            tables = {name: getattr(run, name) for name in runs.TABLES}
            new_bytes = sum(runs.table_file(run.path, n).stat().st_size for n in runs.TABLES)
            old_final, old_bytes = earlier_final_files(tables, run.path / "model.pt")
    finally:
        (training._save_atomic, training.RunLogs.offsets, training.evaluate_split,
         runs._write_into) = saved  # fmt: skip
    checkpoints = [args[0] for args in states]
    old_checkpoints = sum(earlier_checkpoint(state, tables) for state in checkpoints)
    new_io = timers.seconds["checkpoint"] + timers.seconds["final files"]
    old_io = old_checkpoints + old_final
    evaluation = timers.seconds["evaluation"]
    # the earlier run scored the whole split at every evaluation point, as this run's last
    # evaluation does (the same model shape, so the same cost)
    old_evaluation = timers.calls["evaluation"] * timers.last["evaluation"]
    old_total = total - new_io + old_io - evaluation + old_evaluation
    log_points = config.max_steps // config.log_interval
    scenario_points = (config.max_steps // config.scenario_interval
                       if config.scenario_interval else 0)  # fmt: skip
    chunks = {"train_log": log_points, "train_tokens": log_points,
              "eval_tokens": timers.calls["evaluation"], "scenarios": scenario_points}  # fmt: skip
    appends = appends_seconds(tables, chunks)
    rows_logged = sum(len(t) for t in tables.values())

    def share(seconds: float, of: float) -> str:
        return f"{seconds:.2f} s ({100 * seconds / of:.2f}%)"

    what = f"paper {setting}, {config.max_steps} steps, {rows_logged} rows"
    return [
        [f"{what}: run", f"{old_total:.1f} s", f"{total:.1f} s", f"{old_total / total:.2f}x"],
        [f"{len(checkpoints)} checkpoints", share(old_checkpoints, old_total),
         share(timers.seconds["checkpoint"], total),
         f"{old_checkpoints / max(timers.seconds['checkpoint'], 1e-9):.0f}x"],
        ["final tables + model + manifest", share(old_final, old_total),
         share(timers.seconds["final files"], total),
         f"{old_final / max(timers.seconds['final files'], 1e-9):.0f}x"],
        ["checkpoint + table writing", share(old_io, old_total), share(new_io, total),
         f"{old_io / max(new_io, 1e-9):.0f}x"],
        [f"{timers.calls['evaluation']} evaluations (whole split / every "
         f"{config.interim_eval_stride}th window but the last)", share(old_evaluation, old_total),
         share(evaluation, total), f"{old_evaluation / max(evaluation, 1e-9):.1f}x"],
        ["log appends (writer thread, off the training thread)", "(in the checkpoints)",
         share(appends, total), ""],
        ["table bytes (CSV gzip 9 / npz)", f"{old_bytes / 1e6:.1f} MB", f"{new_bytes / 1e6:.1f} MB",
         f"{new_bytes / old_bytes:.2f}x"],
    ]  # fmt: skip


def large_table() -> list[list[object]]:
    """The scenario table of a bilingual BPE-4096 paper run (the largest a paper run
    writes: 2V = 8192 rows at each of its 16 scenario steps), written the earlier way and
    this way; full-precision floats, as the scenario log records them."""
    profile = get_profile("paper")
    config = profile.subword_config("bilingual", HardNegatives(2.0), 4096)
    V = 2 * 4096
    steps = config.max_steps // config.scenario_interval
    columns = training.TABLE_COLUMNS["scenarios"]
    gen = np.random.default_rng(0)
    frame = pd.DataFrame({c: gen.lognormal(-6.0, 2.0, V * steps) for c in columns})
    frame["step"] = np.repeat(np.arange(1, steps + 1) * config.scenario_interval, V)
    frame["token"] = np.tile(np.arange(V), steps)
    values = frame.size
    with tempfile.TemporaryDirectory() as folder:
        csv = _seconds(lambda: frame.to_csv(Path(folder) / "s.csv.gz", index=False,
                                            float_format="%.10g"))  # fmt: skip
        npz = _seconds(lambda: runs.write_table(frame, Path(folder) / "s.npz"))
        sizes = [(Path(folder) / n).stat().st_size / 1e6 for n in ("s.csv.gz", "s.npz")]
        back = runs.read_table(Path(folder), "s")
    assert back.equals(frame)  # exact
    return [
        [f"scenario table of a bilingual bpe-4096 run ({values / 1e6:.1f} M values)",
         f"{csv:.2f} s, {sizes[0]:.0f} MB", f"{npz:.3f} s, {sizes[1]:.0f} MB",
         f"{csv / npz:.0f}x"],
    ]  # fmt: skip


PARTS = ("executors", "loop", "io")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--part", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument(
        "--io-steps",
        type=int,
        default=None,
        help="steps of the io part's run (default: the paper profile's)",
    )
    parser.add_argument("--setting", choices=("single", "bilingual"), default="single")
    args = parser.parse_args()
    corpus = load_corpus()
    print(machine(torch.device("cpu")))
    rows = []
    if "executors" in args.part:
        rows += executors(args.steps, corpus)
    if "loop" in args.part:
        rows += loop_overhead(args.steps, corpus)
    if rows:
        print_table(["what (paper config, CPU)", "time", "throughput", "ratio"], rows)
    if "io" in args.part:
        with cpu_training_threads(torch.device("cpu")):
            table = io_share(args.setting, args.io_steps, corpus) + large_table()
        print_table(["what (one paper run, CPU)", "earlier way", "now", "earlier / now"], table)


if __name__ == "__main__":
    main()
