"""The scenario decomposition is exact: 1 + 2.1 + 2.2 equals the autograd gradient of the
tied matrix, for CE and HNS, with ignored positions, on one and two alphabets."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from selfish_lib.engine.losses import hns_cross_entropy, hns_keep_mask
from selfish_lib.engine.model import GPT, ModelConfig
from selfish_lib.engine.scenarios import (
    ScenarioLog,
    adam_state_before,
    adam_step_of,
    decompose,
    forward,
    per_position_norms,
    tidy,
)
from selfish_lib.engine.training import TrainConfig, learning_rate, train

LAYOUTS = [math.inf, 0.5, 2.0, 8.0]


def batch(vocab: int, bilingual: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    base = vocab // 2 if bilingual else vocab
    ids = torch.randint(0, base, (4, 9), generator=g)
    if bilingual:  # rows 1 and 3 in the second alphabet, like the sampler's shifted blocks
        ids[1] += base
        ids[3] += base
    x, y = ids[:, :-1].clone(), ids[:, 1:].clone()
    y[0, 2] = y[2, 5] = y[3, 0] = -1  # ignored positions
    return x, y


def run_pass(model, x, y, layout):
    model.zero_grad(set_to_none=True)
    logits, cap = forward(model, x, capture=True)
    loss = hns_cross_entropy(logits, y, layout, ignore_index=-1)
    loss.backward()
    return logits, cap, decompose(cap, y)


@pytest.mark.parametrize("bilingual", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_scenarios_sum_to_the_autograd_gradient_in_float64(layout, bilingual):
    torch.manual_seed(0)
    vocab = 14 if bilingual else 11
    model = GPT(ModelConfig(block_size=8, n_layer=2, n_head=2, n_embd=12), vocab).double()
    x, y = batch(vocab, bilingual)
    _, _, parts = run_pass(model, x, y, layout)
    total = parts["input"] + parts["target"] + parts["nontarget"]
    assert (total - model.embedding.grad).abs().max().item() < 1e-10
    assert all(parts[k].abs().sum() > 0 for k in parts)


@pytest.mark.parametrize("layout", [0.5, 2.0])
def test_excluded_logits_contribute_nothing_to_the_nontarget_part(layout):
    torch.manual_seed(1)
    model = GPT(ModelConfig(block_size=8, n_layer=1, n_head=1, n_embd=6), 11).double()
    with torch.no_grad():  # larger logits so that the layout excludes something
        model.embedding.mul_(40)
    x, y = batch(11, False, seed=2)
    logits, cap, parts = run_pass(model, x, y, layout)
    flat, t = logits.detach().reshape(-1, 11), y.reshape(-1)
    keep = hns_keep_mask(flat, t, layout)
    valid = t != -1
    assert (~keep[valid]).any(), "the example should exclude some logits"
    p = torch.softmax(flat.masked_fill(~keep, -math.inf), dim=1)
    # reference: kept non-target probabilities only, over scored positions, mean reduction
    weights = p * keep * valid.unsqueeze(1)
    weights[torch.arange(len(t))[valid], t[valid]] = 0.0
    expected = weights.T @ cap.hidden / valid.sum()
    assert torch.allclose(parts["nontarget"], expected, atol=1e-12)


class TiedIdentity(torch.nn.Module):
    """h = W[x] (no network), z = W h: small enough to differentiate by hand."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight)

    def embed(self, idx):
        return self.weight[idx]

    def hidden(self, idx, tok_emb):
        return tok_emb

    def lm_head(self, h):
        return h @ self.weight.T


def test_hand_checkable_two_token_case():
    """V=2, d=1, W = [[a], [b]], input token 0, target 1.

    h = a, z = (a^2, a b), p = softmax(z), L = -log p1. By hand:
      input row 0:     dL/dh = p0 a + (p1 - 1) b
      target row 1:    (p1 - 1) a
      non-target row 0: p0 a
    """
    a, b = 0.7, -1.3
    model = TiedIdentity(torch.tensor([[a], [b]], dtype=torch.float64))
    x, y = torch.tensor([[0]]), torch.tensor([[1]])
    _, _, parts = run_pass(model, x, y, math.inf)
    z0, z1 = a * a, a * b
    p0 = math.exp(z0) / (math.exp(z0) + math.exp(z1))
    p1 = 1 - p0
    assert parts["input"][0, 0].item() == pytest.approx(p0 * a + (p1 - 1) * b, abs=1e-14)
    assert parts["input"][1, 0].item() == 0.0
    assert parts["target"][1, 0].item() == pytest.approx((p1 - 1) * a, abs=1e-14)
    assert parts["target"][0, 0].item() == 0.0
    assert parts["nontarget"][0, 0].item() == pytest.approx(p0 * a, abs=1e-14)
    assert parts["nontarget"][1, 0].item() == 0.0


