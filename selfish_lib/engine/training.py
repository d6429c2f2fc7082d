"""Training: the validated TrainConfig and the loop that turns it into a model.

The loop is nanoGPT's (AdamW, linear warmup then cosine decay, gradient
clipping) with what the study needs on top: the objective is any registered
one (``engine.objectives``: CE, HNS at any layout, ...); every
``log_interval`` steps the mean training loss of every target token is
recorded; every ``eval_interval`` steps the whole validation split is
evaluated; and a checkpoint with every RNG state makes an interrupted run
resume to exactly the same weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from .corpus import CHARACTERS, CORPUS_SHA256, BlockSampler, Corpus, check_tokenizer
from .evaluation import evaluate_split
from .model import GPT, ModelConfig
from .objectives import (
    CrossEntropy,
    HardNegatives,
    LossContext,
    Objective,
    check_objective,
    full_cross_entropy,
    objective_for_layout,
    objective_from_dict,
)
from .scenarios import ScenarioLog, adam_state_before, adam_step_of, joined, token_matrices
from .scenarios import forward as forward_pass
from .validation import ParameterError, check_choice, check_float, check_int

CHECKPOINT = "checkpoint.pt"
SPLITS = ("validation", "tuning")
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))
# The objective's fields before objectives were objects; still accepted by ``flat``.
LEGACY_OBJECTIVE_FIELDS = ("layout", "layout_schedule", "layout_end")
FLOAT_FIELDS = (
    "p_low", "learning_rate", "min_lr", "beta1", "beta2", "weight_decay", "grad_clip"
)  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run's numbers (the device aside).

    ``model`` holds the sizes, ``objective`` the loss a step minimises (see
    ``engine.objectives``). ``bilingual`` doubles the vocabulary (a second alphabet,
    ids + vocab_size); ``p_low`` is the probability that a sampled block is written
    in it: 0 for a single language, 0.02 for the bilingual simulation, 1 for a model
    trained on the low-resource language only.

    Values are normalised to their field's type where they enter (2 -> 2.0 for a
    float field, 1 -> True for a bool), so one experiment has one config and one id.
    """

    model: ModelConfig = ModelConfig()
    objective: Objective = CrossEntropy()
    # data: 'char' (one token per character) or 'bpe-V' (V BPE subwords over the
    # characters, learnt from the training split: ``Corpus.with_tokenizer``)
    tokenizer: str = CHARACTERS
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
    seed: int = 0
    # what is recorded (changes the stored tables, not the weights)
    eval_interval: int = 250
    log_interval: int = 10
    checkpoint_interval: int = 500
    scenario_interval: int = 0
    # the bytes the run was trained on
    data_sha256: str = CORPUS_SHA256
    # 'validation': train on the training split, score on the validation split (the
    # reported runs); 'tuning': train on the training split without its tail and score
    # on that tail (``Corpus.for_tuning``), where hyperparameters are chosen
    split: str = "validation"

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelConfig):
            raise ParameterError("model", self.model, "a ModelConfig")
        check_objective(self.objective)
        object.__setattr__(self, "tokenizer", check_tokenizer("tokenizer", self.tokenizer))
        check_choice("bilingual", self.bilingual, (True, False))
        object.__setattr__(self, "bilingual", bool(self.bilingual))
        check_float("p_low", self.p_low, 0.0, 1.0)
        if not self.bilingual and self.p_low != 0.0:
            raise ParameterError(
                "p_low",
                self.p_low,
                "0.0 when bilingual=False (a second language needs the doubled vocabulary)",
            )
        for name in ("batch_size", "max_steps"):
            check_int(name, getattr(self, name), 1)
        for name in ("warmup_steps", "seed", "scenario_interval"):
            check_int(name, getattr(self, name), 0)
        for name in ("eval_interval", "log_interval", "checkpoint_interval"):
            check_int(name, getattr(self, name), 1)
        check_float("learning_rate", self.learning_rate, 0.0, min_inclusive=False)
        check_float("min_lr", self.min_lr, 0.0, self.learning_rate)
        # AdamW divides by (1 - beta ** t): a beta of 1 never moves the weights.
        for name in ("beta1", "beta2"):
            value = check_float(name, getattr(self, name), 0.0, 1.0)
            if value >= 1.0:
                raise ParameterError(name, value, "a real number >= 0.0 and < 1.0")
        check_float("weight_decay", self.weight_decay, 0.0)
        check_float("grad_clip", self.grad_clip, 0.0, min_inclusive=False, allow_inf=True)
        check_choice("split", self.split, SPLITS)
        if not isinstance(self.data_sha256, str) or len(self.data_sha256) != 64:
            raise ParameterError("data_sha256", self.data_sha256, "a sha256 of 64 hex digits")
        for name in FLOAT_FIELDS:
            object.__setattr__(self, name, float(getattr(self, name)))

    @classmethod
    def flat(cls, **fields) -> TrainConfig:
        """A config from flat fields: the model sizes by name (n_layer=4, ...) and the
        objective as ``objective=`` or through the HNS fields of earlier versions
        (``layout``, ``layout_schedule``, ``layout_end``; an infinite constant layout is
        cross-entropy). Unknown names are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        allowed = names | set(MODEL_FIELDS) | set(LEGACY_OBJECTIVE_FIELDS)
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise ParameterError(
                "TrainConfig field", unknown[0], "one of " + ", ".join(sorted(allowed))
            )
        sizes = {k: fields.pop(k) for k in MODEL_FIELDS if k in fields}
        if sizes:
            base = fields.pop("model", ModelConfig())
            fields["model"] = dataclasses.replace(base, **sizes)
        legacy = {k: fields.pop(k) for k in LEGACY_OBJECTIVE_FIELDS if k in fields}
        if legacy:
            if "objective" in fields:
                raise ParameterError(
                    "objective", fields["objective"], "either objective= or layout fields, not both"
                )
            fields["objective"] = objective_for_layout(**legacy)
        return cls(**fields)

    @property
    def label(self) -> str:
        """The objective's label, with 'untied' for untied embeddings and the tokenizer
        when it is not characters (plans, progress bars)."""
        untied = "" if self.model.tie_embeddings else ", untied"
        subwords = "" if self.tokenizer == CHARACTERS else f", {self.tokenizer}"
        return self.objective.label + untied + subwords

    @property
    def setting(self) -> str:
        """'single', 'bilingual' or 'low_only'."""
        if not self.bilingual:
            return "single"
        return "low_only" if self.p_low == 1.0 else "bilingual"

    def replace(self, **changes) -> TrainConfig:
        """A copy with some fields changed (validated again); takes ``flat``'s names."""
        if not set(changes) & (set(MODEL_FIELDS) | set(LEGACY_OBJECTIVE_FIELDS)):
            return dataclasses.replace(self, **changes)
        current = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if set(changes) & set(LEGACY_OBJECTIVE_FIELDS):
            current.pop("objective")
            legacy = {}
            if isinstance(self.objective, HardNegatives):
                legacy = dict(
                    layout=self.objective.layout,
                    layout_schedule=self.objective.schedule,
                    layout_end=self.objective.layout_end,
                )
            changes = {**legacy, **changes}
        return TrainConfig.flat(**{**current, **changes})

    def to_dict(self) -> dict:
        """JSON-safe nested form: the model sizes, the objective, the other fields
        (inf written as the string 'inf')."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("model", "objective"):
                value = value.to_dict()
            elif isinstance(value, float) and math.isinf(value):
                value = "inf"
            out[f.name] = value
        return out

    def flat_dict(self) -> dict:
        """The fields as earlier versions wrote them: model sizes and the HNS layout
        fields at top level (the run id is computed from this form)."""
        out = {k: v for k, v in self.to_dict().items() if k not in ("model", "objective")}
        return {**self.model.to_dict(), **out, **self.objective.canonical()}

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Inverse of ``to_dict``; also reads the flat form of earlier versions."""
        data = {k: (math.inf if v == "inf" else v) for k, v in data.items()}
        if isinstance(data.get("model"), dict):
            data["model"] = ModelConfig(**data["model"])
        if isinstance(data.get("objective"), dict):
            data["objective"] = objective_from_dict(data["objective"])
        return cls.flat(**data)


