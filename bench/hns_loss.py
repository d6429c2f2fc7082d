"""The HNS loss against plain cross-entropy: forward and backward time at several
vocabulary sizes, side by side on the same logits (CPU, the training thread count).

    python bench/hns_loss.py [--positions 768] [--repeats 30]

Prints a table: median milliseconds of CE and HNS (layout 2) and their ratio.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import machine, median_ms, print_table, timed

from selfish_lib.engine.losses import hns_cross_entropy
from selfish_lib.engine.training import cpu_training_threads

VOCABULARIES = (65, 130, 4096, 50304)


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
                hns_cross_entropy(logits, targets, 2.0).backward()

            ce(), hns()  # warm up both
            ce_t, hns_t = [], []
            for _ in range(args.repeats):  # interleaved, so drift hits both alike
                ce_t.append(timed(ce, device))
                hns_t.append(timed(hns, device))
            a, b = median_ms(ce_t), median_ms(hns_t)
            rows.append([V, f"{a:.2f} ms", f"{b:.2f} ms", f"{b / a:.2f}x"])
    print_table(["V", "CE fwd+bwd", "HNS(layout=2) fwd+bwd", "HNS / CE"], rows)


if __name__ == "__main__":
    main()
