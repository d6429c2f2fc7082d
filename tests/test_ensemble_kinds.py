"""Every kind of run trains stacked (engine.ensemble): each registered objective
(split-head and stateful ones included), untied embeddings and dropout, each member
against its own solo run.

The tolerance: after ``STEPS`` steps of a tiny model on the synthetic corpus, every
member's logged losses, gradient norms and final weights are within ``TOLERANCE`` of its
solo run's (measured: weights within about 1e-6, losses within about 2e-7), its scenario
log within the rounding ``tests/test_ensemble.py`` allows, and its data stream (the
tokens of every step) is the solo run's exactly. What is random is
exact too: a member draws its dropout masks from its own generator states, the draws its
solo run makes, so its generator states after training equal the solo run's bit for bit.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from selfish_lib.engine.corpus import BlockSampler
from selfish_lib.engine.ensemble import (
    MemberRNG,
    MemberView,
    StackedGPT,
    default_ensemble,
    member_batches,
    member_losses,
    sampler_data,
    train_ensemble,
)
from selfish_lib.engine.model import ModelConfig
from selfish_lib.engine.objectives import (
    REGISTRY,
    AdaptiveGradientGating,
    CosineRegularised,
    CrossEntropy,
    EmbeddingOnlyHNS,
    Entmax15,
    HardNegatives,
    LossContext,
    make_objective,
)
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.training import (
    CHECKPOINT,
    TrainConfig,
    initial_model,
    make_sampler,
    train,
    training_corpus,
)

TOLERANCE = 1e-5
STEPS = 6
# Hyperparameters that make each objective differ from CE at this scale (a layout that
# excludes logits; a window of one step, where a symbol of the synthetic text that a
# batch lacks is rare); an objective not named here trains with its defaults.
BITING = {
    "hns": HardNegatives(layout=0.5),
    "hns-rows": EmbeddingOnlyHNS(layout=0.5),
    "agg": AdaptiveGradientGating(alpha=100.0, window=1),
    "cosine-reg": CosineRegularised(gamma=10.0),
}
# the residual too: 0 up to rounding, or the gradient of a penalty on the rows (CosReg)
SCENARIO_COLUMNS = ["input", "target", "nontarget", "grad_total", "residual", "update_adam",
                    "update_total"]  # fmt: skip


def _objective(name: str):
    return BITING.get(name) or make_objective(name)


# every registered objective, and the variants that take another code path
KINDS = {
    **{name: _objective(name) for name in sorted(REGISTRY)},
    "entmax-bisect": Entmax15(alpha=1.25),
    "hns-scheduled": HardNegatives(layout=0.5, schedule="cosine", layout_end=2.0),
}


def _config(corpus, objective=None, seed: int = 0, **model) -> TrainConfig:
    objective = CrossEntropy() if objective is None else objective
    sizes = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, **model)
    return TrainConfig(model=sizes, objective=objective, seed=seed, batch_size=4,
                       max_steps=STEPS, warmup_steps=2, eval_interval=STEPS, log_interval=2,
                       checkpoint_interval=3, scenario_interval=3,
                       data_sha256=corpus.sha256)  # fmt: skip


def _assert_matches_solo(configs, solo, together) -> None:
    for config, a, b in zip(configs, solo, together, strict=True):
        who = (config.label, config.seed, config.model.dropout)
        pd.testing.assert_series_equal(a.train_log["step"], b.train_log["step"])
        for column in ("loss", "ce", "grad_norm"):
            gap = (a.train_log[column] - b.train_log[column]).abs().max()
            assert gap <= TOLERANCE, (who, column, gap)
        # the same data stream: the same tokens at the same steps
        keys = ["step", "token", "count"]
        assert a.train_tokens[keys].equals(b.train_tokens[keys]), who
        assert (a.eval_tokens["loss_sum"] - b.eval_tokens["loss_sum"]).abs().max() <= 1e-3
        for name, p in a.model.state_dict().items():
            gap = (b.model.state_dict()[name] - p).abs().max().item()
            assert gap <= TOLERANCE, (who, name, gap)
        assert len(a.scenarios) == len(b.scenarios) > 0
        torch.testing.assert_close(
            torch.tensor(b.scenarios[SCENARIO_COLUMNS].to_numpy()),
            torch.tensor(a.scenarios[SCENARIO_COLUMNS].to_numpy()),
            rtol=1e-3, atol=1e-7,
        )  # fmt: skip


def _solo_and_stacked(configs, corpus, folders=None):
    solo = [train(c, corpus, device="cpu", progress=False) for c in configs]
    together = train_ensemble(configs, corpus, folders, device="cpu", progress=False)
    return solo, together


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_registered_objective_trains_stacked_as_solo(tiny_corpus, name):
    """Two members of the objective (not adjacent: their logits are gathered for a
    positionwise loss) beside a CE member; each matches its solo run."""
    objective = KINDS[name]
    configs = [_config(tiny_corpus, objective, 0), _config(tiny_corpus, CrossEntropy(), 2),
               _config(tiny_corpus, objective, 1)]  # fmt: skip
    _assert_matches_solo(configs, *_solo_and_stacked(configs, tiny_corpus))


def test_the_biting_objectives_really_differ_from_ce(tiny_corpus):
    """Else the comparison above shows little: each trains other weights than CE."""
    ce = train(_config(tiny_corpus), tiny_corpus, device="cpu", progress=False)
    for objective in BITING.values():
        other = train(_config(tiny_corpus, objective), tiny_corpus, device="cpu", progress=False)
        gap = max((p - other.model.state_dict()[n]).abs().max().item()
                  for n, p in ce.model.state_dict().items())  # fmt: skip
        assert gap > 1e-4, objective.label


def test_untied_members_train_stacked_as_solo(tiny_corpus):
    """One input and one output matrix per member, [E, V, d] each; split-head and
    stateful objectives among them; the scenario log joins a member's two matrices."""
    configs = [_config(tiny_corpus, CrossEntropy(), 0, tie_embeddings=False),
               _config(tiny_corpus, BITING["agg"], 1, tie_embeddings=False),
               _config(tiny_corpus, BITING["cosine-reg"], 2, tie_embeddings=False)]  # fmt: skip
    solo, together = _solo_and_stacked(configs, tiny_corpus)
    _assert_matches_solo(configs, solo, together)
    for result in together:
        assert not result.model.tied
        assert not torch.equal(result.model.input_embedding, result.model.embedding)