def test_hand_checkable_exclusion():
    """W = [[1], [2]], input 0, target 1: z = (1, 2). At layout 0.5 token 0 is excluded
    (1 < 2 - 0.5), the restricted softmax puts all mass on the target, and every part
    of the gradient vanishes; at layout 2 it is kept and p0 a pushes row 0 away."""
    model = TiedIdentity(torch.tensor([[1.0], [2.0]], dtype=torch.float64))
    x, y = torch.tensor([[0]]), torch.tensor([[1]])
    _, _, excluded = run_pass(model, x, y, 0.5)
    assert all(part.abs().max().item() == 0.0 for part in excluded.values())
    _, _, kept = run_pass(model, x, y, 2.0)
    p0 = 1 / (1 + math.exp(1.0))
    assert kept["nontarget"][0, 0].item() == pytest.approx(p0 * 1.0, abs=1e-14)
    assert kept["target"][1, 0].item() == pytest.approx((1 - p0 - 1) * 1.0, abs=1e-14)


def test_per_position_share_on_a_two_position_example():
    """W = [[1], [-1]] (V=2, d=1), inputs (0, 0), targets (0, 1). Both positions have
    h = 1, z = (1, -1), p = (q, 1 - q) with q = e / (e + 1/e), and N = 2 (mean).

    Row 0's scenario-2.2 gradient comes from position 2 only (target 1):
    (dL/dz_2)[0] h = q / 2; row 1's from position 1 (target 0): (1 - q) / 2. Row 0's
    scenario-1 gradient sums the two positions' dL/dh_n = sum_j (p_j - 1[j = y_n]) W_j / N,
    which have opposite signs, so the norm of the sum is below the sum of the norms:
    the two definitions differ exactly there.
    """
    model = TiedIdentity(torch.tensor([[1.0], [-1.0]], dtype=torch.float64))
    x, y = torch.tensor([[0, 0]]), torch.tensor([[0, 1]])
    _, cap, parts = run_pass(model, x, y, math.inf)
    pp = per_position_norms(cap, y)
    q = math.e / (math.e + math.exp(-1.0))
    # dL/dh_n = sum_j (p_j - 1[j = y_n]) W_j / N, with W = (1, -1)
    dh1 = ((q - 1) * 1 + (1 - q) * -1) / 2  # target 0
    dh2 = (q * 1 + (1 - q - 1) * -1) / 2  # target 1
    assert pp["input"][0].item() == pytest.approx(abs(dh1) + abs(dh2), abs=1e-14)
    assert parts["input"][0, 0].item() == pytest.approx(dh1 + dh2, abs=1e-14)
    assert abs(dh1 + dh2) < abs(dh1) + abs(dh2)  # the example separates the definitions
    assert pp["nontarget"][0].item() == pytest.approx(q / 2, abs=1e-14)
    assert pp["nontarget"][1].item() == pytest.approx((1 - q) / 2, abs=1e-14)
    assert pp["target"][0].item() == pytest.approx((1 - q) / 2, abs=1e-14)
    assert pp["target"][1].item() == pytest.approx((1 - (1 - q)) / 2, abs=1e-14)
    # one contribution per row and scenario: the two definitions agree there
    assert pp["nontarget"][0].item() == pytest.approx(abs(parts["nontarget"][0, 0].item()))


