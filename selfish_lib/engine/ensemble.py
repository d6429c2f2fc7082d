"""Ensembles: every run of one shape trained as one stacked model.

Runs whose configs agree on everything but their seed, their objective and their
dropout rate have parameters of the same shapes (``group_key``). Stacked along a
leading member axis, E such models train as one: every linear layer is one batched
matrix product, attention runs over E x B sequences, and the logits of all members
come out of one product with the stacked output matrices (the tied embeddings, or one
output head per member of untied models, [E, V, d]). Each member keeps what makes it
its own run:

- its initial weights, drawn exactly as its solo run draws them;
- its data stream: its block offsets drawn by its own sampler's generator on the CPU
  (``BlockSampler``, or ``LanguageBlockSampler`` for a real second language), with the
  very calls its solo run makes, and the tokens of all members then gathered on the
  device with one index operation (``member_batches``);
- its dropout masks: each member carries its own state of the default random
  generators (``MemberRNG``, the state its solo run has after drawing its initial
  weights). Around each of its draws that state is put in place of the global one and
  the very operation its solo model calls (``F.dropout``, attention's dropout inside
  ``F.scaled_dot_product_attention``) runs on its own slice, in its solo shape; the
  global state is put back after. The masks are therefore the solo run's masks, bit for
  bit, and its checkpoints hold its own generator states;
- its objective, with its own ``LossContext``: its own slice of the stacked model (a
  ``MemberView``: output and input embeddings, sizes) and, for a stateful objective,
  its own state (AGG's window of counts). Split-head objectives get their own split
  logits (the hidden side with the rows detached, the rows' side with the hidden
  states detached). An objective whose loss is ``positionwise`` is computed in one call
  for all members that share it; the others member by member (``member_losses``);
- its gradient clipping: the norm is taken over its own gradients only, as
  ``clip_grad_norm_`` takes it (a norm per parameter, then the norm of those), all
  members' in one ``torch._foreach_norm``;
- its AdamW state (AdamW is elementwise: one optimizer over the stacked tensors is E
  independent optimizers with the same hyperparameters).

What is exact and what is within a tolerance. Exact, bit for bit: the initial weights,
the tokens of every step, the dropout masks (the same random draws), the learning rate,
and anything that depends on the targets alone (AGG's counts). Within a tolerance: the
weights, losses and metrics. A batched matrix product adds in another order than a
single one, so the numbers differ from the solo run's by rounding, and training carries
the difference along; a ``positionwise`` loss computed for several members in one call
may also take another path than the solo call (HNS switches to its fused kernel above
``losses.FUSED_FROM_NUMEL`` logits, equal up to rounding). With dropout the masks stay
the solo run's, so a member's trajectory drifts from its solo run's by the same
rounding, not by other random draws. ``tests/test_ensemble.py`` and
``tests/test_ensemble_kinds.py`` measure the gap against solo runs for every registered
objective, untied models and dropout, and state the tolerance. A group is
deterministic: the same members give the same numbers. Grouping is an execution choice,
not part of the run id; each run's ``config.json`` records it.

Scenario logging works as in a solo run (the hooks read each member's slice of the
batched gradients; an untied member's input and output rows are joined as
``scenarios.joined`` joins them). By default runs train stacked on a CUDA device and
solo elsewhere (``default_ensemble``): on a CPU a batched product is no faster than E
single ones, and runs train in worker processes instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .corpus import BlockSampler, Corpus, shift_blocks
from .languages import LanguageBlockSampler, TwoLanguageCorpus
from .model import GPT, ModelConfig
from .objectives import CrossEntropy, LossContext, Objective, full_cross_entropy, rows_only
from .scenarios import AdamState, Capture, ScenarioLog
from .training import (
    CHECKPOINT,
    RunLogs,
    TokenLossLog,
    TrainConfig,
    TrainingInterrupted,
    TrainResult,
    Window,
    _deferred_interrupt,
    _save_atomic,
    checkpoint_state,
    device_record,
    evaluate_run,
    initial_model,
    learning_rate,
    make_optimizer,
    make_sampler,
    resolve_device,
    training_corpus,
    training_device,
    vocab_size,
)
from .validation import ParameterError, check_int

# The group size runs of one shape train in on a CUDA device unless another is asked
# for (``default_ensemble``)
CUDA_ENSEMBLE = 8
# The names of the embedding matrices in ``GPT.named_parameters`` (a tied model has the
# first only: its output head is the same Parameter).
INPUT_EMBEDDING = "transformer.wte.weight"
OUTPUT_HEAD = "lm_head.weight"


def group_key(config: TrainConfig) -> TrainConfig:
    """What runs must share to train in one ensemble: their config with the seed, the
    objective and the dropout rate set aside (none of them changes a tensor's shape)."""
    shape = dataclasses.replace(config.model, dropout=0.0)
    return dataclasses.replace(config, seed=0, objective=CrossEntropy(), model=shape)


def ensemble_groups(configs: Sequence[TrainConfig], size: int) -> list[tuple[TrainConfig, ...]]:
    """``configs`` in groups of at most ``size`` runs that share a ``group_key`` (in the
    order of their first member); with ``size`` 1 every run is a group of one."""
    size = check_int("ensemble", size, 1)
    if size == 1:
        return [(config,) for config in configs]
    buckets: dict[TrainConfig, list[list[TrainConfig]]] = {}
    order: list[list[TrainConfig]] = []
    for config in configs:
        chunks = buckets.setdefault(group_key(config), [])
        if not chunks or len(chunks[-1]) == size:
            chunks.append([])
            order.append(chunks[-1])
        chunks[-1].append(config)
    return [tuple(group) for group in order]


def default_ensemble(device: str = "auto") -> int:
    """The group size for ``device`` when none is asked for: ``CUDA_ENSEMBLE`` on a
    CUDA device, 1 (every run solo) on a CPU or MPS, where a batched product saves
    nothing over single ones."""
    return CUDA_ENSEMBLE if resolve_device(device).type == "cuda" else 1


class MemberRNG:
    """Each member's own state of the default random generators (the CPU's and, on
    CUDA or MPS, the device's), which its dropout masks are drawn from.

    ``add_current`` records the global states as a new member's (right after its
    initial weights are drawn: where its solo run starts training). Inside
    ``member(e)`` the global generators hold member ``e``'s states; on leaving, what
    the member drew is kept as its state and the global states are put back."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.states: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def _read(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.device.type == "cuda":
            return torch.get_rng_state(), torch.cuda.get_rng_state(self.device)
        if self.device.type == "mps":
            return torch.get_rng_state(), torch.mps.get_rng_state()
        return torch.get_rng_state(), None

    def _write(self, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        torch.set_rng_state(state[0])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state[1], self.device)
        elif self.device.type == "mps":
            torch.mps.set_rng_state(state[1])

    def add_current(self) -> None:
        """Record the global generators' states as the next member's."""
        self.states.append(self._read())

    @contextlib.contextmanager
    def member(self, e: int) -> Iterator[None]:
        """The global generators hold member ``e``'s states inside the block."""
        outside = self._read()
        self._write(self.states[e])
        try:
            yield
        finally:
            self.states[e] = self._read()
            self._write(outside)


@dataclass(frozen=True)
class MemberView:
    """What an objective's ``LossContext.model`` offers inside an ensemble: the member's
    own slice of the stacked model (views into the stacked tensors, so gradients reach
    them) with the attributes of a ``GPT`` that a loss may read."""

    embedding: torch.Tensor  # (V, d) the output embedding (the tied matrix, or the head)
    # (V, d) the matrix inputs are looked up in; None: the embedding itself (tied)
    input_embedding: torch.Tensor | None = None
    vocab_size: int | None = None
    config: ModelConfig | None = None

    def __post_init__(self) -> None:
        if self.input_embedding is None:
            object.__setattr__(self, "input_embedding", self.embedding)

    @property
    def tied(self) -> bool:
        """Whether the input and output embeddings are one matrix."""
        return self.input_embedding is self.embedding


class StackedGPT:
    """E GPTs of one shape as stacked parameters (member axis first) and a batched
    forward pass that computes what each member's ``GPT.forward`` computes (in training
    mode, each member with its own dropout rate)."""

    def __init__(self, models: Sequence[GPT]) -> None:
        if not models:
            raise ParameterError("models", "[]", "at least one GPT")
        shape = dataclasses.replace(models[0].config, dropout=0.0)
        for model in models:
            if (dataclasses.replace(model.config, dropout=0.0) != shape
                    or model.vocab_size != models[0].vocab_size):  # fmt: skip
                raise ParameterError(
                    "models", f"a {model.config} over {model.vocab_size} tokens",
                    f"models of one shape ({shape} over {models[0].vocab_size} tokens)",
                )  # fmt: skip
        self.config = shape
        self.vocab_size = models[0].vocab_size
        self.member_configs = tuple(m.config for m in models)
        self.dropouts = tuple(c.dropout for c in self.member_configs)
        self.names = [name for name, _ in models[0].named_parameters()]
        self.solo_dims = {name: p.dim() for name, p in models[0].named_parameters()}
        members = [dict(m.named_parameters()) for m in models]
        self.params = {
            name: torch.nn.Parameter(torch.stack([m[name].detach() for m in members]))
            for name in self.names
        }
        self.size = len(models)
        self.tied = OUTPUT_HEAD not in self.params
        # clip_gradients' views of the gradients, kept while the gradients are the same
        # tensors (the loop zeroes them in place), and of its per-member coefficients
        self._grads: list[torch.Tensor] | None = None
        self._grad_slices: list[torch.Tensor] = []
        self._coef: torch.Tensor | None = None
        self._coef_views: list[torch.Tensor] = []

    @property
    def embedding(self) -> torch.Tensor:
        """The stacked output embeddings (E, V, n_embd): the tied matrices, or the heads."""
        return self.params[INPUT_EMBEDDING if self.tied else OUTPUT_HEAD]

    @property
    def input_embedding(self) -> torch.Tensor:
        """The stacked matrices inputs are looked up in (``embedding`` itself when tied)."""
        return self.params[INPUT_EMBEDDING]

    def token_matrices(self) -> tuple[torch.Tensor, ...]:
        """The stacked parameters a token's rows live in, as ``scenarios.token_matrices``
        names them for a solo model: the tied matrix, or the input and output matrices."""
        return (self.embedding,) if self.tied else (self.input_embedding, self.embedding)

    def member_view(self, e: int) -> MemberView:
        """Member ``e``'s slice of the model, for its ``LossContext``."""
        embedding = self.embedding[e]
        lookup = None if self.tied else self.input_embedding[e]
        return MemberView(embedding, lookup, self.vocab_size, self.member_configs[e])

    def optimizer(self, config: TrainConfig) -> torch.optim.AdamW:
        """AdamW as ``training.make_optimizer``: decay on what is a matrix in a solo model."""
        decay = [self.params[n] for n in self.names if self.solo_dims[n] >= 2]
        no_decay = [self.params[n] for n in self.names if self.solo_dims[n] < 2]
        groups = [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(
            groups, lr=config.learning_rate, betas=(config.beta1, config.beta2)
        )

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        weight = self.params[name + ".weight"].transpose(1, 2)  # (E, in, out)
        bias = self.params.get(name + ".bias")
        if bias is None:
            return torch.bmm(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight)

    def _layer_norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        y = F.layer_norm(x, (x.size(-1),), eps=1e-5) * self.params[name + ".weight"].unsqueeze(1)
        bias = self.params.get(name + ".bias")
        return y if bias is None else y + bias.unsqueeze(1)

    def _dropout(
        self, x: torch.Tensor, rng: MemberRNG | None, solo_shape: tuple[int, ...]
    ) -> torch.Tensor:
        """Each member's dropout of its slice of ``x`` (E, ...), drawn from its own
        generators by the call its solo model makes on a tensor of ``solo_shape``."""
        if not any(self.dropouts):
            return x
        parts = []
        for e, p in enumerate(self.dropouts):
            if p == 0.0:  # a rate of 0 draws nothing in a solo run either
                parts.append(x[e])
                continue
            with rng.member(e):
                parts.append(F.dropout(x[e].view(solo_shape), p, True).view(x.shape[1:]))
        return torch.stack(parts)

    def _attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: int,
        rng: MemberRNG | None,
    ) -> torch.Tensor:  # fmt: skip
        """Causal attention of the E x ``batch`` sequences (E B, H, T, hd): one call, or
        with dropout one call per member on its own sequences (its masks drawn as
        ``_dropout`` draws them)."""
        if not any(self.dropouts):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        parts = []
        for e, p in enumerate(self.dropouts):
            own = slice(e * batch, (e + 1) * batch)
            if p == 0.0:
                parts.append(F.scaled_dot_product_attention(q[own], k[own], v[own], is_causal=True))
                continue
            with rng.member(e):
                parts.append(F.scaled_dot_product_attention(q[own], k[own], v[own], dropout_p=p,
                                                             is_causal=True))  # fmt: skip
        return torch.cat(parts)

    def forward(
        self,
        idx: torch.Tensor,
        capture: bool = False,
        split_head: bool = False,
        rng: MemberRNG | None = None,
    ) -> tuple[torch.Tensor | tuple[torch.Tensor, torch.Tensor], list[Capture] | None]:
        """Logits (E, B, T, V) of each member's tokens ``idx`` (E, B, T); with ``capture``
        also one ``scenarios.Capture`` per member, filled in by the next backward (what
        ``scenarios.forward`` gives for a solo model).

        ``split_head`` returns the logits twice, ``(z_hidden, z_rows)``, as
        ``scenarios.forward`` does (the captures then read the rows' side). Members with
        dropout draw their masks from ``rng`` (required when one has a rate above 0)."""
        E, B, T = idx.shape
        if self.config.block_size < T:
            most = self.config.block_size
            raise ValueError(f"invalid sequence length {T}: expected at most block_size={most}")
        if any(self.dropouts) and rng is None:
            raise ParameterError("rng", None, "a MemberRNG (some member has dropout)")
        C, H = self.config.n_embd, self.config.n_head
        W_in, W_out = self.input_embedding, self.embedding
        V = W_in.size(1)
        # One lookup for every member: member e's row j is row e * V + j of the stack.
        offsets = (torch.arange(E, device=idx.device) * V).view(E, 1, 1)
        tok_emb = F.embedding(idx + offsets, W_in.reshape(E * V, C))
        x = tok_emb + self.params["transformer.wpe.weight"][:, :T].unsqueeze(1)
        x = self._dropout(x, rng, (B, T, C)).reshape(E, B * T, C)
        for layer in range(self.config.n_layer):
            pre = f"transformer.h.{layer}."
            q, k, v = self._linear(self._layer_norm(x, pre + "ln_1"), pre + "attn.c_attn").split(
                C, dim=2
            )
            # The E x B sequences attend independently: one batch for the kernel.
            q, k, v = (t.reshape(E * B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
            y = self._attention(q, k, v, B, rng)
            y = y.transpose(1, 2).reshape(E, B * T, C)
            x = x + self._dropout(self._linear(y, pre + "attn.c_proj"), rng, (B, T, C))
            h = F.gelu(self._linear(self._layer_norm(x, pre + "ln_2"), pre + "mlp.c_fc"))
            x = x + self._dropout(self._linear(h, pre + "mlp.c_proj"), rng, (B, T, C))
        x = self._layer_norm(x, "transformer.ln_f")
        if split_head:
            z_hidden = torch.bmm(x, W_out.detach().transpose(1, 2)).view(E, B, T, V)
            z_rows = torch.bmm(x.detach(), W_out.transpose(1, 2)).view(E, B, T, V)
            out, row_side = (z_hidden, z_rows), z_rows
        else:
            out = row_side = torch.bmm(x, W_out.transpose(1, 2)).view(E, B, T, V)
        if not capture:
            return out, None
        captures = [Capture(tokens=idx[e].reshape(-1), hidden=x[e].detach()) for e in range(E)]

        def keep(name: str, width: int):
            def hook(grad: torch.Tensor) -> None:
                for e, cap in enumerate(captures):
                    cap.grads[name] = grad[e].detach().reshape(-1, width)

            return hook

        tok_emb.register_hook(keep("lookup", C))
        row_side.register_hook(keep("logits", V))
        return out, captures

    def _member_gradients(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The stacked gradients (one per parameter, in ``names`` order) and their
        per-member slices, member by member: member e's are ``[e * P, (e + 1) * P)``."""
        grads = [self.params[n].grad for n in self.names]
        if any(g is None for g in grads):
            missing = [n for n, g in zip(self.names, grads, strict=True) if g is None]
            raise RuntimeError(f"clip_gradients needs every gradient; none for {missing[0]}")
        cached = self._grads
        if cached is None or any(g is not c for g, c in zip(grads, cached, strict=True)):
            self._grads = grads
            self._grad_slices = [g[e] for e in range(self.size) for g in grads]
        return grads, self._grad_slices

    def clip_gradients(self, max_norm: float) -> torch.Tensor:
        """Clip each member's gradient to ``max_norm`` as ``clip_grad_norm_`` would clip
        its solo model's; returns the (E,) norms before clipping.

        As there, a member's norm is the norm of its per-parameter norms: one
        ``torch._foreach_norm`` over every member's slices gives them all, and one
        ``torch._foreach_mul_`` scales each stacked gradient by its members' factors."""
        grads, slices = self._member_gradients()
        per_parameter = torch.stack(torch._foreach_norm(slices)).view(self.size, len(grads))
        norms = torch.linalg.vector_norm(per_parameter, dim=1)
        coef = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
        if self._coef is None or self._coef.device != coef.device:
            self._coef = torch.empty_like(coef)
            self._coef_views = [self._coef.view(-1, *([1] * (g.dim() - 1))) for g in grads]
        self._coef.copy_(coef)
        torch._foreach_mul_(grads, self._coef_views)
        return norms

    @torch.no_grad()
    def copy_member_into(self, member: int, model: GPT) -> GPT:
        """Write member ``member``'s weights into the solo ``model`` (returned)."""
        for name, p in model.named_parameters():
            p.copy_(self.params[name][member])
        return model

    def member_optimizer_state(
        self, optimizer: torch.optim.AdamW, member: int, model: GPT, config: TrainConfig
    ) -> dict:
        """The state_dict a solo run's optimizer would have at this point (for a
        checkpoint that the solo loop resumes from)."""
        solo = make_optimizer(model, config)
        solo_params = dict(model.named_parameters())
        for name in self.names:
            state = optimizer.state.get(self.params[name])
            if not state:
                continue
            solo.state[solo_params[name]] = {
                key: (value.clone() if key == "step" else value[member].clone())
                for key, value in state.items()
            }
        for solo_group, group in zip(solo.param_groups, optimizer.param_groups, strict=True):
            solo_group["lr"] = group["lr"]
        return solo.state_dict()


def sampler_data(corpus: Corpus) -> torch.Tensor:
    """The token ids the samplers of a group draw their blocks from, as one tensor
    (``member_batches`` gathers from it): the training text, or, for a real second
    language (``corpus`` a ``TwoLanguageCorpus``), English's training text followed by
    the language's."""
    if isinstance(corpus, TwoLanguageCorpus):
        return torch.cat([corpus.train, corpus.second.train])
    return corpus.train


def member_batches(
    samplers: Sequence[BlockSampler | LanguageBlockSampler], data: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next batch of every member, ``x`` and ``y`` (E, B, T) on ``data``'s device.

    Each member's block offsets and languages are drawn by its own sampler's generator
    on the CPU with the calls its ``sample`` makes (``BlockSampler.sample``, or
    ``languages.sample_blocks`` for a ``LanguageBlockSampler``), in its order, so each
    sampler's stream (and state) is its solo run's; the tokens of all members are then
    gathered from ``data`` (``sampler_data``, moved to the device once) with one index
    operation. ``tests/test_ensemble_kinds.py`` checks the batches against ``sample``."""
    first = samplers[0]
    two_texts = isinstance(first, LanguageBlockSampler)
    starts, lows = [], []
    for sampler in samplers:
        g, T, B = sampler.generator, sampler.block_size, sampler.batch_size
        if two_texts:  # English's offset, the coin, the language's offset: in this order
            english = len(sampler.english)
            ix_en = torch.randint(english - T - 1, (B,), generator=g)
            coin = torch.rand(B, generator=g)
            ix_low = torch.randint(len(sampler.language) - T - 1, (B,), generator=g)
            low = coin < sampler.p_low
            starts.append(torch.where(low, ix_low + english, ix_en))  # into sampler_data
            continue
        starts.append(torch.randint(len(sampler.data) - T - 1, (B,), generator=g))
        coin = torch.rand(B, generator=g)
        lows.append(torch.ones_like(coin, dtype=torch.bool) if sampler.low_only
                    else coin < sampler.p_low)  # fmt: skip
    ix = torch.stack(starts).to(data.device)
    offsets = ix.unsqueeze(-1) + torch.arange(first.block_size + 1, device=data.device)
    blocks = data[offsets]
    if not two_texts:  # the cipher: a block of the second language is shifted by V
        blocks = shift_blocks(blocks, torch.stack(lows).to(data.device), first.vocab_size)
    return blocks[..., :-1].contiguous(), blocks[..., 1:].contiguous()


def member_losses(
    objectives: Sequence[Objective],
    logits: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    targets: torch.Tensor,
    contexts: Sequence[LossContext],
) -> torch.Tensor:
    """Each member's per-position objective values (E, B, T) on its own logits.

    ``logits`` is (E, B, T, V), or ``(z_hidden, z_rows)`` when some member's objective
    is split-head (``StackedGPT.forward(split_head=True)``); the other members then get
    z_hidden + ``rows_only``(z_rows): the same values, and the full gradient on both
    sides, as from a single head. A ``positionwise`` objective runs once for all its
    members (on a view of their logits when they are adjacent); any other objective
    runs member by member with the member's own context (its model slice, its state)."""
    split = isinstance(logits, tuple)
    E = targets.size(0)

    def select(members: list[int]):
        first, last = members[0], members[-1]
        if last - first + 1 == len(members):  # adjacent: a view, no copy
            return slice(first, last + 1)
        return members

    def take(tensor: torch.Tensor, index) -> torch.Tensor:
        if isinstance(index, (int, slice)):
            return tensor[index]
        # stack rather than an index tensor: its backward is plain slices (no scatter,
        # which CUDA's deterministic mode would have to sort)
        return torch.stack([tensor[e] for e in index])

    def plain_logits(index) -> torch.Tensor:
        if not split:
            return take(logits, index)
        return take(logits[0], index) + rows_only(take(logits[1], index))

    shared: dict[Objective, list[int]] = {}
    alone: list[int] = []
    for e, objective in enumerate(objectives):
        if objective.positionwise and not objective.split_head:
            shared.setdefault(objective, []).append(e)
        else:
            alone.append(e)
    parts: list[tuple[list[int], torch.Tensor]] = []
    for objective, members in shared.items():
        index = select(members)
        values = objective.loss(plain_logits(index), take(targets, index), contexts[members[0]])
        parts.append((members, values))
    for e in alone:
        objective = objectives[e]
        if objective.split_head:
            if not split:
                raise ValueError(f"{objective.label} splits the head: pass (z_hidden, z_rows)")
            values = objective.split_loss(logits[0][e], logits[1][e], targets[e], contexts[e])
        else:
            values = objective.loss(plain_logits(e), targets[e], contexts[e])
        parts.append(([e], values.unsqueeze(0)))
    if len(parts) == 1:  # one objective for everyone, in member order
        return parts[0][1]
    per_member: list[torch.Tensor | None] = [None] * E
    for members, values in parts:
        for j, e in enumerate(members):
            per_member[e] = values[j]
    return torch.stack(per_member)


def _member_adam(optimizer: torch.optim.AdamW, matrices: tuple[torch.Tensor, ...]):
    """(stacked m_{t-1} of ``matrices`` joined per member along the last axis, or None
    at the first step; the AdamState fields): what ``scenarios.adam_state_before``
    reads for a solo model, for all members at once."""
    group = next(g for g in optimizer.param_groups if any(p is matrices[0] for p in g["params"]))
    befores = [optimizer.state.get(w, {}).get("exp_avg") for w in matrices]
    before = None
    if all(b is not None for b in befores):
        before = torch.cat([b.detach() for b in befores], dim=-1).clone()
    beta1, beta2 = group["betas"]
    return before, AdamState(exp_avg_before=None, beta1=beta1, beta2=beta2, eps=group["eps"])


class StackedGroup:
    """The members of one group set up as ``train_ensemble`` trains them, and its step in
    two halves: ``forward_backward`` (each member's batch from its own sampler, the
    stacked forward pass, each member's objective, one backward) and ``update`` (each
    member's clipping, one AdamW step). Between the two, the gradients of the step are
    there to read (the scenario log). The learning rate of a step is set by
    ``forward_backward``. ``bench/gpu_check.py`` times these same two calls."""

    def __init__(self, configs: Sequence[TrainConfig], corpus: Corpus, dev: torch.device) -> None:
        configs = check_group(configs)
        self.configs = configs
        self.shared = shared = configs[0]  # every field but seed, objective, dropout is shared
        self.corpus = corpus = training_corpus(corpus, shared)
        self.size = len(configs)
        self.vocab_size = V = vocab_size(shared, corpus)
        self.rng = MemberRNG(dev)
        self.models = []
        for config in configs:
            self.models.append(initial_model(config, corpus).to(dev))
            self.rng.add_current()  # where the member's solo run starts drawing dropout masks
        self.stacked = StackedGPT(self.models)
        self.optimizer = self.stacked.optimizer(shared)
        self.samplers = [make_sampler(c, corpus) for c in configs]
        self.data = sampler_data(corpus).to(dev)  # the samplers' ids, gathered on the device
        self.objectives = [c.objective for c in configs]
        self.split_head = any(o.split_head for o in self.objectives)
        self.objective_states = [o.initial_state(V, dev) for o in self.objectives]
        self.log_priors = [corpus.log_prior(c.bilingual, c.p_low).to(dev) for c in configs]

    def forward_backward(self, step: int, capture: bool = False):
        """Step ``step``'s first half: ``(logits, captures, per_position, y)``, the
        gradients of every member's own mean loss accumulated (zeroed in place first)."""
        lr = learning_rate(step, self.shared)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = member_batches(self.samplers, self.data)
        logits, captures = self.stacked.forward(x, capture=capture, split_head=self.split_head,
                                                rng=self.rng)  # fmt: skip
        contexts = [
            LossContext(step=step, max_steps=c.max_steps, model=self.stacked.member_view(e),
                        log_prior=self.log_priors[e], state=self.objective_states[e])
            for e, c in enumerate(self.configs)
        ]  # fmt: skip
        per_position = member_losses(self.objectives, logits, y, contexts)
        # zeroed in place: the gradients stay the same tensors (clip_gradients' views of
        # them stay valid); 0 + g is g, as a fresh gradient would be
        self.optimizer.zero_grad(set_to_none=False)
        # Each member's parameters get the gradient of its own mean loss only.
        per_position.mean(dim=(1, 2)).sum().backward()
        return logits, captures, per_position, y

    def update(self) -> torch.Tensor:
        """Step's second half: each member's gradient clipping and one AdamW step; the
        members' gradient norms before clipping (E,)."""
        norms = self.stacked.clip_gradients(self.shared.grad_clip)
        self.optimizer.step()
        return norms


def check_group(configs: Sequence[TrainConfig]) -> tuple[TrainConfig, ...]:
    """The configs of one ensemble: at least one, distinct, all with one ``group_key``."""
    configs = tuple(configs)
    if not configs:
        raise ParameterError("configs", "[]", "at least one TrainConfig")
    if len({group_key(c) for c in configs}) > 1:
        raise ParameterError(
            "configs",
            f"{len(configs)} configs",
            "runs of one shape: configs equal but for the seed, the objective and the dropout",
        )
    if len(set(configs)) != len(configs):
        raise ParameterError("configs", "a repeated config", "distinct configs")
    return configs


def train_ensemble(
    configs: Sequence[TrainConfig],
    corpus: Corpus,
    work_dirs: Sequence[str | os.PathLike] | None = None,
    *,
    device: str = "auto",
    progress: bool = True,
) -> list[TrainResult]:
    """Train ``configs`` (one ``group_key``) as one stacked model; one result per config.

    With ``work_dirs`` (one per config), each member appends its logged tables to its
    folder as its solo run would, and every ``checkpoint_interval`` steps and on Ctrl-C
    writes the checkpoint its solo run would write there (its own weights, optimizer
    moments, sampler, random generator states and objective state), so an interrupted
    group resumes member by member through ``training.train``.
    """
    configs = check_group(configs)
    if work_dirs is not None and len(work_dirs) != len(configs):
        raise ParameterError(
            "work_dirs", f"{len(work_dirs)} folders", f"{len(configs)}, one per config"
        )
    for config in configs:
        if config.data_sha256 != corpus.sha256:
            raise ValueError(
                f"invalid corpus: its sha256 {corpus.sha256} differs from the config's "
                f"data_sha256={config.data_sha256}"
            )
    dev = resolve_device(device)
    with training_device(dev):
        folders = [None] * len(configs) if work_dirs is None else [Path(w) for w in work_dirs]
        logs = [RunLogs(folder) for folder in folders]
        try:
            for member in logs:
                member.reset()  # a group starts from step 0 (rows of an earlier try dropped)
            return _train_ensemble(configs, corpus, folders, logs, dev, progress)
        finally:
            for member in logs:
                member.close(raise_errors=False)  # on success already closed (and raised)


def _train_ensemble(
    configs: tuple[TrainConfig, ...],
    corpus: Corpus,
    folders: Sequence[Path | None],
    logs: Sequence[RunLogs],
    dev: torch.device,
    progress: bool,
) -> list[TrainResult]:
    group = StackedGroup(configs, corpus, dev)
    shared, corpus, E, V = group.shared, group.corpus, group.size, group.vocab_size
    stacked, optimizer, samplers, rng = group.stacked, group.optimizer, group.samplers, group.rng
    models, objectives, objective_states = group.models, group.objectives, group.objective_states
    split_head = group.split_head
    record = device_record(dev)
    tokens = [TokenLossLog(V, dev, member["train_tokens"]) for member in logs]
    scenario_logs = [ScenarioLog() for _ in configs]
    windows = [Window(dev) for _ in configs]

    def evaluate(at: int) -> None:
        for e, model in enumerate(models):
            stacked.copy_member_into(e, model)
            frame = evaluate_run(model, corpus, shared, dev, at)
            frame.insert(0, "step", at)
            logs[e]["eval_tokens"].append_frame(frame)

    step = 0
    started = time.perf_counter()

    def checkpoint() -> list[Path]:
        paths = []
        for e, config in enumerate(configs):
            folder = folders[e]
            if folder is None:
                continue
            folder.mkdir(parents=True, exist_ok=True)
            model = stacked.copy_member_into(e, models[e])
            with rng.member(e):  # the checkpoint records the member's generator states
                state = checkpoint_state(
                    model=model,
                    optimizer_state=stacked.member_optimizer_state(optimizer, e, model, config),
                    sampler=samplers[e], device=dev, step=step,
                    elapsed=time.perf_counter() - started, tokens=tokens[e], window=windows[e],
                    objective_state=objective_states[e], config=config, logs=logs[e],
                    record=record,
                )  # fmt: skip
            _save_atomic(state, folder / CHECKPOINT)
            paths.append(folder / CHECKPOINT)
        return paths

    evaluate(0)
    bar = tqdm(total=shared.max_steps, desc=f"ensemble of {E}", unit="step",
               disable=not progress, mininterval=1.0, leave=False)  # fmt: skip
    at_boundary = True
    try:
        with _deferred_interrupt() as interrupt:
            while step < shared.max_steps:
                at_boundary = False
                lr = learning_rate(step, shared)  # what forward_backward sets
                k = shared.scenario_interval
                logged = k > 0 and (step + 1) % k == 0
                logits, captures, per_position, y = group.forward_backward(step, capture=logged)
                means = per_position.detach().mean(dim=(1, 2))
                matrices = stacked.token_matrices()
                if captures is not None:
                    rows = joined_members(matrices)
                    grads = joined_members(tuple(w.grad for w in matrices))
                    exp_avg_before, adam = _member_adam(optimizer, matrices)
                    for e, cap in enumerate(captures):
                        scenario_logs[e].before_step(step + 1, cap, y[e], rows[e], grad=grads[e],
                                                     untied=not stacked.tied)  # fmt: skip
                norms = group.update()
                if captures is not None:
                    states = [optimizer.state[w] for w in matrices]
                    exp_avg_sq = torch.cat([s["exp_avg_sq"] for s in states], dim=-1)
                    adam_step = int(states[0]["step"])
                    rows = joined_members(matrices)
                    grads = joined_members(tuple(w.grad for w in matrices))
                    for e in range(E):
                        member = dataclasses.replace(
                            adam, exp_avg_before=None if exp_avg_before is None
                            else exp_avg_before[e],
                        )  # fmt: skip
                        scenario_logs[e].after_step(rows[e], lr, shared.weight_decay, member,
                                                    exp_avg_sq[e], adam_step, grads[e])  # fmt: skip
                        logs[e]["scenarios"].append_records(scenario_logs[e].records)
                        scenario_logs[e].records.clear()
                with torch.no_grad():
                    values = per_position.detach()
                    plain = logits[0] if split_head else logits
                    ce = full_cross_entropy(plain.detach(), y)
                    for e, objective in enumerate(objectives):
                        # as training_step logs it: CE's own values are its CE
                        ce_e = values[e] if isinstance(objective, CrossEntropy) else ce[e]
                        tokens[e].add(y[e], ce_e, values[e])
                        windows[e].add(means[e], ce_e.mean())
                step += 1
                bar.update(1)
                if step % shared.log_interval == 0 or step == shared.max_steps:
                    grad_norms = norms.tolist()
                    shown = []
                    for e in range(E):
                        tokens[e].flush(step)
                        loss, ce_mean = windows[e].means()
                        windows[e].reset()
                        shown.append(loss)
                        logs[e]["train_log"].append(
                            dict(step=[step], lr=[lr], loss=[loss], ce=[ce_mean],
                                 grad_norm=[grad_norms[e]])
                        )  # fmt: skip
                    bar.set_postfix(loss=f"{sum(shown) / E:.3f}")
                if step % shared.eval_interval == 0 or step == shared.max_steps:
                    evaluate(step)
                at_boundary = True
                if interrupt["raised"]:
                    paths = checkpoint()
                    raise TrainingInterrupted(
                        step, shared.max_steps, paths[0].parent if paths else None,
                        interrupt["signal"],
                    )  # fmt: skip
                if step % shared.checkpoint_interval == 0 and step < shared.max_steps:
                    checkpoint()
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:
        if at_boundary and step > 0:
            paths = checkpoint()
            raise TrainingInterrupted(
                step, shared.max_steps, paths[0].parent if paths else None
            ) from None
        raise
    finally:
        bar.close()

    seconds = time.perf_counter() - started
    results = []
    for e in range(E):
        model = stacked.copy_member_into(e, models[e]).eval()
        tables = logs[e].frames()
        logs[e].close()  # every row is on disk too (a failed write raises here)
        results.append(
            TrainResult(
                model=model,
                train_log=tables["train_log"],
                train_tokens=tables["train_tokens"],
                eval_tokens=tables["eval_tokens"],
                scenarios=tables["scenarios"],
                seconds=seconds,
                device=str(dev),
                device_record=record,
            )
        )
    return results


def joined_members(tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``scenarios.joined`` for stacked tensors (E, V, d): each member's rows of the
    matrices end to end, (E, V, k d)."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=-1)


__all__ = [
    "CUDA_ENSEMBLE",
    "MemberRNG",
    "MemberView",
    "StackedGPT",
    "check_group",
    "default_ensemble",
    "ensemble_groups",
    "group_key",
    "joined_members",
    "member_batches",
    "member_losses",
    "train_ensemble",
]
