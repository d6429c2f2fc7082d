"""The HNS loss against plain cross-entropy: forward and backward time at several
vocabulary sizes, side by side on the same logits (CPU, the training thread count).

    python bench/hns_loss.py [--positions 768] [--repeats 30]

Prints a table: median milliseconds of CE and HNS (layout 2), their ratio, the path
``hns_cross_entropy`` takes at that size, and for reference the ratio of the previous
implementation (a boolean keep mask, ``masked_fill`` and ``F.cross_entropy``). The three
run interleaved, so that drift on a shared machine hits them alike.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from common import machine, median_ms, print_table, timed

from selfish_lib.engine import losses
from selfish_lib.engine.losses import hns_cross_entropy
from selfish_lib.engine.training import cpu_training_threads

VOCABULARIES = (65, 130, 4096, 50304)
LAYOUT = 2.0


def masked_fill_hns(logits: torch.Tensor, targets: torch.Tensor, layout: float) -> torch.Tensor:
    """The previous implementation (mean reduction, no ignored position): a boolean mask of
    the kept logits, the excluded ones filled with -inf, then F.cross_entropy."""
    target_logit = logits.detach().gather(-1, targets.unsqueeze(-1))
    keep = logits.detach() >= target_logit - layout
    return F.cross_entropy(logits.masked_fill(~keep, -math.inf), targets)


def path_at(numel: int) -> str:
    return "fused" if numel >= losses.FUSED_FROM_NUMEL else "kept logits + CE"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=768, help="batch x context (12 x 64)")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    device = torch.device("cpu")
    rows = []
    with cpu_training_threads(device):
        print(machine(device))
        for V in VOCABULARIES:
            gen = torch.Generator().manual_seed(V)
            logits = torch.randn(args.positions, V, generator=gen, requires_grad=True)
            targets = torch.randint(0, V, (args.positions,), generator=gen)

            def ce(logits=logits, targets=targets):
                F.cross_entropy(logits, targets).backward()

            def hns(logits=logits, targets=targets):
                hns_cross_entropy(logits, targets, LAYOUT).backward()

            def previous(logits=logits, targets=targets):
                masked_fill_hns(logits, targets, LAYOUT).backward()

            ce(), hns(), previous()  # warm up all three
            ce_t, hns_t, prev_t = [], [], []
            for _ in range(args.repeats):  # interleaved, so drift hits them alike
                ce_t.append(timed(ce, device))
                hns_t.append(timed(hns, device))
                prev_t.append(timed(previous, device))
            a, b, c = median_ms(ce_t), median_ms(hns_t), median_ms(prev_t)
            rows.append(
                [V, f"{a:.2f} ms", f"{b:.2f} ms", f"{b / a:.2f}x", path_at(logits.numel()),
                 f"{c / a:.2f}x"]
            )  # fmt: skip
    print_table(
        ["V", "CE fwd+bwd", "HNS(layout=2) fwd+bwd", "HNS / CE", "HNS path",
         "previous masked_fill HNS / CE"],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
