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

from .validation import ParameterError, check_choice, check_float, check_int


def check_layout(layout: float, finite: bool = False) -> float:
    """Validate ``layout``: a real number >= 0, or inf (plain cross-entropy) unless
    ``finite`` (where an HNS layout is compared with CE)."""
    return check_float("layout", layout, 0.0, allow_inf=not finite)


def check_logits_and_targets(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int
) -> None:
    """Shapes (..., V) and (...), integer targets in [0, V) or ``ignore_index``: a clear
    ParameterError before torch's own message."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() < 1:
        raise ParameterError("logits", type(logits).__name__, "a floating tensor of shape (..., V)")
    if not isinstance(targets, torch.Tensor) or targets.is_floating_point() or targets.is_complex():
        described = targets.dtype if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise ParameterError("targets", described, "an integer tensor of token ids")
    if tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ParameterError(
            "targets", f"shape {tuple(targets.shape)}",
            f"the shape of logits without its last axis, {tuple(logits.shape[:-1])}",
        )  # fmt: skip
    if targets.device.type != "cpu":
        return  # the id range would cost a device sync every step; CUDA asserts on it anyway
    V = logits.size(-1)
    scored = targets[targets != ignore_index]
    if scored.numel() and (int(scored.min()) < 0 or int(scored.max()) >= V):
        bad = int(scored.max()) if int(scored.max()) >= V else int(scored.min())
        raise ParameterError(
            "targets", bad, f"token ids in [0, {V}) or ignore_index={ignore_index}"
        )


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
    """
    layout = check_layout(layout)
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    check_logits_and_targets(logits, targets, ignore_index)
    flat_logits = logits.reshape(-1, logits.size(-1))
    flat_targets = targets.reshape(-1)
    if not math.isinf(layout):
        keep = hns_keep_mask(flat_logits, flat_targets, layout, ignore_index)
        # masked_fill passes no gradient to the filled entries: excluded rows get exactly 0.
        flat_logits = flat_logits.masked_fill(~keep, float("-inf"))
    if reduction == "none":
        out = F.cross_entropy(
            flat_logits, flat_targets, ignore_index=ignore_index, reduction=reduction
        )
        return out.view(targets.shape)
    total = F.cross_entropy(flat_logits, flat_targets, ignore_index=ignore_index, reduction="sum")
    if reduction == "sum":
        return total
    # F.cross_entropy's mean is sum / n_scored, which is 0/0 when nothing is scored;
    # the clamp keeps the same value otherwise and gives 0 for an all-ignored batch.
    n_scored = (flat_targets != ignore_index).sum().clamp(min=1)
    return total / n_scored.to(total.dtype)


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
