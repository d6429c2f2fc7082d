"""Whole-split evaluation: coverage, metrics on a known model, NaN for absent tokens,
both alphabets for bilingual models, exact aggregation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from selfish_lib.engine.evaluation import (
    add_metrics,
    aggregate,
    evaluate_ids,
    evaluate_split,
    position_metrics,
    windows,
)
from selfish_lib.engine.validation import ParameterError


class BigramModel(torch.nn.Module):
    """A model whose logits depend only on the current token: a fixed table."""

    def __init__(self, table: torch.Tensor, block_size: int) -> None:
        super().__init__()
        self.table = table
        self.config = SimpleNamespace(block_size=block_size)
        self.vocab_size = table.shape[1]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx]


def brute_force(table: torch.Tensor, ids: list[int]) -> dict[int, dict[str, float]]:
    """Per-target metrics computed position by position, the obvious way."""
    out: dict[int, list] = {}
    for cur, nxt in zip(ids[:-1], ids[1:], strict=False):
        z = table[cur].double()
        p = torch.softmax(z, 0)
        rank = 1 + sum(float(z[j]) >= float(z[nxt]) for j in range(len(z)) if j != nxt)
        out.setdefault(nxt, []).append((-math.log(p[nxt]), rank))
    return {
        t: {
            "count": len(v),
            "loss": sum(a for a, _ in v) / len(v),
            "top1": sum(r == 1 for _, r in v) / len(v),
            "recall5": sum(r <= 5 for _, r in v) / len(v),
            "mrr": sum(1 / r for _, r in v) / len(v),
        }
        for t, v in out.items()
    }


@pytest.mark.parametrize("length, block", [(50, 8), (49, 8), (9, 8), (5, 8), (64, 16)])
def test_windows_cover_every_position_once(length, block):
    ids = torch.arange(length)
    parts = windows(ids, block)
    xs = torch.cat([x.reshape(-1) for x, _ in parts])
    ys = torch.cat([y.reshape(-1) for _, y in parts])
    assert torch.equal(xs, ids[:-1]) and torch.equal(ys, ids[1:])
    assert all(x.shape[1] <= block for x, _ in parts)


def test_metrics_match_brute_force_on_a_known_model():
    g = torch.Generator().manual_seed(0)
    V = 7
    table = torch.randn(V, V, generator=g)
    table[2, 3] = table[2, 4]  # a tie: counted against the target
    ids = torch.randint(0, V - 1, (203,), generator=g)  # token 6 never occurs
    frame = add_metrics(evaluate_ids(BigramModel(table, block_size=10), ids))
    expected = brute_force(table, ids.tolist())
    for token, exp in expected.items():
        row = frame.set_index("token").loc[token]
        assert row["count"] == exp["count"]
        for m in ("loss", "top1", "recall5", "mrr"):
            assert row[m] == pytest.approx(exp[m], rel=1e-6), (token, m)
    absent = frame.set_index("token").loc[6]
    assert absent["count"] == 0
    assert all(np.isnan(absent[m]) for m in ("loss", "top1", "recall5", "mrr"))


def test_position_metrics_rank_and_ties():
    logits = torch.tensor([[3.0, 1.0, 3.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    m = position_metrics(logits, torch.tensor([0, 1]))
    assert m["rank"].tolist() == [2, 3]  # the tie with token 2 counts against the target
    assert m["rr"].tolist() == pytest.approx([1 / 2, 1 / 3])
    assert m["top1"].tolist() == [0.0, 0.0] and m["top5"].tolist() == [1.0, 1.0]


def test_all_equal_logits_rank_every_target_last():
    """A model that says nothing (every logit equal) gets no top-1 hit, whatever the
    target: ties are pessimistic."""
    V = 6
    targets = torch.arange(V)
    m = position_metrics(torch.zeros(V, V), targets)
    assert m["rank"].tolist() == [V] * V
    assert m["top1"].sum() == 0 and m["top5"].sum() == 0
    assert m["rr"].tolist() == pytest.approx([1 / V] * V)
    assert m["loss"].tolist() == pytest.approx([math.log(V)] * V)


def test_bilingual_model_is_evaluated_in_both_alphabets():
    g = torch.Generator().manual_seed(1)
    base = 5
    table = torch.randn(2 * base, 2 * base, generator=g)
    model = BigramModel(table, block_size=6)
    ids = torch.randint(0, base, (61,), generator=g)
    both = evaluate_split(model, ids, base, bilingual=True).set_index("token")
    high = evaluate_ids(model, ids).set_index("token")
    low = evaluate_ids(model, ids + base).set_index("token")
    assert both["count"].sum() == 2 * (len(ids) - 1)
    pd.testing.assert_frame_equal(both.loc[: base - 1], high.loc[: base - 1])
    pd.testing.assert_frame_equal(both.loc[base:], low.loc[base:])
    single = evaluate_split(model, ids, base, bilingual=False)
    assert single["count"].sum() == len(ids) - 1


def test_aggregate_is_a_ratio_of_sums_and_nan_for_empty_groups():
    sums = pd.DataFrame(
        {
            "token": [0, 1, 2],
            "count": [1, 3, 0],
            "loss_sum": [2.0, 3.0, 0.0],
            "top1_sum": [1.0, 0.0, 0.0],
            "top5_sum": [1.0, 3.0, 0.0],
            "rr_sum": [1.0, 1.0, 0.0],
        }
    )
    info = pd.DataFrame({"token": [0, 1, 2], "group": ["a", "a", "b"]})
    out = aggregate(sums, info, by=["group"]).set_index("group")
    assert out.loc["a", "count"] == 4
    assert out.loc["a", "loss"] == pytest.approx(5.0 / 4)  # not the mean of per-token means
    assert out.loc["a", "recall5"] == pytest.approx(1.0)
    assert out.loc["b", "count"] == 0 and np.isnan(out.loc["b", "loss"])
    overall = aggregate(sums, info, by=[])
    assert overall["count"].iloc[0] == 4


def test_real_model_on_real_validation_split(corpus):
    from selfish_lib.engine.model import GPT, ModelConfig

    torch.manual_seed(0)
    model = GPT(ModelConfig(block_size=32, n_layer=1, n_head=2, n_embd=16), 65)
    frame = add_metrics(evaluate_split(model, corpus.val[:3001], 65, bilingual=False))
    assert frame["count"].sum() == 3000
    # an untrained model is close to uniform: loss near ln(65) for every seen token
    seen = frame[frame["count"] > 0]
    assert seen["loss"].between(math.log(65) - 0.3, math.log(65) + 0.3).all()


def test_probability_profile_matches_brute_force():
    from selfish_lib.engine.evaluation import probability_profile

    g = torch.Generator().manual_seed(5)
    base = 4
    table = 3 * torch.randn(2 * base, 2 * base, generator=g)
    model = BigramModel(table, block_size=5)
    ids = torch.randint(0, base, (37,), generator=g)
    hist, summary = probability_profile(model, ids, base, True, layout=1.0, bins=12)
    for language, offset in (("high", 0), ("low", base)):
        seq = (ids + offset).tolist()
        logp = torch.log_softmax(table[torch.tensor(seq[:-1])].double(), dim=1)
        tgt = torch.tensor(seq[1:])
        lt = logp.gather(1, tgt.unsqueeze(1))
        mask = torch.ones_like(logp, dtype=torch.bool)
        mask[torch.arange(len(tgt)), tgt] = False
        nontarget = (logp[mask] / math.log(10)).clamp(min=-12.0)
        expected = torch.histc(nontarget, bins=12, min=-12.0, max=0.0)
        got = hist[hist["language"] == language]["fraction"].to_numpy()
        assert got == pytest.approx((expected / expected.sum()).numpy(), abs=1e-9)
        row = summary.set_index("language").loc[language]
        assert row["positions"] == len(tgt)
        assert row["outside_mass"] == pytest.approx(1 - lt.exp().mean().item(), rel=1e-5)
        easy = (logp < lt - 1.0) & mask
        assert row["easy_mass"] == pytest.approx((logp.exp() * easy).sum(1).mean().item(), rel=1e-5)
        assert row["easy_count"] == pytest.approx(easy.sum(1).double().mean().item())


@pytest.mark.parametrize("length, block, stride", [(50, 8, 2), (49, 8, 3), (57, 8, 7), (9, 8, 4)])
def test_a_window_stride_keeps_every_kth_window(length, block, stride):
    ids = torch.arange(length)
    every = [(x[i], y[i]) for x, y in windows(ids, block) for i in range(len(x))]
    kept = [(x[i], y[i]) for x, y in windows(ids, block, stride) for i in range(len(x))]
    expected = every[::stride]
    assert len(kept) == len(expected)
    for (x, y), (ex, ey) in zip(kept, expected, strict=True):
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_a_strided_evaluation_is_the_sum_of_its_windows_evaluated_alone():
    """Every k-th window, against an independent sum: each kept window (block + 1 ids:
    its inputs and its last target) evaluated on its own and the sums added."""
    g = torch.Generator().manual_seed(3)
    V, block, stride = 6, 5, 3
    table = torch.randn(V, V, generator=g)
    model = BigramModel(table, block_size=block)
    ids = torch.randint(0, V, (58,), generator=g)
    got = evaluate_ids(model, ids, stride=stride).set_index("token")
    starts = range(0, len(ids) - 1, block)
    parts = [evaluate_ids(model, ids[s : s + block + 1]).set_index("token")
             for i, s in enumerate(starts) if i % stride == 0]  # fmt: skip
    want = sum(parts[1:], parts[0])
    assert got["count"].sum() == sum(min(block, len(ids) - 1 - s)
                                     for i, s in enumerate(starts) if i % stride == 0)  # fmt: skip
    pd.testing.assert_frame_equal(got.astype(float), want.astype(float), rtol=1e-12)
    assert got["count"].sum() < len(ids) - 1  # a sample, not the whole split


@pytest.mark.parametrize("stride", [0, -1, 1.5, "2"])
def test_a_bad_stride_names_the_parameter(stride):
    with pytest.raises(ParameterError, match="stride"):
        windows(torch.arange(20), 4, stride)
