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

import math
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F

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


def forward(model: GPT, idx: torch.Tensor, capture: bool = False, split_head: bool = False):
    """Logits of ``idx`` exactly as ``model(idx)`` computes them; with ``capture`` also a
    Capture whose gradients are filled in by the next ``backward``.

    ``split_head`` returns the logits twice, as ``(z_hidden, z_rows)``: the same values,
    one computed with the output rows detached (its gradient reaches the hidden states
    only), one with the hidden states detached (its gradient reaches the output rows
    only), for objectives that give the two sides different gradients
    (``Objective.split_head``). The capture then reads the rows' side, which is what
    scenarios 2.1 and 2.2 are made of.
    """
    tok_emb = model.embed(idx)
    hidden = model.hidden(idx, tok_emb)
    if split_head:
        W = model.embedding
        logits = F.linear(hidden, W.detach())
        rows = F.linear(hidden.detach(), W)
        out, row_side = (logits, rows), rows
    else:
        out = row_side = model.lm_head(hidden)
    if not capture:
        return out, None
    cap = Capture(tokens=idx.reshape(-1), hidden=hidden.detach().reshape(-1, hidden.size(-1)))

    def keep(name: str, width: int):
        def hook(grad: torch.Tensor) -> None:
            cap.grads[name] = grad.detach().reshape(-1, width)

        return hook

    tok_emb.register_hook(keep("lookup", tok_emb.size(-1)))
    row_side.register_hook(keep("logits", row_side.size(-1)))
    return out, cap


def token_matrices(model) -> tuple[torch.Tensor, ...]:
    """The parameters a token's rows live in: the tied matrix, or the input embedding and
    the output head of an untied model (``joined`` puts a token's two rows side by side)."""
    if getattr(model, "tied", True):
        return (model.embedding,)
    return (model.input_embedding, model.embedding)


