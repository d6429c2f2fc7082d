"""Ensembles: several runs of one shape trained as one batched model.

Runs that differ only in their seed and objective have parameters of the same
shapes. Stacked along a leading member axis, E such models train as one: every
linear layer is one batched matrix product, attention runs over E x B sequences,
and the logits of all members come out of one product with the stacked tied
embeddings. Each member keeps what makes it its own run:

- its initial weights, drawn exactly as its solo run draws them;
- its data stream (its own ``BlockSampler``, seeded by its seed);
- its objective (each member's loss is computed on its own logits);
- its gradient clipping (the norm is taken over its own gradients only);
- its AdamW state (AdamW is elementwise: one optimizer over the stacked tensors is E
  independent optimizers with the same hyperparameters).

The numbers are the solo run's up to floating-point rounding: a batched product adds
in another order than a single one, and training carries the difference along
(``tests/test_ensemble.py`` measures it against solo runs and states the tolerance).
A group is deterministic: the same members give the same numbers. Grouping is an
execution choice, not part of the run id; each run's ``config.json`` records it.

Scenario logging works as in a solo run (the hooks read each member's slice of the
batched gradients). What cannot be batched trains solo (``group_key`` returns None):
dropout (a member's masks would not be its solo run's random draws), untied
embeddings (a stacked model holds one matrix per member) and objectives whose loss
reads more of the model than its embedding, or keeps state (``Objective.batchable``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .corpus import BlockSampler, Corpus
from .evaluation import evaluate_split
from .model import GPT
from .objectives import CrossEntropy, LossContext, full_cross_entropy
from .scenarios import Capture, ScenarioLog, adam_state_before, adam_step_of
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
    initial_model,
    learning_rate,
    make_optimizer,
    resolve_device,
    training_corpus,
    training_device,
    vocab_size,
)
from .validation import ParameterError, check_int


def group_key(config: TrainConfig) -> TrainConfig | None:
    """What runs must share to train in one ensemble (their config with the seed and
    the objective set aside), or None for a run that trains solo."""
    if config.model.dropout > 0 or not config.model.tie_embeddings:
        return None
    if not config.objective.batchable:
        return None
    return dataclasses.replace(config, seed=0, objective=CrossEntropy())


def ensemble_groups(configs: Sequence[TrainConfig], size: int) -> list[tuple[TrainConfig, ...]]:
    """``configs`` in groups of at most ``size`` runs that can share an ensemble (in the
    order of their first member); runs that train solo are groups of one."""
    size = check_int("ensemble", size, 1)
    buckets: dict[object, list[list[TrainConfig]]] = {}
    order: list[list[TrainConfig]] = []
    for config in configs:
        key = group_key(config) if size > 1 else None
        if key is None:
            order.append([config])
            continue
        chunks = buckets.setdefault(key, [])
        if not chunks or len(chunks[-1]) == size:
            chunks.append([])
            order.append(chunks[-1])
        chunks[-1].append(config)
    return [tuple(group) for group in order]


@dataclass(frozen=True)
class MemberView:
    """What an objective's ``LossContext.model`` offers inside an ensemble: the member's
    own tied embedding (a view into the stacked tensor, so gradients reach it)."""

    embedding: torch.Tensor


class StackedGPT:
    """E GPTs of one config as stacked parameters (member axis first) and a batched
    forward pass that computes what each member's ``GPT.forward`` computes."""

    def __init__(self, models: Sequence[GPT]) -> None:
        self.config = models[0].config
        self.vocab_size = models[0].vocab_size
        self.names = [name for name, _ in models[0].named_parameters()]
        self.solo_dims = {name: p.dim() for name, p in models[0].named_parameters()}
        members = [dict(m.named_parameters()) for m in models]
        self.params = {
            name: torch.nn.Parameter(torch.stack([m[name].detach() for m in members]))
            for name in self.names
        }
        self.size = len(models)

    @property
    def embedding(self) -> torch.Tensor:
        """The stacked tied embeddings (E, V, n_embd)."""
        return self.params["transformer.wte.weight"]

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

    def forward(
        self, idx: torch.Tensor, capture: bool = False
    ) -> tuple[torch.Tensor, list[Capture] | None]:
        """Logits (E, B, T, V) of each member's tokens ``idx`` (E, B, T); with ``capture``
        also one ``scenarios.Capture`` per member, filled in by the next backward (what
        ``scenarios.forward`` gives for a solo model)."""
        E, B, T = idx.shape
        C, H = self.config.n_embd, self.config.n_head
        W = self.embedding
        V = W.size(1)
        # One lookup for every member: member e's row j is row e * V + j of the stack.
        offsets = (torch.arange(E, device=idx.device) * V).view(E, 1, 1)
        tok_emb = F.embedding(idx + offsets, W.reshape(E * V, C))
        x = tok_emb + self.params["transformer.wpe.weight"][:, :T].unsqueeze(1)
        x = x.reshape(E, B * T, C)
        for layer in range(self.config.n_layer):
            pre = f"transformer.h.{layer}."
            q, k, v = self._linear(self._layer_norm(x, pre + "ln_1"), pre + "attn.c_attn").split(
                C, dim=2
            )
            # The E x B sequences attend independently: one batch for the kernel.
            q, k, v = (t.reshape(E * B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            y = y.transpose(1, 2).reshape(E, B * T, C)
            x = x + self._linear(y, pre + "attn.c_proj")
            h = F.gelu(self._linear(self._layer_norm(x, pre + "ln_2"), pre + "mlp.c_fc"))
            x = x + self._linear(h, pre + "mlp.c_proj")
        x = self._layer_norm(x, "transformer.ln_f")
        logits = torch.bmm(x, W.transpose(1, 2)).view(E, B, T, V)
        if not capture:
            return logits, None
        captures = [Capture(tokens=idx[e].reshape(-1), hidden=x[e].detach()) for e in range(E)]

        def keep(name: str, width: int):
            def hook(grad: torch.Tensor) -> None:
                for e, cap in enumerate(captures):
                    cap.grads[name] = grad[e].detach().reshape(-1, width)

            return hook

        tok_emb.register_hook(keep("lookup", C))
        logits.register_hook(keep("logits", V))
        return logits, captures

    def clip_gradients(self, max_norm: float) -> torch.Tensor:
        """Clip each member's gradient to ``max_norm`` as ``clip_grad_norm_`` would clip
        its solo model's; returns the (E,) norms before clipping."""
        grads = [self.params[n].grad for n in self.names]
        squares = torch.stack([g.pow(2).reshape(self.size, -1).sum(1) for g in grads]).sum(0)
        norms = squares.sqrt()
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))
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


