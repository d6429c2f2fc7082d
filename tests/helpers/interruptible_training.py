"""Child process of the Ctrl-C test: trains one small run in a store, reporting each
interruption on stdout and resuming, until the run completes.

Protocol (one line each, flushed): "training" when a (re)start begins, "interrupted STEP"
after each Ctrl-C, "done SHA256" at the end (the hash of the final weights).
"""

from __future__ import annotations

import hashlib
import sys

import torch

from selfish_lib.engine.corpus import Corpus
from selfish_lib.engine.runs import get_or_train
from selfish_lib.engine.training import TrainConfig, TrainingInterrupted, train


def weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def config_for(corpus: Corpus, max_steps: int) -> TrainConfig:
    return TrainConfig.flat(
        n_layer=1, n_head=1, n_embd=8, block_size=8, batch_size=2, max_steps=max_steps,
        warmup_steps=2, eval_interval=max_steps, log_interval=7, checkpoint_interval=10_000,
        layout=2.0, data_sha256=corpus.sha256,
    )  # fmt: skip


def main(text_path: str, store: str, max_steps: int) -> None:
    with open(text_path) as handle:
        corpus = Corpus.from_text(handle.read())
    config = config_for(corpus, max_steps)
    # A short run first, so that lazy imports inside torch are done before any signal.
    train(config.replace(max_steps=2, eval_interval=2), corpus, progress=False)
    while True:
        print("training", flush=True)
        try:
            run = get_or_train(config, corpus=corpus, results_dir=store, progress=False)
        except TrainingInterrupted as stop:
            print(f"interrupted {stop.step}", flush=True)
            continue
        print(f"done {weights_digest(run.model())}", flush=True)
        return


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