def joined(tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """One (V, k d) matrix from the per-matrix (V, d) tensors: a token's rows end to end.
    Every quantity of the update split is elementwise, so it is exact on the joined rows."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=1)


def row_sums(
    index: torch.Tensor, values: torch.Tensor, size: int, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``size`` rows, row j the sum of the rows of ``values`` whose ``index`` is j (an
    ``index_add_`` into zeros of ``dtype``, ``values``' own by default).

    On the CPU ``index_add_`` adds in position order, always the same. On a GPU it adds
    with atomics, in an order that changes from run to run: there the (small) batch is
    added on the host by the same CPU code and the sums moved back to the device."""
    dtype = values.dtype if dtype is None else dtype
    if values.device.type == "cpu":
        out = torch.zeros(size, *values.shape[1:], dtype=dtype, device=values.device)
        return out.index_add_(0, index, values)
    out = torch.zeros(size, *values.shape[1:], dtype=dtype)
    return out.index_add_(0, index.cpu(), values.cpu()).to(values.device)


def decompose(
    cap: Capture, targets: torch.Tensor, ignore_index: int = -1
) -> dict[str, torch.Tensor]:
    """The three (V, d) gradient parts of the tied matrix for one captured pass.

    Their sum equals the autograd gradient of the tied weight (up to rounding).
    """
    if not cap.complete:
        raise RuntimeError("decompose needs the gradients of a backward pass over the capture")
    g_logits, g_lookup, h = cap.grads["logits"], cap.grads["lookup"], cap.hidden
    V = g_logits.shape[1]
    y = targets.reshape(-1)
    valid = y != ignore_index
    safe_y = torch.where(valid, y, torch.zeros_like(y))

    # scenario 1: every lookup of token j sends its gradient to row j
    s_input = row_sums(cap.tokens, g_lookup, V)

    # scenario 2.1: the target's own logit gradient, (p - 1)/N, times the hidden state
    g_target = g_logits.gather(1, safe_y.unsqueeze(1)).squeeze(1) * valid
    s_target = row_sums(safe_y, g_target.unsqueeze(1) * h, V, h.dtype)

    # scenario 2.2: all other rows of the logit gradient (0 where HNS excluded a row)
    g_other = g_logits.scatter(1, safe_y.unsqueeze(1), 0.0)
    s_nontarget = g_other.transpose(0, 1) @ h
    return {"input": s_input, "target": s_target, "nontarget": s_nontarget}


def row_norms(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-row L2 norm of each part."""
    return {k: v.norm(dim=1) for k, v in parts.items()}


def per_position_norms(
    cap: Capture, targets: torch.Tensor, ignore_index: int = -1
) -> dict[str, torch.Tensor]:
    """Per row, the *sum over positions* of the norm of each position's contribution to
    each scenario (V,): the per-position definition of a scenario's size.

    ``row_norms(decompose(...))`` takes the norm of the batch-summed vector, where
    contributions that point different ways cancel; this sums their norms, where they
    do not. Position n contributes ``dL/de_n`` to row x_n (scenario 1),
    ``(dL/dz_n)[y_n] h_n`` to row y_n (2.1) and ``(dL/dz_n)[j] h_n`` to every other
    row j (2.2), whose norms are ``|dL/de_n|``, ``|(dL/dz_n)[y_n]| |h_n|`` and
    ``|(dL/dz_n)[j]| |h_n|``.
    """
    g_logits, g_lookup, h = cap.grads["logits"], cap.grads["lookup"], cap.hidden
    V = g_logits.shape[1]
    y = targets.reshape(-1)
    valid = y != ignore_index
    safe_y = torch.where(valid, y, torch.zeros_like(y))
    h_norm = h.norm(dim=1)
    s_input = row_sums(cap.tokens, g_lookup.norm(dim=1), V, g_lookup.dtype)
    g_target = g_logits.gather(1, safe_y.unsqueeze(1)).squeeze(1) * valid
    s_target = row_sums(safe_y, g_target.abs() * h_norm, V, h.dtype)
    g_other = g_logits.scatter(1, safe_y.unsqueeze(1), 0.0).abs()
    s_nontarget = g_other.transpose(0, 1) @ h_norm
    return {"input": s_input, "target": s_target, "nontarget": s_nontarget}


@dataclass
class AdamState:
    """What AdamW's update of the tied matrix is made of at one step (for the update
    split of ``ScenarioLog``): its first moment before the step, and after the step the
    second moment, the step count and the hyperparameters."""

    exp_avg_before: torch.Tensor | None  # (V, d) m_{t-1}; None at the first step (zeros)
    beta1: float
    beta2: float
    eps: float
    clip: torch.Tensor | float = 1.0  # the factor gradient clipping applied to g_t

    def direct_factor(self, exp_avg_sq: torch.Tensor, step: int, lr: float) -> torch.Tensor:
        """Per element, the factor this step's gradient g_t gets in the update: AdamW moves
        by -lr / (1 - beta1^t) * m_t / denom with m_t = beta1 m_{t-1} + (1 - beta1) g_t
        and denom = sqrt(v_t / (1 - beta2^t)) + eps."""
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - self.beta2**step)).add_(self.eps)
        return -(lr / (1 - self.beta1**step)) * (1 - self.beta1) / denom


class ScenarioLog:
    """Per-token scenario norms, gradient and update norms at logged steps.

    Columns of the wide table: step, token;

    - input, target, nontarget: norms of the scenarios' batch-summed gradient vectors
      of the row (the definition the study's shares use: ``decompose``);
    - input_pp, target_pp, nontarget_pp: the per-position definition, the sum over
      positions of the norm of each position's contribution (``per_position_norms``);
    - grad_total: norm of the autograd gradient of the row, before clipping; residual:
      norm of the sum of the scenarios minus that gradient (the decomposition's
      exactness); embedding: the row's norm before the update;
    - update_adam, update_decay, update_total: norms of the row's change in this step,
      AdamW's moment-driven part, its decoupled weight decay, and both together;
    - update_input, update_target, update_nontarget, update_momentum: the moment-driven
      part split exactly (AdamW is linear in m_t once its denominator is fixed): this
      step's clipped gradient enters as ``-lr (1 - beta1) / (1 - beta1^t) / denom``
      times itself, so each scenario's share of it is that factor times the scenario's
      (clipped) gradient; the momentum part, ``-lr beta1 / (1 - beta1^t) / denom``
      times m_{t-1}, is what earlier steps left; update_residual is the norm of the
      row's actual change minus decay, the three scenario parts and momentum.
    """

    COLUMNS = (
        "step",
        "token",
        *SCENARIOS,
        *(f"{s}_pp" for s in SCENARIOS),
        "grad_total",
        "residual",
        "embedding",
        "update_adam",
        "update_decay",
        "update_total",
        *(f"update_{s}" for s in SCENARIOS),
        "update_momentum",
        "update_residual",
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
        untied: bool = False,
    ) -> None:
        """Call after backward and before clipping and the optimizer step. ``grad`` is the
        weight's gradient when it is not ``weight.grad`` (a member of an ensemble).
        ``untied``: ``weight`` and ``grad`` are an untied model's input and output rows
        joined (``joined``), and each scenario lives in its own half."""
        parts = decompose(cap, targets)
        if untied:
            zeros = torch.zeros_like(parts["input"])
            parts = {
                "input": torch.cat([parts["input"], zeros], dim=1),
                "target": torch.cat([zeros, parts["target"]], dim=1),
                "nontarget": torch.cat([zeros, parts["nontarget"]], dim=1),
            }
        grad = (weight.grad if grad is None else grad).detach()
        norms = row_norms(parts)
        residual = (parts["input"] + parts["target"] + parts["nontarget"] - grad).norm(dim=1)
        per_position = per_position_norms(cap, targets)
        self._pending = {
            "step": step,
            "weight": weight.detach().clone(),
            "grad": grad.clone(),
            "parts": parts,
            "columns": {
                **norms,
                **{f"{k}_pp": v for k, v in per_position.items()},
                "grad_total": grad.norm(dim=1),
                "residual": residual,
                "embedding": weight.detach().norm(dim=1),
            },
        }

    def after_step(
        self,
        weight: torch.Tensor,
        lr: float,
        weight_decay: float,
        adam: AdamState,
        exp_avg_sq: torch.Tensor,
        adam_step: int,
        clipped_grad: torch.Tensor,
    ) -> None:
        """Call after the optimizer step: splits the applied update into its parts.

        ``adam`` holds m_{t-1} (read before the step); ``exp_avg_sq`` and ``adam_step`` are
        the optimizer's v_t and t after it; ``clipped_grad`` the gradient it used."""
        pending, self._pending = self._pending, None
        before = pending["weight"]
        total = weight.detach() - before
        # AdamW's decoupled decay multiplies the row by (1 - lr * wd) before the Adam step.
        decay = -lr * weight_decay * before
        factor = adam.direct_factor(exp_avg_sq.detach(), adam_step, lr)
        # clipping scaled the whole gradient by one factor: each scenario by the same
        scale = _clip_scale(clipped_grad.detach(), pending["grad"])
        split = {f"update_{k}": factor * scale * v for k, v in pending["parts"].items()}
        momentum = torch.zeros_like(before)
        if adam.exp_avg_before is not None:
            momentum = factor * (adam.beta1 / (1 - adam.beta1)) * adam.exp_avg_before
        rebuilt = decay + momentum + sum(split.values())
        columns = {
            **pending["columns"],
            "update_adam": (total - decay).norm(dim=1),
            "update_decay": decay.norm(dim=1),
            "update_total": total.norm(dim=1),
            **{k: v.norm(dim=1) for k, v in split.items()},
            "update_momentum": momentum.norm(dim=1),
            "update_residual": (total - rebuilt).norm(dim=1),
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


def _clip_scale(clipped: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """The one factor clipping multiplied the gradient by (1 when nothing was clipped)."""
    raw_norm = raw.norm()
    if float(raw_norm) == 0.0:
        return torch.ones((), dtype=raw.dtype, device=raw.device)
    return clipped.norm() / raw_norm


def adam_state_before(optimizer: torch.optim.Optimizer, weight) -> AdamState:
    """The AdamState of ``weight`` (a parameter, or a tuple joined as ``joined``) before
    ``optimizer.step()`` (a torch AdamW)."""
    weights = weight if isinstance(weight, tuple) else (weight,)
    group = next(g for g in optimizer.param_groups if any(p is weights[0] for p in g["params"]))
    befores = [optimizer.state.get(w, {}).get("exp_avg") for w in weights]
    beta1, beta2 = group["betas"]
    return AdamState(
        exp_avg_before=None
        if any(b is None for b in befores)
        else joined(tuple(b.detach() for b in befores)).clone(),
        beta1=beta1,
        beta2=beta2,
        eps=group["eps"],
    )


def adam_step_of(optimizer: torch.optim.Optimizer, weight) -> tuple:
    """(v_t, t) of ``weight`` (a parameter or a tuple, joined) after ``optimizer.step()``."""
    weights = weight if isinstance(weight, tuple) else (weight,)
    states = [optimizer.state[w] for w in weights]
    return joined(tuple(st["exp_avg_sq"] for st in states)), int(states[0]["step"])


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
