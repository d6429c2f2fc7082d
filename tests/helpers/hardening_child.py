"""Child processes of tests/test_hardening.py: real processes that hold a run's lock, run
`selfish train` on a long run, or train two long runs in two worker processes, so that
the test can stop, signal or kill them.

    hardening_child.py hold-lock STORE KEY   take run KEY's training lock, print "held", sleep
    hardening_child.py train-one STORE       one long run through the store (prints the
                                             interruption and exits 130 when stopped)
    hardening_child.py train-cli STORE       `selfish train` of the smoke profile's run, made
                                             long (exits with the command's status)
    hardening_child.py train-all STORE       two long runs with jobs=2 (exits 130 when
                                             interrupted, after printing "interrupted")
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from selfish_lib.engine.training import TrainConfig

LONG = 10**6  # steps: far more than a test waits for


def long_config(seed: int) -> TrainConfig:
    """A tiny model on the real corpus that would train for hours: only a signal ends it."""
    return TrainConfig.flat(
        n_layer=1, n_head=1, n_embd=8, block_size=8, batch_size=2, max_steps=LONG,
        warmup_steps=2, eval_interval=LONG, log_interval=5, checkpoint_interval=LONG,
        layout=2.0, seed=seed,
    )  # fmt: skip


class LongProfile:
    """A profile whose runs are ``LONG`` steps long, every other attribute its own."""

    def __init__(self, profile) -> None:
        self._profile = profile

    def __getattr__(self, name: str):
        return getattr(self._profile, name)

    def config(self, *args, **kwargs) -> TrainConfig:
        config = self._profile.config(*args, **kwargs)
        return config.replace(max_steps=LONG, eval_interval=LONG, checkpoint_interval=LONG)


def hold_lock(store: str, key: str) -> None:
    from selfish_lib.engine.runs import _training_lock

    with _training_lock(Path(store) / "runs" / f".{key}.partial"):
        print("held", flush=True)
        time.sleep(600)


def train_one(store: str) -> int:
    from selfish_lib.engine.runs import get_or_train
    from selfish_lib.engine.training import TrainingInterrupted, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():  # as the `selfish` command runs
            get_or_train(long_config(0), results_dir=store, device="cpu", progress=False)
    except TrainingInterrupted as stop:
        print(stop, flush=True)
        return 130
    return 0


def train_cli(store: str) -> int:
    from selfish_lib.report import cli

    real = cli.get_profile
    cli.get_profile = lambda name: LongProfile(real(name))
    argv = ["train", "--profile", "smoke", "--layout", "2", "--seed", "0", "--device", "cpu",
            "--results-dir", store]  # fmt: skip
    return cli.main(argv)


def train_all(store: str) -> int:
    from selfish_lib.engine.executors import train_all as train_everything
    from selfish_lib.engine.training import sigterm_as_interrupt

    configs = [long_config(0), long_config(1)]
    try:
        with sigterm_as_interrupt():  # as `selfish reproduce` runs
            train_everything(configs, results_dir=store, device="cpu", jobs=2, progress=False)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 130
    return 0


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    if command == "hold-lock":
        hold_lock(*arguments)
    elif command == "train-one":
        sys.exit(train_one(*arguments))
    elif command == "train-cli":
        sys.exit(train_cli(*arguments))
    elif command == "train-all":
        sys.exit(train_all(*arguments))
    else:
        sys.exit(f"unknown command {command!r}")
