"""AGG, HNS on the output rows only, and untied embeddings: each checked against an
independent formula on a small case before anything compares them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfish_lib.engine.ensemble import group_key
from selfish_lib.engine.losses import hns_keep_mask
from selfish_lib.engine.model import GPT, ModelConfig
from selfish_lib.engine.objectives import (
    AGG_REFERENCE_TOKENS,
    AdaptiveGradientGating,
    EmbeddingOnlyHNS,
    HardNegatives,
    LossContext,
    agg_gates,
    make_objective,
    objective_from_dict,
    rows_only,
)
from selfish_lib.engine.runs import config_hash
from selfish_lib.engine.scenarios import decompose
from selfish_lib.engine.scenarios import forward as forward_pass
from selfish_lib.engine.training import TrainConfig, initial_model, train
from selfish_lib.engine.validation import ParameterError


def head_case(V: int = 6, N: int = 9, d: int = 4, seed: int = 0):
    """Hidden states h (N, d), output rows W (V, d) and targets, in float64."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, d, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(V, d, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, V, (N,), generator=g)
    return h, W, y


def split_gradients(objective, h, W, y, context: LossContext | None = None):
    """dL/dh and dL/dW of ``objective.split_loss`` on the head z = h W^T."""
    z_hidden, z_rows = h @ W.detach().T, h.detach() @ W.T
    values = objective.split_loss(z_hidden, z_rows, y, context or LossContext())
    return values, torch.autograd.grad(values.sum(), (h, W))


def softmax_gradient(z: torch.Tensor, y: torch.Tensor, keep: torch.Tensor | None = None):
    """(p - onehot) per position, with p the softmax over the kept logits (all if None)."""
    if keep is not None:
        z = z.masked_fill(~keep, -math.inf)
    return torch.softmax(z, dim=1) - F.one_hot(y, z.size(1)).to(z.dtype)


# --- rows_only --------------------------------------------------------------------------------


def test_rows_only_is_zero_with_its_arguments_gradient():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    term = rows_only(x**2)
    assert torch.equal(term, torch.zeros(3))
    term.sum().backward()
    assert torch.equal(x.grad, 2 * x.detach())


# --- HNS on the rows only ---------------------------------------------------------------------


def test_embedding_only_hns_has_ces_hidden_gradient_and_hns_row_gradient():
    h, W, y = head_case()
    values, (g_h, g_W) = split_gradients(EmbeddingOnlyHNS(layout=1.0), h, W, y)
    z = (h @ W.T).detach()
    ce = F.cross_entropy(z, y, reduction="none")
    assert torch.allclose(values, ce, atol=1e-12)  # the value logged is CE's
    G_ce = softmax_gradient(z, y)
    keep = hns_keep_mask(z, y, 1.0)
    assert (~keep).any(), "the case must exclude some logits"
    G_hns = softmax_gradient(z, y, keep)
    assert torch.allclose(g_h, G_ce @ W.detach(), atol=1e-12)
    assert torch.allclose(g_W, G_hns.T @ h.detach(), atol=1e-12)
    # and the two differ, so the test can tell them apart
    assert not torch.allclose(G_ce.T @ h.detach(), G_hns.T @ h.detach(), atol=1e-6)


def test_embedding_only_hns_excluded_rows_get_nothing():
    h, W, y = head_case(seed=3)
    z_hidden, z_rows = h @ W.detach().T, h.detach() @ W.T
    z_rows.retain_grad()
    EmbeddingOnlyHNS(layout=0.5).split_loss(z_hidden, z_rows, y, LossContext()).sum().backward()
    excluded = ~hns_keep_mask(z_rows.detach(), y, 0.5)
    assert excluded.any() and torch.all(z_rows.grad[excluded] == 0)


# --- AGG ----------------------------------------------------------------------------------------


