"""The cost of a subword vocabulary: a paper-model bilingual training step under CE and
under HNS, the loss alone on the model's own logits, and one evaluation of the whole
validation split, at each tokenizer, side by side in one process (CPU, the training
thread count).

    python bench/subword.py [--sizes 256 1024 4096] [--steps 10] [--repeats 20]

Prints a table per tokenizer: median milliseconds of a CE and an HNS (layout 2) training
step and their ratio, the HNS loss's forward and backward over CE's on the same logits
(the model's, after ``--steps`` CE steps, so that they spread as in training), and the
seconds of one evaluation of the whole validation split (both alphabets). CE and HNS run
interleaved, so that drift on a shared machine hits them alike.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from common import machine, median_ms, print_table, timed

from selfish_lib.engine.corpus import BlockSampler, load_corpus
from selfish_lib.engine.evaluation import evaluate_split
from selfish_lib.engine.losses import hns_cross_entropy
from selfish_lib.engine.objectives import CrossEntropy, HardNegatives
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.training import (
    cpu_training_threads,
    initial_model,
    learning_rate,
    make_optimizer,
    training_corpus,
    training_step,
)

LAYOUT = 2.0


def measure(tokenizer: str, base, steps: int, repeats: int, device: torch.device) -> list:
    """One row of the table: CE and HNS at ``tokenizer``, paper model, bilingual."""
    profile = get_profile("paper")
    objectives = {"CE": CrossEntropy(), "HNS": HardNegatives(LAYOUT)}
    configs = {arm: profile.config("bilingual", o, 0, tokenizer=tokenizer)
               for arm, o in objectives.items()}  # fmt: skip
    config = configs["CE"]
    corpus = training_corpus(base, config)
    models = {arm: initial_model(c, corpus.vocab_size) for arm, c in configs.items()}
    optimizers = {arm: make_optimizer(models[arm], c) for arm, c in configs.items()}
    sampler = BlockSampler(corpus.train, config.model.block_size, config.batch_size, 0,
                           corpus.vocab_size, p_low=config.p_low)  # fmt: skip
    for step in range(steps):  # spread the logits a little, alike for both models
        x, y = sampler.sample()
        for arm in models:
            training_step(models[arm], optimizers[arm], x, y, config, learning_rate(step, config),
                          step=step)  # fmt: skip
    x, y = sampler.sample()

    def step_of(arm: str) -> None:
        training_step(models[arm], optimizers[arm], x, y, configs[arm], 1e-4, step=steps)

    with torch.no_grad():
        logits = models["CE"](x).reshape(-1, 2 * corpus.vocab_size)
    logits.requires_grad_(True)
    targets = y.reshape(-1)
    losses = {
        "CE": lambda: F.cross_entropy(logits, targets).backward(),
        "HNS": lambda: hns_cross_entropy(logits, targets, LAYOUT).backward(),
    }
    step_times: dict[str, list[float]] = {"CE": [], "HNS": []}
    loss_times: dict[str, list[float]] = {"CE": [], "HNS": []}
    for _ in range(repeats):  # interleaved, so that drift hits both alike
        for arm in models:
            step_times[arm].append(timed(lambda a=arm: step_of(a), device))
            loss_times[arm].append(timed(losses[arm], device))
    began = time.perf_counter()
    evaluate_split(models["CE"].eval(), corpus.val, corpus.vocab_size, True, device)
    eval_seconds = time.perf_counter() - began
    ce_step, hns_step = median_ms(step_times["CE"]), median_ms(step_times["HNS"])
    ce_loss, hns_loss = median_ms(loss_times["CE"]), median_ms(loss_times["HNS"])
    return [tokenizer, 2 * corpus.vocab_size, f"{ce_step:.1f} ms", f"{hns_step:.1f} ms",
            f"{hns_step / ce_step:.2f}x", f"{hns_loss / ce_loss:.2f}x", len(corpus.val),
            f"{eval_seconds:.1f} s"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--steps", type=int, default=10, help="CE steps before timing")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = torch.device("cpu")
    base = load_corpus()
    with cpu_training_threads(device):
        print(machine(device))
        rows = [measure(tokenizer, base, args.steps, args.repeats, device)
                for tokenizer in ["char", *(f"bpe-{v}" for v in args.sizes)]]  # fmt: skip
    print_table(
        ["tokenizer", "model rows (2V)", "CE step", "HNS step", "HNS / CE step",
         "HNS / CE loss fwd+bwd", "validation tokens", "one evaluation (both alphabets)"],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
