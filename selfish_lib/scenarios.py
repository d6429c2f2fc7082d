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
        self, step: int, cap: Capture, targets: torch.Tensor, weight: torch.Tensor
    ) -> None:
        """Call after backward and before the optimizer step."""
        parts = decompose(cap, targets)
        grad = weight.grad.detach()
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


def token_totals(wide: pd.DataFrame) -> pd.DataFrame:
    """Per token: each scenario's gradient norm summed over the logged steps, and the
    share of scenario 2.2 in their sum."""
    totals = wide.groupby("token", sort=True)[list(SCENARIOS)].sum().reset_index()
    whole = totals[list(SCENARIOS)].sum(axis=1)
    totals["share_nontarget"] = totals["nontarget"] / whole.where(whole > 0)
    return totals


def group_shares(totals: pd.DataFrame, token_info: pd.DataFrame) -> pd.DataFrame:
    """Per rank group (and language): the share of scenario 2.2 in the summed norms of
    its tokens, and the ratio 2.2 / (1 + 2.1); > 0.5 and > 1 mean 2.2 outweighs the others."""
    merged = totals.merge(token_info[["token", "group", "language"]], on="token")
    summed = merged.groupby(["language", "group"], sort=True)[list(SCENARIOS)].sum().reset_index()
    own = summed["input"] + summed["target"]
    summed["share_nontarget"] = summed["nontarget"] / (own + summed["nontarget"])
    summed["nontarget_over_own"] = summed["nontarget"] / own.where(own > 0)
    return summed


def per_token_summary(runs: dict, token_info: pd.DataFrame) -> pd.DataFrame:
    """Per objective, token and scenario: the summed gradient norm, mean and interval over
    seeds; joined with symbols and ranks. Long format (one row per scenario)."""
    from .runs import stack_runs
    from .stats import aggregate_seeds

    totals = stack_runs(runs, lambda r: token_totals(r.scenarios))
    long = totals.melt(
        id_vars=["objective", "seed", "token"],
        value_vars=list(SCENARIOS),
        var_name="scenario",
        value_name="norm",
    )
    out = aggregate_seeds(long, ["objective", "token", "scenario"], ["norm"])
    out["scenario_label"] = out["scenario"].map(SCENARIO_LABELS)
    cols = ["token", "symbol", "display", "rank", "group", "language"]
    return out.merge(token_info[cols], on="token", how="left")


def per_group_share(runs: dict, token_info: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Share of scenario 2.2 per rank group: (per seed, aggregated over seeds with intervals)."""
    from .runs import stack_runs
    from .stats import aggregate_seeds

    per_seed = stack_runs(runs, lambda r: group_shares(token_totals(r.scenarios), token_info))
    agg = aggregate_seeds(
        per_seed, ["objective", "language", "group"], ["share_nontarget", "nontarget_over_own"]
    )
    # A share lies in [0, 1]; a t interval over few seeds can reach past either end.
    agg["share_nontarget_lo"] = agg["share_nontarget_lo"].clip(lower=0.0)
    agg["share_nontarget_hi"] = agg["share_nontarget_hi"].clip(upper=1.0)
    return per_seed, agg


def default_tokens(token_info: pd.DataFrame) -> list[int]:
    """The most frequent, the median and the rarest symbol of the first alphabet."""
    high = token_info[token_info["language"] == "high"].sort_values("rank")
    ranks = high["token"].tolist()
    return [ranks[0], ranks[len(ranks) // 2], ranks[-1]]


def step_curves(runs: dict, token_info: pd.DataFrame) -> pd.DataFrame:
    """Per objective, logged step, token and scenario: the gradient norm, mean and interval
    over seeds (for the per-token curves)."""
    from .runs import stack_runs
    from .stats import aggregate_seeds

    wide = stack_runs(runs, lambda r: r.scenarios)
    long = wide.melt(
        id_vars=["objective", "seed", "step", "token"],
        value_vars=list(SCENARIOS),
        var_name="scenario",
        value_name="norm",
    )
    out = aggregate_seeds(long, ["objective", "step", "token", "scenario"], ["norm"])
    out["scenario_label"] = out["scenario"].map(SCENARIO_LABELS)
    return out


@dataclass
class Reading:
    """What the numbers say: Markdown text for the notebook and a JSON-safe summary."""

    text: str
    summary: dict


def _verdict(lo: float, hi: float, n: int, threshold: float) -> str:
    if n < 2 or lo != lo or hi != hi:  # NaN: fewer than two seeds
        return "inconclusive (fewer than two seeds)"
    if lo > threshold:
        return "yes"
    if hi < threshold:
        return "no"
    return "inconclusive"


def reading(per_seed: pd.DataFrame, shares: pd.DataFrame, rare_groups) -> Reading:
    """Does scenario 2.2 outweigh scenarios 1 and 2.1 together in the ``rare_groups``
    (the 95% interval of its share lies above one half), and how does HNS change the
    share (paired by seed)? Computed from ``per_group_share``'s two frames."""
    from .stats import compare, paired_difference

    high = shares[shares["language"] == "high"].set_index(["objective", "group"])
    diffs = paired_difference(
        per_seed[per_seed["language"] == "high"],
        ["group"],
        "share_nontarget",
        "objective",
        "HNS",
        "CE",
    ).set_index("group")
    lines, summary = [], {"rare_groups": list(rare_groups), "groups": {}}
    for group in rare_groups:
        entry = {}
        parts = []
        for objective in ("CE", "HNS"):
            if (objective, group) not in high.index:
                continue
            row = high.loc[(objective, group)]
            verdict = _verdict(
                row["share_nontarget_lo"], row["share_nontarget_hi"], row["n_seeds"], 0.5
            )
            entry[objective] = {
                "share_nontarget": row["share_nontarget"],
                "ci": [row["share_nontarget_lo"], row["share_nontarget_hi"]],
                "n_seeds": int(row["n_seeds"]),
                "outweighs_input_and_target": verdict,
            }
            parts.append(
                f"under {objective} scenario 2.2 carries {row['share_nontarget']:.1%} of the "
                f"summed gradient norm (95% CI {row['share_nontarget_lo']:.1%} to "
                f"{row['share_nontarget_hi']:.1%}, {int(row['n_seeds'])} seeds): "
                f"outweighs scenarios 1 and 2.1 together: **{verdict}**"
            )
        if group in diffs.index:
            d = diffs.loc[group]
            direction = compare(d["diff_lo"], d["diff_hi"])
            entry["hns_minus_ce"] = {
                "diff": d["diff"],
                "ci": [d["diff_lo"], d["diff_hi"]],
                "direction": direction,
            }
            parts.append(
                f"HNS minus CE: {100 * d['diff']:+.1f} points (95% CI {100 * d['diff_lo']:+.1f} "
                f"to {100 * d['diff_hi']:+.1f}), HNS is **{direction}**"
            )
        summary["groups"][group] = entry
        lines.append(f"- **ranks {group}**: " + "; ".join(parts) + ".")
    text = "\n".join(
        [
            "In the rarest frequency groups of the training split:",
            "",
            *lines,
            "",
            "A verdict is *yes* when the whole 95% interval of the share lies above one half, "
            "*no* when it lies below, and *inconclusive* otherwise.",
        ]
    )
    return Reading(text, summary)
