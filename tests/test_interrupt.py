"""Ctrl-C during training: a real SIGINT to a real training process, at random times,
always leaves a checkpoint at the last completed step, and resuming from it gives the
same final weights as a run that was never interrupted."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from selfish_lib.engine.runs import config_hash, get_or_train
from selfish_lib.engine.training import CHECKPOINT, logged_tables

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from interruptible_training import config_for, weights_digest  # noqa: E402

SIGNALS = 10
MAX_STEPS = 4000


@pytest.mark.slow  # ten real interruptions; one of each kind runs in tests/test_hardening.py
def test_ten_random_sigints_each_leave_the_last_completed_step(tiny_corpus, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(tiny_corpus.text)
    store = tmp_path / "store"
    config = config_for(tiny_corpus, MAX_STEPS)
    partial = store / "runs" / f".{config_hash(config)}.partial"
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "helpers" / "interruptible_training.py"),
         str(text), str(store), str(MAX_STEPS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    rng = random.Random(1)
    steps = []
    try:
        for _ in range(SIGNALS):
            assert child.stdout.readline().strip() == "training"
            time.sleep(0.3 + rng.random() * 0.4)  # past the first step, at a random moment
            child.send_signal(signal.SIGINT)
            line = child.stdout.readline().split()
            if not line:  # the child died: show why
                child.wait(timeout=30)
                raise AssertionError(child.stderr.read())
            assert line[0] == "interrupted", line
            step = int(line[1])
            state = torch.load(partial / CHECKPOINT, weights_only=False)
            # the checkpoint holds exactly the steps completed, no half step
            assert state["step"] == step and 1 <= step <= MAX_STEPS
            count = int(logged_tables(partial, state)["train_tokens"]["count"].sum())
            count += int(state["train_tokens"]["sums"][0].sum())
            assert count == step * config.batch_size * config.model.block_size
            steps.append(step)
        assert child.stdout.readline().strip() == "training"
        final = child.stdout.readline().split()
        child.wait(timeout=120)
    finally:
        child.kill()
    assert final[0] == "done", final
    assert steps == sorted(steps) and len(set(steps)) == SIGNALS  # progress between signals
    reference = get_or_train(config, corpus=tiny_corpus, results_dir=tmp_path / "ref",
                             progress=False)  # fmt: skip
    assert final[1] == weights_digest(reference.model())
