"""Hard negative sampling cross-entropy: exact agreement with F.cross_entropy at
layout=inf, agreement with a hand-written float64 reference for finite layouts,
exactly zero gradient on excluded logits, the probability bound, ignored
positions, numerical safety in low precision and parameter validation.

Every test runs on both finite-layout paths: F.cross_entropy on the kept logits (small
batches) and the fused loss with its own backward (large ones)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import selfish_lib.engine.losses as losses
from selfish_lib.engine.losses import check_layout, hns_cross_entropy, hns_keep_mask, nucleus_margin

INF = math.inf
FINITE_LAYOUTS = [0.0, 0.5, 2.0, 8.0]
N, V = 64, 17


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core
    machine a busy neighbour makes every OpenMP barrier stall (20x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


PATHS = {"kept_logits": 1 << 62, "fused": 0}  # FUSED_FROM_NUMEL for each path


@pytest.fixture(autouse=True, params=list(PATHS))
def path(request, monkeypatch):
    """The finite-layout path under test (by the size from which the fused loss runs)."""
    monkeypatch.setattr(losses, "FUSED_FROM_NUMEL", PATHS[request.param])
    return request.param


def make_batch(n=N, v=V, dtype=torch.float64, seed=0, scale=3.0, ignore_every=0, ignore_index=-1):
    """Random logits with a wide spread and random targets (some ignored)."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, v, generator=g, dtype=torch.float64) * scale).to(dtype)
    targets = torch.randint(0, v, (n,), generator=g)
    if ignore_every:
        targets[::ignore_every] = ignore_index
    return logits, targets


def reference(logits, targets, layout, ignore_index=-1):
    """Per-row loss and per-row gradient of that loss, written out row by row in float64.

    kept = {j : z_j >= z_target - layout}; loss = logsumexp(z[kept]) - z_target;
    d loss / d z = softmax over the kept entries (0 elsewhere) minus one-hot(target).
    Ignored rows have loss 0 and gradient 0.
    """
    z = logits.detach().to(torch.float64)
    losses = torch.zeros(z.shape[0], dtype=torch.float64)
    grads = torch.zeros_like(z)
    kept_mask = torch.ones_like(z, dtype=torch.bool)
    for i in range(z.shape[0]):
        t = int(targets[i])
        if t == ignore_index:
            continue
        row = z[i]
        kept = row >= row[t] - layout
        kept_mask[i] = kept
        lse = torch.logsumexp(row[kept], dim=0)
        losses[i] = lse - row[t]
        grads[i, kept] = torch.exp(row[kept] - lse)
        grads[i, t] -= 1.0
    return losses, grads, kept_mask


def loss_and_grad(logits, targets, layout, **kwargs):
    leaf = logits.detach().clone().requires_grad_(True)
    loss = hns_cross_entropy(leaf, targets, layout, **kwargs)
    loss.sum().backward()
    return loss.detach(), leaf.grad


# --- layout = inf is plain cross-entropy, bit for bit --------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_every", [0, 3])
def test_inf_layout_is_exactly_cross_entropy(reduction, ignore_every):
    logits, targets = make_batch(dtype=torch.float32, ignore_every=ignore_every)
    loss, grad = loss_and_grad(logits, targets, INF, reduction=reduction)
    ref_leaf = logits.clone().requires_grad_(True)
    ref = F.cross_entropy(ref_leaf, targets, ignore_index=-1, reduction=reduction)
    ref.sum().backward()
    assert loss.shape == ref.shape
    assert torch.equal(loss, ref.detach())
    assert torch.equal(grad, ref_leaf.grad)


def test_inf_layout_is_the_default():
    logits, targets = make_batch(dtype=torch.float32)
    assert torch.equal(hns_cross_entropy(logits, targets), F.cross_entropy(logits, targets))


def test_huge_layout_equals_cross_entropy_numerically():
    logits, targets = make_batch(ignore_every=4)
    loss, grad = loss_and_grad(logits, targets, 1e9, reduction="none")
    ref_leaf = logits.clone().requires_grad_(True)
    ref = F.cross_entropy(ref_leaf, targets, ignore_index=-1, reduction="none")
    ref.sum().backward()
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_leaf.grad, rtol=1e-12, atol=1e-12)


# --- finite layouts against the float64 reference ------------------------------


