"""Shared helpers of the benchmarks: timing with device synchronization and a table printer."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch

from selfish_lib.engine.corpus import BlockSampler
from selfish_lib.engine.model import GPT
from selfish_lib.engine.objectives import objective_for_layout
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.training import make_optimizer, vocab_size


def setup(profile: str, setting: str, layout: float, corpus, device: torch.device):
    """The pieces of one training step at a profile's scale: config, model, optimizer and
    a block sampler, seeded."""
    config = get_profile(profile).config(setting, objective_for_layout(layout))
    torch.manual_seed(0)
    model = GPT(config.model, vocab_size(config, corpus.vocab_size)).to(device)
    optimizer = make_optimizer(model, config)
    sampler = BlockSampler(
        corpus.train,
        config.model.block_size,
        config.batch_size,
        0,
        corpus.vocab_size,
        p_low=config.p_low,
    )
    return config, model, optimizer, sampler


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds taken by one call of ``fn``."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def median_ms(samples: list[float]) -> float:
    """Median of second-valued samples, in milliseconds."""
    return 1000 * statistics.median(samples)


def machine(device: torch.device) -> str:
    """A one-line description of where the benchmark ran."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads "
        f"(torch {torch.__version__})"
    )


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    """A plain Markdown table on stdout."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
