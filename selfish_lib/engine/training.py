"""Training: the validated TrainConfig and the loop that turns it into a model.

The loop is nanoGPT's (AdamW, linear warmup then cosine decay, gradient
clipping) with what the study needs on top: the objective is any registered
one (``engine.objectives``: CE, HNS at any layout, ...); every
``log_interval`` steps the mean training loss of every target token is
recorded; every ``eval_interval`` steps the validation split is evaluated
(the whole split at the last step, every ``interim_eval_stride``-th window
before it); and a checkpoint with every RNG state makes an interrupted run
resume to exactly the same weights.

What is logged goes to disk as it is logged, not with the checkpoints: with a work
folder, each table's rows are appended to ``<work>/logs/<table>.npy`` (``RunLogs``) by
a thread of their own, and a checkpoint holds the training state only (weights,
optimizer, RNG states, running sums) with the length of each log file; a resumed run
cuts the logs back to those lengths, so its tables equal an uninterrupted run's.

On CUDA a run trains with deterministic algorithms (``training_device``); the device
kind and precision it trained with are recorded with it (``device_record``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import io
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .corpus import (
    CHARACTERS,
    CORPUS_SHA256,
    BlockSampler,
    Corpus,
    CorpusChecksumError,
    check_tokenizer,
)
from .evaluation import SUMS, evaluate_languages, evaluate_split
from .languages import (
    CIPHER,
    ELOTL_CORPORA,
    ELOTL_SHA256,
    LanguageBlockSampler,
    TwoLanguageCorpus,
    check_alphabet,
    check_language,
    installed_elotl,
    two_language_corpus,
)
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
# The checkpoint's layout: 2 holds the training state and the length of each log file;
# 1 (no "format" field) also held every logged row, and is still resumed from.
CHECKPOINT_FORMAT = 2
LOG_DIR = "logs"
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
    ``engine.objectives``). ``bilingual`` adds a second language: the cipher doubles the
    vocabulary (a second alphabet, ids + vocab_size), a real ``language`` adds its own
    characters' ids (``engine.languages``); ``p_low`` is the probability that a sampled
    block is written in it: 0 for a single language, 0.02 for the bilingual simulation,
    1 for a model trained on the low-resource language only.

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
    # evaluations before the last score every k-th window of the validation text (a
    # systematic sample over all of it, for the learning curves); the last evaluation,
    # which every table reads, scores every window. 1: every evaluation the whole split
    interim_eval_stride: int = 1
    log_interval: int = 10
    checkpoint_interval: int = 500
    scenario_interval: int = 0
    # the bytes the run was trained on
    data_sha256: str = CORPUS_SHA256
    # 'validation': train on the training split, score on the validation split (the
    # reported runs); 'tuning': train on the training split without its tail and score
    # on that tail (``Corpus.for_tuning``), where hyperparameters are chosen
    split: str = "validation"
    # the second language of a bilingual run: 'cipher' (English with every id shifted by
    # V) or real text from elotl ('nahuatl', 'otomi', 'mixtec'), whose ids are
    # 'disjoint' from English's or 'shared' where English has the character; the sha256
    # of its corpus file (for a real language, filled in with the recorded one), and a
    # slice of it for quick runs (characters per side; 0: all). At their defaults these
    # fields stay out of the run id, so every cipher run keeps the id it had.
    language: str = CIPHER
    alphabet: str = "disjoint"
    language_sha256: str = ""
    language_chars: int = 0
    # the elotl version that provided a real language's text (filled in with the
    # installed one): recorded with the run, not part of its identity, which the corpus
    # file's sha256 holds
    elotl_version: str | None = field(default=None, compare=False)

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
        for name in ("eval_interval", "interim_eval_stride", "log_interval",
                     "checkpoint_interval"):  # fmt: skip
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
        self._check_language()

    def _check_language(self) -> None:
        """The second language's fields: the cipher with their defaults, or a real
        language in a bilingual character run on the validation split, its corpus's
        sha256 and elotl's version filled in when not given."""
        language = check_language("language", self.language)
        alphabet = check_alphabet("alphabet", self.alphabet)
        check_int("language_chars", self.language_chars, 0)
        sha, version = self.language_sha256, self.elotl_version
        if not isinstance(sha, str):
            raise ParameterError("language_sha256", sha, "a sha256 of 64 hex digits")
        if version is not None and not isinstance(version, str):
            raise ParameterError("elotl_version", version, "a version string or None")
        if language == CIPHER:
            # the cipher's second alphabet is English's ids + V: nothing else to choose
            for name, value, default in (("alphabet", alphabet, "disjoint"),
                                         ("language_sha256", sha, ""),
                                         ("language_chars", self.language_chars, 0),
                                         ("elotl_version", version, None)):  # fmt: skip
                if value != default:
                    raise ParameterError(
                        name, value, f"{default!r} with language='cipher' (it is meant for a "
                        "real second language: 'nahuatl', 'otomi' or 'mixtec')",
                    )  # fmt: skip
            return
        for name, value, wanted, why in (
            ("bilingual", self.bilingual, True, "a second language is a bilingual run's"),
            ("tokenizer", self.tokenizer, CHARACTERS, "a real language's ids are characters"),
            ("split", self.split, "validation", "a real language's split is by document"),
        ):
            if value != wanted:
                raise ParameterError(name, value, f"{wanted!r} with language={language!r} ({why})")
        sha = sha or ELOTL_SHA256[ELOTL_CORPORA[language]]
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ParameterError("language_sha256", sha, "a sha256 of 64 lowercase hex digits")
        object.__setattr__(self, "language_sha256", sha)
        object.__setattr__(self, "elotl_version", version or installed_elotl())

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
        language = "" if self.language == CIPHER else f", {self.language} {self.alphabet}"
        return self.objective.label + untied + subwords + language

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
        fields at top level (the run id is computed from this form). The elotl version
        is provenance, not identity: it is left out."""
        left_out = ("model", "objective", "elotl_version")
        out = {k: v for k, v in self.to_dict().items() if k not in left_out}
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
    ``split='tuning'``; for a real second language, English beside that language
    (``languages.TwoLanguageCorpus``), its corpus file verified against the config's
    ``language_sha256``."""
    corpus = corpus.with_tokenizer(config.tokenizer)
    if config.language != CIPHER:
        both = two_language_corpus(corpus, config.language, config.alphabet,
                                   config.language_chars)  # fmt: skip
        if both.second.sha256 != config.language_sha256:
            raise CorpusChecksumError(
                f"the {config.language} corpus has sha256 {both.second.sha256}, but the run's "
                f"config records language_sha256={config.language_sha256} (elotl "
                f"{config.elotl_version}; installed: {both.second.elotl_version})"
            )
        return both
    return corpus.for_tuning() if config.split == "tuning" else corpus


