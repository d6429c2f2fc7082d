"""Cost of whole-split validation: one evaluation against the training it interrupts.

For each setting of a profile, times one full validation evaluation and the
training steps between two evaluation points (measured on a sample of steps),
side by side in one process. Usage:

    python bench/evaluation.py [--profile paper] [--device auto] [--steps 40]
"""

from __future__ import annotations

import argparse
import math

from common import machine, median_ms, print_table, setup, timed

from selfish_lib.engine.corpus import load_corpus
from selfish_lib.engine.evaluation import evaluate_split
from selfish_lib.engine.training import resolve_device, training_step


def measure(setting: str, args: argparse.Namespace, corpus, device) -> list:
    """One table row: a whole-split evaluation against the steps between two of them."""
    config, model, optimizer, sampler = setup(args.profile, setting, math.inf, corpus, device)

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
