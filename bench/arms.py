"""The cost of one training step of every arm of chapter 07, against CE, side by side.

    python bench/arms.py [--profile paper] [--setting bilingual] [--steps 40] [--rounds 3]

Each arm (``study.field.arms``: CE, HNS, the peers, the ablations; an arm that trains
the same objective as one before it, such as logit adjustment tuned on its own target,
once) gets its own model, optimizer and block sampler, seeded alike, at the profile's
scale, and so does alpha-entmax away from 1.5 (computed by bisection, where 1.5 is
computed exactly by sorting). The arms take turns, ``steps`` steps each per round, so
that drift on a shared machine hits them alike. Prints a table: the median
milliseconds of a step and its ratio to CE's (CPU: the training thread count).
"""

from __future__ import annotations

import argparse

import torch
from common import machine, median_ms, print_table, timed

from selfish_lib.engine.corpus import BlockSampler, load_corpus
from selfish_lib.engine.objectives import Entmax15
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.training import (
    cpu_training_threads,
    initial_model,
    learning_rate,
    make_optimizer,
    resolve_device,
    training_step,
)
from selfish_lib.study import field


def timed_step(entry: tuple, step: int, device: torch.device) -> float:
    """Seconds of one training step of a prepared arm (its batch sampled outside)."""
    _, config, model, optimizer, sampler, state, prior, _ = entry
    x, y = (t.to(device) for t in sampler.sample())
    lr = learning_rate(step, config)
    return timed(lambda: training_step(model, optimizer, x, y, config, lr, step=step,
                                       log_prior=prior, objective_state=state), device)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--setting", default="bilingual", choices=field.FIELD_SETTINGS)
    parser.add_argument("--steps", type=int, default=40, help="steps per arm and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = resolve_device(args.device)
    corpus = load_corpus()
    profile = get_profile(args.profile)
    prepared = []
    entries, seen = [], set()
    for arm in field.arms():
        if (arm.objective, arm.tied) not in seen:
            seen.add((arm.objective, arm.tied))
            entries.append((arm.name, arm.objective, arm.tied))
    bisected = Entmax15(alpha=Entmax15.tuning.values[0])
    entries.append((f"Entmax, bisection ({bisected.label})", bisected, True))
    for name, objective, tied in entries:
        arm = field.Arm(name, objective, "peer", tied=tied)
        extra = {} if tied else {"tie_embeddings": False}
        config = profile.config(args.setting, objective, 0, **extra)
        model = initial_model(config, corpus.vocab_size).to(device)
        sampler = BlockSampler(corpus.train, config.model.block_size, config.batch_size, 0,
                               corpus.vocab_size, p_low=config.p_low)  # fmt: skip
        state = config.objective.initial_state(model.vocab_size, device)
        prior = corpus.log_prior(config.bilingual, config.p_low).to(device)
        prepared.append((arm, config, model, make_optimizer(model, config), sampler, state,
                         prior, []))  # fmt: skip
    with cpu_training_threads(device):
        for _ in range(args.rounds):
            for entry in prepared:
                for step in range(args.steps):
                    entry[-1].append(timed_step(entry, step, device))
        print(f"{args.profile} profile, {args.setting}, {args.rounds} x {args.steps} steps per "
              f"arm, on {machine(device)}")  # fmt: skip

    def kept(times: list[float]) -> list[float]:
        # the first round (or, with one round, the first step) warms each arm up
        return times[args.steps :] if args.rounds > 1 else times[1:]

    reference = median_ms(kept(prepared[0][-1]))
    rows = []
    for arm, config, *_, times in prepared:
        ms = median_ms(kept(times))
        rows.append([arm.name, config.label, f"{ms:.1f}", f"{ms / reference:.2f}x"])
    print_table(["arm", "objective", "ms per step", "vs CE"], rows)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
