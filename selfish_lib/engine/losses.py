"""Hard negative sampling (HNS) cross-entropy.

Plain cross-entropy pushes every non-target output row away from the hidden
state, in proportion to its probability. HNS keeps only the *hard* negatives:
before the softmax, every logit below ``logit[target] - layout`` is set to
-inf. An excluded token T therefore satisfies

    z_T < z_target - layout   <=>   P(T) < P(target) * exp(-layout)

(the probabilities of the full softmax), receives exactly zero gradient, and
does not enter the normalizer. ``layout = inf`` is plain cross-entropy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .validation import ParameterError, check_choice, check_float, check_int


def check_layout(layout: float, finite: bool = False) -> float:
    """Validate ``layout``: a real number >= 0, or inf (plain cross-entropy) unless
    ``finite`` (where an HNS layout is compared with CE)."""
    if type(layout) is float and layout >= 0.0 and (layout < math.inf or not finite):
        return layout  # the usual case, without composing the message of an error
    return check_float("layout", layout, 0.0, allow_inf=not finite)


def check_logits_and_targets(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int
) -> bool:
    """Shapes (..., V) and (...), integer targets in [0, V) or ``ignore_index``: a clear
    ParameterError before torch's own message.

    Returns whether some position may be unscored: False only when every one is
    scored (known on the CPU, where the range is checked; elsewhere the answer is True).
    The check costs one pass over the targets (two when some id is the ignore index)."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() < 1:
        raise ParameterError("logits", type(logits).__name__, "a floating tensor of shape (..., V)")
    if not isinstance(targets, torch.Tensor) or targets.is_floating_point() or targets.is_complex():
        described = targets.dtype if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise ParameterError("targets", described, "an integer tensor of token ids")
    if targets.shape != logits.shape[:-1]:
        raise ParameterError(
            "targets", f"shape {tuple(targets.shape)}",
            f"the shape of logits without its last axis, {tuple(logits.shape[:-1])}",
        )  # fmt: skip
    if not targets.is_cpu:
        return True  # the id range would cost a device sync every step; CUDA asserts on it
    if targets.numel() == 0:
        return True  # nothing is scored
    V = logits.size(-1)
    lo, hi = torch.aminmax(targets)
    lo, hi = lo.item(), hi.item()
    if lo >= 0 and hi < V:  # every id in range (one pass): ignored only if the index is
        return lo <= ignore_index <= hi
    # some id is out of range: all right only where it is the ignore index
    scored = targets.masked_fill(targets == ignore_index, 0)
    lo, hi = torch.aminmax(scored)
    lo, hi = lo.item(), hi.item()
    if lo < 0 or hi >= V:
        allowed = f"token ids in [0, {V}) or ignore_index={ignore_index}"
        raise ParameterError("targets", hi if hi >= V else lo, allowed)
    return True


_REDUCTIONS = ("mean", "sum", "none")
# From this many logits on (N * V), a finite layout runs the fused loss. Below, the fixed
# cost of its dozen small steps outweighs the exponential pass it saves: on a CPU
# (bench/hns_loss.py) the two are even at 768 x 130 and the fused loss is the faster
# from 768 x 192 on.
FUSED_FROM_NUMEL = 1 << 17
# float16 and bfloat16 logits are compared (and the fused loss runs) in float32
_COMPUTE_DTYPE = {torch.float16: torch.float32, torch.bfloat16: torch.float32}
_TINY = {}  # smallest normal number of each compute dtype
_ONE = torch.tensor(1.0)  # a CPU scalar: cheaper in an op than a Python number
# the in-place softmax is slower than a fresh output on short rows (CPU), faster on long ones
_INPLACE_SOFTMAX_FROM = 256
# up to this layout the fused loss runs its softmax on z - threshold (see _fused_forward)
_SHIFT_MAX = 16.0


def hns_keep_mask(
    logits: torch.Tensor, targets: torch.Tensor, layout: float, ignore_index: int = -1
) -> torch.Tensor:
    """Bool mask of the logits that stay in the softmax (True = kept).

    ``logits`` is (..., V), ``targets`` the matching (...). The target itself is
    always kept (its logit is not below itself minus a non-negative margin).
    Rows whose target is ``ignore_index`` keep everything.
    """
    layout = check_layout(layout)
    if math.isinf(layout):
        return torch.ones_like(logits, dtype=torch.bool)
    valid = targets != ignore_index
    safe = torch.where(valid, targets, torch.zeros_like(targets))
    target_logit = logits.detach().gather(-1, safe.unsqueeze(-1))
    keep = logits.detach() >= target_logit - layout
    return keep | ~valid.unsqueeze(-1)