def training_corpus(corpus: Corpus, config: TrainConfig) -> Corpus:
    """The corpus a run trains and is scored on: ``corpus`` under the config's tokenizer
    (any tokenizer of the same text may be passed), or its tuning view for
    ``split='tuning'``."""
    corpus = corpus.with_tokenizer(config.tokenizer)
    return corpus.for_tuning() if config.split == "tuning" else corpus


def initial_model(config: TrainConfig, base_vocab_size: int) -> GPT:
    """The model a run of ``config`` starts from (the same weights ``train`` draws)."""
    torch.manual_seed(config.seed)
    return GPT(config.model, vocab_size(config, base_vocab_size))


def vocab_size(config: TrainConfig, base_vocab_size: int) -> int:
    """The model's vocabulary: one alphabet, or two in bilingual runs."""
    return base_vocab_size * (2 if config.bilingual else 1)


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


DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; 'cpu', 'mps', 'cuda' or 'cuda:N' are
    checked to exist on this machine (ParameterError naming the device otherwise)."""
    allowed = "auto, cpu, mps, cuda or cuda:N with N a GPU index of this machine"
    if not isinstance(device, str):
        raise ParameterError("device", device, allowed)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind, _, index = device.partition(":")
    if kind not in DEVICE_KINDS or (index and (kind != "cuda" or not index.isdigit())):
        raise ParameterError("device", device, allowed)
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ParameterError("device", device, "a device of this machine (it has no CUDA)")
        if index and int(index) >= count:
            raise ParameterError("device", device, f"cuda:0 to cuda:{count - 1} (this machine)")
    if kind == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ParameterError("device", device, "a device of this machine (it has no MPS)")
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
        # index_add_ rather than bincount: bincount reads the largest id first, a device
        # sync on a GPU at every step.
        t = targets.reshape(-1)
        self.count.index_add_(0, t, torch.ones_like(t, dtype=torch.float64))
        self.ce.index_add_(0, t, ce.reshape(-1).double())
        self.objective.index_add_(0, t, objective.reshape(-1).double())

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


class Window:
    """Sums of the step losses (objective, CE) since the last log point, on the device.

    The sums are float64, as Python floats were before: the logged means are the same
    numbers, without a device-to-host copy at every step."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)
        self.n = 0

    def add(self, loss: torch.Tensor, ce: torch.Tensor) -> None:
        """Add one step's mean objective and mean CE."""
        self.sums[0] += loss.detach().double()
        self.sums[1] += ce.detach().double()
        self.n += 1

    def means(self) -> tuple[float, float]:
        """The mean objective and CE over the window (reads the device)."""
        loss, ce = self.sums.tolist()
        return loss / self.n, ce / self.n

    def reset(self) -> None:
        """Start a new window."""
        self.sums.zero_()
        self.n = 0

    def state_dict(self) -> dict:
        """The sums as plain numbers, for checkpoints."""
        loss, ce = self.sums.tolist()
        return {"loss": loss, "ce": ce, "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state saved by ``state_dict``."""
        self.sums = torch.tensor([state["loss"], state["ce"]], dtype=torch.float64,
                                 device=self.sums.device)  # fmt: skip
        self.n = int(state["n"])


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
    step: int = 0,
    log_prior: torch.Tensor | None = None,
    objective_state: dict | None = None,
) -> StepOutput:
    """One AdamW step on the batch (x, y) with the config's objective at 0-based ``step``.

    With a ``scenario_log``, hooks read the gradients the scenario split needs
    from this same backward pass and the log records the step (as ``step + 1``,
    the number of steps done); the numbers of the step are identical either way.
    ``objective_state`` is what a stateful objective carries from step to step
    (``Objective.initial_state``); None starts a fresh one.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    model.train()
    objective = config.objective
    if objective_state is None:
        objective_state = objective.initial_state(model.vocab_size, x.device)
    split = objective.split_head
    logits, capture = forward_pass(model, x, capture=scenario_log is not None, split_head=split)
    context = LossContext(step=step, max_steps=config.max_steps, model=model,
                          log_prior=log_prior, state=objective_state)  # fmt: skip
    if split:  # the hidden side's logits are the model's logits
        per_pos = objective.split_loss(logits[0], logits[1], y, context)
        logits = logits[0]
    else:
        per_pos = objective.loss(logits, y, context)
    loss = per_pos.mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if capture is not None:
        rows = token_matrices(model)
        grads = joined(tuple(w.grad for w in rows))
        scenario_log.before_step(step + 1, capture, y, joined(rows), grads, untied=len(rows) > 1)
        adam = adam_state_before(optimizer, rows)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    if capture is not None:
        exp_avg_sq, adam_step = adam_step_of(optimizer, rows)
        scenario_log.after_step(joined(rows), lr, config.weight_decay, adam, exp_avg_sq,
                                adam_step, joined(tuple(w.grad for w in rows)))  # fmt: skip
    with torch.no_grad():
        objective_values = per_pos.detach()
        # Every run is also logged with the full-softmax CE, so objectives compare.
        if isinstance(objective, CrossEntropy):
            ce = objective_values
        else:
            ce = full_cross_entropy(logits.detach(), y)
    return StepOutput(loss.detach(), objective_values, ce, grad_norm)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: the run stopped at a step boundary and, with a work
    folder, left a checkpoint there that the next call resumes from."""

    def __init__(self, step: int, max_steps: int, checkpoint: Path | None) -> None:
        self.step, self.max_steps, self.checkpoint = step, max_steps, checkpoint
        where = (
            f"checkpoint at step {step} of {max_steps} in {checkpoint}"
            if checkpoint
            else (f"stopped at step {step} of {max_steps} (no work folder: nothing kept)")
        )
        super().__init__(f"interrupted: {where}")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (unreadable, another config, bad step)."""


def _save_atomic(obj: dict, path: Path) -> None:
    """torch.save to a temporary name, then rename; a failed write says which file and why."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(obj, tmp)
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        # torch reports a full disk as a RuntimeError from its zip writer.
        free = shutil.disk_usage(path.parent).free
        reason = "no space left on the device" if free < (64 << 20) else str(exc).splitlines()[0]
        raise OSError(f"could not write the checkpoint {path}: {reason}") from None
    os.replace(tmp, path)