def test_per_position_norms_bound_the_summed_norms():
    """The norm of a sum is at most the sum of the norms (triangle inequality), for
    every row and scenario, CE and HNS, on a real model."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(block_size=8, n_layer=1, n_head=2, n_embd=8), 10).double()
    x, y = batch(10, False)
    for layout in (math.inf, 1.0):
        _, cap, parts = run_pass(model, x, y, layout)
        pp = per_position_norms(cap, y)
        for name, part in parts.items():
            assert (part.norm(dim=1) <= pp[name] + 1e-12).all(), name


def test_update_split_sums_to_the_actual_change():
    """decay + momentum + the three scenario parts of the AdamW update equal the
    optimizer's actual change of every row (float64), after a few steps with clipping."""
    torch.manual_seed(1)
    model = GPT(ModelConfig(block_size=8, n_layer=1, n_head=2, n_embd=8), 10).double()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2, betas=(0.9, 0.99),
                                  weight_decay=0.1)  # fmt: skip
    log = ScenarioLog()
    for step in range(4):
        x, y = batch(10, False, seed=step)
        logits, cap = forward(model, x, capture=True)
        optimizer.zero_grad()
        hns_cross_entropy(logits, y, 1.0, ignore_index=-1).backward()
        log.before_step(step + 1, cap, y, model.embedding)
        adam = adam_state_before(optimizer, model.embedding)
        before = model.embedding.detach().clone()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)  # clips every step
        optimizer.step()
        v, t = adam_step_of(optimizer, model.embedding)
        log.after_step(model.embedding, 3e-2, 0.1, adam, v, t, model.embedding.grad)
        change = (model.embedding.detach() - before).norm(dim=1)
        assert change.max() > 0
    table = pd.DataFrame(log.records)
    assert (table["update_residual"] <= 1e-12 * table["update_total"].max()).all()
    assert (table.loc[table["step"] > 1, "update_momentum"] > 0).any()
    assert (table.loc[table["step"] == 1, "update_momentum"] == 0).all()


def test_rows_of_absent_tokens_are_still_pushed_away():
    """Scenario 2.2 reaches rows whose token is neither an input nor a target."""
    torch.manual_seed(3)
    model = GPT(ModelConfig(block_size=8, n_layer=1, n_head=1, n_embd=8), 9).double()
    x = torch.randint(0, 5, (3, 8))  # tokens 5..8 never occur
    y = torch.randint(0, 5, (3, 8))
    _, _, parts = run_pass(model, x, y, math.inf)
    absent = slice(5, 9)
    assert parts["input"][absent].abs().max() == 0
    assert parts["target"][absent].abs().max() == 0
    assert (parts["nontarget"][absent].norm(dim=1) > 0).all()


def tiny_config(corpus, **changes) -> TrainConfig:
    return TrainConfig.flat(
        n_layer=1,
        n_head=2,
        n_embd=16,
        block_size=16,
        batch_size=4,
        max_steps=8,
        warmup_steps=2,
        eval_interval=4,
        log_interval=2,
        checkpoint_interval=3,
        data_sha256=corpus.sha256,
    ).replace(**changes)


def test_logging_records_every_kth_step_without_changing_training(tiny_corpus):
    plain = train(tiny_config(tiny_corpus, layout=2.0), tiny_corpus, progress=False)
    logged = train(
        tiny_config(tiny_corpus, layout=2.0, scenario_interval=3), tiny_corpus, progress=False
    )
    a, b = plain.model.state_dict(), logged.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    table = logged.scenarios
    V = tiny_corpus.vocab_size
    assert sorted(table["step"].unique()) == [3, 6]
    assert len(table) == 2 * V and list(table.columns) == list(ScenarioLog.COLUMNS)
    # float32 decomposition: residual tiny relative to the gradient
    assert (table["residual"] <= 1e-5 * table["grad_total"].max()).all()
    # AdamW's decay part is lr * wd * |row| (before the step); step 3 is update index 2
    cfg = tiny_config(tiny_corpus, scenario_interval=3)
    step3 = table[table["step"] == 3]
    lr = learning_rate(2, cfg)
    assert step3["update_decay"].to_numpy() == pytest.approx(
        lr * cfg.weight_decay * step3["embedding"].to_numpy(), rel=1e-6
    )
    assert plain.scenarios.empty
    # the update split holds in the training loop too (float32 tolerance)
    assert (table["update_residual"] <= 1e-4 * table["update_total"].max()).all()


def test_tidy_table_joins_symbols_and_ranks(tiny_corpus):
    res = train(tiny_config(tiny_corpus, scenario_interval=4), tiny_corpus, progress=False)
    long = tidy(res.scenarios, tiny_corpus.token_info())
    assert {"step", "token", "symbol", "rank", "scenario", "value"} <= set(long.columns)
    assert set(long["scenario"]) >= {"input", "target", "nontarget", "grad_total"}
    assert long["rank"].notna().all()