@pytest.mark.parametrize("layout", FINITE_LAYOUTS)
def test_finite_layout_test_data_is_not_trivial(layout):
    """The batch used below has both excluded entries and kept non-targets."""
    logits, targets = make_batch(ignore_every=5)
    _, _, kept = reference(logits, targets, layout)
    scored = targets != -1
    assert (~kept[scored]).sum() > 0
    onehot = F.one_hot(targets.clamp(min=0), V).bool()
    assert (kept & ~onehot)[scored].sum() > 0


@pytest.mark.parametrize("layout", FINITE_LAYOUTS)
def test_finite_layout_loss_matches_reference(layout):
    logits, targets = make_batch(ignore_every=5)
    ref_loss, _, _ = reference(logits, targets, layout)
    loss = hns_cross_entropy(logits, targets, layout, reduction="none")
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    n_scored = int((targets != -1).sum())
    total = hns_cross_entropy(logits, targets, layout, reduction="sum")
    mean = hns_cross_entropy(logits, targets, layout, reduction="mean")
    torch.testing.assert_close(total, ref_loss.sum(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mean, ref_loss.sum() / n_scored, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", FINITE_LAYOUTS)
def test_finite_layout_gradient_matches_reference_and_is_zero_when_excluded(layout):
    logits, targets = make_batch(ignore_every=5)
    ref_loss, ref_grad, kept = reference(logits, targets, layout)
    _, grad = loss_and_grad(logits, targets, layout, reduction="sum")
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)
    assert (grad[~kept] == 0.0).all()
    # kept non-target entries of scored rows all receive some (positive) gradient
    scored = (targets != -1).unsqueeze(-1)
    non_target = ~F.one_hot(targets.clamp(min=0), V).bool()
    assert (grad[kept & scored & non_target] > 0.0).all()


@pytest.mark.parametrize("layout", FINITE_LAYOUTS)
def test_finite_layout_mean_gradient_is_sum_gradient_over_scored(layout):
    logits, targets = make_batch(ignore_every=5)
    _, ref_grad, kept = reference(logits, targets, layout)
    _, grad = loss_and_grad(logits, targets, layout, reduction="mean")
    n_scored = int((targets != -1).sum())
    torch.testing.assert_close(grad, ref_grad / n_scored, rtol=1e-12, atol=1e-14)
    assert (grad[~kept] == 0.0).all()


@pytest.mark.parametrize("layout", FINITE_LAYOUTS)
def test_keep_mask_matches_reference(layout):
    logits, targets = make_batch(ignore_every=5)
    _, _, kept = reference(logits, targets, layout)
    assert torch.equal(hns_keep_mask(logits, targets, layout), kept)


@pytest.mark.parametrize("layout", FINITE_LAYOUTS)
def test_excluded_tokens_obey_the_probability_bound(layout):
    """Excluded: P(T) < P(target) e^-layout. Kept: P(T) >= P(target) e^-layout."""
    logits, targets = make_batch()
    kept = hns_keep_mask(logits, targets, layout)
    probs = logits.softmax(-1)
    p_target = probs.gather(-1, targets.unsqueeze(-1))
    threshold = p_target * math.exp(-layout)
    # keep the comparison well posed: no logit sits on the boundary within rounding
    gap = (logits - (logits.gather(-1, targets.unsqueeze(-1)) - layout)).abs()
    assert gap[gap > 0].min() > 1e-9
    assert (~kept).any() and kept.any()
    assert (probs[~kept] < threshold.expand_as(probs)[~kept]).all()
    assert (probs[kept] >= threshold.expand_as(probs)[kept] * (1 - 1e-12)).all()


def test_boundary_is_inclusive():
    logits = torch.tensor([[3.0, 1.0, 0.999, 5.0]], dtype=torch.float64)
    targets = torch.tensor([0])
    assert hns_keep_mask(logits, targets, 2.0).tolist() == [[True, True, False, True]]


def test_layout_zero_keeps_only_logits_at_or_above_the_target():
    logits, targets = make_batch()
    logits[0, :] = torch.tensor([float(k % 4) for k in range(V)], dtype=torch.float64)
    targets[0] = 2  # logit 2.0, tied with other entries
    kept = hns_keep_mask(logits, targets, 0.0)
    expected = logits >= logits.gather(-1, targets.unsqueeze(-1))
    assert torch.equal(kept, expected)
    assert kept[0].tolist() == [k % 4 >= 2 for k in range(V)]


def test_layout_zero_with_target_as_unique_maximum_gives_zero_loss_and_gradient():
    logits = torch.tensor([[0.0, 4.0, -1.0, 3.9], [5.0, 1.0, 2.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([1, 0])
    loss, grad = loss_and_grad(logits, targets, 0.0, reduction="none")
    assert loss.tolist() == [0.0, 0.0]
    assert (grad == 0.0).all()


def test_target_is_never_excluded():
    logits, targets = make_batch(n=200, scale=10.0)
    # include rows where the target is the minimum logit
    targets[:20] = logits[:20].argmin(-1)
    for layout in [0.0, 1e-12, 0.5, 2.0, 8.0]:
        kept = hns_keep_mask(logits, targets, layout)
        assert kept.gather(-1, targets.unsqueeze(-1)).all()
        # the target with the lowest logit keeps everything, even at layout 0
        assert kept[:20].all()


def test_keep_mask_inf_keeps_everything():
    logits, targets = make_batch()
    assert hns_keep_mask(logits, targets, INF).all()


# --- ignored positions ----------------------------------------------------------


@pytest.mark.parametrize("layout", [0.0, 2.0, INF])
@pytest.mark.parametrize("ignore_index", [-1, -100, 3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ignored_positions_get_no_loss_and_zero_gradient(layout, ignore_index, reduction):
    logits, targets = make_batch(dtype=torch.float32)
    targets[targets == ignore_index] = 0
    targets[::4] = ignore_index
    ignored = targets == ignore_index
    loss, grad = loss_and_grad(
        logits, targets, layout, ignore_index=ignore_index, reduction=reduction
    )
    assert (grad[ignored] == 0.0).all()
    assert (grad[~ignored] != 0.0).any()
    if reduction == "none":
        assert (loss[ignored] == 0.0).all()
    # the value equals the loss of the scored rows alone
    alone = hns_cross_entropy(
        logits[~ignored], targets[~ignored], layout, ignore_index=ignore_index, reduction=reduction
    )
    if reduction == "none":
        torch.testing.assert_close(loss[~ignored], alone)
    else:
        torch.testing.assert_close(loss, alone)


def test_custom_ignore_index_matches_reference():
    logits, targets = make_batch()
    targets[targets == 5] = 0
    targets[::3] = 5
    ref_loss, ref_grad, _ = reference(logits, targets, 2.0, ignore_index=5)
    loss, grad = loss_and_grad(logits, targets, 2.0, ignore_index=5, reduction="none")
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)


def test_ignored_rows_keep_every_logit_in_the_mask():
    logits, targets = make_batch()
    targets[::2] = -1
    kept = hns_keep_mask(logits, targets, 0.0)
    assert kept[::2].all()
    assert not kept[1::2].all()


@pytest.mark.parametrize("layout", [0.0, 2.0, INF])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_positions_ignored_gives_zero_loss_and_zero_gradient(layout, reduction):
    logits, _ = make_batch(n=6, dtype=torch.float32)
    targets = torch.full((6,), -1)
    loss, grad = loss_and_grad(logits, targets, layout, reduction=reduction)
    assert torch.isfinite(loss).all()
    assert (loss == 0.0).all()
    assert (grad == 0.0).all()


# --- numerical safety in low precision -------------------------------------------


def extreme_batch(dtype, big):
    """Rows with extreme logits whose losses (and their sum) stay representable.

    The losses are about 0, big / 2 and big / 4, so their sum (0.75 big) does
    not overflow float16 even for big = 6e4.
    """
    v = 9
    rows, targets = [], []
    # the target is the largest logit, the rest are hugely negative
    rows.append([big] + [-big] * (v - 1))
    targets.append(0)
    # the target is very negative, the rest very positive
    rows.append([-big / 4] + [big / 4] * (v - 1))
    targets.append(0)
    # extremes on both sides with a target in the middle
    rows.append([big / 4, -big, 0.0, 1.0, -1.0, big / 4, -big, 0.5, 2.0])
    targets.append(3)
    # an ignored row with extreme logits
    rows.append([big, -big] * 4 + [big])
    targets.append(-1)
    # an ordinary row
    rows.append([0.1 * k for k in range(v)])
    targets.append(4)
    logits = torch.tensor(rows, dtype=torch.float64).to(dtype)
    assert torch.isfinite(logits).all()
    return logits, torch.tensor(targets)


@pytest.mark.parametrize(
    ("dtype", "big"),
    [
        (torch.float32, 1e4),
        (torch.float32, 1e30),
        (torch.bfloat16, 1e4),
        (torch.bfloat16, 1e30),
        (torch.float16, 6e4),
        (torch.float16, 1e4),
    ],
)
@pytest.mark.parametrize("layout", [0.0, 2.0, INF])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_no_nan_or_inf_with_extreme_logits_in_low_precision(dtype, big, layout, reduction):
    logits, targets = extreme_batch(dtype, big)
    loss, grad = loss_and_grad(logits, targets, layout, reduction=reduction)
    assert loss.dtype == dtype and grad.dtype == dtype
    assert torch.isfinite(loss).all(), loss
    assert torch.isfinite(grad).all(), grad
    assert (grad[3] == 0.0).all()  # the ignored row


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", [0.0, 2.0, INF])
def test_low_precision_is_finite_and_close_to_float64(dtype, layout):
    logits, targets = make_batch(ignore_every=4)
    logits = logits.to(dtype)
    loss, grad = loss_and_grad(logits, targets, layout, reduction="mean")
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    ref = hns_cross_entropy(logits.double(), targets, layout)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert abs(loss.item() - ref.item()) <= tol * max(1.0, ref.item())


# --- shapes ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", [0.0, 2.0, INF])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_three_dimensional_inputs_match_flattened(layout, reduction):
    B, T = 4, 8
    logits, targets = make_batch(n=B * T, ignore_every=3)
    loss3, grad3 = loss_and_grad(
        logits.view(B, T, V), targets.view(B, T), layout, reduction=reduction
    )
    loss2, grad2 = loss_and_grad(logits, targets, layout, reduction=reduction)
    if reduction == "none":
        assert loss3.shape == (B, T)
        assert torch.equal(loss3.reshape(-1), loss2)
    else:
        assert loss3.shape == ()
        assert torch.equal(loss3, loss2)
    assert grad3.shape == (B, T, V)
    assert torch.equal(grad3.reshape(-1, V), grad2)


def test_three_dimensional_keep_mask_matches_flattened():
    B, T = 3, 5
    logits, targets = make_batch(n=B * T)
    kept3 = hns_keep_mask(logits.view(B, T, V), targets.view(B, T), 1.0)
    assert kept3.shape == (B, T, V)
    assert torch.equal(kept3.reshape(-1, V), hns_keep_mask(logits, targets, 1.0))


# --- both paths against an independent formula ----------------------------------


def masked_reference(logits, targets, layout, ignore_index=-1, reduction="mean"):
    """The formula the loss implements, written independently: excluded logits (below
    logit[target] - layout, in the logits' dtype) filled with -inf, then F.cross_entropy;
    the mean over scored positions (0 when none is)."""
    valid = targets != ignore_index
    safe = torch.where(valid, targets, 0)
    threshold = logits.detach().gather(1, safe.unsqueeze(1)) - layout
    excluded = (logits.detach() < threshold) & valid.unsqueeze(1)
    masked = logits.masked_fill(excluded, -math.inf)
    if reduction == "mean":
        total = F.cross_entropy(masked, targets, ignore_index=ignore_index, reduction="sum")
        return total / valid.sum().clamp(min=1).to(total.dtype)
    return F.cross_entropy(masked, targets, ignore_index=ignore_index, reduction=reduction)


def upstream(loss, n, seed=1):
    """A non-unit upstream gradient: random weights per position (also on ignored ones)."""
    if loss.dim() == 0:
        return loss * 0.37
    w = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=loss.dtype) * 3
    return (loss * w).sum()


@pytest.mark.parametrize("layout", [0.0, 0.5, 2.0, 8.0, 30.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_every", [0, 3])
def test_loss_and_gradient_equal_the_masked_formula_in_float64(layout, reduction, ignore_every):
    logits, targets = make_batch(n=96, v=23, seed=4, ignore_every=ignore_every)
    leaf = logits.clone().requires_grad_(True)
    loss = hns_cross_entropy(leaf, targets, layout, reduction=reduction)
    upstream(loss, len(targets)).backward()
    ref_leaf = logits.clone().requires_grad_(True)
    ref = masked_reference(ref_leaf, targets, layout, reduction=reduction)
    upstream(ref, len(targets)).backward()
    assert loss.shape == ref.shape and loss.dtype == torch.float64
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(leaf.grad, ref_leaf.grad, rtol=1e-12, atol=1e-12)
    _, _, kept = reference(logits, targets, layout)
    assert (leaf.grad[~kept] == 0.0).all()  # excluded: exactly 0
    if ignore_every:
        assert (leaf.grad[targets == -1] == 0.0).all()  # ignored, even with a weight


@pytest.mark.parametrize("layout", [0.0, 2.0, 8.0])
def test_weighted_per_position_loss_against_the_row_by_row_reference(layout):
    logits, targets = make_batch(ignore_every=4)
    ref_loss, ref_grad, kept = reference(logits, targets, layout)
    w = torch.rand(N, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2
    leaf = logits.clone().requires_grad_(True)
    loss = hns_cross_entropy(leaf, targets, layout, reduction="none")
    (loss * w).sum().backward()
    torch.testing.assert_close(loss.detach(), ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(leaf.grad, ref_grad * w.unsqueeze(1), rtol=1e-12, atol=1e-12)
    assert (leaf.grad[~kept] == 0.0).all()
    assert (leaf.grad[targets == -1] == 0.0).all()


def separated_batch(n=7, v=6, layout=1.0, seed=5):
    """Logits whose distance to their row's threshold is at least 0.05: a finite
    difference of 1e-6 does not move any logit across it."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, v, generator=g, dtype=torch.float64) * 2
    targets = torch.randint(0, v, (n,), generator=g)
    targets[2] = -1
    threshold = logits.gather(1, targets.clamp(min=0).unsqueeze(1)) - layout
    near = (logits - threshold).abs() < 0.05
    logits = torch.where(near, logits + 0.2, logits)
    assert ((logits - threshold).abs() >= 0.05).all()
    kept = logits >= threshold
    assert (~kept).any() and (kept.sum(1) > 1).any()
    return logits, targets


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_in_float64(reduction):
    logits, targets = separated_batch()
    leaf = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: hns_cross_entropy(z, targets, 1.0, reduction=reduction), (leaf,)
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_long_rows_match_the_masked_formula(reduction):
    """Rows of 300 logits: the fused loss runs its softmax in place there."""
    logits, targets = make_batch(n=24, v=300, seed=6, ignore_every=5)
    leaf = logits.clone().requires_grad_(True)
    loss = hns_cross_entropy(leaf, targets, 2.0, reduction=reduction)
    upstream(loss, len(targets)).backward()
    ref_leaf = logits.clone().requires_grad_(True)
    ref = masked_reference(ref_leaf, targets, 2.0, reduction=reduction)
    upstream(ref, len(targets)).backward()
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(leaf.grad, ref_leaf.grad, rtol=1e-12, atol=1e-12)


def test_a_retained_graph_gives_the_same_gradient_twice():
    logits, targets = make_batch(ignore_every=5)
    leaf = logits.clone().requires_grad_(True)
    loss = hns_cross_entropy(leaf, targets, 2.0, reduction="none")
    (first,) = torch.autograd.grad(upstream(loss, N), leaf, retain_graph=True)
    (second,) = torch.autograd.grad(upstream(loss, N), leaf)
    assert torch.equal(first, second)


def test_the_path_follows_the_size(path):
    logits, targets = make_batch()
    loss = hns_cross_entropy(logits.clone().requires_grad_(True), targets, 2.0)
    fused = type(loss.grad_fn).__name__.startswith("_HardNegativeCrossEntropy")
    assert fused == (path == "fused")


@pytest.mark.parametrize("layout", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_small_batches_are_bit_for_bit_the_masked_fill_implementation(layout, reduction, path):
    """The path below FUSED_FROM_NUMEL gives the very numbers of the implementation before
    the fused loss (masked_fill + F.cross_entropy), so runs trained with it are unchanged;
    the fused path agrees to rounding."""
    for dtype, ignore_every in [(torch.float32, 0), (torch.float32, 4), (torch.bfloat16, 3)]:
        logits, targets = make_batch(n=40, v=30, dtype=dtype, seed=7, ignore_every=ignore_every)
        leaf = logits.clone().requires_grad_(True)
        loss = hns_cross_entropy(leaf, targets, layout, reduction=reduction)
        upstream(loss, len(targets)).backward()
        ref_leaf = logits.clone().requires_grad_(True)
        ref = masked_reference(ref_leaf, targets, layout, reduction=reduction)
        upstream(ref, len(targets)).backward()
        if path == "kept_logits":
            assert torch.equal(loss, ref.detach()) and torch.equal(leaf.grad, ref_leaf.grad)
        else:
            tol = 1e-5 if dtype == torch.float32 else 2e-2
            torch.testing.assert_close(loss, ref.detach(), rtol=tol, atol=tol)
            torch.testing.assert_close(leaf.grad, ref_leaf.grad, rtol=tol, atol=tol)


def test_no_grad_gives_the_same_loss():
    logits, targets = make_batch(ignore_every=3)
    with torch.no_grad():
        plain = hns_cross_entropy(logits, targets, 2.0, reduction="none")
    tracked = hns_cross_entropy(logits.clone().requires_grad_(True), targets, 2.0, reduction="none")
    torch.testing.assert_close(plain, tracked.detach(), rtol=1e-15, atol=1e-15)


def test_a_target_far_below_the_maximum_keeps_an_exact_finite_loss():
    """p_target underflows in float32 (target 200 below the maximum): the loss is still
    (max - z_target) + log(sum over kept), the gradient finite."""
    logits = torch.tensor([[200.0, 0.0, 1.0, -5.0], [0.0, 1.0, 2.0, 3.0]])
    targets = torch.tensor([1, 3])
    leaf = logits.clone().requires_grad_(True)
    loss = hns_cross_entropy(leaf, targets, 2.0, reduction="none")
    loss.sum().backward()
    z = logits.double()
    expected = [
        torch.logsumexp(z[0, :3], 0) - z[0, 1],
        torch.logsumexp(z[1, 1:], 0) - z[1, 3],
    ]
    torch.testing.assert_close(loss.detach().double(), torch.stack(expected), rtol=1e-6, atol=0)
    assert torch.isfinite(leaf.grad).all() and leaf.grad[0, 1] == -1.0


@pytest.mark.parametrize("ignore_index", [-1, 40])
def test_ids_out_of_range_are_rejected_even_beside_ignored_positions(ignore_index):
    logits, targets = make_batch(n=8)
    targets[::2] = ignore_index  # the ignore index may lie outside [0, V)
    assert torch.isfinite(hns_cross_entropy(logits, targets, 2.0, ignore_index=ignore_index))
    for bad in (-3, V):
        wrong = targets.clone()
        wrong[1] = bad
        with pytest.raises(ValueError, match=f"invalid targets={bad}"):
            hns_cross_entropy(logits, wrong, 2.0, ignore_index=ignore_index)


def test_an_empty_batch_gives_zero():
    logits = torch.zeros(0, V, requires_grad=True)
    targets = torch.zeros(0, dtype=torch.long)
    for layout in (2.0, INF):
        loss = hns_cross_entropy(logits, targets, layout)
        assert loss.item() == 0.0
        loss.backward()


# --- validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        (-1, "-1"),
        (float("nan"), "nan"),
        ("2", "'2'"),
        (None, "None"),
        (True, "True"),
        (-INF, "-inf"),
        (-1e-9, "-1e-09"),
    ],
)
def test_invalid_layout_raises_naming_layout_and_value(bad, shown):
    logits, targets = make_batch(n=4)
    with pytest.raises(ValueError) as info:
        hns_cross_entropy(logits, targets, bad)
    assert "layout" in str(info.value)
    assert shown in str(info.value)
    with pytest.raises(ValueError, match="layout"):
        hns_keep_mask(logits, targets, bad)
    with pytest.raises(ValueError, match="layout"):
        check_layout(bad)


@pytest.mark.parametrize("good", [0, 0.0, 2, 0.5, INF])
def test_check_layout_accepts_non_negative_and_inf(good):
    assert check_layout(good) == float(good)


@pytest.mark.parametrize("bad", ["avg", "MEAN", None, "batchmean"])
def test_invalid_reduction_raises(bad):
    logits, targets = make_batch(n=4)
    with pytest.raises(ValueError, match="reduction") as info:
        hns_cross_entropy(logits, targets, 2.0, reduction=bad)
    assert repr(bad) in str(info.value)


# --- the nucleus margin ---------------------------------------------------------------------


def test_nucleus_margin_values():
    assert nucleus_margin(130, 0.9) == pytest.approx(math.log(130) + math.log(10))
    assert nucleus_margin(2, 0.5) == pytest.approx(2 * math.log(2))
    assert nucleus_margin(65, 0.99) == pytest.approx(math.log(65) - math.log(0.01))


def test_nucleus_margin_grows_with_the_vocabulary_and_with_top_p():
    sizes = [2, 10, 65, 130, 50_000]
    margins = [nucleus_margin(v, 0.9) for v in sizes]
    assert margins == sorted(margins) and len(set(margins)) == len(margins)
    ps = [0.01, 0.5, 0.9, 0.99, 0.999999]
    margins = [nucleus_margin(65, p) for p in ps]
    assert margins == sorted(margins) and len(set(margins)) == len(margins)


@pytest.mark.parametrize(
    ("vocab_size", "top_p", "name"),
    [
        (1, 0.9, "vocab_size"),
        (0, 0.9, "vocab_size"),
        (2.0, 0.9, "vocab_size"),
        (True, 0.9, "vocab_size"),
        (65, 0.0, "top_p"),
        (65, 1.0, "top_p"),
        (65, 1.5, "top_p"),
        (65, -0.1, "top_p"),
        (65, math.nan, "top_p"),
        (65, "0.9", "top_p"),
    ],
)
def test_nucleus_margin_rejects_bad_parameters(vocab_size, top_p, name):
    with pytest.raises(ValueError, match=rf"invalid {name}="):
        nucleus_margin(vocab_size, top_p)


def _excluded_and_nucleus(logits: torch.Tensor, targets: torch.Tensor, layout: float, top_p):
    """HNS exclusions of each row and its top-p nucleus (sorted prefix, ties by index)."""
    excluded = ~hns_keep_mask(logits, targets, layout)
    probs = logits.softmax(-1)
    order = probs.argsort(dim=-1, descending=True, stable=True)
    sorted_p = probs.gather(-1, order)
    before = torch.cat([torch.zeros_like(sorted_p[:, :1]), sorted_p.cumsum(-1)[:, :-1]], -1)
    in_nucleus = torch.zeros_like(excluded).scatter(-1, order, before < top_p)
    return excluded, in_nucleus, probs


@pytest.mark.parametrize("vocab_size", [2, 7, 65, 130])
@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.99])
def test_no_excluded_token_is_in_the_nucleus_at_the_margin(vocab_size, top_p):
    g = torch.Generator().manual_seed(vocab_size)
    layout = nucleus_margin(vocab_size, top_p)
    rows = []
    for scale in (1.0, 4.0, 12.0):  # from flat to very peaked distributions
        rows.append(torch.randn(400, vocab_size, generator=g, dtype=torch.float64) * scale)
    # ties: a head of a few tokens and a tail of many identical tiny logits
    tied = torch.full((50, vocab_size), -30.0, dtype=torch.float64)
    tied[:, : max(1, vocab_size // 4)] = torch.randn(50, 1, generator=g, dtype=torch.float64)
    rows.append(tied)
    logits = torch.cat(rows)
    targets = torch.randint(0, vocab_size, (len(logits),), generator=g)
    for lay in (layout, layout + 1.0):
        excluded, in_nucleus, probs = _excluded_and_nucleus(logits, targets, lay, top_p)
        assert not (excluded & in_nucleus).any()
        # the proof's stronger statement: the tokens strictly more probable than an
        # excluded one hold more than top_p, so no order of ties can put it in the nucleus
        for row, col in excluded.nonzero().tolist():
            p = probs[row]
            assert p[p > p[col]].sum() > top_p
    # not vacuous: the peaked rows do have excluded tokens at the margin
    assert (_excluded_and_nucleus(logits, targets, layout, top_p)[0]).any()


def test_below_the_margin_an_excluded_token_can_be_in_the_nucleus():
    # Target at 0.86 and nine tied tokens sharing 0.14: at layout 3.5 < ln 10 - ln 0.1 the
    # tied tokens are excluded (ln(0.86 / (0.14/9)) ≈ 4.01 > 3.5), yet the 0.9 nucleus
    # needs three of them.
    probs = torch.tensor([[0.86] + [0.14 / 9] * 9], dtype=torch.float64)
    logits, targets = probs.log(), torch.tensor([0])
    assert nucleus_margin(10, 0.9) > 3.5
    excluded, in_nucleus, _ = _excluded_and_nucleus(logits, targets, 3.5, 0.9)
    assert (excluded & in_nucleus).sum() == 3
    excluded, in_nucleus, _ = _excluded_and_nucleus(logits, targets, nucleus_margin(10, 0.9), 0.9)
    assert not (excluded & in_nucleus).any()
