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

from .validation import check_float


def check_layout(layout: float) -> float:
    """Validate ``layout``: a real number >= 0, or inf (plain cross-entropy)."""
    return check_float("layout", layout, 0.0, allow_inf=True)


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
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"invalid reduction={reduction!r}: expected one of 'mean', 'sum', 'none'")
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
