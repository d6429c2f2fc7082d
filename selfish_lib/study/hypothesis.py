"""The tiny worked example of notebook 01: three ways a tied embedding row learns.

The "model" is as small as a tied-embedding language model can be: an
embedding matrix W (V x d) and the identity as the network. The hidden state
of a context token c is h = W[c], the logits are z = W h, and the loss is
``hns_cross_entropy(z, target, layout)``.

Because W appears twice (the lookup and the logits), its gradient is a sum of
three parts, the *scenarios*:

- ``"input"`` (1): through the lookup, on row c only;
- ``"target"`` (2.1): the output gradient of the target row (pulled toward h);
- ``"nontarget"`` (2.2): the output gradient of every other row (pushed away).

The keys and labels are those of ``engine.scenarios``.

They are computed with autograd on two separate leaf copies of W (one used for
the lookup, one for the logits), so no formula is re-derived here; the tests
check the parts sum to the gradient of the genuinely tied W.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch

from ..engine.losses import check_layout, hns_cross_entropy, hns_keep_mask
from ..engine.scenarios import SCENARIO_LABELS, SCENARIOS
from ..engine.validation import ParameterError, check_int

OBJECTIVES = ("CE", "HNS")


@dataclass(frozen=True)
class WorkedExample:
    """A tied embedding ``W`` (V x d, float64), one context token and one target."""

    W: torch.Tensor
    context: int
    target: int
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.W.dim() != 2:
            raise ParameterError("W", tuple(self.W.shape), "a 2-D tensor (V x d)")
        vocab = self.W.size(0)
        check_int("context", self.context, 0)
        check_int("target", self.target, 0)
        for name, value in (("context", self.context), ("target", self.target)):
            if value >= vocab:
                raise ParameterError(name, value, f"a token id < V = {vocab}")
        if len(self.labels) != vocab:
            raise ParameterError("labels", self.labels, f"{vocab} labels, one per row of W")

    @property
    def vocab_size(self) -> int:
        """Number of rows of W."""
        return self.W.size(0)


def default_example() -> WorkedExample:
    """Six symbols in three dimensions, after the context 't' with target 'h'.

    The values are chosen so that at layout 2 the two rare symbols ('Q', 'X')
    are easy negatives that HNS excludes, while the context symbol itself
    ('t', whose logit is its own squared norm) and two common symbols stay in
    as hard negatives; at layout 1 one more row ('a') is excluded.
    """
    W = torch.tensor(
        [
            [1.0, 0.5, 0.0],  # t  (context)
            [1.2, 0.8, 0.3],  # h  (target)
            [0.6, 0.4, -0.5],  # e
            [0.2, 0.6, 0.9],  # a
            [-0.9, -0.4, 0.7],  # Q
            [-0.3, -1.2, 0.2],  # X
        ],
        dtype=torch.float64,
    )
    return WorkedExample(W, context=0, target=1, labels=("t", "h", "e", "a", "Q", "X"))


def _logits_and_loss(
    W_in: torch.Tensor, W_out: torch.Tensor, example: WorkedExample, layout: float
) -> tuple[torch.Tensor, torch.Tensor]:
    h = W_in[example.context]
    logits = (W_out @ h).unsqueeze(0)
    target = torch.tensor([example.target])
    return logits, hns_cross_entropy(logits, target, layout)


def logits(example: WorkedExample) -> torch.Tensor:
    """The logits z = W W[c] (one per row of W)."""
    return example.W @ example.W[example.context]


def tied_gradient(example: WorkedExample, layout: float = math.inf) -> torch.Tensor:
    """Autograd gradient of the loss with respect to the tied W (one leaf)."""
    W = example.W.detach().clone().requires_grad_(True)
    _, loss = _logits_and_loss(W, W, example, check_layout(layout))
    (grad,) = torch.autograd.grad(loss, W)
    return grad


def scenario_gradients(example: WorkedExample, layout: float = math.inf) -> dict[str, torch.Tensor]:
    """The gradient of W split into the scenarios input, target, nontarget (each V x d).

    Their sum is ``tied_gradient(example, layout)``.
    """
    layout = check_layout(layout)
    W_in = example.W.detach().clone().requires_grad_(True)
    W_out = example.W.detach().clone().requires_grad_(True)
    _, loss = _logits_and_loss(W_in, W_out, example, layout)
    grad_in, grad_out = torch.autograd.grad(loss, (W_in, W_out))
    is_target = torch.zeros(example.vocab_size, 1, dtype=torch.bool)
    is_target[example.target] = True
    parts = (
        grad_in,
        torch.where(is_target, grad_out, torch.zeros_like(grad_out)),
        torch.where(is_target, torch.zeros_like(grad_out), grad_out),
    )
    return dict(zip(SCENARIOS, parts, strict=True))


def excluded_rows(example: WorkedExample, layout: float) -> torch.Tensor:
    """Bool vector: True for the rows HNS drops from the softmax at ``layout``."""
    z = logits(example).unsqueeze(0)
    keep = hns_keep_mask(z, torch.tensor([example.target]), layout)
    return ~keep.squeeze(0)


def token_table(example: WorkedExample, layout: float) -> pd.DataFrame:
    """One row per token: token, label, role, logit, prob, ratio, excluded.

    ``prob`` is the full softmax (as in plain cross-entropy), ``ratio`` is
    P(T) / P(target) and ``excluded`` says whether HNS at ``layout`` drops it.
    ``role`` is 'context', 'target' or 'other'.
    """
    layout = check_layout(layout)
    z = logits(example)
    prob = z.softmax(-1)
    roles = ["other"] * example.vocab_size
    roles[example.context] = "context"
    roles[example.target] = "target"
    return pd.DataFrame(
        {
            "token": range(example.vocab_size),
            "label": list(example.labels),
            "role": roles,
            "logit": z.tolist(),
            "prob": prob.tolist(),
            "ratio": (prob / prob[example.target]).tolist(),
            "excluded": excluded_rows(example, layout).tolist(),
        }
    )


def gradient_norms(example: WorkedExample, layout: float) -> pd.DataFrame:
    """Long table of per-row gradient norms: one row per objective, scenario and token.

    Columns: objective ('CE' = layout inf, 'HNS' = ``layout``), scenario (a key
    of ``engine.scenarios.SCENARIOS``), scenario_label, token, label, role, excluded (HNS at
    ``layout``, for both objectives so the rows can be compared), grad_norm.
    Rows a scenario cannot touch (e.g. scenario 1 off the context row) are
    included with a norm of 0 so every panel shows every token.
    """
    layout = check_layout(layout)
    tokens = token_table(example, layout)
    frames = []
    for objective, lay in (("CE", math.inf), ("HNS", layout)):
        for scenario, grad in scenario_gradients(example, lay).items():
            part = tokens[["token", "label", "role", "excluded"]].copy()
            part.insert(0, "scenario_label", SCENARIO_LABELS[scenario])
            part.insert(0, "scenario", scenario)
            part.insert(0, "objective", objective)
            part["grad_norm"] = grad.norm(dim=1).tolist()
            frames.append(part)
    return pd.concat(frames, ignore_index=True)


def bound_check(example: WorkedExample, layout: float) -> pd.DataFrame:
    """For every excluded row: its P(T), the bound P(target)·e^-layout, and whether P(T) < bound."""
    layout = check_layout(layout)
    tokens = token_table(example, layout)
    p_target = tokens.loc[example.target, "prob"]
    out = tokens.loc[tokens["excluded"], ["token", "label", "prob"]].reset_index(drop=True)
    out["bound"] = p_target * math.exp(-layout)
    out["holds"] = out["prob"] < out["bound"]
    return out


def summarize(example: WorkedExample, layout: float) -> dict:
    """Headline numbers of the example at ``layout``, for the notebook's conclusion.

    Keys: layout, n_rows, n_excluded, excluded_labels; ``excluded_share_ce``,
    the share of the plain cross-entropy non-target push (the sum over rows of
    the scenario-2.2 gradient norms) that lands on rows HNS excludes;
    ``excluded_norm_hns``, what those rows receive under HNS (exactly 0);
    ``nontarget_norm_ce`` and ``nontarget_norm_hns``, the summed non-target
    norms (HNS renormalizes over the kept rows, so the hard negatives that
    stay are pushed a little harder); ``bound_holds``.
    """
    layout = check_layout(layout)
    norms = gradient_norms(example, layout)
    push = norms[norms["scenario"] == "nontarget"].pivot(
        index="token", columns="objective", values="grad_norm"
    )
    excluded = token_table(example, layout)["excluded"].to_numpy()
    total_ce = float(push["CE"].sum())
    return {
        "layout": layout,
        "n_rows": example.vocab_size,
        "n_excluded": int(excluded.sum()),
        "excluded_labels": [example.labels[i] for i in range(example.vocab_size) if excluded[i]],
        "excluded_share_ce": float(push["CE"][excluded].sum()) / total_ce if total_ce else 0.0,
        "excluded_norm_hns": float(push["HNS"][excluded].sum()),
        "nontarget_norm_ce": total_ce,
        "nontarget_norm_hns": float(push["HNS"].sum()),
        "bound_holds": bool(bound_check(example, layout)["holds"].all()),
    }
