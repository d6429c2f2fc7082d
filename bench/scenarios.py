"""Cost of scenario logging: training-step time with logging on and off, side by side.

Both kinds of step run in one process on the same model, interleaved (off, on,
off, on, ...) so that machine load affects both alike; the table gives the
median of each and their ratio. Usage:

    python bench/scenarios.py [--profile paper] [--device auto] [--pairs 60]
"""

from __future__ import annotations

import argparse
import math

from common import machine, median_ms, print_table, setup, timed

from selfish_lib.engine.corpus import load_corpus
from selfish_lib.engine.scenarios import ScenarioLog
from selfish_lib.engine.training import resolve_device, training_step


def measure(setting: str, layout: float, args: argparse.Namespace, corpus, device) -> list:
    """One table row: median step time with logging off and on, and their ratio."""
    config, model, optimizer, sampler = setup(args.profile, setting, layout, corpus, device)
    log = ScenarioLog()

    def step(logged: bool) -> None:
        x, y = (t.to(device) for t in sampler.sample())
        training_step(model, optimizer, x, y, config, 1e-3, log if logged else None)

    for i in range(args.warmup):
        step(i % 2 == 1)
    off, on = [], []
    for _ in range(args.pairs):
        off.append(timed(lambda: step(False), device))
        on.append(timed(lambda: step(True), device))
    t_off, t_on = median_ms(off), median_ms(on)
    return [
        f"{setting}, {config.objective.label}",
        f"{t_off:.2f}",
        f"{t_on:.2f}",
        f"{t_on / t_off:.3f}",
        f"{100 * (t_on / t_off - 1):+.1f}%",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()

    device = resolve_device(args.device)
    corpus = load_corpus()
    runs = (("single", math.inf), ("single", 2.0), ("bilingual", 2.0))
    rows = [measure(setting, layout, args, corpus, device) for setting, layout in runs]
    print(
        f"scenario logging cost, profile={args.profile}, device={machine(device)}, "
        f"{args.pairs} interleaved pairs"
    )
    print_table(
        ["run", "step off (ms)", "logged step (ms)", "ratio on/off", "cost per logged step"],
        rows,
    )


if __name__ == "__main__":
    main()
