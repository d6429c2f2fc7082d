"""Training: the validated TrainConfig and the loop that turns it into a model.

The loop is nanoGPT's (AdamW, linear warmup then cosine decay, gradient
clipping) with what the study needs on top: the objective can be HNS at any
``layout``; every ``log_interval`` steps the mean training loss of every
target token is recorded; every ``eval_interval`` steps the whole validation
split is evaluated; and a checkpoint with every RNG state makes an interrupted
run resume to exactly the same weights.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .corpus import CORPUS_SHA256, BlockSampler, Corpus
from .evaluation import evaluate_split
from .losses import check_layout, hns_cross_entropy
from .model import GPT, GPTConfig
from .scenarios import ScenarioLog
from .scenarios import forward as forward_pass
from .validation import check_choice, check_float, check_int

CHECKPOINT = "checkpoint.pt"
LAYOUT_SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run's numbers (the device aside).

    ``bilingual`` doubles the vocabulary (a second alphabet, ids + vocab_size);
    ``p_low`` is the probability that a sampled block is written in it: 0 for a
    single language, 0.02 for the bilingual simulation, 1 for a model trained on
    the low-resource language only. ``layout = inf`` is plain cross-entropy.
    ``layout_schedule`` 'linear' or 'cosine' moves the layout from ``layout`` at
    the first step to ``layout_end`` at the last (both finite).
    """

    # model
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = True
    # data
    bilingual: bool = False
    p_low: float = 0.0
    # optimization
    batch_size: int = 12
    max_steps: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # objective
    layout: float = math.inf
    layout_schedule: str = "constant"
    layout_end: float = math.inf
    seed: int = 0
    # what is recorded (changes the stored tables, not the weights)
    eval_interval: int = 250
    log_interval: int = 10
    checkpoint_interval: int = 500
    scenario_interval: int = 0
    # the bytes the run was trained on
    data_sha256: str = CORPUS_SHA256

    def __post_init__(self) -> None:
        GPTConfig(
            vocab_size=1,
            block_size=self.block_size,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            dropout=self.dropout,
            bias=self.bias,
        )  # validates the model sizes
        check_choice("bias", self.bias, (True, False))
        check_choice("bilingual", self.bilingual, (True, False))
        check_float("p_low", self.p_low, 0.0, 1.0)
        if not self.bilingual and self.p_low != 0.0:
            raise ValueError(
                f"invalid p_low={self.p_low!r}: expected 0.0 when bilingual=False "
                "(a second language needs the doubled vocabulary)"
            )
        for name in ("batch_size", "max_steps"):
            check_int(name, getattr(self, name), 1)
        for name in ("warmup_steps", "seed", "scenario_interval"):
            check_int(name, getattr(self, name), 0)
        for name in ("eval_interval", "log_interval", "checkpoint_interval"):
            check_int(name, getattr(self, name), 1)
        check_float("learning_rate", self.learning_rate, 0.0, min_inclusive=False)
        check_float("min_lr", self.min_lr, 0.0, self.learning_rate)
        check_float("beta1", self.beta1, 0.0, 1.0)
        check_float("beta2", self.beta2, 0.0, 1.0)
        check_float("weight_decay", self.weight_decay, 0.0)
        check_float("grad_clip", self.grad_clip, 0.0, min_inclusive=False, allow_inf=True)
        check_layout(self.layout)
        check_choice("layout_schedule", self.layout_schedule, LAYOUT_SCHEDULES)
        if self.layout_schedule != "constant":
            for name in ("layout", "layout_end"):
                check_float(name, getattr(self, name), 0.0)  # finite: a schedule interpolates
        elif not math.isinf(self.layout_end):
            raise ValueError(
                f"invalid layout_end={self.layout_end!r}: expected inf unless "
                "layout_schedule is 'linear' or 'cosine'"
            )

    @property
    def setting(self) -> str:
        """'single', 'bilingual' or 'low_only'."""
        if not self.bilingual:
            return "single"
        return "low_only" if self.p_low == 1.0 else "bilingual"

    @property
    def objective(self) -> str:
        """'CE', 'HNS(layout=2)' or 'HNS(layout=8→2, cosine)', for labels."""
        if self.layout_schedule != "constant":
            return f"HNS(layout={self.layout:g}→{self.layout_end:g}, {self.layout_schedule})"
        return "CE" if math.isinf(self.layout) else f"HNS(layout={self.layout:g})"

    @property
    def family(self) -> str:
        """'CE' or 'HNS' (the objective without its layout)."""
        return "CE" if math.isinf(self.layout) else "HNS"

    def replace(self, **changes) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-safe field dict (inf written as the string 'inf')."""
        return {
            k: ("inf" if isinstance(v, float) and math.isinf(v) else v)
            for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"unknown TrainConfig fields {unknown}: expected a subset of {sorted(names)}"
            )
        return cls(**{k: (math.inf if v == "inf" else v) for k, v in data.items()})

    def gpt_config(self, base_vocab_size: int) -> GPTConfig:
        """The model config for a corpus with ``base_vocab_size`` symbols per alphabet."""
        return GPTConfig(
            vocab_size=base_vocab_size * (2 if self.bilingual else 1),
            block_size=self.block_size,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            dropout=self.dropout,
            bias=self.bias,
        )


def layout_at(step: int, config: TrainConfig) -> float:
    """The layout used at 0-based ``step``: constant, or interpolated from ``layout`` at
    step 0 to ``layout_end`` at the last step (linearly, or along half a cosine)."""
    if config.layout_schedule == "constant":
        return config.layout
    t = min(1.0, step / max(1, config.max_steps - 1))
    if config.layout_schedule == "cosine":
        t = 0.5 * (1.0 - math.cos(math.pi * t))
    return config.layout + (config.layout_end - config.layout) * t


def initial_model(config: TrainConfig, base_vocab_size: int) -> GPT:
    """The model a run of ``config`` starts from (the same weights ``train`` draws)."""
    torch.manual_seed(config.seed)
    return GPT(config.gpt_config(base_vocab_size))


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``min_lr`` at ``max_steps``."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / (config.warmup_steps + 1)
    span = max(1, config.max_steps - config.warmup_steps)
    ratio = min(1.0, (step - config.warmup_steps) / span)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return config.min_lr + coeff * (config.learning_rate - config.min_lr)


def make_optimizer(model: GPT, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (the tied embedding included), as nanoGPT."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.beta1, config.beta2))


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; other names are checked for availability."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = str(device).split(":")[0]
    check_choice("device", kind, ("auto", "cpu", "cuda", "mps"))
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"invalid device={device!r}: CUDA is not available on this machine")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"invalid device={device!r}: MPS is not available on this machine")
    return torch.device(device)


class TokenLossLog:
    """Sums of the per-target training loss between two logging points."""

    def __init__(self, vocab_size: int, device: torch.device) -> None:
        self.vocab_size, self.device = vocab_size, device
        self.records: list[dict] = []
        self._reset()

    def _reset(self) -> None:
        z = lambda: torch.zeros(self.vocab_size, dtype=torch.float64, device=self.device)
        self.count, self.ce, self.objective = z(), z(), z()

    def add(self, targets: torch.Tensor, ce: torch.Tensor, objective: torch.Tensor) -> None:
        """Accumulate per-position losses (any shape matching ``targets``)."""
        t = targets.reshape(-1)
        n = self.vocab_size
        self.count += torch.bincount(t, minlength=n).to(torch.float64)
        self.ce += torch.bincount(t, weights=ce.reshape(-1).double(), minlength=n)
        self.objective += torch.bincount(t, weights=objective.reshape(-1).double(), minlength=n)

    def state_dict(self) -> dict:
        """Records and the partial sums since the last flush, for checkpoints."""
        return {"records": self.records, "sums": (self.count, self.ce, self.objective)}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state saved by ``state_dict``."""
        self.records = state["records"]
        self.count, self.ce, self.objective = (t.to(self.device) for t in state["sums"])

    def flush(self, step: int) -> None:
        """Record the sums since the last flush under ``step`` (tokens seen at least once)."""
        count, ce, obj = (v.cpu().tolist() for v in (self.count, self.ce, self.objective))
        for token in range(self.vocab_size):
            if count[token]:
                self.records.append(
                    {
                        "step": step,
                        "token": token,
                        "count": int(count[token]),
                        "ce_sum": ce[token],
                        "objective_sum": obj[token],
                    }
                )
        self._reset()


