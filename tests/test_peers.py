"""The peer objectives (focal loss, cosine regularisation, logit adjustment, 1.5-entmax),
each checked against an independent formula on a small case before anything compares
them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfish_lib.engine.ensemble import train_ensemble
from selfish_lib.engine.losses import entmax15, entmax15_loss
from selfish_lib.engine.objectives import (
    CosineRegularised,
    CrossEntropy,
    Entmax15,
    Focal,
    LogitAdjusted,
    LossContext,
    Tuning,
    entmax_bisect_loss,
    make_objective,
    mean_pairwise_cosine,
    objective_from_dict,
)
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.runs import config_hash
from selfish_lib.engine.training import TrainConfig, train
from selfish_lib.engine.validation import ParameterError


def batch(V: int = 7, N: int = 11, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, V, generator=g, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, V, (N,), generator=g)
    return logits, targets


# --- focal ---------------------------------------------------------------------------------


def test_focal_with_gamma_zero_is_cross_entropy_exactly():
    logits, targets = batch(dtype=torch.float32)
    focal = Focal(gamma=0.0).loss(logits, targets, LossContext())
    assert torch.equal(focal, CrossEntropy().loss(logits, targets, LossContext()))


def test_focal_on_a_hand_case():
    """V = 2, equal logits: p_t = 1/2, so the loss is (1/2)^2 ln 2 at gamma = 2."""
    loss = Focal(gamma=2.0).loss(torch.zeros(1, 2), torch.tensor([1]), LossContext())
    assert loss.item() == pytest.approx(0.25 * math.log(2), rel=1e-6)


def test_focal_gradient_matches_the_closed_form():
    """d/dz of -(1 - p)^g log p with p = softmax(z)_t: with dL/dp = g (1 - p)^(g-1) log p
    - (1 - p)^g / p and dp/dz = p (onehot - softmax)."""
    logits, targets = batch()
    g = 2.0
    Focal(gamma=g).loss(logits, targets, LossContext()).sum().backward()
    z = logits.detach()
    soft = torch.softmax(z, 1)
    p = soft.gather(1, targets[:, None])
    dl_dp = g * (1 - p) ** (g - 1) * torch.log(p) - (1 - p) ** g / p
    onehot = F.one_hot(targets, z.size(1)).double()
    expected = dl_dp * p * (onehot - soft)
    torch.testing.assert_close(logits.grad, expected, rtol=1e-10, atol=1e-12)


# --- cosine regularisation -----------------------------------------------------------------


def test_mean_pairwise_cosine_equals_the_double_loop():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(6, 4, generator=g, dtype=torch.float64)
    pairs = [F.cosine_similarity(W[i], W[j], dim=0) for i in range(6) for j in range(6) if i != j]
    assert mean_pairwise_cosine(W).item() == pytest.approx(torch.stack(pairs).mean().item())
    same = torch.ones(5, 3, dtype=torch.float64)  # every pair identical: mean cosine 1
    assert mean_pairwise_cosine(same).item() == pytest.approx(1.0)


def test_cosine_penalty_gradient_by_finite_differences():
    g = torch.Generator().manual_seed(2)
    W = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(mean_pairwise_cosine, (W,), eps=1e-6, atol=1e-8)


def test_cosine_regularised_adds_gamma_times_the_penalty_to_every_position():
    logits, targets = batch()
    W = torch.randn(7, 3, dtype=torch.float64)
    model = type("M", (), {"embedding": W})()
    ctx = LossContext(model=model)
    out = CosineRegularised(gamma=0.5).loss(logits, targets, ctx)
    ce = CrossEntropy().loss(logits, targets, ctx)
    torch.testing.assert_close(out - ce, torch.full_like(ce, 0.5 * mean_pairwise_cosine(W).item()))
    with pytest.raises(ValueError, match="LossContext.model"):
        CosineRegularised().loss(logits, targets, LossContext())


# --- logit adjustment ----------------------------------------------------------------------


def test_logit_adjustment_with_tau_zero_is_cross_entropy_exactly():
    logits, targets = batch(dtype=torch.float32)
    prior = torch.log(torch.full((7,), 1 / 7))
    out = LogitAdjusted(tau=0.0).loss(logits, targets, LossContext(log_prior=prior))
    assert torch.equal(out, CrossEntropy().loss(logits, targets, LossContext()))


def test_logit_adjustment_on_a_hand_case():
    """V = 2, zero logits, prior (0.8, 0.2), tau = 1: the adjusted softmax is the prior, so
    the loss of target 1 is -ln 0.2; a uniform prior changes nothing (shift invariance)."""
    prior = torch.log(torch.tensor([0.8, 0.2]))
    loss = LogitAdjusted(tau=1.0).loss(torch.zeros(1, 2), torch.tensor([1]),
                                       LossContext(log_prior=prior))  # fmt: skip
    assert loss.item() == pytest.approx(-math.log(0.2), rel=1e-6)
    logits, targets = batch()
    uniform = torch.log(torch.full((7,), 1 / 7, dtype=torch.float64))
    torch.testing.assert_close(
        LogitAdjusted(tau=1.0).loss(logits, targets, LossContext(log_prior=uniform)),
        CrossEntropy().loss(logits, targets, LossContext()),
    )
    with pytest.raises(ValueError, match="log_prior"):
        LogitAdjusted().loss(logits, targets, LossContext())


def test_the_log_prior_is_the_smoothed_training_stream(tiny_corpus):
    counts = torch.bincount(tiny_corpus.train, minlength=tiny_corpus.vocab_size).double()
    single = tiny_corpus.log_prior().double().exp()
    assert single.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(single, (counts + 1) / (counts + 1).sum(), rtol=1e-6, atol=0)
    mixed = tiny_corpus.log_prior(bilingual=True, p_low=0.02).double().exp()
    V = tiny_corpus.vocab_size
    assert len(mixed) == 2 * V and mixed.sum().item() == pytest.approx(1.0)
    expected = torch.cat([0.98 * counts, 0.02 * counts]) + 1
    torch.testing.assert_close(mixed, expected / expected.sum(), rtol=1e-6, atol=0)
    assert torch.isfinite(tiny_corpus.log_prior(bilingual=True, p_low=1.0)).all()


# --- as registered objectives ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "bad", "above"),
    [("focal", {"gamma": 2.0}, "gamma", 20.5), ("cosine-reg", {"gamma": 1.0}, "gamma", 1001.0),
     ("logit-adjust", {"tau": 1.0}, "tau", 10.5), ("entmax15", {"alpha": 1.25}, "alpha", 10.5)],
)  # fmt: skip
def test_peers_are_registered_validated_and_round_trip(name, params, bad, above):
    """Each hyperparameter has a range: NaN, infinities, an integer too large for a
    float and a value past the range are refused with an error that names it."""
    objective = make_objective(name, **params)
    assert objective_from_dict(objective.to_dict()) == objective
    for value in (-1.0, math.inf, -math.inf, math.nan, "2", True, 10**400, above):
        with pytest.raises(ParameterError, match=bad):
            make_objective(name, **{bad: value})


@pytest.mark.parametrize("cls", [Focal, CosineRegularised, LogitAdjusted, Entmax15])
def test_every_tuning_grid_holds_its_published_value_and_stays_in_range(cls):
    """The grids of the comparison: the published value among the candidates, and every
    candidate a valid value of the hyperparameter."""
    tuning = cls.tuning
    assert tuning.published == getattr(cls(), tuning.hyperparameter)
    assert tuning.published in tuning.values
    for value in tuning.values:
        cls(**{tuning.hyperparameter: value})


def test_the_widened_grids():
    assert LogitAdjusted.tuning.values == (0.05, 0.1, 0.25, 0.5, 1.0)
    assert CosineRegularised.tuning.values == (1.0, 3.0, 10.0, 30.0, 100.0)
    assert Focal.tuning.values == (0.5, 1.0, 2.0, 5.0)
    assert Entmax15.tuning.values == (1.25, 1.5, 2.0)


def test_a_grid_continues_by_its_own_step():
    """Beyond an end, the ratio of the two offsets (from the origin) at that end once
    more: (1, 3, 10, 30, 100) continues to 333 and 1/3; (1.25, 1.5, 2) about 1, the
    offsets 0.25, 0.5, 1, to 3 (offset 2) and 1.125 (offset 0.125)."""
    grid = (1.0, 3.0, 10.0, 30.0, 100.0)
    tuning = Tuning("gamma", grid, published=1.0)
    assert tuning.beyond(grid, "above") == 333.0  # 100 * 100 / 30, three digits
    assert tuning.beyond(grid, "below") == 0.333
    entmax = Tuning("alpha", (1.25, 1.5, 2.0), published=1.5, origin=1.0)
    assert entmax.beyond((1.25, 1.5, 2.0), "above") == 3.0
    assert entmax.beyond((1.25, 1.5, 2.0), "below") == 1.125
    with pytest.raises(ParameterError, match="published"):
        Tuning("gamma", (1.0, 2.0), published=3.0)
    with pytest.raises(ParameterError, match="tuning values"):
        Tuning("gamma", (2.0, 1.0), published=1.0)
    with pytest.raises(ParameterError, match="side"):
        tuning.beyond(grid, "left")


def test_each_peer_trains_and_gets_its_own_run(tiny_corpus):
    base = TrainConfig.flat(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4,
                            max_steps=6, warmup_steps=1, eval_interval=6, log_interval=2,
                            data_sha256=tiny_corpus.sha256)  # fmt: skip
    ce = train(base, tiny_corpus, device="cpu", progress=False)
    ids = {config_hash(base)}
    for objective in (Focal(), CosineRegularised(gamma=5.0), LogitAdjusted()):
        config = base.replace(objective=objective)
        result = train(config, tiny_corpus, device="cpu", progress=False)
        ids.add(config_hash(config))
        assert (result.train_log["ce"] - ce.train_log["ce"]).abs().max() > 0, objective.label
    assert len(ids) == 4


def test_peers_train_inside_an_ensemble_as_alone(corpus):
    """The ensemble hands each member its log prior and its own embedding."""
    smoke = get_profile("smoke")
    peers = (LogitAdjusted(), CosineRegularised(gamma=5.0), Focal())
    configs = [smoke.config("single", objective, 0, max_steps=10) for objective in peers]
    together = train_ensemble(configs, corpus, device="cpu", progress=False)
    for config, member in zip(configs, together, strict=True):
        alone = train(config, corpus, device="cpu", progress=False)
        gap = (alone.train_log["loss"] - member.train_log["loss"]).abs().max()
        assert gap <= 1e-5, (config.objective.label, gap)


# --- 1.5-entmax -----------------------------------------------------------------------------


def test_entmax15_equals_the_packages_and_is_sparse():
    """Our sort-based 1.5-entmax and its loss against the entmax package (an independent
    implementation), on spread logits where the support is a strict subset."""
    entmax = pytest.importorskip("entmax")
    g = torch.Generator().manual_seed(3)
    z = 3 * torch.randn(40, 65, generator=g, dtype=torch.float64)
    y = torch.randint(0, 65, (40,), generator=g)
    p = entmax15(z)
    torch.testing.assert_close(p, entmax.entmax15(z, dim=-1), rtol=0, atol=1e-12)
    assert torch.allclose(p.sum(1), torch.ones(40, dtype=torch.float64))
    assert (p == 0).any(dim=1).all()  # every row leaves some tokens out
    torch.testing.assert_close(entmax15_loss(z, y), entmax.entmax15_loss(z, y), rtol=0,
                               atol=1e-12)  # fmt: skip


def test_entmax15_loss_gradient_is_p_minus_onehot_and_zero_off_support():
    logits, targets = batch()
    logits = (4 * logits.detach()).requires_grad_()
    Entmax15().loss(logits, targets, LossContext()).sum().backward()
    p = entmax15(logits.detach())
    expected = p - F.one_hot(targets, 7).double()
    torch.testing.assert_close(logits.grad, expected, rtol=0, atol=1e-12)
    off = (p == 0) & (F.one_hot(targets, 7) == 0)
    assert off.any() and (logits.grad[off] == 0).all()


def test_entmax15_on_a_hand_case():
    """z = (2, 0), so x = z / 2 = (1, 0). Support 1: tau_1 = 1 - sqrt(1 - 0) = 0 <= 1;
    support 2: mean 1/2, mean of squares 1/2, tau_2 = 1/2 - sqrt(1/4) = 0 <= 0. So
    tau = 0 and p = (1, 0): the loss of target 0 is 0; of target 1, omega(p) = 0 plus
    (p - e_1) . z = (1, -1) . (2, 0) = 2."""
    z = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(entmax15(z), torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    assert entmax15_loss(z, torch.tensor([0])).item() == pytest.approx(0.0, abs=1e-12)
    assert entmax15_loss(z, torch.tensor([1])).item() == pytest.approx(2.0)


# --- alpha-entmax by bisection ---------------------------------------------------------------


def test_entmax_alpha_loss_equals_the_packages_and_has_gradient_p_minus_onehot():
    """At alpha 1.25 and 2 the loss is the entmax package's entmax_bisect_loss (the same
    Fenchel-Young loss, computed by the package itself), and its gradient is p - e_y
    with p = entmax_bisect(z, alpha), zero off the support."""
    entmax = pytest.importorskip("entmax")
    g = torch.Generator().manual_seed(5)
    z = (3 * torch.randn(30, 13, generator=g, dtype=torch.float64)).requires_grad_()
    y = torch.randint(0, 13, (30,), generator=g)
    for alpha in (1.25, 2.0):
        ours = Entmax15(alpha=alpha).loss(z, y, LossContext())
        theirs = entmax.entmax_bisect_loss(z.detach(), y, alpha)
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)
        (grad,) = torch.autograd.grad(ours.sum(), z)
        p = entmax.entmax_bisect(z.detach(), alpha=alpha)
        torch.testing.assert_close(grad, p - F.one_hot(y, 13).double(), rtol=0, atol=1e-12)
        assert (p == 0).any()  # sparse on these logits


def test_entmax_at_alpha_two_is_sparsemax_on_a_hand_case():
    """z = (2, 0): sparsemax is (1, 0) (the gap exceeds 1), so the loss of target 0 is 0
    and of target 1 is (1 - 1) / 2 + (1, -1) . (2, 0) = 2."""
    z = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    assert entmax_bisect_loss(z, torch.tensor([0]), 2.0).item() == pytest.approx(0.0, abs=1e-9)
    assert entmax_bisect_loss(z, torch.tensor([1]), 2.0).item() == pytest.approx(2.0, abs=1e-9)


def test_entmax_keeps_the_1_5_run_ids_and_gives_other_alphas_their_own():
    """1.5-entmax runs were stored before alpha was a hyperparameter: the same id, and the
    exact (sorting) 1.5-entmax; any other alpha has an id of its own."""
    assert Entmax15().canonical() == {"objective": {"name": "entmax15"}}
    assert Entmax15(alpha=1.5) == Entmax15()
    base = TrainConfig()
    ids = {config_hash(base.replace(objective=Entmax15(alpha=a))) for a in (1.25, 1.5, 2.0)}
    assert len(ids) == 3
    logits, targets = batch()
    torch.testing.assert_close(Entmax15().loss(logits, targets, LossContext()),
                               entmax15_loss(logits, targets))  # fmt: skip
    assert objective_from_dict({"name": "entmax15"}) == Entmax15(alpha=1.5)