def hns_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    layout: float = math.inf,
    ignore_index: int = -1,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy restricted to the hard negatives of each position.

    Args:
        logits: (..., V) unnormalized scores.
        targets: (...) target ids, ``ignore_index`` where a position is not scored.
        layout: margin in logit units (>= 0); ``inf`` gives exactly ``F.cross_entropy``.
        ignore_index: target value of positions that contribute no loss and no gradient.
        reduction: ``"mean"`` over scored positions, ``"sum"``, or ``"none"`` (shape of targets).

    A batch whose positions are all ignored gives a loss of 0 (not NaN) and zero gradients.

    A finite layout builds the kept logits (excluded ones at -inf) in a few cheap passes
    without boolean masks. Below ``FUSED_FROM_NUMEL`` logits, ``F.cross_entropy`` runs on
    them: bit for bit the loss and gradient of ``masked_fill`` + ``F.cross_entropy`` (the
    implementation before this one). From there on, ``_HardNegativeCrossEntropy`` runs
    one softmax and keeps the gradient from the forward pass; it equals that up to
    rounding and costs less than ``F.cross_entropy`` itself.
    """
    layout = check_layout(layout)
    if reduction not in _REDUCTIONS:
        check_choice("reduction", reduction, _REDUCTIONS)
    maybe_ignored = check_logits_and_targets(logits, targets, ignore_index)
    # (a reshape of a tensor already 2-D would still add a node to the autograd graph)
    flat_logits = logits if logits.dim() == 2 else logits.reshape(-1, logits.size(-1))
    flat_targets = targets if targets.dim() == 1 else targets.reshape(-1)
    if not math.isinf(layout):
        if flat_logits.numel() >= FUSED_FROM_NUMEL:
            args = (flat_logits, flat_targets, layout, ignore_index, reduction, maybe_ignored)
            if torch.is_grad_enabled() and logits.requires_grad:
                out = _HardNegativeCrossEntropy.apply(*args)
            else:
                out = _fused_forward(*args, keep_grad=False)[0]
            return out.view(targets.shape) if reduction == "none" else out
        flat_logits = _kept_logits(flat_logits, flat_targets, layout, ignore_index, maybe_ignored)
    if reduction == "none":
        out = F.cross_entropy(
            flat_logits, flat_targets, ignore_index=ignore_index, reduction=reduction
        )
        return out.view(targets.shape)
    if reduction == "mean" and not maybe_ignored:  # the same bits as sum / count, in one op
        return F.cross_entropy(flat_logits, flat_targets, ignore_index=ignore_index)
    total = F.cross_entropy(flat_logits, flat_targets, ignore_index=ignore_index, reduction="sum")
    if reduction == "sum":
        return total
    # F.cross_entropy's mean is sum / n_scored, which is 0/0 when nothing is scored;
    # the clamp keeps the same value otherwise and gives 0 for an all-ignored batch.
    n_scored = (flat_targets != ignore_index).sum().clamp(min=1)
    return total / n_scored.to(total.dtype)


def _target_column(t: torch.Tensor, ignore_index: int, maybe_ignored: bool):
    """(N, 1) target ids safe to gather with (0 on ignored rows) and the (N, 1) scored
    rows, or None when no row is ignored."""
    col = t.unsqueeze(1)
    if not maybe_ignored:
        return col, None
    valid = col != ignore_index
    return torch.where(valid, col, 0), valid


def _exclude(
    z: torch.Tensor, zd: torch.Tensor, thr: torch.Tensor, restore: bool = True
) -> torch.Tensor:
    """A new (N, V) tensor: ``z`` where ``z >= thr`` (the (N, 1) thresholds), -inf elsewhere,
    in the compute dtype. Autograd sees ``z - thr``: the gradient reaches ``z`` unchanged,
    which is right at the kept entries and 0 at the excluded ones (whose probability is 0).
    ``zd`` is ``z`` detached.

    d = z - thr >= 0 exactly where z >= thr: the sign of a rounded difference is exact (0
    only for equal numbers; an overflow keeps the sign). The threshold sends d < 0 to
    -inf (a difference smaller than the smallest normal number counts as 0, so that a
    flush of subnormals cannot exclude an equal logit), clamp and add give back z + 0
    (without ``restore`` the kept entries stay z - thr).
    """
    compute = _COMPUTE_DTYPE.get(z.dtype, z.dtype)
    tiny = _TINY.get(compute) or _TINY.setdefault(compute, torch.finfo(compute).tiny)
    out = torch.sub(z, thr if compute == thr.dtype else thr.to(compute))
    raw = out.detach()
    torch.threshold_(raw, -tiny, -math.inf)
    if restore:
        raw.clamp_(max=0.0).add_(zd)
    return out


def _kept_logits(z, t, layout, ignore_index, maybe_ignored) -> torch.Tensor:
    """(N, V) logits with the excluded entries at -inf: the values of
    ``z.masked_fill(~hns_keep_mask(z, t, layout), -inf)`` but on ignored rows, and
    differentiable (a gradient reaches ``z`` unchanged)."""
    zd = z.detach()
    col, _ = _target_column(t, ignore_index, maybe_ignored)
    thr = zd.gather(1, col).sub_(layout)  # in the logits' dtype, as hns_keep_mask
    kept = _exclude(z, zd, thr)
    return kept if kept.dtype == z.dtype else kept.to(z.dtype)


def _fused_forward(
    z: torch.Tensor,
    t: torch.Tensor,
    layout: float,
    ignore_index: int,
    reduction: str,
    maybe_ignored: bool,
    keep_grad: bool = True,
):
    """The finite-layout loss of (N, V) logits ``z`` and (N,) targets ``t``, reduced.

    Returns (loss, unit_grad, valid, count): ``unit_grad`` is the gradient of each row's
    loss, softmax over the kept logits minus one-hot(target) (exactly 0 where excluded),
    in the compute dtype, or None unless ``keep_grad``; ``valid`` the (N, 1) scored rows,
    or None when no row is ignored; ``count`` the divisor of the mean (int or tensor).

    (N, V) passes: a subtraction and an in-place threshold give the kept logits (shifted,
    excluded ones at -inf), one softmax is the only exponential, one write puts
    p_target - 1 at the targets; backward scales that buffer in place. F.cross_entropy
    makes about seven (log-softmax, a zero fill, a backward with a second exponential).
    The row maximum is always kept (it is >= the target logit): no row is empty.
    """
    col, valid = _target_column(t, ignore_index, maybe_ignored)
    zt = z.gather(1, col)
    compute = _COMPUTE_DTYPE.get(z.dtype, z.dtype)
    tiny = _TINY.get(compute) or _TINY.setdefault(compute, torch.finfo(compute).tiny)
    # The softmax is shift-invariant: up to a layout of _SHIFT_MAX it runs on the kept
    # d = z - threshold >= 0 as they come, whose rounding adds an error of order
    # eps * (max z - z_target + layout) to the eps * (max z - min z) of a softmax of z;
    # a larger layout restores z (two more passes).
    d = _exclude(z, z, zt - layout, restore=layout > _SHIFT_MAX)
    inplace = not keep_grad or d.size(1) >= _INPLACE_SOFTMAX_FROM
    p = torch.softmax(d, 1, out=d) if inplace else torch.softmax(d, 1)
    pt = p.gather(1, col)
    # -log p_target loses accuracy once p_target is subnormal or 0 (a target logit far
    # below the row maximum m); there it is (m - z_target) + log(sum), and 1/sum is the
    # largest probability. On the CPU the check is free; elsewhere (no host sync) the
    # far form is always computed.
    far = None
    if not z.is_cpu or (pt.numel() and pt.min().item() < tiny):
        m = z.amax(1, keepdim=True)
        far = (m.to(compute) - zt.to(compute)) - p.amax(1, keepdim=True).log()
    if far is None and valid is None and reduction != "none":
        count = len(t) if reduction == "mean" else 1
        loss = torch.xlogy(-1.0 / count, pt).sum()  # -sum(log p_target) / count
    else:
        rows = torch.xlogy(-1.0, pt)
        if far is not None:
            rows = torch.where(pt < tiny, far, rows)
        if valid is not None:
            rows = torch.where(valid, rows, 0.0)
        count = 1
        if reduction == "none":
            loss = rows.view(-1)
        elif reduction == "sum":
            loss = rows.sum()
        else:
            count = len(t) if valid is None else valid.sum().clamp_(min=1)
            loss = rows.sum() / count
    unit_grad = p.scatter_(1, col, pt.sub_(_ONE)) if keep_grad else None
    return (loss if loss.dtype == z.dtype else loss.to(z.dtype)), unit_grad, valid, count


class _HardNegativeCrossEntropy(torch.autograd.Function):
    """The fused finite-layout loss, with its own backward.

    Forward keeps the gradient of each row's loss; backward scales that buffer in place
    by the incoming gradient (0 on ignored rows) and hands it on: one (N, V) pass. A
    second backward through a retained graph rebuilds the buffer from the logits.
    """

    @staticmethod
    def forward(ctx, z, t, layout, ignore_index, reduction, maybe_ignored):
        loss, unit_grad, valid, count = _fused_forward(
            z, t, layout, ignore_index, reduction, maybe_ignored
        )
        ctx.save_for_backward(z, t)
        ctx.unit_grad, ctx.valid, ctx.count = unit_grad, valid, count
        ctx.args = (layout, ignore_index, reduction, maybe_ignored)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        grad, ctx.unit_grad = ctx.unit_grad, None
        if grad is None:  # an earlier backward consumed the buffer
            z, t = ctx.saved_tensors
            grad = _fused_forward(z, t, *ctx.args)[1]
        reduction = ctx.args[2]
        w = grad_out if grad_out.dtype == grad.dtype else grad_out.to(grad.dtype)
        if reduction == "none":
            w = w.unsqueeze(1)
        elif reduction == "mean":
            w = w / ctx.count
        if ctx.valid is not None:
            w = torch.where(ctx.valid, w, 0.0)
        grad = grad.mul_(w)
        if grad.dtype != grad_out.dtype:
            grad = grad.to(grad_out.dtype)
        return grad, None, None, None, None, None


def nucleus_margin(vocab_size: int, top_p: float) -> float:
    """The layout beyond which HNS never excludes a token of the top-``top_p`` nucleus.

    Returns ln(V) − ln(1 − top_p). With a layout at least this large, every token
    HNS excludes at any position (whatever the target) lies outside the nucleus of
    that position's full softmax: the shortest prefix of the tokens sorted by
    probability (ties in any order) whose mass reaches ``top_p``. The condition is
    sufficient, not necessary (notebook 06 gives the proof).

    Args:
        vocab_size: V, the number of tokens (an integer >= 2).
        top_p: the nucleus mass, strictly between 0 and 1.
    """
    check_int("vocab_size", vocab_size, 2)
    allowed = "a real number strictly between 0 and 1"
    try:
        top_p = check_float("top_p", top_p, 0.0, 1.0, min_inclusive=False)
    except ParameterError:
        raise ParameterError("top_p", top_p, allowed) from None
    if top_p >= 1.0:  # the whole vocabulary: no finite layout keeps every token out
        raise ParameterError("top_p", top_p, allowed)
    return math.log(vocab_size) - math.log1p(-top_p)


def nucleus_mask(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Bool mask of the top-``top_p`` nucleus of each row of ``probs`` (..., V): sort by
    probability (largest first; ties in index order) and keep the shortest prefix whose
    mass reaches ``top_p`` (always at least one token)."""
    top_p = check_float("top_p", top_p, 0.0, 1.0, min_inclusive=False)
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    # the mass strictly before each position: once the prefix has reached top_p, stop
    before = sorted_p.cumsum(-1) - sorted_p
    keep_sorted = before < top_p
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def entmax15(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """1.5-entmax of ``logits`` along ``dim`` (Peters et al., 2019): the distribution p
    that maximises p . z + (1 - sum p^1.5) / 0.75, which is p_i = [z_i / 2 - tau]_+^2 with
    tau set so that p sums to 1. Sparse: tokens far below the top get exactly 0.

    Exact, by sorting: for the k largest halves x_(1) >= ... >= x_(k), the threshold that
    makes sum (x_(j) - tau)^2 = 1 is tau_k = mean_k - sqrt(mean_k^2 - (sumsq_k - 1) / k);
    the support is the largest k with tau_k <= x_(k).
    """
    x = logits.transpose(dim, -1) / 2
    x = x - x.amax(dim=-1, keepdim=True)  # shift-invariant; keeps the squares small
    sorted_x, _ = x.sort(dim=-1, descending=True)
    k = torch.arange(1, x.size(-1) + 1, device=x.device, dtype=x.dtype)
    mean = sorted_x.cumsum(-1) / k
    mean_sq = (sorted_x * sorted_x).cumsum(-1) / k
    delta = ((1 - k * (mean_sq - mean * mean)) / k).clamp(min=0)
    tau = mean - delta.sqrt()
    support = (tau <= sorted_x).sum(dim=-1, keepdim=True)  # tau_k <= x_(k) holds for k <= k*
    tau_star = tau.gather(-1, support - 1)
    p = (x - tau_star).clamp(min=0) ** 2
    return p.transpose(dim, -1)


def entmax15_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position 1.5-entmax loss (a Fenchel-Young loss): with p = entmax15(z),
    (1 - sum p^1.5) / 0.75 + (p - e_y) . z, which is >= 0 and 0 only when p = e_y; its
    gradient in z is exactly p - e_y (p is held fixed: the optimality of p makes its own
    variation contribute nothing). ``logits`` (..., V), ``targets`` (...)."""
    V = logits.size(-1)
    z = logits.reshape(-1, V)
    y = targets.reshape(-1)
    check_logits_and_targets(z, y, ignore_index=-1)
    with torch.no_grad():
        p = entmax15(z.float() if z.dtype in (torch.float16, torch.bfloat16) else z)
        p = p.to(z.dtype)
        omega = (1 - (p * p.sqrt()).sum(dim=1)) / 0.75
        p_minus_e = p.scatter_add(1, y.unsqueeze(1), torch.full_like(p[:, :1], -1.0))
    loss = omega + (p_minus_e * z).sum(dim=1)
    return loss.view(targets.shape)