def test_token_totals_and_group_shares_on_a_known_table():
    from selfish_lib.study.gradients import group_shares, token_totals

    wide = pd.DataFrame(
        {
            "step": [1, 1, 2, 2],
            "token": [0, 1, 0, 1],
            "input": [1.0, 0.0, 1.0, 0.0],
            "target": [1.0, 0.0, 1.0, 0.0],
            "nontarget": [2.0, 3.0, 2.0, 1.0],
        }
    )
    totals = token_totals(wide).set_index("token")
    assert totals.loc[0, "nontarget"] == 4.0 and totals.loc[0, "share_nontarget"] == 0.5
    assert totals.loc[1, "share_nontarget"] == 1.0  # only pushed away, never used
    info = pd.DataFrame({"token": [0, 1], "group": ["1-10", "11-20"], "language": "high"})
    shares = group_shares(totals.reset_index(), info).set_index("group")
    assert shares.loc["1-10", "nontarget_over_own"] == 1.0
    assert np.isnan(shares.loc["11-20", "nontarget_over_own"])  # no own gradient at all
    assert shares.loc["11-20", "share_nontarget"] == 1.0


def test_both_definitions_and_the_update_view_on_a_known_table():
    from selfish_lib.study.gradients import definitions_side_by_side, group_shares, token_totals

    wide = pd.DataFrame(
        {
            "step": [1, 2],
            "token": [0, 0],
            "input": [1.0, 1.0], "target": [0.0, 0.0], "nontarget": [1.0, 1.0],
            "input_pp": [1.0, 1.0], "target_pp": [0.0, 0.0], "nontarget_pp": [3.0, 3.0],
            "grad_total": [2.0, 2.0], "update_adam": [0.2, 0.2], "update_decay": [0.1, 0.1],
            "update_total": [0.3, 0.3], "update_input": [0.05, 0.05],
            "update_target": [0.0, 0.0], "update_nontarget": [0.15, 0.15],
            "update_momentum": [0.2, 0.2],
        }
    )  # fmt: skip
    info = pd.DataFrame({"token": [0], "group": ["1-10"], "language": "high"})
    shares = group_shares(token_totals(wide), info).iloc[0]
    assert shares["share_nontarget"] == 0.5  # summed: 2 of 4
    assert shares["share_nontarget_pp"] == 0.75  # per position: 6 of 8
    assert shares["update_share_nontarget"] == pytest.approx(0.75)  # 0.3 of 0.4
    assert shares["momentum_share"] == pytest.approx(0.5)  # 0.4 of 0.8
    assert shares["update_over_grad"] == pytest.approx(0.1)  # 0.4 / 4
    per_seed = group_shares(token_totals(wide), info).assign(objective="CE", seed=0)
    from selfish_lib.study.stats import aggregate_seeds

    agg = aggregate_seeds(per_seed, ["objective", "language", "group"],
                          ["share_nontarget", "share_nontarget_pp"])  # fmt: skip
    side = definitions_side_by_side(agg).set_index("definition")["share"]
    assert side.to_dict() == {"summed": 0.5, "per-position": 0.75}


def test_reading_verdicts_follow_the_intervals():
    from selfish_lib.study.gradients import reading

    rows = []
    # CE: share well above one half in every seed; HNS: clearly lower, paired by seed
    for seed, (ce, hns) in enumerate([(0.80, 0.40), (0.82, 0.41), (0.79, 0.39)]):
        rows += [
            {
                "objective": "CE",
                "seed": seed,
                "language": "high",
                "group": "61-65",
                "share_nontarget": ce,
            },
            {
                "objective": "HNS",
                "seed": seed,
                "language": "high",
                "group": "61-65",
                "share_nontarget": hns,
            },
        ]
    per_seed = pd.DataFrame(rows)
    from selfish_lib.study.stats import aggregate_seeds

    shares = aggregate_seeds(per_seed, ["objective", "language", "group"], ["share_nontarget"])
    out = reading(per_seed, shares, rare_groups=["61-65"])
    group = out.summary["groups"]["61-65"]
    assert group["CE"]["outweighs_input_and_target"] == "yes"
    assert group["HNS"]["outweighs_input_and_target"] == "no"
    assert group["hns_minus_ce"]["direction"] == "lower"
    assert group["hns_minus_ce"]["diff"] == pytest.approx(-0.4033333, abs=1e-6)
    assert "**yes**" in out.text and "**lower**" in out.text
    one_seed = per_seed[per_seed["seed"] == 0]
    single = aggregate_seeds(one_seed, ["objective", "language", "group"], ["share_nontarget"])
    verdict = reading(one_seed, single, ["61-65"]).summary["groups"]["61-65"]["CE"]
    assert verdict["outweighs_input_and_target"].startswith("inconclusive")
