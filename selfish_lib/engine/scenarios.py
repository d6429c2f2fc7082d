"""The exact per-token decomposition of the tied-embedding gradient.

With logits ``z_n = W h_n`` and the lookup ``e_n = W[x_n]``, the gradient of
the loss with respect to a row ``W[j]`` is the sum of three parts:

- scenario 1 (input):       sum over positions with x_n = j of dL/de_n
- scenario 2.1 (target):    sum over positions with y_n = j of (dL/dz_n)[j] * h_n
- scenario 2.2 (non-target): sum over positions with y_n != j of (dL/dz_n)[j] * h_n

``dL/dz_n`` is the gradient of the loss actually used: for cross-entropy
``(p_n - onehot(y_n)) / N``; for HNS the same with the softmax restricted to
the kept logits, so excluded rows contribute exactly nothing to 2.2; ignored
positions contribute nothing at all. Both ``dL/dz`` and ``dL/de`` are read
with tensor hooks during the one backward pass that trains the model; the
output head is not run twice and the weight matrix is not copied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from .model import GPT

SCENARIOS = ("input", "target", "nontarget")
SCENARIO_LABELS = {"input": "1: input", "target": "2.1: target", "nontarget": "2.2: non-target"}


@dataclass
class Capture:
    """What one forward/backward pass exposes: tokens, targets, hidden states and the two
    gradients that the hooks fill in during ``backward``."""

    tokens: torch.Tensor  # (N,) input ids
    hidden: torch.Tensor  # (N, d) final normalized hidden states (detached)
    targets: torch.Tensor | None = None  # (N,) set by decompose's caller
    grads: dict[str, torch.Tensor] = field(default_factory=dict)  # 'lookup' (N,d), 'logits' (N,V)

    @property
    def complete(self) -> bool:
        """True once backward has run through both hooks."""
        return "lookup" in self.grads and "logits" in self.grads


def forward(model: GPT, idx: torch.Tensor, capture: bool = False):
    """Logits of ``idx`` exactly as ``model(idx)`` computes them; with ``capture`` also a
    Capture whose gradients are filled in by the next ``backward``."""
    tok_emb = model.embed(idx)
    hidden = model.hidden(idx, tok_emb)
    logits = model.lm_head(hidden)
    if not capture:
        return logits, None
    cap = Capture(tokens=idx.reshape(-1), hidden=hidden.detach().reshape(-1, hidden.size(-1)))

    def keep(name: str, width: int):
        def hook(grad: torch.Tensor) -> None:
            cap.grads[name] = grad.detach().reshape(-1, width)

        return hook

    tok_emb.register_hook(keep("lookup", tok_emb.size(-1)))
    logits.register_hook(keep("logits", logits.size(-1)))
    return logits, cap


def decompose(
    cap: Capture, targets: torch.Tensor, ignore_index: int = -1
) -> dict[str, torch.Tensor]:
    """The three (V, d) gradient parts of the tied matrix for one captured pass.

    Their sum equals the autograd gradient of the tied weight (up to rounding).
    """
    if not cap.complete:
        raise RuntimeError("decompose needs the gradients of a backward pass over the capture")
    g_logits, g_lookup, h = cap.grads["logits"], cap.grads["lookup"], cap.hidden
    V, d = g_logits.shape[1], h.shape[1]
    y = targets.reshape(-1)
    valid = y != ignore_index
    safe_y = torch.where(valid, y, torch.zeros_like(y))

    # scenario 1: every lookup of token j sends its gradient to row j
    s_input = torch.zeros(V, d, dtype=g_lookup.dtype, device=g_lookup.device)
    s_input.index_add_(0, cap.tokens, g_lookup)

    # scenario 2.1: the target's own logit gradient, (p - 1)/N, times the hidden state
    g_target = g_logits.gather(1, safe_y.unsqueeze(1)).squeeze(1) * valid
    s_target = torch.zeros(V, d, dtype=h.dtype, device=h.device)
    s_target.index_add_(0, safe_y, g_target.unsqueeze(1) * h)

    # scenario 2.2: all other rows of the logit gradient (0 where HNS excluded a row)
    g_other = g_logits.scatter(1, safe_y.unsqueeze(1), 0.0)
    s_nontarget = g_other.transpose(0, 1) @ h
    return {"input": s_input, "target": s_target, "nontarget": s_nontarget}


def row_norms(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-row L2 norm of each part."""
    return {k: v.norm(dim=1) for k, v in parts.items()}