def test_dropout_members_train_stacked_as_solo(tiny_corpus):
    """Members with different dropout rates (0 among them) and objectives: their masks
    are their solo runs' draws, so they match their solo runs as runs without dropout do."""
    configs = [_config(tiny_corpus, CrossEntropy(), 0, dropout=0.1),
               _config(tiny_corpus, BITING["hns"], 1, dropout=0.3),
               _config(tiny_corpus, CrossEntropy(), 2),
               _config(tiny_corpus, BITING["hns-rows"], 3, dropout=0.2)]  # fmt: skip
    solo, together = _solo_and_stacked(configs, tiny_corpus)
    _assert_matches_solo(configs, solo, together)
    without = train(dataclasses.replace(configs[0], model=configs[2].model), tiny_corpus,
                    device="cpu", progress=False)  # fmt: skip
    assert (without.train_log["loss"] - solo[0].train_log["loss"]).abs().max() > 1e-3


def test_a_members_dropout_masks_are_its_solo_runs_draws(tiny_corpus):
    """One stacked forward pass in training mode gives each member the logits its solo
    model gives from the same generator state, and leaves each member's generator where
    the solo pass leaves the global one: the same draws, in the same order."""
    configs = [_config(tiny_corpus, seed=s, dropout=p) for s, p in ((0, 0.2), (1, 0.0), (2, 0.5))]
    models = [initial_model(c, tiny_corpus.vocab_size) for c in configs]
    stacked = StackedGPT(models)
    rng = MemberRNG(torch.device("cpu"))
    for e in range(len(models)):
        torch.manual_seed(100 + e)
        rng.add_current()
    x = torch.randint(0, tiny_corpus.vocab_size, (len(models), 4, 16))
    logits, _ = stacked.forward(x, rng=rng)
    for e, model in enumerate(models):
        torch.manual_seed(100 + e)
        expected = model.train()(x[e])
        torch.testing.assert_close(logits[e], expected, rtol=0, atol=1e-6)
        assert torch.equal(rng.states[e][0], torch.get_rng_state())
        if configs[e].model.dropout > 0:  # the masks matter
            assert (model.eval()(x[e]) - expected).abs().max() > 1e-3
    with pytest.raises(ValueError, match="rng"):
        stacked.forward(x)


