"""Cost of validation: the evaluations of a run against the training they interrupt.

For each setting of a profile, times one whole-split evaluation, one interim
evaluation (every ``interim_eval_stride``-th window, as a run scores before its last
step) and a sample of training steps, side by side in one process; then a whole run's
share of evaluation, the way runs evaluate now (interim points sampled, the last whole)
and the way they did (every point the whole split). Usage:

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

    def evaluate(stride: int = 1) -> None:
        evaluate_split(model, corpus.val, corpus.vocab_size, config.bilingual, device,
                       stride=stride)  # fmt: skip

    stride = config.interim_eval_stride
    step()
    evals, interims, steps = [], [], []
    for _ in range(args.repeats):
        evals.append(timed(evaluate, device))
        interims.append(timed(lambda: evaluate(stride), device))
        steps.extend(timed(step, device) for _ in range(args.steps // args.repeats))
    t_eval, t_interim, t_step = median_ms(evals), median_ms(interims), median_ms(steps)
    training_ms = t_step * config.max_steps
    points = math.ceil(config.max_steps / config.eval_interval)  # step 0 to the last but one
    before = points * t_eval + t_eval
    now = points * t_interim + t_eval
    positions = (len(corpus.val) - 1) * (2 if config.bilingual else 1)
    return [
        setting,
        f"{positions:,}",
        f"{t_eval:.0f}",
        f"{t_interim:.0f} (1/{stride})",
        f"{t_step:.1f}",
        f"{points} + 1",
        f"{100 * before / (training_ms + before):.1f}%",
        f"{100 * now / (training_ms + now):.1f}%",
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
    print(f"validation cost, profile={args.profile}, device={machine(device)}")
    print_table(
        [
            "setting",
            "positions scored (whole split)",
            "whole-split eval (ms)",
            "interim eval (ms, share of windows)",
            "train step (ms)",
            "evaluations in a run",
            "run share, every eval whole",
            "run share, interim sampled",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