def load_checkpoint(path: Path, config: TrainConfig, device: torch.device) -> dict:
    """The state saved in ``path``, checked to belong to ``config`` and to be resumable:
    readable, with every field, the same config, and a step in 1..max_steps. Raises
    CheckpointError with the reason otherwise."""
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # truncated, random bytes, empty: torch raises many kinds
        raise CheckpointError(f"unreadable ({type(exc).__name__})") from None
    required = ("model", "optimizer", "sampler", "rng_cpu", "step", "elapsed", "config")
    if not isinstance(state, dict) or any(k not in state for k in required):
        raise CheckpointError("not a checkpoint of this project (fields missing)")
    try:
        saved = TrainConfig.from_dict(state["config"])
    except (ValueError, TypeError):
        raise CheckpointError("its config cannot be read") from None
    if saved != config:
        raise CheckpointError("it belongs to another config")
    step = state["step"]
    if not isinstance(step, int) or not 1 <= step <= config.max_steps:
        raise CheckpointError(f"its step {step!r} is outside 1..max_steps={config.max_steps}")
    return state


def _restore(state: dict, model, optimizer, sampler, device: torch.device) -> None:
    """Load a validated checkpoint into fresh objects; CheckpointError if it does not fit."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"its tensors do not fit this model ({first[:120]})") from None


@contextlib.contextmanager
def _deferred_interrupt():
    """While training, a first Ctrl-C only raises a flag that the loop reads at the next step
    boundary (so the checkpoint holds a whole step); a second one interrupts at once.
    Outside the main thread signals cannot be handled and Ctrl-C behaves as usual."""
    flag = {"raised": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["raised"]:
            raise KeyboardInterrupt
        flag["raised"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# CPU kernels split their sums between threads, and the split changes the last bits of
# the numbers: training on the CPU always uses this many threads, so that a run's
# numbers do not depend on the machine's cores or on how many runs train at once.
CPU_TRAINING_THREADS = 1


@contextlib.contextmanager
def cpu_training_threads(device: torch.device):
    """Run the block with ``CPU_TRAINING_THREADS`` intra-op threads on the CPU."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(CPU_TRAINING_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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
    On the CPU the run uses ``CPU_TRAINING_THREADS`` threads (see there).
    """
    with cpu_training_threads(resolve_device(device)):
        return _train(config, corpus, work_dir, device, progress, stop_after)


def _train(
    config: TrainConfig,
    corpus: Corpus,
    work_dir: str | os.PathLike | None,
    device: str,
    progress: bool,
    stop_after: int | None,
) -> TrainResult | None:
    if config.data_sha256 != corpus.sha256:
        raise ValueError(
            f"invalid corpus: its sha256 {corpus.sha256} differs from the config's "
            f"data_sha256={config.data_sha256}"
        )
    dev = resolve_device(device)
    work = Path(work_dir) if work_dir is not None else None
    corpus = training_corpus(corpus, config)
    V = vocab_size(config, corpus.vocab_size)

    def fresh():
        model = initial_model(config, corpus.vocab_size).to(dev)
        sampler = BlockSampler(
            corpus.train,
            config.model.block_size,
            config.batch_size,
            config.seed,
            corpus.vocab_size,
            p_low=config.p_low,
        )
        return model, make_optimizer(model, config), sampler

    model, optimizer, sampler = fresh()
    objective_state = config.objective.initial_state(V, dev)
    log_prior = corpus.log_prior(config.bilingual, config.p_low).to(dev)
    tokens = TokenLossLog(V, dev)
    scenario_log = ScenarioLog()
    train_log: list[dict] = []
    # running sums of the objective and the CE since the last log point, kept on the
    # device so that a step waits for nothing (read at log points only)
    window = Window(dev)
    eval_frames: list[pd.DataFrame] = []
    step, elapsed = 0, 0.0

    ckpt_path = work / CHECKPOINT if work is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        try:
            state = load_checkpoint(ckpt_path, config, dev)
            _restore(state, model, optimizer, sampler, dev)
        except CheckpointError as exc:
            rejected = ckpt_path.with_name("checkpoint.rejected.pt")
            os.replace(ckpt_path, rejected)
            print(
                f"discarded checkpoint {ckpt_path} ({exc}); kept as {rejected.name}, "
                "training starts again from step 0",
                file=sys.stderr,
            )
            model, optimizer, sampler = fresh()  # a failed load may have half-filled them
        else:
            step, elapsed = state["step"], state["elapsed"]
            train_log = state["train_log"]
            window.load_state_dict(state["window"])
            tokens.load_state_dict(state["train_tokens"])
            scenario_log.records = state["scenarios"]
            if objective_state is not None:
                objective_state = {k: v.to(dev) for k, v in state["objective_state"].items()}
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
                "window": window.state_dict(),
                "scenarios": scenario_log.records,
                "objective_state": objective_state,
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
        desc=config.label,
        unit="step",
        disable=not progress,
        mininterval=1.0,
        leave=False,
    )
    steps_this_call = 0
    started = time.perf_counter() - elapsed
    at_boundary = True  # False while a step (sampling to logging) is half done
    try:
        with _deferred_interrupt() as interrupt:
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
                    step=step,
                    log_prior=log_prior,
                    objective_state=objective_state,
                )
                tokens.add(y, out.ce, out.objective)
                window.add(out.loss, out.ce.mean())
                step += 1
                steps_this_call += 1
                bar.update(1)
                if step % config.log_interval == 0 or step == config.max_steps:
                    tokens.flush(step)
                    loss, ce = window.means()
                    train_log.append(
                        dict(step=step, lr=lr, loss=loss, ce=ce, grad_norm=float(out.grad_norm))
                    )
                    bar.set_postfix(loss=f"{loss:.3f}")
                    window.reset()
                if step % config.eval_interval == 0 or step == config.max_steps:
                    frame = evaluate(step)
                    val = frame["loss_sum"].sum() / max(1, frame["count"].sum())
                    shown = {"loss": f"{train_log[-1]['loss']:.3f}"} if train_log else {}
                    bar.set_postfix(**shown, val=f"{val:.3f}")
                elapsed = time.perf_counter() - started
                at_boundary = True
                if interrupt["raised"]:  # Ctrl-C during this step: keep it, then stop
                    checkpoint()
                    raise TrainingInterrupted(step, config.max_steps, ckpt_path)
                if step % config.checkpoint_interval == 0 and step < config.max_steps:
                    checkpoint()
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:
        # A second Ctrl-C, or one outside the main thread: keep the last whole step if
        # the loop stood between two steps; a step cut in half is redone on resume.
        if at_boundary and step > 0:
            checkpoint()
            raise TrainingInterrupted(step, config.max_steps, ckpt_path) from None
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