def test_a_stateful_objective_keeps_one_state_per_member(tiny_corpus, tmp_path):
    """AGG's window of counts is each member's own: two seeds count different targets,
    and each member's checkpointed window equals its solo run's, exactly (counts of the
    same tokens)."""
    agg = BITING["agg"]
    configs = [_config(tiny_corpus, agg, 0), _config(tiny_corpus, agg, 1)]
    folders = [tmp_path / "group" / str(e) for e in range(2)]
    train_ensemble(configs, tiny_corpus, folders, device="cpu", progress=False)
    windows = []
    for e, config in enumerate(configs):
        mine = torch.load(folders[e] / CHECKPOINT, weights_only=False)
        alone = tmp_path / "solo" / str(e)
        assert train(config, tiny_corpus, alone, device="cpu", progress=False,
                     stop_after=mine["step"]) is None  # fmt: skip
        solo = torch.load(alone / CHECKPOINT, weights_only=False)
        assert mine["step"] == solo["step"] == 3
        assert torch.equal(mine["objective_state"]["counts"], solo["objective_state"]["counts"])
        windows.append(mine["objective_state"]["counts"])
    assert windows[0].sum() == windows[1].sum() > 0  # the same number of targets ...
    assert not torch.equal(windows[0], windows[1])  # ... not the same ones


def test_members_of_every_kind_resume_as_solo_runs(tiny_corpus, tmp_path):
    """Untied members with dropout, a split-head stateful objective and a split-head one:
    each member's checkpoint holds its own weights, moments, sampler, objective state and
    generator states (equal to its solo run's at that step), and training it alone from
    there finishes the run the group finished."""
    configs = [_config(tiny_corpus, BITING["agg"], 0, tie_embeddings=False, dropout=0.1),
               _config(tiny_corpus, BITING["hns-rows"], 1, tie_embeddings=False, dropout=0.2),
               _config(tiny_corpus, CrossEntropy(), 2, tie_embeddings=False)]  # fmt: skip
    folders = [tmp_path / "group" / str(e) for e in range(len(configs))]
    together = train_ensemble(configs, tiny_corpus, folders, device="cpu", progress=False)
    for e, config in enumerate(configs):
        mine = torch.load(folders[e] / CHECKPOINT, weights_only=False)
        alone = tmp_path / "solo" / str(e)
        train(config, tiny_corpus, alone, device="cpu", progress=False, stop_after=mine["step"])
        solo = torch.load(alone / CHECKPOINT, weights_only=False)
        assert torch.equal(mine["rng_cpu"], solo["rng_cpu"])  # the same dropout draws
        assert mine["sampler"]["generator"].equal(solo["sampler"]["generator"])
        if config.objective.initial_state(1, torch.device("cpu")) is not None:
            for key, value in solo["objective_state"].items():
                assert torch.equal(mine["objective_state"][key], value)
        resumed = train(config, tiny_corpus, folders[e], device="cpu", progress=False)
        assert list(resumed.train_log["step"]) == list(together[e].train_log["step"])
        for name, p in together[e].model.state_dict().items():
            torch.testing.assert_close(resumed.model.state_dict()[name], p, rtol=0,
                                       atol=TOLERANCE)  # fmt: skip