def check_group(configs: Sequence[TrainConfig]) -> tuple[TrainConfig, ...]:
    """The configs of one ensemble: at least one, distinct, all with one ``group_key``."""
    configs = tuple(configs)
    if not configs:
        raise ParameterError("configs", "[]", "at least one TrainConfig")
    keys = {group_key(c) for c in configs}
    if None in keys or len(keys) > 1:
        raise ParameterError(
            "configs",
            f"{len(configs)} configs",
            "runs that differ only in seed and objective, without dropout",
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
    """Train ``configs`` (one ``group_key``) as one batched model; one result per config.

    With ``work_dirs`` (one per config), each member appends its logged tables to its
    folder as its solo run would, and every ``checkpoint_interval`` steps and on Ctrl-C
    writes the checkpoint its solo run would write there, so an interrupted group resumes
    member by member through ``training.train``.
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
    shared = configs[0]  # every field but seed and objective is shared
    corpus = training_corpus(corpus, shared)
    E, V = len(configs), vocab_size(shared, corpus.vocab_size)
    models = [initial_model(c, corpus.vocab_size).to(dev) for c in configs]
    stacked = StackedGPT(models)
    optimizer = stacked.optimizer(shared)
    samplers = [
        BlockSampler(corpus.train, shared.model.block_size, shared.batch_size, c.seed,
                     corpus.vocab_size, p_low=c.p_low)
        for c in configs
    ]  # fmt: skip
    record = device_record(dev)
    tokens = [TokenLossLog(V, dev, member["train_tokens"]) for member in logs]
    scenario_logs = [ScenarioLog() for _ in configs]
    windows = [Window(dev) for _ in configs]
    log_priors = [corpus.log_prior(c.bilingual, c.p_low).to(dev) for c in configs]

    def evaluate(at: int) -> None:
        for e, model in enumerate(models):
            stacked.copy_member_into(e, model)
            frame = evaluate_split(model, corpus.val, corpus.vocab_size, shared.bilingual, dev)
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
            state = checkpoint_state(
                model=model, optimizer_state=stacked.member_optimizer_state(optimizer, e, model,
                                                                            config),
                sampler=samplers[e], device=dev, step=step,
                elapsed=time.perf_counter() - started, tokens=tokens[e], window=windows[e],
                objective_state=None, config=config, logs=logs[e], record=record,
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
                lr = learning_rate(step, shared)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batches = [s.sample() for s in samplers]
                x = torch.stack([b[0] for b in batches]).to(dev)
                y = torch.stack([b[1] for b in batches]).to(dev)
                k = shared.scenario_interval
                logged = k > 0 and (step + 1) % k == 0
                logits, captures = stacked.forward(x, capture=logged)
                per_position = []
                for e, config in enumerate(configs):
                    context = LossContext(step=step, max_steps=config.max_steps,
                                          model=MemberView(stacked.embedding[e]),
                                          log_prior=log_priors[e])  # fmt: skip
                    per_position.append(config.objective.loss(logits[e], y[e], context))
                means = torch.stack([p.mean() for p in per_position])
                optimizer.zero_grad(set_to_none=True)
                # Each member's parameters get the gradient of its own mean loss only.
                means.sum().backward()
                if captures is not None:
                    W = stacked.embedding
                    adam = adam_state_before(optimizer, W)
                    for e, cap in enumerate(captures):
                        scenario_logs[e].before_step(step + 1, cap, y[e], W[e], grad=W.grad[e])
                norms = stacked.clip_gradients(shared.grad_clip)
                optimizer.step()
                if captures is not None:
                    exp_avg_sq, adam_step = adam_step_of(optimizer, W)
                    for e in range(E):
                        before = adam.exp_avg_before
                        member = dataclasses.replace(
                            adam, exp_avg_before=None if before is None else before[e]
                        )
                        scenario_logs[e].after_step(
                            W[e], lr, shared.weight_decay, member, exp_avg_sq[e], adam_step,
                            W.grad[e],
                        )  # fmt: skip
                        logs[e]["scenarios"].append_records(scenario_logs[e].records)
                        scenario_logs[e].records.clear()
                with torch.no_grad():
                    for e, config in enumerate(configs):
                        objective = per_position[e].detach()
                        ce = (objective if isinstance(config.objective, CrossEntropy)
                              else full_cross_entropy(logits[e].detach(), y[e]))  # fmt: skip
                        tokens[e].add(y[e], ce, objective)
                        windows[e].add(means[e], ce.mean())
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
                        step, shared.max_steps, paths[0].parent if paths else None
                    )
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
