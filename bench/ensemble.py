"""Ensembles against solo runs at the paper config: how far their numbers drift apart,
and what batching buys, side by side in one process.

    python bench/ensemble.py [--steps 500] [--device auto]

Trains CE and HNS (layout 2) for two seeds each, solo and as one ensemble of four,
then prints (1) the largest gap between a member and its solo run in the final
validation loss and in every per-frequency-group metric, and (2) the time per step of
the ensemble against four solo runs (evaluations excluded).
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
from common import machine, print_table, synchronize

from selfish_lib.engine.corpus import load_corpus
from selfish_lib.engine.ensemble import train_ensemble
from selfish_lib.engine.evaluation import aggregate
from selfish_lib.engine.objectives import CrossEntropy, HardNegatives
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.training import resolve_device, train

METRICS = ("loss", "top1", "recall5", "mrr")


def final_groups(result, corpus) -> pd.DataFrame:
    """Final validation metrics per frequency group and overall."""
    evals = result.eval_tokens
    final = evals[evals["step"] == evals["step"].max()].drop(columns="step")
    info = corpus.token_info(False)
    groups = aggregate(final, info, by=("group",)).set_index("group")
    overall = aggregate(final, info, by=()).assign(group="all").set_index("group")
    return pd.concat([groups, overall])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    corpus = load_corpus()
    profile = get_profile("paper")
    configs = [
        profile.config("single", objective, seed, max_steps=args.steps, eval_interval=args.steps)
        for objective in (CrossEntropy(), HardNegatives(2.0))
        for seed in (0, 1)
    ]
    print(machine(device))
    synchronize(device)
    began = time.perf_counter()
    solo = [train(c, corpus, device=str(device), progress=False) for c in configs]
    synchronize(device)
    solo_seconds = time.perf_counter() - began
    began = time.perf_counter()
    together = train_ensemble(configs, corpus, device=str(device), progress=False)
    synchronize(device)
    ensemble_seconds = time.perf_counter() - began

    rows = []
    for config, a, b in zip(configs, solo, together, strict=True):
        fa, fb = final_groups(a, corpus), final_groups(b, corpus)
        gaps = {m: float((fa[m] - fb[m]).abs().max()) for m in METRICS}
        overall = float(abs(fa.loc["all", "loss"] - fb.loc["all", "loss"]))
        rows.append([config.objective.label, config.seed, f"{overall:.1e}",
                     *(f"{gaps[m]:.1e}" for m in METRICS)])  # fmt: skip
    print(f"\nsolo against ensemble member after {args.steps} steps (largest |gap|):")
    print_table(["objective", "seed", "val loss", *(f"group {m}" for m in METRICS)], rows)
    total = args.steps * len(configs)
    print("\nwall time (each run evaluated twice, at step 0 and at the end):")
    print_table(
        ["what", "time", "throughput", "ratio"],
        [
            [f"{len(configs)} solo runs, one after another", f"{solo_seconds:.1f} s",
             f"{total / solo_seconds:.1f} steps/s", "1.00x"],
            [f"one ensemble of {len(configs)}", f"{ensemble_seconds:.1f} s",
             f"{total / ensemble_seconds:.1f} steps/s", f"{solo_seconds / ensemble_seconds:.2f}x"],
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
