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
    """Window of 10 steps, alpha 0.5: counts (20, 8, 2, 0, 6) give rates (2, .8, .2, 0, .6),
    so tokens 2 and 3 are rare (mean rare count 1). A non-rare target gates the rare
    tokens by their rate; a rare target gates them by min(count / 1, 1)."""
    counts = torch.tensor([20.0, 8.0, 2.0, 0.0, 6.0], dtype=torch.float64)
    targets = torch.tensor([0, 2, 3])
    gates = agg_gates(counts, 10, targets, 0.5)
    expected = torch.tensor(
        [
            [1.0, 1.0, 0.2, 0.0, 1.0],  # target 0 (not rare): gate 1
            [1.0, 1.0, 1.0, 0.0, 1.0],  # target 2 (rare): gate 2, its own entry 1
            [1.0, 1.0, 1.0, 1.0, 1.0],  # target 3 (rare): min(2 / 1, 1) = 1 for token 2
        ],
        dtype=torch.float64,
    )
    assert torch.equal(gates, expected)
    # nothing rare: every gate is 1
    assert torch.equal(agg_gates(counts, 10, targets, 0.0), torch.ones(3, 5, dtype=torch.float64))


def test_agg_gives_ces_hidden_gradient_and_gated_row_gradient():
    """Independent formula: dL/dW = (gates * (p - onehot))^T h, dL/dh = (p - onehot) W,
    with the gates from the counts the objective keeps (this step's targets included)."""
    h, W, y = head_case(V=6, N=12)
    agg = AdaptiveGradientGating(alpha=0.5, window=3)
    state = agg.initial_state(6, torch.device("cpu"))
    state["counts"][1, :] = torch.tensor([5.0, 5.0, 5.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    context = LossContext(step=2, state=state)  # steps 0, 1 and this one: 3 seen
    values, (g_h, g_W) = split_gradients(agg, h, W, y, context)
    z = (h @ W.T).detach()
    assert torch.allclose(values, F.cross_entropy(z, y, reduction="none"), atol=1e-12)
    window = torch.tensor([5.0, 5.0, 5.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    window += torch.bincount(y, minlength=6).double()
    gates = agg_gates(window, 3, y, 0.5)
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
                              objective=AdaptiveGradientGating(alpha=0.5, window=3))  # fmt: skip
    whole = train(config, tiny_corpus, progress=False)
    assert train(config, tiny_corpus, tmp_path, progress=False, stop_after=4) is None
    resumed = train(config, tiny_corpus, tmp_path, progress=False)
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("name", "params", "bad", "values"),
    [("agg", {"alpha": 0.03, "window": 100}, "alpha", (-1.0, math.inf, "x")),
     ("agg", {"alpha": 0.03, "window": 100}, "window", (0, 2.5, True)),
     ("hns-rows", {"layout": 2.0}, "layout", (-1.0, math.inf))],
)  # fmt: skip
def test_new_objectives_are_registered_validated_and_round_trip(name, params, bad, values):
    objective = make_objective(name, **params)
    assert objective_from_dict(objective.to_dict()) == objective
    assert not objective.batchable  # they read the hidden states: no ensemble
    for value in values:
        with pytest.raises(ParameterError, match=bad):
            make_objective(name, **{**params, bad: value})


# --- untied embeddings ------------------------------------------------------------------------


def test_tied_run_ids_do_not_change_and_untied_ones_differ():
    tied = TrainConfig()
    assert config_hash(tied) == config_hash(TrainConfig.flat(tie_embeddings=True))
    untied = TrainConfig.flat(tie_embeddings=False)
    assert config_hash(untied) != config_hash(tied)
    assert TrainConfig.from_dict(untied.to_dict()) == untied
    assert group_key(untied) is None  # an ensemble stacks one matrix per member
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
    for objective in (EmbeddingOnlyHNS(0.5), AdaptiveGradientGating(alpha=1.0, window=2)):
        run = train(base.replace(objective=objective), corpus, progress=False)
        log = run.train_log
        assert (log["loss"] - log["ce"]).abs().max() < 1e-6
        assert log["loss"].iloc[0] == pytest.approx(ce_run.train_log["loss"].iloc[0], rel=1e-6)
        assert (log["ce"] - ce_run.train_log["ce"]).abs().max() > 0  # and it trains otherwise