@dataclass
class TrainResult:
    """What a finished training run produced."""

    model: GPT
    train_log: pd.DataFrame  # step, lr, loss (objective), ce, grad_norm
    train_tokens: pd.DataFrame  # step, token, count, ce_sum, objective_sum
    eval_tokens: pd.DataFrame  # step, token, count, loss_sum, top1_sum, top5_sum, rr_sum
    scenarios: pd.DataFrame  # see scenarios.ScenarioLog (empty unless scenario_interval > 0)
    seconds: float
    device: str


@dataclass
class StepOutput:
    """Per-position losses (detached) and scalars of one optimization step."""

    loss: torch.Tensor  # the objective's mean
    objective: torch.Tensor  # per position, the objective actually minimized
    ce: torch.Tensor  # per position, the full-softmax cross-entropy
    grad_norm: torch.Tensor  # before clipping


def training_step(
    model: GPT,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    lr: float,
    scenario_log: ScenarioLog | None = None,
    step_number: int = 0,
    layout: float | None = None,
) -> StepOutput:
    """One AdamW step on the batch (x, y) with the config's objective.

    With a ``scenario_log``, hooks read the gradients the scenario split needs
    from this same backward pass and the log records the step; the numbers of
    the step are identical either way. ``layout`` defaults to ``config.layout``
    (the loop passes the scheduled value).
    """
    layout = config.layout if layout is None else layout
    for group in optimizer.param_groups:
        group["lr"] = lr
    model.train()
    logits, capture = forward_pass(model, x, capture=scenario_log is not None)
    per_pos = hns_cross_entropy(logits, y, layout, reduction="none")
    loss = per_pos.mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if capture is not None:
        scenario_log.before_step(step_number, capture, y, model.embedding)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    if capture is not None:
        scenario_log.after_step(model.embedding, lr, config.weight_decay)
    with torch.no_grad():
        objective = per_pos.detach()
        if math.isinf(layout):
            ce = objective
        else:
            V = logits.size(-1)
            ce = F.cross_entropy(logits.detach().view(-1, V), y.view(-1), reduction="none")
            ce = ce.view(y.shape)
    return StepOutput(loss.detach(), objective, ce, grad_norm)


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(
    config: TrainConfig,
    corpus: Corpus,
    work_dir: str | os.PathLike | None = None,
    *,
    device: str = "auto",
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult | None:
    """Train a model for ``config`` on ``corpus``.

    With a ``work_dir``, a checkpoint is written there every
    ``checkpoint_interval`` steps (and on Ctrl-C) and a run that finds one
    resumes from it. ``stop_after`` ends the call after that many steps without
    finishing (returns None), as an interruption would; it exists for tests.
    """
    if config.data_sha256 != corpus.sha256:
        raise ValueError(
            f"invalid corpus: its sha256 {corpus.sha256} differs from the config's "
            f"data_sha256={config.data_sha256}"
        )
    dev = resolve_device(device)
    work = Path(work_dir) if work_dir is not None else None
    V = corpus.vocab_size * (2 if config.bilingual else 1)

    model = initial_model(config, corpus.vocab_size).to(dev)
    optimizer = make_optimizer(model, config)
    sampler = BlockSampler(
        corpus.train,
        config.block_size,
        config.batch_size,
        config.seed,
        corpus.vocab_size,
        p_low=config.p_low,
    )
    tokens = TokenLossLog(V, dev)
    scenario_log = ScenarioLog()
    train_log: list[dict] = []
    # running sums of the objective and the CE since the last log point
    window = {"loss": 0.0, "ce": 0.0, "n": 0}
    eval_frames: list[pd.DataFrame] = []
    step, elapsed = 0, 0.0

    ckpt_path = work / CHECKPOINT if work is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=dev, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["rng_cpu"])
        if dev.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], dev)
        step, elapsed = state["step"], state["elapsed"]
        train_log, window = state["train_log"], state["window"]
        tokens.load_state_dict(state["train_tokens"])
        scenario_log.records = state["scenarios"]
        eval_frames = [pd.DataFrame(state["eval_tokens"])] if state["eval_tokens"] else []

    def evaluate(at: int) -> pd.DataFrame:
        frame = evaluate_split(model, corpus.val, corpus.vocab_size, config.bilingual, dev)
        frame.insert(0, "step", at)
        eval_frames.append(frame)
        return frame

    def checkpoint() -> None:
        if ckpt_path is None:
            return
        work.mkdir(parents=True, exist_ok=True)
        evals = pd.concat(eval_frames) if eval_frames else pd.DataFrame()
        _save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "sampler": sampler.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
                "step": step,
                "elapsed": elapsed,
                "train_log": train_log,
                "train_tokens": tokens.state_dict(),
                "window": dict(window),
                "scenarios": scenario_log.records,
                "eval_tokens": evals.to_dict("list"),
                "config": config.to_dict(),
            },
            ckpt_path,
        )

    if step == 0:
        evaluate(0)
    bar = tqdm(
        total=config.max_steps,
        initial=step,
        desc=config.objective,
        unit="step",
        disable=not progress,
        mininterval=1.0,
        leave=False,
    )
    steps_this_call = 0
    started = time.perf_counter() - elapsed
    at_boundary = True  # False while a step (sampling to logging) is half done
    try:
        while step < config.max_steps:
            if stop_after is not None and steps_this_call >= stop_after:
                return None
            at_boundary = False
            lr = learning_rate(step, config)
            x, y = (t.to(dev) for t in sampler.sample())
            k = config.scenario_interval
            logged = k > 0 and (step + 1) % k == 0
            out = training_step(
                model,
                optimizer,
                x,
                y,
                config,
                lr,
                scenario_log=scenario_log if logged else None,
                step_number=step + 1,
                layout=layout_at(step, config),
            )
            tokens.add(y, out.ce, out.objective)
            loss, grad_norm = out.loss, out.grad_norm
            ce_pos = out.ce
            window["loss"] += loss.item()
            window["ce"] += ce_pos.mean().item()
            window["n"] += 1
            step += 1
            steps_this_call += 1
            bar.update(1)
            if step % config.log_interval == 0 or step == config.max_steps:
                tokens.flush(step)
                n = window["n"]
                train_log.append(
                    {
                        "step": step,
                        "lr": lr,
                        "loss": window["loss"] / n,
                        "ce": window["ce"] / n,
                        "grad_norm": float(grad_norm),
                    }
                )
                bar.set_postfix(loss=f"{window['loss'] / n:.3f}")
                window = {"loss": 0.0, "ce": 0.0, "n": 0}
            if step % config.eval_interval == 0 or step == config.max_steps:
                frame = evaluate(step)
                val = frame["loss_sum"].sum() / max(1, frame["count"].sum())
                shown = {"loss": f"{train_log[-1]['loss']:.3f}"} if train_log else {}
                bar.set_postfix(**shown, val=f"{val:.3f}")
            elapsed = time.perf_counter() - started
            if step % config.checkpoint_interval == 0 and step < config.max_steps:
                checkpoint()
            at_boundary = True
    except KeyboardInterrupt:
        # Keep what was done, so that the next call resumes from here; a step
        # cut in half is not saved (it is redone from the last checkpoint).
        if at_boundary:
            checkpoint()
        raise
    finally:
        bar.close()

    return TrainResult(
        model=model.eval(),
        train_log=pd.DataFrame(train_log),
        train_tokens=pd.DataFrame(tokens.records),
        eval_tokens=pd.concat(eval_frames, ignore_index=True),
        scenarios=pd.DataFrame(scenario_log.records, columns=list(ScenarioLog.COLUMNS)),
        seconds=time.perf_counter() - started,
        device=str(dev),
    )