def initial_model(config: TrainConfig, base_vocab_size: int | Corpus) -> GPT:
    """The model a run of ``config`` starts from (the same weights ``train`` draws);
    ``base_vocab_size`` as ``vocab_size`` takes it."""
    torch.manual_seed(config.seed)
    return GPT(config.model, vocab_size(config, base_vocab_size))


def vocab_size(config: TrainConfig, base_vocab_size: int | Corpus) -> int:
    """The model's vocabulary: one alphabet, or two in bilingual runs of the cipher.
    ``base_vocab_size`` is the corpus's vocabulary (one alphabet), or the run's corpus
    itself (``training_corpus``), which a real second language needs: its vocabulary
    depends on its text."""
    if isinstance(base_vocab_size, Corpus):
        return base_vocab_size.model_vocab_size(config.bilingual)
    if config.language != CIPHER:
        raise ParameterError(
            "base_vocab_size", base_vocab_size,
            f"the run's corpus (training_corpus) for language={config.language!r}: a real "
            "language's vocabulary depends on its text",
        )  # fmt: skip
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
# What device='auto' resolves to when set (cpu, cuda, cuda:N or mps): the tests pin it to
# cpu so that a machine with a GPU runs them as a machine without one.
AUTO_DEVICE_ENV = "SELFISH_AUTO_DEVICE"
# cuBLAS keeps its results bit-identical from run to run only with one of these
# workspaces; it reads the setting when a process first uses it, so it is set here, on
# import, before any CUDA work (a value set by the user is kept, and checked).
CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")
os.environ.setdefault(CUBLAS_ENV, DETERMINISTIC_CUBLAS[0])


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _auto_choice() -> tuple[str, str]:
    """What device='auto' resolves to here, and why (for ``describe_device``)."""
    forced = os.environ.get(AUTO_DEVICE_ENV, "").strip()
    if forced:
        return forced, f"auto: {AUTO_DEVICE_ENV}={forced}"
    if torch.cuda.is_available():
        return "cuda", "auto: CUDA available"
    if _mps_available():
        return "mps", "auto: MPS available, no CUDA"
    return "cpu", "auto: no CUDA or MPS"


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu (or what ``$SELFISH_AUTO_DEVICE`` names);
    'cpu', 'mps', 'cuda' or 'cuda:N' are checked to exist on this machine
    (ParameterError naming the device otherwise)."""
    allowed = "auto, cpu, mps, cuda or cuda:N with N a GPU index of this machine"
    if not isinstance(device, str):
        raise ParameterError("device", device, allowed)
    if device == "auto":
        choice, _ = _auto_choice()
        if choice == "auto":
            raise ParameterError(AUTO_DEVICE_ENV, choice, "cpu, cuda, cuda:N or mps")
        try:
            return resolve_device(choice)
        except ParameterError as exc:
            raise ParameterError(AUTO_DEVICE_ENV, choice, exc.allowed) from None
    kind, _, index = device.partition(":")
    if kind not in DEVICE_KINDS or (index and (kind != "cuda" or not index.isdigit())):
        raise ParameterError("device", device, allowed)
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ParameterError("device", device, "a device of this machine (it has no CUDA)")
        if index and int(index) >= count:
            raise ParameterError("device", device, f"cuda:0 to cuda:{count - 1} (this machine)")
    if kind == "mps" and not _mps_available():
        raise ParameterError("device", device, "a device of this machine (it has no MPS)")
    return torch.device(device)


def describe_device(device: str = "auto") -> str:
    """One line naming the device ``device`` resolves to and why, as ``selfish reproduce``
    and ``selfish train`` print it: 'device: cpu (auto: no CUDA or MPS)'."""
    dev = resolve_device(device)
    why = _auto_choice()[1] if device == "auto" else f"asked for {device}"
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        why = f"{name}, {precision_of(dev)}, deterministic algorithms; {why}"
    return f"device: {dev} ({why})"


def precision_of(dev: torch.device) -> str:
    """The arithmetic of a run's float32 matrix products: 'tf32' on CUDA when TF32 matmul
    is allowed (``torch.backends.cuda.matmul.allow_tf32``), else 'fp32'."""
    if dev.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "fp32"


def _package_version(*names: str) -> str | None:
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(name)
    return None


def device_record(dev: torch.device) -> dict:
    """What a run records of the device it trained on: its kind (cpu, cuda, mps) and
    precision (``precision_of``), the torch version and, on CUDA, the GPU, its compute
    capability, whether TF32 was allowed, whether deterministic algorithms were on, and
    the CUDA, cuDNN and cuBLAS versions (None where unknown). The store never serves a
    run of one kind and precision for another (``runs.get_or_train``)."""
    record: dict = {"kind": dev.type, "precision": precision_of(dev), "torch": torch.__version__}
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        record.update(
            gpu=torch.cuda.get_device_name(index),
            capability=f"{major}.{minor}",
            tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
            tf32_cudnn=bool(torch.backends.cudnn.allow_tf32),
            deterministic=torch.are_deterministic_algorithms_enabled(),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cublas=_package_version(
                "nvidia-cublas-cu13", "nvidia-cublas-cu12", "nvidia-cublas-cu11"
            ),  # fmt: skip
        )
    return record


def device_identity(record: Mapping) -> tuple[str, str]:
    """(kind, precision) of a device record: what two runs must share to be compared."""
    return str(record.get("kind", "unknown")), str(record.get("precision", "fp32"))


# The wheel indexes PyTorch publishes for CUDA builds (https://download.pytorch.org/whl/).
CUDA_WHEEL_TAGS = ("cu118", "cu121", "cu124", "cu126", "cu128", "cu129", "cu130")


def cuda_wheel_index(smi_output: str) -> str:
    """The PyTorch wheel index for the newest CUDA the driver supports (the 'CUDA
    Version' ``nvidia-smi`` prints), or the pattern when it cannot be read."""
    found = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", smi_output or "")
    if found:
        driver = int(found.group(1)) * 10 + int(found.group(2))
        fitting = [t for t in CUDA_WHEEL_TAGS if int(t[2:]) <= driver]
        if fitting:
            return f"https://download.pytorch.org/whl/{fitting[-1]}"
    return "https://download.pytorch.org/whl/cuXXX (XXX: a CUDA version the driver supports)"


def cuda_install_problem(
    smi_output: str | None, cuda_available: bool, torch_version: str
) -> str | None:
    """Why this install cannot train on the GPU that ``nvidia-smi`` sees (None when
    ``smi_output`` is None, i.e. no nvidia-smi, or when torch can use CUDA)."""
    if smi_output is None or cuda_available:
        return None
    build = " (a CPU-only build)" if "+cpu" in torch_version else ""
    return (
        f"nvidia-smi is present but torch {torch_version}{build} cannot use CUDA "
        "(torch.cuda.is_available() is False). Install torch from the wheel index of "
        "a CUDA version this driver supports: .venv/bin/pip install --force-reinstall "
        f"torch --index-url {cuda_wheel_index(smi_output)}"
    )


def check_cuda_install() -> int:
    """For ``make install``: 1, with the reason and the wheel index to use on stderr,
    when ``nvidia-smi`` exists but torch cannot use CUDA; else 0."""
    smi = shutil.which("nvidia-smi")
    output = None
    if smi is not None:
        try:
            output = subprocess.run([smi], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            output = ""  # nvidia-smi exists but fails: torch will not see the GPU either
    problem = cuda_install_problem(output, torch.cuda.is_available(), torch.__version__)
    if problem is None:
        return 0
    print(f"make install: {problem}", file=sys.stderr)
    return 1


def check_cublas_workspace() -> str:
    """``$CUBLAS_WORKSPACE_CONFIG``, checked to be one of cuBLAS's deterministic
    workspaces (ParameterError naming the variable otherwise)."""
    value = os.environ.get(CUBLAS_ENV)
    if value not in DETERMINISTIC_CUBLAS:
        raise ParameterError(
            CUBLAS_ENV, value,
            " or ".join(DETERMINISTIC_CUBLAS) + " (cuBLAS's deterministic workspaces; "
            "unset, the library sets the first)",
        )  # fmt: skip
    return value


# --- what a run logs -------------------------------------------------------------------

# The columns of the four tables a run logs, in order; these hold integers, the rest floats.
TABLE_COLUMNS = {
    "train_log": ("step", "lr", "loss", "ce", "grad_norm"),
    "train_tokens": ("step", "token", "count", "ce_sum", "objective_sum"),
    "eval_tokens": ("step", "token", *SUMS),
    "scenarios": ScenarioLog.COLUMNS,
}
INTEGER_COLUMNS = ("step", "token", "count")


def table_dtype(name: str) -> np.dtype:
    """The row type of the logged table ``name`` (a numpy structured dtype)."""
    return np.dtype(
        [(c, np.int64 if c in INTEGER_COLUMNS else np.float64) for c in TABLE_COLUMNS[name]]
    )


def read_log(path: Path, length: int | None = None, dtype: np.dtype | None = None):
    """The chunks of rows in the log file ``path`` (arrays written one after another by
    ``LogWriter``), in order; only its first ``length`` bytes when given. ValueError when
    the bytes are not whole arrays (of ``dtype``, when given)."""
    data = path.read_bytes()
    if length is not None:
        if length > len(data):
            raise ValueError(f"{path.name} has {len(data)} bytes, fewer than {length}")
        data = data[:length]
    chunks, stream = [], io.BytesIO(data)
    while stream.tell() < len(data):
        try:
            chunk = np.load(stream, allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise ValueError(f"{path.name} is cut inside a chunk ({exc})") from None
        if dtype is not None and chunk.dtype != dtype:
            raise ValueError(f"{path.name} holds rows of another table ({chunk.dtype})")
        chunks.append(chunk)
    return chunks


class LogWriter:
    """Appends chunks of rows to their log files on a thread of its own, so that the
    training thread only hands them over. ``sync`` waits until everything handed over is
    written and flushed (before a checkpoint records the files' lengths); a failed write
    is raised at the next call, as an OSError naming the file."""

    def __init__(self, max_pending: int = 256) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._files: dict[Path, object] = {}
        self._error: tuple[Path, BaseException] | None = None
        self._thread = threading.Thread(target=self._run, name="selfish-log-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                path, chunk = item
                if self._error is None:
                    try:
                        handle = self._files.get(path)
                        if handle is None:
                            handle = self._files[path] = open(path, "ab")  # noqa: SIM115
                        np.save(handle, chunk, allow_pickle=False)
                    except BaseException as exc:  # reported to the training thread
                        self._error = (path, exc)
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            path, exc = self._error
            free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
            reason = "no space left on the device" if free < (64 << 20) else str(exc)
            raise OSError(f"could not write the training log {path}: {reason}") from exc

    def append(self, path: Path, chunk: np.ndarray) -> None:
        """Hand ``chunk`` over to be appended to ``path`` (it must not change afterwards)."""
        self._raise()
        self._queue.put((path, chunk))

    def sync(self) -> None:
        """Wait until every chunk handed over is written, and flush the files."""
        self._queue.join()
        self._raise()
        for handle in self._files.values():
            handle.flush()

    def forget(self, path: Path) -> None:
        """Close ``path`` (the caller is about to cut or empty it); call after ``sync``."""
        handle = self._files.pop(path, None)
        if handle is not None:
            handle.close()

    def close(self, raise_errors: bool = True) -> None:
        """Write what is pending, close the files and end the thread."""
        if self._thread.is_alive():
            self._queue.join()
            self._queue.put(None)
            self._thread.join()
        for handle in self._files.values():
            with contextlib.suppress(OSError):
                handle.close()
        self._files.clear()
        if raise_errors:
            self._raise()


class TableLog:
    """The rows of one logged table (``TABLE_COLUMNS``), in the order they were logged.

    Rows arrive in chunks (a log point's tokens, an evaluation, a scenario step) and are
    kept in memory as structured arrays; with a ``path`` each chunk is also appended to
    that file by ``writer``, off the training thread."""

    def __init__(self, name: str, path: Path | None = None, writer: LogWriter | None = None):
        self.name, self.path, self.writer = name, path, writer
        self.dtype = table_dtype(name)
        self.chunks: list[np.ndarray] = []

    def append(self, columns: Mapping[str, Sequence]) -> None:
        """Append rows given column by column (arrays or lists, all of one length)."""
        arrays = {c: np.asarray(columns[c]) for c in self.dtype.names}
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"{self.name}: columns of different lengths {sorted(lengths)}")
        chunk = np.empty(lengths.pop(), dtype=self.dtype)
        for name, values in arrays.items():
            chunk[name] = values
        self._add(chunk)

    def append_frame(self, frame: pd.DataFrame) -> None:
        """Append the rows of ``frame`` (it has every column of the table)."""
        self.append({c: frame[c].to_numpy() for c in self.dtype.names})

    def append_records(self, records: Sequence[Mapping]) -> None:
        """Append rows given as dicts (nothing for none)."""
        if records:
            self.append({c: [r[c] for r in records] for c in self.dtype.names})

    def _add(self, chunk: np.ndarray) -> None:
        if len(chunk) == 0:
            return
        self.chunks.append(chunk)
        if self.writer is not None and self.path is not None:
            self.writer.append(self.path, chunk)

    def frame(self) -> pd.DataFrame:
        """Every row so far, one column per field (integers int64, the rest float64)."""
        rows = np.concatenate(self.chunks) if self.chunks else np.empty(0, self.dtype)
        return pd.DataFrame({c: np.ascontiguousarray(rows[c]) for c in self.dtype.names})


class RunLogs:
    """The four tables of one run (``TABLE_COLUMNS``): in memory and, with a work folder,
    appended as they are logged to ``<work>/logs/<table>.npy`` by a ``LogWriter``.

    A checkpoint records ``offsets()``, each file's length; ``resume`` cuts the files
    back to those lengths (rows logged after the checkpoint are logged again when their
    steps are trained again) and reads them, so a resumed run's tables are the
    uninterrupted run's."""

    def __init__(self, work: Path | None) -> None:
        self.folder = None if work is None else Path(work) / LOG_DIR
        self.writer = None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.writer = LogWriter()
        self.tables = {
            name: TableLog(name, self._path(name), self.writer) for name in TABLE_COLUMNS
        }

    def _path(self, name: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{name}.npy"

    def __getitem__(self, name: str) -> TableLog:
        return self.tables[name]

    def _quiet(self) -> None:
        """Wait for the writer and close its files (before they are cut or emptied)."""
        if self.writer is not None:
            self.writer.sync()
            for table in self.tables.values():
                self.writer.forget(table.path)

    def reset(self) -> None:
        """No rows: a run that starts from step 0 (its log files emptied)."""
        self._quiet()
        for table in self.tables.values():
            table.chunks = []
            if table.path is not None:
                table.path.write_bytes(b"")

    def offsets(self) -> dict[str, int]:
        """Each log file's length once everything logged so far is written (what a
        checkpoint records); empty without a work folder."""
        if self.writer is None:
            return {}
        self.writer.sync()
        return {name: t.path.stat().st_size for name, t in self.tables.items()}

    def resume(self, offsets: Mapping[str, int]) -> None:
        """Cut each log file back to the length a checkpoint recorded and read it;
        CheckpointError when a file is missing, shorter, or not whole chunks."""
        self._quiet()
        for name, table in self.tables.items():
            offset = offsets.get(name) if isinstance(offsets, Mapping) else None
            if not isinstance(offset, int) or offset < 0:
                raise CheckpointError(f"it records no length for the {name} log")
            if table.path is None or not table.path.is_file():
                raise CheckpointError(f"its {name} log is missing")
            size = table.path.stat().st_size
            if size < offset:
                raise CheckpointError(
                    f"its {name} log has {size} bytes, fewer than the {offset} it covers"
                )
            try:
                table.chunks = read_log(table.path, offset, table.dtype)
            except ValueError as exc:
                raise CheckpointError(f"its {name} log cannot be read ({exc})") from None
            os.truncate(table.path, offset)  # rows of steps after the checkpoint

    def resume_legacy(self, state: Mapping) -> None:
        """Take the rows a checkpoint of format 1 held (it kept every logged row)."""
        self.reset()
        try:
            self["train_log"].append_records(state["train_log"])
            self["train_tokens"].append_records(state["train_tokens"]["records"])
            self["scenarios"].append_records(state["scenarios"])
            if state["eval_tokens"]:
                self["eval_tokens"].append(state["eval_tokens"])
        except (KeyError, TypeError, ValueError):
            self.reset()
            raise CheckpointError("its logged rows cannot be read") from None

    def frames(self) -> dict[str, pd.DataFrame]:
        """Each table as a DataFrame."""
        return {name: table.frame() for name, table in self.tables.items()}

    def close(self, raise_errors: bool = True) -> None:
        """Write what is pending and stop the writer (a failed write raises OSError)."""
        if self.writer is not None:
            self.writer.close(raise_errors)


def logged_tables(work: str | os.PathLike, state: Mapping | None = None) -> dict:
    """The tables a work folder's logs hold (name -> DataFrame); with a checkpoint's
    ``state``, only the rows it covers (a format-1 checkpoint's own rows)."""
    folder = Path(work) / LOG_DIR
    out = {}
    for name in TABLE_COLUMNS:
        table = TableLog(name)
        if state is not None and "logs" not in state:  # format 1: the rows are inside
            if name == "eval_tokens":
                if state[name]:
                    table.append(state[name])
            elif name == "train_tokens":
                table.append_records(state[name]["records"])
            else:
                table.append_records(state[name])
        elif (folder / f"{name}.npy").is_file():
            length = None if state is None else state["logs"][name]
            table.chunks = read_log(folder / f"{name}.npy", length, table.dtype)
        out[name] = table.frame()
    return out


class TokenLossLog:
    """Sums of the per-target training loss between two logging points; ``flush``
    appends them to ``table`` (the run's train_tokens, or a table of its own).

    On the CPU a step's losses are added at once (``index_add_`` adds in position
    order). On a GPU ``index_add_`` adds with atomics, in an order that changes from run
    to run: there (``on_host``) the steps' losses wait on the device and are added on
    the host, by the same CPU code in the same order, when the log is read, so a step
    never waits for a copy."""

    # steps whose losses wait on the device before they are added (a bound on memory)
    PENDING_STEPS = 64

    def __init__(
        self,
        vocab_size: int,
        device: torch.device,
        table: TableLog | None = None,
        *,
        on_host: bool | None = None,
    ) -> None:
        self.vocab_size, self.device = vocab_size, torch.device(device)
        self.table = table if table is not None else TableLog("train_tokens")
        self.on_host = self.device.type != "cpu" if on_host is None else bool(on_host)
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._reset()

    @property
    def records(self) -> list[dict]:
        """The flushed rows as dicts (step, token, count, ce_sum, objective_sum)."""
        return self.table.frame().to_dict("records")

    def _reset(self) -> None:
        where = torch.device("cpu") if self.on_host else self.device
        z = lambda: torch.zeros(self.vocab_size, dtype=torch.float64, device=where)
        self.count, self.ce, self.objective = z(), z(), z()

    def _index_add(self, t: torch.Tensor, ce: torch.Tensor, objective: torch.Tensor) -> None:
        # index_add_ rather than bincount: bincount reads the largest id first, a device
        # sync on a GPU at every step.
        self.count.index_add_(0, t, torch.ones_like(t, dtype=torch.float64))
        self.ce.index_add_(0, t, ce)
        self.objective.index_add_(0, t, objective)

    def add(self, targets: torch.Tensor, ce: torch.Tensor, objective: torch.Tensor) -> None:
        """Accumulate per-position losses (any shape matching ``targets``)."""
        t = targets.reshape(-1)
        ce, objective = ce.reshape(-1).double(), objective.reshape(-1).double()
        if not self.on_host:
            self._index_add(t, ce, objective)
            return
        self._pending.append((t.detach(), ce.detach(), objective.detach()))
        if len(self._pending) >= self.PENDING_STEPS:
            self._drain()

    def _drain(self) -> None:
        """Add the losses waiting on the device, on the host, in the order they came."""
        if not self._pending:
            return
        t, ce, objective = (torch.cat(parts).cpu() for parts in zip(*self._pending, strict=True))
        self._pending = []
        self._index_add(t, ce, objective)

    def state_dict(self) -> dict:
        """The partial sums since the last flush, for checkpoints."""
        self._drain()
        return {"sums": (self.count, self.ce, self.objective)}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state saved by ``state_dict`` (a format-1 checkpoint's too)."""
        self._pending = []
        where = torch.device("cpu") if self.on_host else self.device
        sums = tuple(t.to(where, torch.float64) for t in state["sums"])
        if len(sums) != 3 or any(t.shape != (self.vocab_size,) for t in sums):
            raise ValueError(f"sums of another vocabulary than {self.vocab_size}")
        self.count, self.ce, self.objective = sums

    def flush(self, step: int) -> None:
        """Record the sums since the last flush under ``step`` (tokens seen at least once)."""
        self._drain()
        count, ce, obj = (v.cpu().numpy() for v in (self.count, self.ce, self.objective))
        seen = np.flatnonzero(count)
        self.table.append(
            {
                "step": np.full(len(seen), step, dtype=np.int64),
                "token": seen.astype(np.int64),
                "count": count[seen].astype(np.int64),
                "ce_sum": ce[seen],
                "objective_sum": obj[seen],
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
    # the device's kind, precision and versions (``device_record``)
    device_record: dict = field(default_factory=dict)


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
    """Ctrl-C or SIGTERM during training: the run stopped at a step boundary and, with a
    work folder, left a checkpoint there that the next call resumes from. ``signal_name``
    names the signal when it is known ('SIGINT', 'SIGTERM')."""

    def __init__(
        self, step: int, max_steps: int, checkpoint: Path | None, signal_name: str | None = None
    ) -> None:
        self.step, self.max_steps, self.checkpoint = step, max_steps, checkpoint
        self.signal_name = signal_name
        where = (
            f"checkpoint at step {step} of {max_steps} in {checkpoint}"
            if checkpoint
            else (f"stopped at step {step} of {max_steps} (no work folder: nothing kept)")
        )
        by = f" by {signal_name}" if signal_name else ""
        super().__init__(f"interrupted{by}: {where}")

    def __reduce__(self):
        # rebuilt from its fields, not its message, when a worker process sends it back
        return type(self), (self.step, self.max_steps, self.checkpoint, self.signal_name)


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (unreadable, another config, bad step)."""


def _save_atomic(obj: dict, path: Path) -> None:
    """torch.save to a temporary name, then rename; a failed write says which file and why.
    Whatever stops the write (an error, a second Ctrl-C or SIGTERM) removes the temporary
    file: ``path`` is the previous checkpoint or the new one, never a half-written file,
    and no ``<path>.tmp`` is left behind (one left by a kill -9 is removed by the next
    run, ``_remove_stale_temporary``)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        # torch reports a full disk as a RuntimeError from its zip writer.
        free = shutil.disk_usage(path.parent).free
        reason = "no space left on the device" if free < (64 << 20) else str(exc).splitlines()[0]
        raise OSError(f"could not write the checkpoint {path}: {reason}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _remove_stale_temporary(path: Path) -> None:
    """Remove the temporary file of an interrupted ``_save_atomic`` of ``path`` (a process
    killed with kill -9 while writing it): never a checkpoint, always incomplete."""
    path.with_suffix(path.suffix + ".tmp").unlink(missing_ok=True)


def checkpoint_state(
    *,
    model: torch.nn.Module,
    optimizer_state: dict,
    sampler: BlockSampler,
    device: torch.device,
    step: int,
    elapsed: float,
    tokens: TokenLossLog,
    window: Window,
    objective_state: dict | None,
    config: TrainConfig,
    logs: RunLogs,
    record: dict,
) -> dict:
    """What a checkpoint holds: the training state only (weights, optimizer, RNG states,
    running sums, the objective's state), the device's kind and precision (of ``record``,
    a ``device_record``), and each log file's length (``RunLogs.offsets``: the logged
    rows stay in the logs)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer_state,
        "sampler": sampler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "step": step,
        "elapsed": elapsed,
        "train_tokens": tokens.state_dict(),
        "window": window.state_dict(),
        "objective_state": objective_state,
        "config": config.to_dict(),
        "device": dict(zip(("kind", "precision"), device_identity(record), strict=True)),
        "logs": logs.offsets(),
    }


# Every checkpoint has these; format 1 also the logged rows, format 2 the logs' lengths.
_CHECKPOINT_FIELDS = ("model", "optimizer", "sampler", "rng_cpu", "step", "elapsed", "config",
                      "train_tokens", "window")  # fmt: skip
_LEGACY_ROWS = ("train_log", "scenarios", "eval_tokens")


def load_checkpoint(path: Path, config: TrainConfig, device: torch.device) -> dict:
    """The state saved in ``path``, checked to belong to ``config`` and to be resumable on
    ``device``: readable, with every field, the same config, a step in 1..max_steps and
    written on a device of the same kind and precision. Raises CheckpointError with the
    reason otherwise.

    The state is loaded to the CPU whatever ``device`` is: the RNG states must be CPU
    tensors to be restored, and what belongs on the device (weights, optimizer moments,
    running sums) is moved there by whatever loads it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated, random bytes, empty: torch raises many kinds
        raise CheckpointError(f"unreadable ({type(exc).__name__})") from None
    if not isinstance(state, dict) or any(k not in state for k in _CHECKPOINT_FIELDS):
        raise CheckpointError("not a checkpoint of this project (fields missing)")
    if "logs" not in state and any(k not in state for k in _LEGACY_ROWS):
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
    here = device_identity(device_record(device))
    if isinstance(state.get("device"), Mapping):
        there = device_identity(state["device"])
    elif "device" in state:
        there = ("an unknown device", "?")
    elif (state.get("rng_cuda") is not None) != (device.type == "cuda"):
        # format 1 recorded no device, but only a CUDA run saved a CUDA RNG state
        there = ("cuda" if state.get("rng_cuda") is not None else "cpu or mps", "fp32")
    else:
        there = here
    if there != here:
        raise CheckpointError(
            f"it was written on {there[0]} ({there[1]}), this run trains on {here[0]} "
            f"({here[1]}); the numbers of different devices are never mixed"
        )
    return state


def _restore(state: dict, model, optimizer, sampler, device: torch.device) -> None:
    """Load a validated checkpoint into fresh objects; CheckpointError if it does not fit.
    ``model`` and ``optimizer`` copy their tensors to the device they live on; the RNG
    states (CPU tensors, ``load_checkpoint``) go to the CPU generator and to ``device``'s."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["rng_cpu"].cpu())
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), device)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"its tensors do not fit this model ({first[:120]})") from None


def _resume_logs(state: dict, logs: RunLogs, tokens: TokenLossLog, window: Window) -> None:
    """The logged rows and running sums of a validated checkpoint: the log files cut back
    to its lengths (format 2) or its own rows (format 1); CheckpointError if they do not fit."""
    if "logs" in state:
        logs.resume(state["logs"])
    else:
        logs.resume_legacy(state)
    try:
        tokens.load_state_dict(state["train_tokens"])
        window.load_state_dict(state["window"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError):
        raise CheckpointError("its running sums do not fit this run") from None


# The signals that stop training at a step boundary: Ctrl-C, and SIGTERM (what `kill`,
# `timeout` and Slurm send, and what a worker gets when its parent dies).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _deferred_interrupt():
    """While training, a first Ctrl-C or SIGTERM only raises a flag that the loop reads at
    the next step boundary (so the checkpoint holds a whole step; ``flag['signal']`` names
    it). A second Ctrl-C interrupts at once; SIGTERM never does (kill -9 is the way to
    stop at once): a SIGTERM passed on by the parent of a worker that Ctrl-C already
    reached, or sent again by a process manager, still waits for the step boundary.
    Outside the main thread signals cannot be handled and Ctrl-C behaves as usual."""
    flag: dict = {"raised": False, "signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    seen: set[int] = set()

    def handler(signum, frame):
        if signum == signal.SIGINT and signum in seen:
            raise KeyboardInterrupt
        seen.add(signum)
        if not flag["raised"]:
            flag["raised"], flag["signal"] = True, signal.Signals(signum).name

    previous = {number: signal.signal(number, handler) for number in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for number, action in previous.items():
            signal.signal(number, action)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Run the block with SIGTERM raising KeyboardInterrupt, as Ctrl-C does, so that
    `kill`, `timeout` and Slurm stop a command the way Ctrl-C does (training inside
    defers it to a step boundary, ``_deferred_interrupt``) instead of ending the process
    where it stands. Nothing changes outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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


@contextlib.contextmanager
def training_device(device: torch.device):
    """What training on ``device`` runs under, restored afterwards: on the CPU
    ``CPU_TRAINING_THREADS`` threads; on CUDA deterministic algorithms only
    (``torch.use_deterministic_algorithms(True)``: an operation without a deterministic
    kernel raises rather than changing the numbers from run to run), cuDNN's
    deterministic mode without autotuning, and a deterministic cuBLAS workspace
    (``check_cublas_workspace``)."""
    if device.type == "cpu":
        with cpu_training_threads(device):
            yield
        return
    if device.type != "cuda":
        yield
        return
    check_cublas_workspace()
    cudnn = torch.backends.cudnn
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
                cudnn.deterministic, cudnn.benchmark)  # fmt: skip
    torch.use_deterministic_algorithms(True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        cudnn.deterministic, cudnn.benchmark = previous[2], previous[3]


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

    With a ``work_dir``, the logged tables are appended to ``<work_dir>/logs/`` as they
    are logged, a checkpoint is written there every ``checkpoint_interval`` steps (and
    on Ctrl-C), and a run that finds one resumes from it. ``stop_after`` ends the call
    after that many steps without finishing (returns None), as an interruption would; it
    exists for tests. The device runs under ``training_device`` (on the CPU
    ``CPU_TRAINING_THREADS`` threads, on CUDA deterministic algorithms).
    """
    dev = resolve_device(device)
    with training_device(dev):
        return _train(config, corpus, work_dir, dev, progress, stop_after)


def fresh_run(config: TrainConfig, corpus: Corpus, dev: torch.device):
    """A run's starting point: its initial model on ``dev``, its optimizer and its seeded
    block sampler, as ``(model, optimizer, sampler)``; ``corpus`` is already in the run's
    tokenizer (``training_corpus``)."""
    model = initial_model(config, corpus).to(dev)
    return model, make_optimizer(model, config), make_sampler(config, corpus)


def make_sampler(config: TrainConfig, corpus: Corpus) -> BlockSampler | LanguageBlockSampler:
    """A run's seeded block sampler (``corpus`` from ``training_corpus``): blocks of the
    one text, shifted into the second alphabet with probability ``p_low`` (the cipher), or
    blocks of English or of a real second language (``languages.LanguageBlockSampler``)."""
    if isinstance(corpus, TwoLanguageCorpus):  # blocks of English or of the language
        return LanguageBlockSampler(corpus.train, corpus.second.train, config.model.block_size,
                                    config.batch_size, config.seed, config.p_low)  # fmt: skip
    return BlockSampler(corpus.train, config.model.block_size, config.batch_size, config.seed,
                        corpus.vocab_size, p_low=config.p_low)  # fmt: skip


def evaluate_run(
    model: GPT, corpus: Corpus, config: TrainConfig, dev: torch.device, step: int | None = None
) -> pd.DataFrame:
    """The evaluation table of a run at ``step`` (``corpus`` from ``training_corpus``):
    its validation split in one or both alphabets (``evaluation.evaluate_split``), or,
    with a real second language, English's and the language's validation texts each on
    its own (``evaluation.evaluate_languages``). Every window at the last step (or
    ``step=None``), every ``interim_eval_stride``-th one before it (``eval_stride``)."""
    stride = 1 if step is None else eval_stride(config, step)
    if isinstance(corpus, TwoLanguageCorpus):
        return evaluate_languages(model, corpus.val, corpus.second.val, dev, stride=stride)
    return evaluate_split(model, corpus.val, corpus.vocab_size, config.bilingual, dev,
                          stride=stride)  # fmt: skip


def eval_stride(config: TrainConfig, step: int) -> int:
    """The window stride of the evaluation at ``step``: 1 (every window of the split) at
    the last step, ``config.interim_eval_stride`` before it."""
    return 1 if step >= config.max_steps else config.interim_eval_stride


def whole_split_evaluations(config: TrainConfig) -> float:
    """A run's evaluations counted in whole-split evaluations, for time estimates: the
    ones at step 0 and every ``eval_interval`` steps before the last each score about a
    ``interim_eval_stride``-th of the windows; the last scores all of them."""
    interim = math.ceil(config.max_steps / config.eval_interval)
    return interim / config.interim_eval_stride + 1


def _train(
    config: TrainConfig,
    corpus: Corpus,
    work_dir: str | os.PathLike | None,
    dev: torch.device,
    progress: bool,
    stop_after: int | None,
) -> TrainResult | None:
    if config.data_sha256 != corpus.sha256:
        raise ValueError(
            f"invalid corpus: its sha256 {corpus.sha256} differs from the config's "
            f"data_sha256={config.data_sha256}"
        )
    work = Path(work_dir) if work_dir is not None else None
    corpus = training_corpus(corpus, config)
    V = vocab_size(config, corpus)
    record = device_record(dev)

    def fresh():
        return fresh_run(config, corpus, dev)

    logs = RunLogs(work)
    try:
        return _loop(config, corpus, work, dev, progress, stop_after, V, record, fresh, logs)
    finally:
        logs.close(raise_errors=False)  # on success _loop has closed it (and raised)


def _loop(config, corpus, work, dev, progress, stop_after, V, record, fresh, logs):
    """The body of ``_train``: resume or start, train, log, checkpoint."""
    model, optimizer, sampler = fresh()
    objective_state = config.objective.initial_state(V, dev)
    log_prior = corpus.log_prior(config.bilingual, config.p_low).to(dev)
    tokens = TokenLossLog(V, dev, logs["train_tokens"])
    scenario_log = ScenarioLog()
    # running sums of the objective and the CE since the last log point, kept on the
    # device so that a step waits for nothing (read at log points only)
    window = Window(dev)
    step, elapsed = 0, 0.0

    ckpt_path = work / CHECKPOINT if work is not None else None
    if ckpt_path is not None:
        _remove_stale_temporary(ckpt_path)
    resumed = False
    if ckpt_path is not None and ckpt_path.exists():
        try:
            state = load_checkpoint(ckpt_path, config, dev)
            _restore(state, model, optimizer, sampler, dev)
            _resume_logs(state, logs, tokens, window)
            if objective_state is not None:
                try:
                    objective_state = {k: v.to(dev) for k, v in state["objective_state"].items()}
                except (KeyError, TypeError, AttributeError):
                    raise CheckpointError("its objective state cannot be read") from None
        except CheckpointError as exc:
            rejected = ckpt_path.with_name("checkpoint.rejected.pt")
            os.replace(ckpt_path, rejected)
            print(
                f"discarded checkpoint {ckpt_path} ({exc}); kept as {rejected.name}, "
                "training starts again from step 0",
                file=sys.stderr,
            )
            # a failed load may have half-filled them
            model, optimizer, sampler = fresh()
            objective_state = config.objective.initial_state(V, dev)
            tokens, window = TokenLossLog(V, dev, logs["train_tokens"]), Window(dev)
        else:
            step, elapsed = state["step"], state["elapsed"]
            resumed = True
    if not resumed:
        logs.reset()

    def evaluate(at: int) -> pd.DataFrame:
        frame = evaluate_run(model, corpus, config, dev, at)
        frame.insert(0, "step", at)
        logs["eval_tokens"].append_frame(frame)
        return frame

    def checkpoint() -> None:
        if ckpt_path is None:
            return
        work.mkdir(parents=True, exist_ok=True)
        state = checkpoint_state(
            model=model, optimizer_state=optimizer.state_dict(), sampler=sampler, device=dev,
            step=step, elapsed=elapsed, tokens=tokens, window=window,
            objective_state=objective_state, config=config, logs=logs, record=record,
        )  # fmt: skip
        _save_atomic(state, ckpt_path)

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
    last_loss = None
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
                if logged:
                    logs["scenarios"].append_records(scenario_log.records)
                    scenario_log.records.clear()
                tokens.add(y, out.ce, out.objective)
                window.add(out.loss, out.ce.mean())
                step += 1
                steps_this_call += 1
                bar.update(1)
                if step % config.log_interval == 0 or step == config.max_steps:
                    tokens.flush(step)
                    loss, ce = window.means()
                    logs["train_log"].append(
                        dict(step=[step], lr=[lr], loss=[loss], ce=[ce],
                             grad_norm=[float(out.grad_norm)])
                    )  # fmt: skip
                    last_loss = loss
                    bar.set_postfix(loss=f"{loss:.3f}")
                    window.reset()
                if step % config.eval_interval == 0 or step == config.max_steps:
                    frame = evaluate(step)
                    val = frame["loss_sum"].sum() / max(1, frame["count"].sum())
                    shown = {"loss": f"{last_loss:.3f}"} if last_loss is not None else {}
                    bar.set_postfix(**shown, val=f"{val:.3f}")
                elapsed = time.perf_counter() - started
                at_boundary = True
                if interrupt["raised"]:  # Ctrl-C or SIGTERM during this step: keep it, stop
                    checkpoint()
                    raise TrainingInterrupted(step, config.max_steps, ckpt_path,
                                              interrupt["signal"])  # fmt: skip
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

    tables = logs.frames()
    logs.close()  # every row is on disk too (a failed write raises here)
    return TrainResult(
        model=model.eval(),
        train_log=tables["train_log"],
        train_tokens=tables["train_tokens"],
        eval_tokens=tables["eval_tokens"],
        scenarios=tables["scenarios"],
        seconds=time.perf_counter() - started,
        device=str(dev),
        device_record=record,
    )