class ScenarioLog:
    """Per-token scenario norms, gradient and update norms at logged steps.

    Columns of the wide table: step, token, input, target, nontarget (gradient
    norms of the scenarios), grad_total (norm of the autograd gradient of the
    row, before clipping), residual (norm of the sum of the scenarios minus that
    gradient: the exactness of the decomposition), embedding (the row's norm
    before the update), update_adam, update_decay, update_total (norms of the
    row's change in this step: AdamW's moment-driven part, its decoupled weight
    decay part, and both together).
    """

    COLUMNS = (
        "step",
        "token",
        *SCENARIOS,
        "grad_total",
        "residual",
        "embedding",
        "update_adam",
        "update_decay",
        "update_total",
    )

    def __init__(self) -> None:
        self.records: list[dict] = []
        self._pending: dict | None = None

    def before_step(
        self,
        step: int,
        cap: Capture,
        targets: torch.Tensor,
        weight: torch.Tensor,
        grad: torch.Tensor | None = None,
    ) -> None:
        """Call after backward and before the optimizer step. ``grad`` is the weight's
        gradient when it is not ``weight.grad`` (a member of an ensemble)."""
        parts = decompose(cap, targets)
        grad = (weight.grad if grad is None else grad).detach()
        norms = row_norms(parts)
        residual = (parts["input"] + parts["target"] + parts["nontarget"] - grad).norm(dim=1)
        self._pending = {
            "step": step,
            "weight": weight.detach().clone(),
            "columns": {
                **norms,
                "grad_total": grad.norm(dim=1),
                "residual": residual,
                "embedding": weight.detach().norm(dim=1),
            },
        }

    def after_step(self, weight: torch.Tensor, lr: float, weight_decay: float) -> None:
        """Call after the optimizer step: splits the applied update into its two parts."""
        pending, self._pending = self._pending, None
        before = pending["weight"]
        total = weight.detach() - before
        # AdamW's decoupled decay multiplies the row by (1 - lr * wd) before the Adam step.
        decay = -lr * weight_decay * before
        columns = {
            **pending["columns"],
            "update_adam": (total - decay).norm(dim=1),
            "update_decay": decay.norm(dim=1),
            "update_total": total.norm(dim=1),
        }
        values = {k: v.double().cpu().tolist() for k, v in columns.items()}
        for token in range(before.shape[0]):
            self.records.append(
                {
                    "step": pending["step"],
                    "token": token,
                    **{k: v[token] for k, v in values.items()},
                }
            )


def tidy(wide: pd.DataFrame, token_info: pd.DataFrame) -> pd.DataFrame:
    """Long table (step, token, symbol, display, rank, group, language, scenario, value) from
    the wide ScenarioLog table, joined with ``token_info`` (Corpus.token_info).

    ``scenario`` names the recorded quantity: the three scenarios ('input', 'target',
    'nontarget') and the row's 'grad_total', 'residual', 'embedding', 'update_adam',
    'update_decay' and 'update_total' (see ScenarioLog)."""
    value_cols = [c for c in ScenarioLog.COLUMNS if c not in ("step", "token")]
    long = wide.melt(
        id_vars=["step", "token"], value_vars=value_cols, var_name="scenario", value_name="value"
    )
    cols = ["token", "symbol", "display", "rank", "group", "language"]
    return long.merge(token_info[cols], on="token", how="left")[
        ["step", "token", "symbol", "display", "rank", "group", "language", "scenario", "value"]
    ]