def _assert_gathered_as_sampled(samplers, data: torch.Tensor, draws: int = 4):
    """The batches ``member_batches`` gathers from ``data`` are, member by member, what
    each sampler's ``sample`` gives, and leave each generator where ``sample`` leaves
    it (``samplers()`` builds two equal sets); the last gathered ``x``."""
    gathered, alone = samplers(), samplers()
    for _ in range(draws):
        x, y = member_batches(gathered, data)
        for e, sampler in enumerate(alone):
            x_e, y_e = sampler.sample()
            assert torch.equal(x[e], x_e) and torch.equal(y[e], y_e)
    for a, b in zip(gathered, alone, strict=True):
        assert torch.equal(a.generator.get_state(), b.generator.get_state())
    return x


@pytest.mark.parametrize("p_low", [0.0, 0.5])
def test_member_batches_are_each_samplers_own_stream(tiny_corpus, p_low):
    def samplers():
        return [BlockSampler(tiny_corpus.train, 16, 4, seed, tiny_corpus.vocab_size, p_low=p_low)
                for seed in (3, 0, 7)]  # fmt: skip

    x = _assert_gathered_as_sampled(samplers, tiny_corpus.train.clone(), draws=3)
    if p_low:
        assert (x >= tiny_corpus.vocab_size).any()  # some blocks in the second alphabet


def test_member_batches_draw_a_real_language_samplers_own_stream(corpus):
    """Blocks of English or of a real second language (``LanguageBlockSampler``), gathered
    from English's training text followed by the language's (``sampler_data``)."""
    smoke = get_profile("smoke")
    config = smoke.language_config("mixtec", "disjoint", language_chars=2000, p_low=0.5)
    run_corpus = training_corpus(corpus, config)

    def samplers():
        return [make_sampler(config.replace(seed=seed), run_corpus) for seed in (5, 0, 9)]

    _assert_gathered_as_sampled(samplers, sampler_data(run_corpus))


