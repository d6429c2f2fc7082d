"""Cost of whole-split validation: one evaluation against the training it interrupts.

For each setting of a profile, times one full validation evaluation and the
training steps between two evaluation points (measured on a sample of steps),
side by side in one process. Usage:

    python bench/evaluation.py [--profile paper] [--device auto] [--steps 40]
"""

from __future__ import annotations

import argparse

import torch
from common import machine, median_ms, print_table, timed

from selfish_lib.corpus import BlockSampler, load_corpus
from selfish_lib.evaluation import evaluate_split
from selfish_lib.model import GPT
from selfish_lib.profiles import get_profile
from selfish_lib.training import make_optimizer, resolve_device, training_step


def measure(setting: str, args: argparse.Namespace, corpus, device) -> list:
    """One table row: a whole-split evaluation against the steps between two of them."""
    config = get_profile(args.profile).config(setting)
    torch.manual_seed(0)
    model = GPT(config.gpt_config(corpus.vocab_size)).to(device)
    optimizer = make_optimizer(model, config)
    sampler = BlockSampler(
        corpus.train,
        config.block_size,
        config.batch_size,
        0,
        corpus.vocab_size,
        p_low=config.p_low,
    )

    def step() -> None:
        x, y = (t.to(device) for t in sampler.sample())
        training_step(model, optimizer, x, y, config, 1e-3)

    def evaluate() -> None:
        evaluate_split(model, corpus.val, corpus.vocab_size, config.bilingual, device)

    step()
    evals, steps = [], []
    for _ in range(args.repeats):
        evals.append(timed(evaluate, device))
        steps.extend(timed(step, device) for _ in range(args.steps // args.repeats))
    t_eval, t_step = median_ms(evals), median_ms(steps)
    between = t_step * config.eval_interval
    positions = (len(corpus.val) - 1) * (2 if config.bilingual else 1)
    return [
        setting,
        f"{positions:,}",
        f"{t_eval:.0f}",
        f"{t_step:.1f}",
        config.eval_interval,
        f"{between:.0f}",
        f"{t_eval / between:.3f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    device = resolve_device(args.device)
    corpus = load_corpus()
    rows = [measure(setting, args, corpus, device) for setting in ("single", "bilingual")]
    print(f"whole-split validation cost, profile={args.profile}, device={machine(device)}")
    print_table(
        [
            "setting",
            "positions scored",
            "eval (ms)",
            "train step (ms)",
            "eval_interval",
            "steps between evals (ms)",
            "ratio eval/steps",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