def test_agg_gates_on_a_hand_made_count_example():
    """Counts (60000, 39000, 996, 2, 0, 2) over a window of 100,000 tokens: on the
    reference's scale (per 32,768 tokens) the rates are 2 / 100000 * 32768 = 0.65536 for
    tokens 3 and 5 and 0 for token 4, far above for the rest. At alpha 0.7 tokens 3, 4
    and 5 are rare (mean rare count 4 / 3). A non-rare target gates the rare tokens by
    their rate; a rare target gates them by min(count / (4 / 3), 1)."""
    counts = torch.tensor([60000.0, 39000.0, 996.0, 2.0, 0.0, 2.0], dtype=torch.float64)
    targets = torch.tensor([0, 3, 4])
    gates = agg_gates(counts, targets, 0.7)
    r = 2 / 100000 * 32768
    expected = torch.tensor(
        [
            [1.0, 1.0, 1.0, r, 0.0, r],  # target 0 (not rare): gate 1
            [1.0, 1.0, 1.0, 1.0, 0.0, 1.0],  # target 3 (rare): gate 2, its own entry 1
            [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],  # target 4 (rare): min(2 / (4/3), 1) = 1
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(gates, expected, rtol=1e-12, atol=0)
    # nothing rare: every gate is 1; above alpha 1 a rare token's gate stays at 1
    assert torch.equal(agg_gates(counts, targets, 0.0), torch.ones(3, 6, dtype=torch.float64))
    lifted = agg_gates(torch.tensor([99990.0, 10.0], dtype=torch.float64), torch.tensor([0]), 5.0)
    assert lifted[0, 1].item() == 1.0  # rate 3.28 < 5: rare, gated by min(3.28, 1)


def test_agg_threshold_is_a_share_of_the_windows_tokens_on_a_count_stream():
    """A stream of three steps through the objective, window 2, alpha 5 (per 32,768
    tokens): the rows' gradient reveals each gate (zero logits: p = 1/V, so a non-target
    row's gradient is gate / V), and each must be what the independent formula says:
    rare iff count_in_window / tokens_in_window < 5 / 32768, gate 1 = min(that rate,
    1) at a frequent target, min(count / mean rare count, 1) at a rare one."""
    V, alpha, window = 6, 5.0, 2
    steps = [
        [0] * 30000 + [1] * 9990 + [2] * 10,
        [0] * 39999 + [3],
        [0] * 39998 + [3] + [2],
    ]
    agg = AdaptiveGradientGating(alpha=alpha, window=window)
    state = agg.initial_state(V, torch.device("cpu"))
    for step, targets in enumerate(steps):
        y = torch.tensor(targets)
        z_rows = torch.zeros(len(targets), V, dtype=torch.float64, requires_grad=True)
        z_hidden = torch.zeros(len(targets), V, dtype=torch.float64)
        context = LossContext(step=step, state=state)
        agg.split_loss(z_hidden, z_rows, y, context).sum().backward()
        # the independent formula, from the raw stream
        seen = [t for batch in steps[max(0, step - window + 1) : step + 1] for t in batch]
        count = [seen.count(k) for k in range(V)]
        total = len(seen)
        rate = [c / total * 32768 for c in count]
        rare = [r < alpha for r in rate]
        mean_rare = sum(c for c, is_rare in zip(count, rare, strict=True) if is_rare) / sum(rare)
        for position in {targets.index(k) for k in set(targets)}:  # one position per target
            target = targets[position]
            for k in range(V):
                if k == target:
                    continue
                if not rare[k]:
                    expected = 1.0
                elif rare[target]:
                    expected = min(count[k] / mean_rare, 1.0)
                else:
                    expected = min(rate[k], 1.0)
                gate = z_rows.grad[position, k].item() * V
                assert gate == pytest.approx(expected, rel=1e-9, abs=1e-12), (step, target, k)
    # step 2 forgot step 0: token 1 (9990 of the first 40,000) is now unseen and rare
    assert state["counts"].sum(dim=0)[1].item() == 0.0


def test_agg_gives_ces_hidden_gradient_and_gated_row_gradient():
    """Independent formula: dL/dW = (gates * (p - onehot))^T h, dL/dh = (p - onehot) W,
    with the gates from the counts the objective keeps (this step's targets included)."""
    h, W, y = head_case(V=6, N=12)
    agg = AdaptiveGradientGating(alpha=3.0, window=3)
    state = agg.initial_state(6, torch.device("cpu"))
    before = torch.tensor([50000.0, 50000.0, 50000.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    state["counts"][1, :] = before
    context = LossContext(step=2, state=state)  # steps 0, 1 and this one: 3 seen
    values, (g_h, g_W) = split_gradients(agg, h, W, y, context)
    z = (h @ W.T).detach()
    assert torch.allclose(values, F.cross_entropy(z, y, reduction="none"), atol=1e-12)
    window = before + torch.bincount(y, minlength=6).double()
    gates = agg_gates(window, y, 3.0)
    assert (gates < 1).any(), "the case must gate something"
    G = softmax_gradient(z, y)
    assert torch.allclose(g_h, G @ W.detach(), atol=1e-12)
    assert torch.allclose(g_W, (gates * G).T @ h.detach(), atol=1e-12)
    assert torch.equal(state["counts"][2], torch.bincount(y, minlength=6).double())


def test_agg_counts_forget_steps_older_than_the_window():
    agg = AdaptiveGradientGating(alpha=0.5, window=2)
    state = agg.initial_state(3, torch.device("cpu"))
    z = torch.zeros(2, 3, dtype=torch.float64)
    for step, targets in enumerate(([0, 0], [1, 1], [2, 2])):
        agg.split_loss(z, z, torch.tensor(targets), LossContext(step=step, state=state))
    assert state["counts"].sum(dim=0).tolist() == [0.0, 2.0, 2.0]  # step 0 left the window


def test_agg_resumes_from_a_checkpoint_to_the_same_numbers(tiny_corpus, tmp_path):
    config = TrainConfig.flat(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4,
                              max_steps=8, warmup_steps=1, eval_interval=8, log_interval=2,
                              checkpoint_interval=3, data_sha256=tiny_corpus.sha256,
                              objective=AdaptiveGradientGating(alpha=100.0, window=3))  # fmt: skip
    whole = train(config, tiny_corpus, progress=False)
    assert train(config, tiny_corpus, tmp_path, progress=False, stop_after=4) is None
    resumed = train(config, tiny_corpus, tmp_path, progress=False)
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("name", "params", "bad", "values"),
    [("agg", {"alpha": 0.03, "window": 100}, "alpha",
      (-1.0, math.inf, math.nan, "x", 101.0, 10**400)),
     ("agg", {"alpha": 0.03, "window": 100}, "window", (0, 2.5, True, 10**9, 10**400)),
     ("hns-rows", {"layout": 2.0}, "layout", (-1.0, math.inf, math.nan, 10**400))],
)  # fmt: skip
def test_new_objectives_are_registered_validated_and_round_trip(name, params, bad, values):
    objective = make_objective(name, **params)
    assert objective_from_dict(objective.to_dict()) == objective
    assert not objective.positionwise  # they read the hidden states: one member at a time
    for value in values:
        with pytest.raises(ParameterError, match=bad):
            make_objective(name, **{**params, bad: value})


def test_agg_window_is_bounded_by_the_memory_of_its_counts():
    """A window a run can honour: the bound of the class, and the size of its count table
    for the vocabulary it meets (an error naming the window, not an allocation)."""
    with pytest.raises(ParameterError, match="window"):
        AdaptiveGradientGating(window=AdaptiveGradientGating.WINDOW_MAX + 1)
    agg = AdaptiveGradientGating(window=AdaptiveGradientGating.WINDOW_MAX)
    assert agg.initial_state(130, torch.device("meta"))["counts"].shape == (100_000, 130)
    with pytest.raises(ParameterError, match="window.*vocabulary of 4096"):
        agg.initial_state(4096, torch.device("meta"))


def test_agg_alpha_is_on_the_reference_scale_and_its_run_id_says_so():
    """alpha counts per 32,768 tokens: the id says so, so runs of the per-step definition
    (earlier versions) are never read as these."""
    agg = AdaptiveGradientGating(alpha=0.03, window=1000)
    assert agg.canonical()["objective"]["alpha_per_tokens"] == AGG_REFERENCE_TOKENS == 32768
    assert AdaptiveGradientGating.tuning.published == 0.03  # the reference's LM value
    values = AdaptiveGradientGating.tuning.values
    assert 0.03 in values and max(values) >= 0.01 * 32768 / 768  # the per-step 0.01 = 0.43


# --- untied embeddings ------------------------------------------------------------------------


def test_tied_run_ids_do_not_change_and_untied_ones_differ():
    tied = TrainConfig()
    assert config_hash(tied) == config_hash(TrainConfig.flat(tie_embeddings=True))
    untied = TrainConfig.flat(tie_embeddings=False)
    assert config_hash(untied) != config_hash(tied)
    assert TrainConfig.from_dict(untied.to_dict()) == untied
    assert group_key(untied) != group_key(tied)  # tied and untied runs stack apart
    with pytest.raises(ParameterError, match="tie_embeddings"):
        ModelConfig(tie_embeddings="no")


def test_untied_model_differs_from_the_tied_one_only_in_the_input_embedding():
    tied = initial_model(TrainConfig.flat(n_layer=1, n_head=2, n_embd=8, block_size=8), 11)
    untied = initial_model(
        TrainConfig.flat(n_layer=1, n_head=2, n_embd=8, block_size=8, tie_embeddings=False), 11
    )
    assert tied.tied and not untied.tied
    assert untied.input_embedding is not untied.embedding
    assert untied.num_params() == tied.num_params() + 11 * 8
    assert torch.equal(untied.embedding, tied.embedding)
    assert not torch.equal(untied.input_embedding, untied.embedding)
    named = dict(tied.named_parameters())
    for name, p in untied.named_parameters():
        if name in named:  # the tied matrix is named once, as the input embedding
            assert torch.equal(p, named[name]) or name == "transformer.wte.weight", name


def test_untied_input_embedding_gets_only_the_lookup_gradient():
    """Untied, scenario 2.1 and 2.2 land on the output head, and the input rows receive
    exactly scenario 1 (nothing for a token that was not an input)."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, tie_embeddings=False), 9)
    x = torch.tensor([[0, 1, 2, 1, 0, 3]])
    y = torch.tensor([[1, 2, 1, 0, 3, 4]])
    logits, cap = forward_pass(model, x, capture=True)
    HardNegatives(2.0).loss(logits, y, LossContext()).mean().backward()
    parts = decompose(cap, y)
    assert torch.allclose(model.input_embedding.grad, parts["input"], atol=1e-7)
    assert torch.allclose(model.embedding.grad, parts["target"] + parts["nontarget"], atol=1e-7)
    assert torch.all(model.input_embedding.grad[5:] == 0)  # never an input
    assert parts["nontarget"][5:].norm() > 0  # yet pushed as a non-target, on the head


def test_untied_scenario_log_splits_the_update_exactly(tiny_corpus):
    config = TrainConfig.flat(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4,
                              max_steps=6, warmup_steps=1, eval_interval=6, log_interval=2,
                              scenario_interval=2, tie_embeddings=False,
                              data_sha256=tiny_corpus.sha256)  # fmt: skip
    result = train(config, tiny_corpus, progress=False)
    table = result.scenarios
    assert len(table) == 3 * tiny_corpus.vocab_size
    assert table["residual"].max() < 1e-6
    assert table["update_residual"].max() < 1e-6 * max(1.0, table["update_total"].max())
    assert table["update_input"].gt(0).any() and table["update_nontarget"].gt(0).any()


def test_split_head_objectives_train_and_log_ce(tiny_corpus):
    """The loss a split-head run logs is the CE of its logits."""
    corpus = tiny_corpus
    base = TrainConfig.flat(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4,
                            max_steps=4, warmup_steps=1, eval_interval=4, log_interval=1,
                            data_sha256=corpus.sha256)  # fmt: skip
    ce_run = train(base, corpus, progress=False)
    for objective in (EmbeddingOnlyHNS(0.5), AdaptiveGradientGating(alpha=100.0, window=1)):
        run = train(base.replace(objective=objective), corpus, progress=False)
        log = run.train_log
        assert (log["loss"] - log["ce"]).abs().max() < 1e-6
        assert log["loss"].iloc[0] == pytest.approx(ce_run.train_log["loss"].iloc[0], rel=1e-6)
        assert (log["ce"] - ce_run.train_log["ce"]).abs().max() > 0  # and it trains otherwise
