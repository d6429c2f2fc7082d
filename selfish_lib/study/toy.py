"""The layout explained without a run (notebook 06): one position's logits under HNS,
and the nucleus margin.

The toy explainer is a fixed vector of logits and a target; its gradients come from
the library's ``hns_cross_entropy`` by autograd, so nothing is re-derived here. The
nucleus-margin calculator says which layouts never exclude a token of the top-p
nucleus (``losses.nucleus_margin``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import torch

from ..engine.losses import check_layout, hns_cross_entropy, hns_keep_mask, nucleus_margin
from ..engine.validation import ParameterError
from .layout import layout_label

# The toy explainer's slider: 0 to 6 by quarters (past its widest gap), then CE.
TOY_LAYOUTS = tuple(k / 4 for k in range(25)) + (math.inf,)


# --- the toy explainer -------------------------------------------------------------------


@dataclass(frozen=True)
class ToyLogits:
    """One position: a vector of logits over labelled tokens and the target's index."""

    logits: tuple[float, ...]
    target: int
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.logits) < 2:
            raise ParameterError("logits", self.logits, "at least two logits")
        if len(self.labels) != len(self.logits):
            raise ParameterError("labels", self.labels, f"{len(self.logits)} labels")
        if not (isinstance(self.target, int) and 0 <= self.target < len(self.logits)):
            raise ParameterError("target", self.target, f"an index < {len(self.logits)}")


def toy_example() -> ToyLogits:
    """Ten symbols after some context, target 'e'. One symbol (' ') is more likely than
    the target and always stays; the others fall below the target's logit by 0.5 to
    5.2 units, so lowering the layout from 6 to 0 excludes them one by one."""
    return ToyLogits(
        logits=(2.6, 2.0, 1.5, 0.9, 0.4, -0.2, -0.8, -1.5, -2.3, -3.2),
        target=1,
        labels=("␣", "e", "a", "o", "t", "h", "k", "z", "Q", "X"),
    )


def toy_gradients(example: ToyLogits, layout: float) -> pd.DataFrame:
    """Per token of the toy: label, role ('target' or 'other'), logit, gap (logit minus
    the target's), prob (full softmax), excluded (by HNS at ``layout``), grad (d loss /
    d logit of ``hns_cross_entropy`` at ``layout``, by autograd) and grad_ce (the same at
    layout = inf). Excluded tokens get exactly zero; the kept ones get the softmax over
    the kept tokens minus the one-hot target."""
    layout = check_layout(layout)
    target = torch.tensor([example.target])

    def gradient(lay: float) -> torch.Tensor:
        z = torch.tensor([example.logits], dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(hns_cross_entropy(z, target, lay), z)
        return grad[0]

    z = torch.tensor([example.logits], dtype=torch.float64)
    excluded = ~hns_keep_mask(z, target, layout)[0]
    roles = ["other"] * len(example.logits)
    roles[example.target] = "target"
    return pd.DataFrame(
        {
            "token": range(len(example.logits)),
            "label": list(example.labels),
            "role": roles,
            "logit": list(example.logits),
            "gap": (z[0] - z[0, example.target]).tolist(),
            "prob": z[0].softmax(-1).tolist(),
            "excluded": excluded.tolist(),
            "grad": gradient(layout).tolist(),
            "grad_ce": gradient(math.inf).tolist(),
        }
    )


# --- the nucleus margin ------------------------------------------------------------------


def nucleus_margin_text(vocab_size: int, top_p: float, layouts: Iterable[float] = ()) -> str:
    """Markdown: the nucleus margin for ``vocab_size`` and ``top_p`` and, when ``layouts``
    are given, which of them are at or beyond it. A bad input gives its error message."""
    try:
        margin = nucleus_margin(vocab_size, top_p)
    except ParameterError as exc:
        return f"**Cannot compute:** {exc}."
    text = (
        f"For V = {vocab_size} and top-p = {top_p:g}: ℓ ≥ ln {vocab_size} − ln(1 − {top_p:g}) "
        f"= **{margin:.3f}**. With a layout at least this large, no token HNS excludes "
        "can be inside the nucleus."
    )
    layouts = list(layouts)
    if layouts:
        safe = [layout_label(v) for v in nucleus_safe_layouts(layouts, vocab_size, top_p)]
        text += f" Swept layouts at or beyond it: {', '.join(safe) if safe else 'none'}."
    return text


def nucleus_safe_layouts(layouts: Iterable[float], vocab_size: int, top_p: float) -> list[float]:
    """The ``layouts`` at or beyond ``losses.nucleus_margin(vocab_size, top_p)``: those
    that never exclude a token of the top-p nucleus."""
    margin = nucleus_margin(vocab_size, top_p)
    return [v for v in (check_layout(x) for x in layouts) if v >= margin]