def _leaf(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().clone().requires_grad_()


def test_member_losses_equal_each_members_own_loss(tiny_corpus):
    """Positionwise objectives computed for several members at once (adjacent or not),
    the others member by member: each member's values and logit gradients are those of
    its objective on its own logits alone, with one head or with a split one."""
    V = tiny_corpus.vocab_size
    objectives = [HardNegatives(layout=0.5), Entmax15(), HardNegatives(layout=0.5),
                  BITING["cosine-reg"], CrossEntropy(), Entmax15()]  # fmt: skip
    E = len(objectives)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(E, 3, 5, V, generator=g, requires_grad=True)
    y = torch.randint(0, V, (E, 3, 5), generator=g)
    rows = torch.randn(E, V, 8, generator=g)
    contexts = [LossContext(max_steps=4, model=MemberView(rows[e])) for e in range(E)]
    values = member_losses(objectives, z, y, contexts)
    (grad,) = torch.autograd.grad(values.sum(), z)
    for e, objective in enumerate(objectives):
        z_e = _leaf(z[e])
        alone = objective.loss(z_e, y[e], contexts[e])
        (grad_e,) = torch.autograd.grad(alone.sum(), z_e)
        torch.testing.assert_close(values[e], alone, rtol=0, atol=1e-6)
        torch.testing.assert_close(grad[e], grad_e, rtol=0, atol=1e-6)
    # with a split head: a split-head objective gets its two sides, the others the
    # full gradient on both
    objectives[3] = BITING["hns-rows"]
    z_hidden, z_rows = _leaf(z), _leaf(z)
    values = member_losses(objectives, (z_hidden, z_rows), y, contexts)
    to_hidden, to_rows = torch.autograd.grad(values.sum(), (z_hidden, z_rows))
    for e, objective in enumerate(objectives):
        h_e, r_e = _leaf(z[e]), _leaf(z[e])
        if objective.split_head:
            alone = objective.split_loss(h_e, r_e, y[e], contexts[e])
            expected = torch.autograd.grad(alone.sum(), (h_e, r_e))
        else:
            alone = objective.loss(h_e, y[e], contexts[e])
            expected = torch.autograd.grad(alone.sum(), h_e) * 2
        torch.testing.assert_close(values[e], alone, rtol=0, atol=1e-6)
        torch.testing.assert_close(to_hidden[e], expected[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(to_rows[e], expected[1], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="splits the head"):
        member_losses(objectives, z, y, contexts)


def test_clipping_takes_each_members_own_norm_with_foreach(tiny_corpus):
    """Members with gradients of very different sizes: the large ones are clipped, the
    small one is not, each as ``clip_grad_norm_`` clips its solo model; again after the
    gradients are zeroed in place (the cached views) and after they are replaced."""
    configs = [_config(tiny_corpus, seed=s) for s in range(3)]
    models = [initial_model(c, tiny_corpus.vocab_size) for c in configs]
    stacked = StackedGPT(models)
    g = torch.Generator().manual_seed(1)
    scales = torch.tensor([10.0, 0.001, 3.0])
    for fresh in (True, False, True):
        for name in stacked.names:
            param = stacked.params[name]
            grad = torch.randn(param.shape, generator=g) * scales.view(-1, *[1] * (param.dim() - 1))
            if fresh or param.grad is None:
                param.grad = grad
            else:
                param.grad.zero_().add_(grad)
        raw = {name: stacked.params[name].grad.clone() for name in stacked.names}
        norms = stacked.clip_gradients(1.0)
        for e, model in enumerate(models):
            for name, p in model.named_parameters():
                p.grad = raw[name][e].clone()
            solo_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            torch.testing.assert_close(norms[e], solo_norm, rtol=1e-6, atol=0)
            for name, p in model.named_parameters():
                torch.testing.assert_close(stacked.params[name].grad[e], p.grad, rtol=1e-6,
                                           atol=0)  # fmt: skip
        assert norms[1] < 1.0 < min(norms[0], norms[2])


def test_stacked_models_must_share_a_shape(tiny_corpus):
    configs = [_config(tiny_corpus), _config(tiny_corpus, tie_embeddings=False)]
    models = [initial_model(c, tiny_corpus.vocab_size) for c in configs]
    with pytest.raises(ValueError, match="models of one shape"):
        StackedGPT(models)


def test_runs_train_solo_by_default_on_a_cpu():
    assert default_ensemble("cpu") == 1


def test_the_stacked_split_head_is_the_solo_split_head(tiny_corpus):
    """``forward(split_head=True)`` gives each member (z_hidden, z_rows) with the values
    of its plain logits, the hidden side without a path to the rows and the rows' side
    without a path to the hidden states."""
    models = [initial_model(_config(tiny_corpus, seed=s, tie_embeddings=False),
                            tiny_corpus.vocab_size) for s in (0, 1)]  # fmt: skip
    stacked = StackedGPT(models)
    x = torch.randint(0, tiny_corpus.vocab_size, (2, 3, 16))
    (z_hidden, z_rows), _ = stacked.forward(x, split_head=True)
    plain, _ = stacked.forward(x)
    assert torch.equal(z_hidden, plain) and torch.equal(z_rows, plain)
    head = stacked.embedding
    (to_head,) = torch.autograd.grad(z_hidden.sum(), head, allow_unused=True)
    assert to_head is None
    lookup = stacked.input_embedding
    (to_lookup,) = torch.autograd.grad(z_rows.sum(), lookup, allow_unused=True)
    assert to_lookup is None
