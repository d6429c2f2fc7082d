"""The one-shot GPU check: everything the study needs to know from a GPU, measured in one
process, written to one JSON and printed as a table.

    PYTHONPATH=. python bench/gpu_check.py [--out gpu_check.json] [--budget-s 450]
        [--device cuda] [--data-path FILE] [--sections NAME ...] [--steps N]
    python bench/gpu_check.py --dry --out /tmp/gpu_check.json   # the CPU version (CI)

Ten sections, in this order, each in its own try/except (an error is recorded with its
traceback and the next section runs) and the JSON rewritten after each one, so that a
failure or a kill loses nothing measured before it. Between sections the time used is
checked against ``--budget-s``; a section that finds it spent is recorded as skipped.

1. environment: torch, CUDA, cuDNN and cuBLAS versions, the GPU, its memory, the run
   store's device record (``training.device_record``) and how the store describes it;
2. resume: a short run trained straight against the same run interrupted
   (``train(stop_after=...)``) and resumed from its checkpoint: weights and tables equal?
   (a paper-model HNS run with scenario logging, and a large-model run with dropout);
3. step time: ms per training step, solo (``training.training_step``) at the paper and
   large models, and stacked (``ensemble.StackedGPT``) with E = 1, 10, 30 and every run of
   the paper plan that shares the paper single-language shape; median of per-step times
   (device synchronized around each) and the pipelined mean (one synchronization);
4. launches: per step, CUDA kernel launches, host synchronizations and device-to-host
   copies (torch.profiler), of the bare solo step, the stacked step and the ``train()``
   loop (the loop's by difference of two run lengths, so that its evaluations cancel);
5. determinism: the same short paper and large runs twice: identical? largest
   differences of the weights and of the loss curve;
6. hns_loss: ``losses.hns_cross_entropy`` against a float64 reference on random logits
   of the paper (V = 65, 130) and bpe-4096 (V = 4096, 8192) sizes: loss and gradient;
7. cpu_vs_gpu: 100 steps of the same paper run on the CPU and on the GPU (skipped with
   ``--dry`` or on the CPU): largest differences of the loss curve and the weights;
8. tf32: a large-model step with TF32 matrix products off and on: ms per step and the
   loss difference after a few steps from the same weights and batches;
9. eval_memory: peak device memory (``torch.cuda.max_memory_allocated``) of a whole-split
   evaluation at bpe-4096, and on the host the rise of the process's peak resident
   memory (``PeakRss``: VmHWM reset for the evaluation, else ``resource``'s ru_maxrss);
10. projection: the wall time of the paper plan (``report.plan``: every run the notebooks
   declare) on this device: steps and evaluations per model shape times this device's
   timings (``plan.calibrate``), solo and with the best stacked group; the assumptions
   are written beside the numbers.

``--dry`` runs every section on the CPU at the smoke profile's sizes (the 'large' model is
the smoke model with the large profile's dropout; the projection is the smoke plan's), in
about a minute, so that the tests prove the script's code paths. Within a section each
part (a run, a size, a vocabulary) is tried on its own too: a section whose parts failed
in part is 'partial'. The exit status is 0 when every section ran whole or was skipped,
1 when one failed in whole or in part.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import ctypes
import dataclasses
import gc
import hashlib
import math
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

# Run from a bare checkout (a machine where the package is not installed): the library
# of this repository, whichever copy of it this file belongs to.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd
import torch
from common import median_ms, print_table, synchronize, timed

import selfish_lib
from selfish_lib.engine import runs
from selfish_lib.engine.corpus import Corpus, load_corpus
from selfish_lib.engine.ensemble import StackedGroup, ensemble_groups, group_key
from selfish_lib.engine.evaluation import evaluate_split
from selfish_lib.engine.files import write_json
from selfish_lib.engine.losses import FUSED_FROM_NUMEL, hns_cross_entropy
from selfish_lib.engine.objectives import (
    CrossEntropy,
    HardNegatives,
    Objective,
    full_cross_entropy,
)
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.training import (
    CHECKPOINT,
    TrainConfig,
    describe_device,
    device_record,
    fresh_run,
    initial_model,
    learning_rate,
    precision_of,
    resolve_device,
    train,
    training_corpus,
    training_device,
    training_step,
    whole_split_evaluations,
)
from selfish_lib.engine.validation import ParameterError, check_float, check_int

ROOT = Path(__file__).resolve().parents[1]
TABLES = runs.TABLES
HNS = HardNegatives(2.0)  # the study's main comparison: HNS at layout 2 against CE
CE = CrossEntropy()
NOTEBOOKS_DIR = ROOT / "notebooks"


# --- sizes of each mode --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much each section does: the GPU run's sizes, or the dry run's (smoke)."""

    paper: str  # the profile whose model is 'paper' here
    plan: str  # the profile whose plan is projected
    warmup: int  # untimed steps before a timing
    timed: int  # timed steps
    ensembles: tuple[int, ...]  # stacked sizes timed, besides every run of the shape
    ensemble_cap: int | None  # at most this many members for 'every run of the shape'
    resume: dict  # max_steps, checkpoint_interval, eval_interval, log_interval, stop_after
    resume_large: dict
    determinism_steps: tuple[int, int]  # paper, large
    profiled_steps: int  # bare steps under the profiler
    loop_steps: tuple[int, int]  # the two run lengths whose difference is the loop's
    stacked_profiled: int  # E of the profiled stacked step
    hns_positions: int
    hns_vocabularies: tuple[int, ...]
    cpu_gpu_steps: int
    tf32_loss_steps: int
    eval_subword: int | None  # BPE size of the evaluation measured (None: the profile's largest)
    calibrate_steps: int


GPU_SIZES = Sizes(
    paper="paper",
    plan="paper",
    warmup=5,
    timed=40,
    ensembles=(1, 10, 30),
    ensemble_cap=None,
    resume=dict(
        max_steps=60,
        checkpoint_interval=20,
        eval_interval=30,
        log_interval=10,
        scenario_interval=10,
        stop_after=45,
    ),
    resume_large=dict(
        max_steps=30, checkpoint_interval=10, eval_interval=30, log_interval=5, stop_after=15
    ),
    determinism_steps=(60, 20),
    profiled_steps=5,
    loop_steps=(10, 30),
    stacked_profiled=10,
    hns_positions=12 * 64,
    hns_vocabularies=(65, 130, 4096, 8192),
    cpu_gpu_steps=100,
    tf32_loss_steps=10,
    eval_subword=4096,
    calibrate_steps=5,
)
DRY_SIZES = Sizes(
    paper="smoke",
    plan="smoke",
    warmup=1,
    timed=5,
    ensembles=(1, 2, 3),
    ensemble_cap=4,
    resume=dict(
        max_steps=12,
        checkpoint_interval=4,
        eval_interval=6,
        log_interval=3,
        scenario_interval=3,
        stop_after=7,
    ),
    resume_large=dict(
        max_steps=8, checkpoint_interval=4, eval_interval=8, log_interval=2, stop_after=5
    ),
    determinism_steps=(8, 6),
    profiled_steps=2,
    loop_steps=(5, 10),
    stacked_profiled=2,
    hns_positions=12 * 64,
    hns_vocabularies=(65, 130, 4096, 8192),
    cpu_gpu_steps=0,
    tf32_loss_steps=3,
    eval_subword=None,
    calibrate_steps=2,
)


class SkipSection(Exception):
    """A section that does not apply here (its reason is recorded)."""


@dataclasses.dataclass
class Context:
    """What every section reads: the device, the corpus, the sizes, a scratch folder, and
    what earlier sections measured for later ones."""

    device: torch.device
    dry: bool
    sizes: Sizes
    data_path: str | None
    scratch: Path
    measured: dict = dataclasses.field(default_factory=dict)
    _corpus: Corpus | None = None
    _plan: tuple | None = None

    @property
    def corpus(self) -> Corpus:
        """Tiny Shakespeare, loaded when a section first needs it (a corpus that cannot
        be found fails those sections, not the environment's)."""
        if self._corpus is None:
            self._corpus = load_corpus(self.data_path)
        return self._corpus

    def paper_config(self, objective: Objective = HNS, **overrides) -> TrainConfig:
        """The paper model's single-language run (the smoke model's with ``--dry``)."""
        return get_profile(self.sizes.paper).config("single", objective, seed=0, **overrides)

    def large_config(self, objective: Objective = CE, **overrides) -> TrainConfig:
        """The large profile's single-language run; with ``--dry`` the smoke model with
        the large profile's dropout (what makes the large runs differ in kind)."""
        if self.dry:
            dropout = get_profile("large").model.dropout
            return get_profile("smoke").config(
                "single", objective, seed=0, dropout=dropout, **overrides
            )
        return get_profile("large").config("single", objective, seed=0, **overrides)

    def plan(self) -> tuple[dict, str]:
        """The runs the notebooks declare for the projected profile (computed once)."""
        if self._plan is None:
            self._plan = declared_plan(self.sizes.plan, self.scratch / "plan", self.data_path)
        return self._plan


# --- small measures ------------------------------------------------------------------------


def max_abs_diff(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Largest absolute difference between two state dicts of the same keys and shapes."""
    if a.keys() != b.keys():
        raise ValueError(f"state dicts of other keys: {sorted(set(a) ^ set(b))[:5]}")
    worst = 0.0
    for key in a:
        x, y = a[key].detach().cpu().double(), b[key].detach().cpu().double()
        if x.shape != y.shape:
            raise ValueError(f"{key}: shapes {tuple(x.shape)} and {tuple(y.shape)}")
        if x.numel():
            worst = max(worst, float((x - y).abs().max()))
    return worst


def states_identical(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    """Whether two state dicts hold the same bits."""
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def curve_diff(a: pd.DataFrame, b: pd.DataFrame, column: str = "loss") -> float:
    """Largest absolute difference of a logged column between two train logs of the same
    steps (NaN when their steps differ)."""
    if not np.array_equal(a["step"].to_numpy(), b["step"].to_numpy()):
        return math.nan
    return float(np.max(np.abs(a[column].to_numpy() - b[column].to_numpy()), initial=0.0))


def final_val_loss(eval_tokens: pd.DataFrame) -> float:
    """Mean validation loss over every position at the last evaluated step."""
    last = eval_tokens[eval_tokens["step"] == eval_tokens["step"].max()]
    return float(last["loss_sum"].sum() / last["count"].sum())


def compare_results(a, b) -> dict:
    """Two TrainResults of one config: weights and each table, identical or how far apart."""
    tables = {name: bool(getattr(a, name).equals(getattr(b, name))) for name in TABLES}
    same_weights = states_identical(a.model.state_dict(), b.model.state_dict())
    return {
        "identical": same_weights and all(tables.values()),
        "weights_identical": same_weights,
        "tables_identical": tables,
        "weights_max_abs_diff": max_abs_diff(a.model.state_dict(), b.model.state_dict()),
        "loss_curve_max_abs_diff": curve_diff(a.train_log, b.train_log),
        "val_loss_abs_diff": abs(final_val_loss(a.eval_tokens) - final_val_loss(b.eval_tokens)),
    }


def hns_reference(logits: torch.Tensor, targets: torch.Tensor, layout: float):
    """The HNS loss (mean over positions) and its gradient in float64, from the
    definition: a logit is kept when ``z >= z_target - layout`` (decided in the logits'
    own dtype, as the loss promises), the loss is ``logsumexp(kept z) - z_target`` and
    its gradient ``softmax(kept z) - onehot(target)``, over the number of positions."""
    z = logits.detach()
    threshold = z.gather(1, targets[:, None]) - layout  # in the logits' dtype
    keep = z >= threshold
    z64 = z.double().masked_fill(~keep, -math.inf)
    rows = torch.logsumexp(z64, 1) - z64.gather(1, targets[:, None]).squeeze(1)
    n = len(targets)
    grad = torch.softmax(z64, 1)
    grad[torch.arange(n), targets] -= 1.0
    return rows.mean(), grad / n


def relative(error: float, scale: float) -> float:
    """``error / |scale|`` (inf when the scale is 0 and the error is not)."""
    if scale == 0:
        return 0.0 if error == 0 else math.inf
    return error / abs(scale)


# --- profiler counts -----------------------------------------------------------------------

LAUNCH_API = (
    "cudaLaunchKernel",
    "cudaLaunchKernelExC",
    "cuLaunchKernel",
    "cuLaunchKernelEx",
    "cudaLaunchCooperativeKernel",
)
SYNC_API = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
ITEM_OP = "aten::_local_scalar_dense"  # .item(), float(), .tolist() of a scalar: a host sync


def count_events(events: Iterable[tuple[str, str]], cuda: bool) -> dict:
    """Counts of one profile's events, given as (name, 'cpu' or 'cuda') pairs.

    On the host: aten operators (nested ones included) and scalar reads (``ITEM_OP``);
    with ``cuda`` also the runtime's kernel launches, graph launches and synchronizations,
    synchronous ``cudaMemcpy`` calls, and on the device the kernels and the copies each
    way. Without CUDA those are 'n/a'."""
    host, device = Counter(), Counter()
    for name, where in events:
        (device if where == "cuda" else host)[name] += 1
    counts: dict = {
        "aten_ops": sum(n for k, n in host.items() if k.startswith("aten::")),
        "scalar_reads": host[ITEM_OP],
    }
    cuda_keys = (
        "kernel_launches",
        "graph_launches",
        "syncs",
        "cuda_memcpy_calls",
        "gpu_kernels",
        "memcpy_dtoh",
        "memcpy_htod",
    )
    if not cuda:
        return {**counts, **dict.fromkeys(cuda_keys, "n/a")}
    copies = lambda way: sum(n for k, n in device.items() if k.startswith("Memcpy") and way in k)
    counts.update(
        kernel_launches=sum(host[k] for k in LAUNCH_API),
        graph_launches=host["cudaGraphLaunch"],
        syncs=sum(host[k] for k in SYNC_API),
        cuda_memcpy_calls=host["cudaMemcpy"],
        gpu_kernels=sum(n for k, n in device.items() if not k.startswith(("Memcpy", "Memset"))),
        memcpy_dtoh=copies("DtoH"),
        memcpy_htod=copies("HtoD"),
    )
    return counts


def per_step(counts: Mapping, steps: int) -> dict:
    """Counts divided by ``steps`` ('n/a' stays)."""
    return {k: (v if isinstance(v, str) else round(v / steps, 2)) for k, v in counts.items()}


def difference(more: Mapping, fewer: Mapping) -> dict:
    """``more - fewer`` key by key ('n/a' stays)."""
    return {k: (v if isinstance(v, str) else v - fewer[k]) for k, v in more.items()}


def profiled(fn: Callable[[], object], dev: torch.device) -> tuple[dict, list]:
    """Counts of the events of one call of ``fn`` (``count_events``), and on CUDA the
    most frequent runtime calls, to read the counts by."""
    from torch.profiler import ProfilerActivity, profile

    cuda = dev.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    synchronize(dev)
    with profile(activities=activities) as prof:
        fn()
        synchronize(dev)
    kinds = torch.autograd.DeviceType
    events = [(e.name, "cuda" if e.device_type == kinds.CUDA else "cpu") for e in prof.events()]
    runtime = Counter(n for n, where in events if where == "cpu" and n.startswith("cu"))
    return count_events(events, cuda), runtime.most_common(12)


# --- steps ---------------------------------------------------------------------------------


def solo_stepper(config: TrainConfig, corpus: Corpus, dev: torch.device):
    """One step of a solo run of ``config`` as the training loop takes it (a batch
    sampled and moved to the device, then ``training_step``), as ``fn(step)``, and its
    model."""
    corpus = training_corpus(corpus, config)
    model, optimizer, sampler = fresh_run(config, corpus, dev)
    prior = corpus.log_prior(config.bilingual, config.p_low).to(dev)
    state = config.objective.initial_state(model.vocab_size, dev)

    def step(i: int):
        x, y = (t.to(dev) for t in sampler.sample())
        return training_step(
            model,
            optimizer,
            x,
            y,
            config,
            learning_rate(i, config),
            step=i,
            log_prior=prior,
            objective_state=state,
        )

    return step, model


def stacked_stepper(config: TrainConfig, members: int, corpus: Corpus, dev: torch.device):
    """One step of ``members`` runs of ``config``'s shape (seeds 0, 1, ...) trained as one
    stacked group, as ``fn(step)``: the two halves of ``ensemble.StackedGroup`` that
    ``train_ensemble`` runs every step (logging and scenarios aside), and each member's
    full-softmax CE as the loop logs it."""
    group = StackedGroup([config.replace(seed=seed) for seed in range(members)], corpus, dev)

    def step(i: int) -> torch.Tensor:
        logits, _, per_position, y = group.forward_backward(i)
        group.update()
        with torch.no_grad():
            if not isinstance(config.objective, CrossEntropy):
                full_cross_entropy(logits.detach(), y)
        return per_position.detach().mean(dim=(1, 2))

    return step


def time_steps(step: Callable[[int], object], dev: torch.device, warmup: int, steps: int) -> dict:
    """Milliseconds per step of ``step(i)``: the median of ``steps`` steps each timed with
    the device synchronized around it, the spread (10th and 90th percentiles), and the
    pipelined mean (the same number of steps with one synchronization at the end, as the
    training loop runs them), after ``warmup`` untimed steps."""
    for i in range(warmup):
        step(i)
    samples = [timed(lambda i=i: step(warmup + i), dev) for i in range(steps)]
    synchronize(dev)
    began = time.perf_counter()
    for i in range(steps):
        step(warmup + steps + i)
    synchronize(dev)
    pipelined = (time.perf_counter() - began) / steps
    ordered = sorted(samples)
    quantile = lambda q: 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return {
        "median_ms": median_ms(samples),
        "p10_ms": quantile(0.1),
        "p90_ms": quantile(0.9),
        "pipelined_ms": 1000 * pipelined,
        "timed_steps": steps,
        "warmup_steps": warmup,
    }


# --- parts of a section --------------------------------------------------------------------


def attempt(measure: Callable[[], dict]) -> dict:
    """``measure()``, or the error it raised: one part of a section failing leaves the
    section's other parts (the section is then 'partial')."""
    try:
        return measure()
    except Exception as exc:
        return {
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=-8),
        }


def failed(parts: Iterable[Mapping]) -> list[str]:
    """The errors of the parts that failed (``attempt``)."""
    return [p["error"] for p in parts if "error" in p]


def with_errors(out: dict, parts: Iterable[Mapping]) -> dict:
    """``out`` with ``part_errors`` when some part failed, and every part failing raised
    as the section's own error."""
    parts = list(parts)
    errors = failed(parts)
    if errors and len(errors) == len(parts):
        raise RuntimeError(f"every part failed; the first: {errors[0]}")
    if errors:
        out["part_errors"] = errors
        out["summary"] = f"{len(errors)} of {len(parts)} parts failed; " + out["summary"]
    return out


# --- 1. environment ------------------------------------------------------------------------


def _cublas_runtime_version() -> str | None:
    """The version of the libcublas this process loaded (None before any CUDA matrix
    product, or where it cannot be asked)."""
    try:
        maps = Path("/proc/self/maps").read_text()
        found = re.search(r"(\S*libcublas\.so[.\d]*)\s*$", maps, re.MULTILINE)
        if not found:
            return None
        lib = ctypes.CDLL(found.group(1))
        parts = []
        for which in range(3):  # MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL
            value = ctypes.c_int()
            if lib.cublasGetProperty(which, ctypes.byref(value)) != 0:
                return None
            parts.append(str(value.value))
    except (OSError, AttributeError) as exc:
        return f"unknown ({type(exc).__name__}: {exc})"
    return ".".join(parts)


def _package_versions(prefixes: Sequence[str]) -> dict:
    """Installed distributions whose name starts with one of ``prefixes``."""
    import importlib.metadata as metadata

    found = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith(tuple(prefixes)):
            found[name] = dist.version
    return dict(sorted(found.items()))


def _nvidia_smi() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    query = "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit"
    try:
        done = subprocess.run(
            [smi, query, "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"failed: {exc}"
    return done.stdout.strip() or done.stderr.strip()


def _source_hash(folder: Path) -> str:
    """sha256 of the library's engine sources (which code was measured)."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _cuda_facts(dev: torch.device) -> dict:
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    a = torch.randn(64, 64, device=dev)
    (a @ a).sum().item()  # loads cuBLAS, so that its version can be read
    free, total = torch.cuda.mem_get_info(index)
    return {
        "gpu": torch.cuda.get_device_name(index),
        "capability": ".".join(map(str, torch.cuda.get_device_capability(index))),
        "multiprocessors": props.multi_processor_count,
        "memory_total_bytes": total,
        "memory_free_bytes": free,
        "cudnn": torch.backends.cudnn.version(),
        "cublas_runtime": _cublas_runtime_version(),
        "tf32_matmul_default": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn_default": bool(torch.backends.cudnn.allow_tf32),
        "sdp_flash": torch.backends.cuda.flash_sdp_enabled(),
        "sdp_mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
        "sdp_math": torch.backends.cuda.math_sdp_enabled(),
    }


def environment(ctx: Context) -> dict:
    dev = ctx.device
    out: dict = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "selfish_lib": selfish_lib.__version__,
        "engine_sources_sha256": _source_hash(ROOT / "selfish_lib" / "engine"),
        "numerics_version": runs.NUMERICS_VERSION,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "cuda_available": torch.cuda.is_available(),
        "nvidia_smi": _nvidia_smi(),
        "nvidia_packages": _package_versions(("nvidia-", "triton")),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    parts = []
    if dev.type == "cuda":
        parts.append(attempt(lambda: _cuda_facts(dev)))
        out["cuda"] = parts[-1]

    def record() -> dict:
        record = device_record(dev)
        return {
            "record": record,
            "described": runs.describe_device_record(record),
            "missing": [k for k, v in record.items() if v is None],
            "describe_device": describe_device(str(dev)),
        }

    parts.append(attempt(record))
    out["device_record"] = parts[-1]
    what = out.get("cuda", {}).get("gpu", platform.processor() or platform.machine())
    rec = out["device_record"]
    described = rec.get("described", rec.get("error"))
    missing = rec.get("missing")
    out["summary"] = (
        f"{what}; torch {torch.__version__}, CUDA {torch.version.cuda}; record: {described}"
        + (f" (None: {', '.join(missing)})" if missing else "")
    )
    return with_errors(out, parts)


# --- 2. resume -----------------------------------------------------------------------------


def _resume_case(ctx: Context, label: str, config: TrainConfig, stop_after: int) -> dict:
    dev = str(ctx.device)
    folder = ctx.scratch / "resume" / label.split()[0]
    straight = train(config, ctx.corpus, folder / "straight", device=dev, progress=False)
    cut = folder / "cut"
    if train(config, ctx.corpus, cut, device=dev, progress=False, stop_after=stop_after):
        raise RuntimeError(f"train(stop_after={stop_after}) finished the run")
    checkpoint_step = torch.load(cut / CHECKPOINT, map_location="cpu", weights_only=False)["step"]
    resumed = train(config, ctx.corpus, cut, device=dev, progress=False)
    return {
        "max_steps": config.max_steps,
        "stopped_after": stop_after,
        "resumed_from_step": checkpoint_step,
        **compare_results(straight, resumed),
    }


def _verdict(case: Mapping) -> str:
    if "error" in case:
        return "error"
    return "identical" if case["identical"] else f"DIFFER ({case['weights_max_abs_diff']:.1e})"


def resume(ctx: Context) -> dict:
    paper = dict(ctx.sizes.resume)
    stop = paper.pop("stop_after")
    large = dict(ctx.sizes.resume_large)
    stop_large = large.pop("stop_after")
    configs = {
        "paper HNS(2) with scenarios": (ctx.paper_config(HNS, **paper), stop),
        "large CE with dropout": (ctx.large_config(CE, **large), stop_large),
    }
    cases = [
        {"config": label, **attempt(lambda a=args, label=label: _resume_case(ctx, label, *a))}
        for label, args in configs.items()
    ]
    summary = "; ".join(
        f"{c['config'].split()[0]}: {_verdict(c)}"
        + (f" (resumed at {c['resumed_from_step']}/{c['max_steps']})" if "error" not in c else "")
        for c in cases
    )
    identical = all(c.get("identical") is True for c in cases)
    return with_errors({"identical": identical, "cases": cases, "summary": summary}, cases)


# --- 3. step time --------------------------------------------------------------------------


def shape_runs(ctx: Context) -> int:
    """Runs of the projected plan that share one stacked group's key with the paper
    single-language run: what 'every run of the shape' stacks."""
    grids, _ = ctx.plan()
    key = group_key(ctx.paper_config(HNS))
    configs = {
        runs.config_hash(c): c for g in grids.values() for p in g.values() for c in p.values()
    }
    return sum(group_key(c) == key for c in configs.values())


def _solo_timing(ctx: Context, config: TrainConfig, steps: int) -> dict:
    step, _ = solo_stepper(config, ctx.corpus, ctx.device)
    return time_steps(step, ctx.device, ctx.sizes.warmup, steps)


def _stacked_timing(ctx: Context, members: int, solo_ms: float | None) -> dict:
    step = stacked_stepper(ctx.paper_config(HNS), members, ctx.corpus, ctx.device)
    timing = time_steps(step, ctx.device, ctx.sizes.warmup, ctx.sizes.timed)
    member_ms = timing["median_ms"] / members
    out = {"members": members, **timing, "member_ms": member_ms}
    if solo_ms:
        out.update(member_ratio_to_solo=member_ms / solo_ms, speedup_over_solo=solo_ms / member_ms)
    return out


def step_time(ctx: Context) -> dict:
    dev, sizes = ctx.device, ctx.sizes
    out: dict = {
        "objective": HNS.label,
        "what": "sampling, host-to-device copy and training_step (solo) or the stacked "
        "step (stacked_stepper); no logging",
    }
    with training_device(dev):
        paper = attempt(lambda: _solo_timing(ctx, ctx.paper_config(HNS), sizes.timed))
        out["paper_solo"] = paper
        _release(dev)
        large_steps = max(3, sizes.timed // 2)
        out["large_solo"] = attempt(lambda: _solo_timing(ctx, ctx.large_config(HNS), large_steps))
        _release(dev)
        wanted = list(sizes.ensembles)
        try:
            every = shape_runs(ctx)
            out["every_run_of_the_shape"] = every
            if every:
                capped = min(every, sizes.ensemble_cap or every)
                out["every_run_of_the_shape_timed"] = capped
                wanted.append(capped)
        except Exception as exc:  # the plan is the report layer's; the timings go on
            out["every_run_of_the_shape_error"] = f"{type(exc).__name__}: {exc}"
        solo_ms = paper.get("median_ms")
        stacked = []
        for members in sorted(set(wanted)):
            stacked.append(attempt(lambda m=members: _stacked_timing(ctx, m, solo_ms)))
            stacked[-1].setdefault("members", members)
            _release(dev)
    out["stacked"] = stacked
    timed_ok = [row for row in stacked if "error" not in row]
    summary = [f"paper solo {solo_ms:.2f} ms" if solo_ms else "paper solo: error"]
    if "median_ms" in out["large_solo"]:
        summary.append(f"large solo {out['large_solo']['median_ms']:.1f} ms")
    if timed_ok and solo_ms:
        best = min(timed_ok, key=lambda row: row["member_ms"])
        out["best_stacked"] = {
            "members": best["members"],
            "member_ms": best["member_ms"],
            "speedup_over_solo": best["speedup_over_solo"],
        }
        summary.append(
            f"stacked E={best['members']}: {best['member_ms']:.3f} ms a member "
            f"({best['speedup_over_solo']:.1f}x solo)"
        )
        ctx.measured["step_time"] = out
    out["summary"] = "; ".join(summary)
    return with_errors(out, [paper, out["large_solo"], *stacked])


# --- 4. launches and syncs -----------------------------------------------------------------


def _profiled_steps(ctx: Context, make: Callable[[], Callable[[int], object]]) -> dict:
    """Counts per step of ``profiled_steps`` steps of a stepper, after its warm-up."""
    sizes = ctx.sizes
    step = make()
    for i in range(sizes.warmup):
        step(i)
    k = sizes.profiled_steps
    counts, top = profiled(lambda: [step(sizes.warmup + i) for i in range(k)], ctx.device)
    return {**per_step(counts, k), "runtime_calls": top}


def _profiled_loop(ctx: Context) -> dict:
    """Counts per step of the training loop: two runs of different lengths both
    evaluate at step 0 and at their end, so the difference of their counts is what the
    extra steps cost, their log points and scenario records included."""
    short, long = ctx.sizes.loop_steps
    totals = {}
    for n in (short, long):
        config = ctx.paper_config(HNS, max_steps=n, eval_interval=n)
        run = lambda config=config: train(
            config, ctx.corpus, device=str(ctx.device), progress=False
        )
        totals[n], _ = profiled(run, ctx.device)
    loop = ctx.paper_config(HNS)
    return {
        **per_step(difference(totals[long], totals[short]), long - short),
        "what": f"train() of {long} steps minus train() of {short}, per step; "
        f"log_interval={loop.log_interval}, scenario_interval={loop.scenario_interval}",
    }


def launches(ctx: Context) -> dict:
    dev = ctx.device
    E = ctx.sizes.stacked_profiled
    with training_device(dev):
        solo = attempt(
            lambda: _profiled_steps(
                ctx, lambda: solo_stepper(ctx.paper_config(HNS), ctx.corpus, dev)[0]
            )
        )
        _release(dev)
        stacked = attempt(
            lambda: _profiled_steps(
                ctx, lambda: stacked_stepper(ctx.paper_config(HNS), E, ctx.corpus, dev)
            )
        )
        _release(dev)
    loop = attempt(lambda: _profiled_loop(ctx))
    out = {"solo_step": solo, f"stacked_step_E{E}": stacked, "loop_step": loop}

    def line(name: str, counts: Mapping) -> str:
        if "error" in counts:
            return f"{name}: error"
        if dev.type == "cuda":
            return (
                f"{name}: {counts['kernel_launches']} launches, {counts['syncs']} syncs, "
                f"{counts['memcpy_dtoh']} DtoH"
            )
        return f"{name}: {counts['aten_ops']} aten ops, {counts['scalar_reads']} scalar reads"

    out["summary"] = "; ".join(line(n, c) for n, c in (("solo step", solo), ("loop step", loop)))
    if dev.type != "cuda":
        out["summary"] += " (CUDA counts n/a)"
    return with_errors(out, [solo, stacked, loop])


# --- 5. determinism ------------------------------------------------------------------------


def _twice(ctx: Context, config: TrainConfig) -> dict:
    a = train(config, ctx.corpus, device=str(ctx.device), progress=False)
    b = train(config, ctx.corpus, device=str(ctx.device), progress=False)
    return {"steps": config.max_steps, **compare_results(a, b)}


def determinism(ctx: Context) -> dict:
    paper_steps, large_steps = ctx.sizes.determinism_steps
    configs = {
        "paper HNS(2)": ctx.paper_config(
            HNS, max_steps=paper_steps, eval_interval=paper_steps, log_interval=1
        ),
        "large CE with dropout": ctx.large_config(
            CE, max_steps=large_steps, eval_interval=large_steps, log_interval=1
        ),
    }
    cases = []
    for label, config in configs.items():
        cases.append({"config": label, **attempt(lambda c=config: _twice(ctx, c))})
        _release(ctx.device)
    identical = all(c.get("identical") is True for c in cases)
    summary = "; ".join(f"{c['config'].split()[0]}: {_verdict(c)}" for c in cases)
    return with_errors({"identical": identical, "cases": cases, "summary": summary}, cases)


# --- 6. the fused HNS loss -----------------------------------------------------------------


def _hns_case(dev: torch.device, positions: int, V: int) -> dict:
    gen = torch.Generator().manual_seed(V)
    logits = (2.0 * torch.randn(positions, V, generator=gen)).to(dev).requires_grad_(True)
    targets = torch.randint(0, V, (positions,), generator=gen).to(dev)
    loss = hns_cross_entropy(logits, targets, HNS.layout)
    loss.backward()
    ref_loss, ref_grad = hns_reference(logits.detach().cpu(), targets.cpu(), HNS.layout)
    grad = logits.grad.detach().cpu().double()
    loss_err = abs(float(loss.detach().cpu().double()) - float(ref_loss))
    grad_err = float((grad - ref_grad).abs().max())
    fused = positions * V >= FUSED_FROM_NUMEL
    return {
        "positions": positions,
        "layout": HNS.layout,
        "path": "fused" if fused else "kept logits + F.cross_entropy",
        "loss": float(loss.detach().cpu()),
        "loss_abs_error": loss_err,
        "loss_rel_error": relative(loss_err, float(ref_loss)),
        "grad_max_abs_error": grad_err,
        "grad_rel_error": relative(grad_err, float(ref_grad.abs().max())),
    }


def hns_loss(ctx: Context) -> dict:
    sizes = ctx.sizes
    cases = [
        {"vocab_size": V, **attempt(lambda V=V: _hns_case(ctx.device, sizes.hns_positions, V))}
        for V in sizes.hns_vocabularies
    ]
    ok = [c for c in cases if "error" not in c]
    worst_loss = max((c["loss_rel_error"] for c in ok), default=math.nan)
    worst_grad = max((c["grad_rel_error"] for c in ok), default=math.nan)
    out = {
        "cases": cases,
        "max_loss_rel_error": worst_loss,
        "max_grad_rel_error": worst_grad,
        "reference": "float64 logsumexp and softmax over the logits kept in their own dtype",
        "summary": f"largest relative error: loss {worst_loss:.1e}, gradient "
        f"{worst_grad:.1e} (V = {', '.join(map(str, sizes.hns_vocabularies))})",
    }
    return with_errors(out, cases)


# --- 7. CPU against GPU --------------------------------------------------------------------


def cpu_vs_gpu(ctx: Context) -> dict:
    if ctx.dry:
        raise SkipSection("--dry: no GPU to compare the CPU with")
    if ctx.device.type != "cuda":
        raise SkipSection(f"the device is {ctx.device}: nothing to compare the CPU with")
    steps = ctx.sizes.cpu_gpu_steps
    config = ctx.paper_config(HNS, max_steps=steps, eval_interval=steps, log_interval=1)
    cpu = train(config, ctx.corpus, device="cpu", progress=False)
    gpu = train(config, ctx.corpus, device=str(ctx.device), progress=False)
    a, b = cpu.train_log, gpu.train_log
    gap = np.abs(a["loss"].to_numpy() - b["loss"].to_numpy())
    at = {int(s): float(g) for s, g in zip(a["step"], gap, strict=True) if s in (1, 10, steps)}
    out = {
        "steps": steps,
        "seconds_cpu": cpu.seconds,
        "seconds_gpu": gpu.seconds,
        "loss_curve_max_abs_diff": float(gap.max()),
        "loss_abs_diff_at_step": at,
        "first_step_differing": int(a["step"][np.flatnonzero(gap)[0]]) if gap.any() else None,
        "weights_max_abs_diff": max_abs_diff(cpu.model.state_dict(), gpu.model.state_dict()),
        "val_loss_cpu": final_val_loss(cpu.eval_tokens),
        "val_loss_gpu": final_val_loss(gpu.eval_tokens),
        "gpu_precision": precision_of(ctx.device),
    }
    out["val_loss_abs_diff"] = abs(out["val_loss_cpu"] - out["val_loss_gpu"])
    out["summary"] = (
        f"after {steps} steps: loss curve {out['loss_curve_max_abs_diff']:.1e}, "
        f"weights {out['weights_max_abs_diff']:.1e}, val loss "
        f"{out['val_loss_abs_diff']:.1e}"
    )
    return out


# --- 8. TF32 -------------------------------------------------------------------------------


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 matrix products (cuBLAS and cuDNN) on or off for the block, then as before."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def tf32_check(ctx: Context) -> dict:
    dev, sizes = ctx.device, ctx.sizes
    config = ctx.large_config(CE)
    modes = (False, True)
    with training_device(dev):
        # one run per mode from the same weights, dropout draws and batches
        steps = {enabled: solo_stepper(config, ctx.corpus, dev)[0] for enabled in modes}
        losses = {}
        for enabled in modes:
            torch.manual_seed(config.seed)  # the same dropout draws (CPU and CUDA generators)
            with tf32(enabled):
                losses[enabled] = [
                    float(steps[enabled](i).loss) for i in range(sizes.tf32_loss_steps)
                ]
        # then timed in turns, so that a drift of the machine hits both modes alike
        first = sizes.tf32_loss_steps
        for i in range(sizes.warmup):
            for enabled in modes:
                with tf32(enabled):
                    steps[enabled](first + i)
        samples = {enabled: [] for enabled in modes}
        first += sizes.warmup
        for i in range(max(3, sizes.timed // 2)):
            for enabled in modes:
                with tf32(enabled):
                    samples[enabled].append(timed(lambda e=enabled, i=i: steps[e](first + i), dev))
        precision = {}
        for enabled in modes:
            with tf32(enabled):
                precision[enabled] = precision_of(dev)
    off, on = (
        {
            "precision_recorded": precision[enabled],
            "losses": losses[enabled],
            "median_ms": median_ms(samples[enabled]),
            "timed_steps": len(samples[enabled]),
        }
        for enabled in modes
    )
    gap = [abs(a - b) for a, b in zip(off["losses"], on["losses"], strict=True)]
    out = {
        "config": "smoke CE with dropout" if ctx.dry else "large CE",
        "off": off,
        "on": on,
        "loss_max_abs_diff": max(gap),
        "loss_abs_diff_last": gap[-1],
        "speedup": off["median_ms"] / on["median_ms"],
        "what": "TF32 off then on for the same steps from the same weights (losses); then "
        "steps of both timed in turns (median)",
    }
    if dev.type != "cuda":
        out["note"] = "no TF32 on this device: the flags change nothing (the ratio is noise)"
    out["summary"] = (
        f"off {off['median_ms']:.1f} ms, on {on['median_ms']:.1f} ms "
        f"({out['speedup']:.2f}x); loss diff after {len(gap)} steps {gap[-1]:.1e}"
    )
    return out


# --- 9. evaluation memory ------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in KiB, or None."""
    try:
        found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(found.group(1)) if found else None


class PeakRss:
    """The process's peak resident memory over a block of code, on the host.

    Where Linux lets a process reset its high-water mark (writing 5 to
    /proc/self/clear_refs), the peak is the block's own (VmHWM after the reset);
    elsewhere it is ``resource``'s peak over the process's life (ru_maxrss), which only
    bounds the block's from above. Memory the allocator kept from earlier work and the
    block reuses is not seen: the rise is a lower bound of what the block needs."""

    def __enter__(self) -> PeakRss:
        # memory freed earlier stays resident in the allocator's heap, where the block
        # would reuse it unseen: give it back to the system first (glibc only)
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "VmHWM after a reset through /proc/self/clear_refs (this block's peak)"
        except OSError:
            self.method = "resource ru_maxrss (the process's peak since it started)"
        self.start = 1024 * (_status_kib("VmRSS") or 0)
        return self

    def __exit__(self, *exc) -> None:
        hwm = _status_kib("VmHWM") if self.method.startswith("VmHWM") else None
        lifetime = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        self.peak = 1024 * (hwm if hwm is not None else lifetime)


def _eval_case(ctx: Context, config: TrainConfig) -> dict:
    dev = ctx.device
    corpus = training_corpus(ctx.corpus, config)
    model = initial_model(config, corpus.vocab_size).to(dev)
    V = model.vocab_size
    row = {
        "tokenizer": config.tokenizer,
        "model_vocab": V,
        "positions": (len(corpus.val) - 1) * (2 if config.bilingual else 1),
        "logits_bytes_per_batch": 256 * config.model.block_size * V * 4,
    }
    if dev.type == "cuda":
        synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        start = torch.cuda.memory_allocated(dev)
    began = time.perf_counter()
    with PeakRss() as host:
        evaluate_split(model, corpus.val, corpus.vocab_size, config.bilingual, dev)
        synchronize(dev)
    row["seconds"] = time.perf_counter() - began
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev)
        row.update(
            peak_allocated_bytes=peak,
            peak_above_start_bytes=peak - start,
            peak_reserved_bytes=torch.cuda.max_memory_reserved(dev),
        )
    row.update(
        peak_rss_bytes=host.peak,
        peak_rss_above_start_bytes=host.peak - host.start,
        peak_rss_method=host.method,
    )
    return row


def eval_memory(ctx: Context) -> dict:
    dev = ctx.device
    profile = get_profile(ctx.sizes.paper)
    size = ctx.sizes.eval_subword or max(profile.subword["sizes"])
    cases = []
    with training_device(dev):
        for setting in ("single", "bilingual"):
            config = profile.subword_config(setting, HNS, size)
            cases.append({"setting": setting, **attempt(lambda c=config: _eval_case(ctx, c))})
            _release(dev)
    ctx.measured["eval_memory"] = cases

    def line(r: Mapping) -> str:
        if "error" in r:
            return f"{r['setting']}: error"
        if dev.type == "cuda":
            memory = f"{r['peak_allocated_bytes'] / 2**20:.0f} MiB peak allocated"
        else:
            memory = f"peak RSS {r['peak_rss_above_start_bytes'] / 2**20:+.0f} MiB"
        return f"{r['setting']} {r['tokenizer']}: {memory}, {r['seconds']:.2f} s"

    out = {"cases": cases, "summary": "; ".join(line(r) for r in cases)}
    return with_errors(out, cases)


# --- 10. the plan's projected wall time ----------------------------------------------------


def parameters_cell(source: str) -> str:
    """The parameters cell of a py:percent notebook's source ('' if none)."""
    lines, inside = [], False
    for line in source.splitlines():
        if line.startswith("# %%"):
            if inside:
                break
            inside = "parameters" in line and "tags" in line
            continue
        if inside:
            lines.append(line)
    return "\n".join(lines)


def plan_from_sources(
    profile: str, store: Path, data_path: str | None, notebooks_dir: Path = NOTEBOOKS_DIR
) -> dict:
    """The runs every notebook declares for ``profile``, from the parameters cells of the
    notebooks' py:percent sources, validated by the notebooks' own validators
    (``report.plan``): what ``report.pipeline.prepare`` lists, without the packages that
    executing notebooks needs (jupytext, papermill, altair)."""
    from selfish_lib.report.plan import declared_runs, notebook_parameters_for_plan

    grids = {}
    for path in sorted(notebooks_dir.glob("[0-9][0-9]_*.py")):
        values = {
            "profile": profile,
            "device": "cpu",
            "seeds": None,
            "results_dir": str(store),
            "data_path": data_path,
            "progress": False,
            "notebook_name": path.stem,
        }
        source = parameters_cell(path.read_text(encoding="utf-8"))
        grids[path.stem] = declared_runs(
            path.stem, notebook_parameters_for_plan(source, path.stem, values)
        )
    return grids


def declared_plan(profile: str, folder: Path, data_path: str | None) -> tuple[dict, str]:
    """(notebook -> part -> key -> TrainConfig, how it was read) for an empty store."""
    store = folder / "results"
    try:
        from selfish_lib.report.pipeline import prepare

        prepared = prepare(
            profile=profile,
            device="cpu",
            results_dir=store,
            reports_dir=folder / "reports",
            data_path=data_path,
        )
    except ImportError as exc:  # no jupytext, papermill or altair here: read the cells
        how = f"notebook parameter cells (report.pipeline.prepare: {exc})"
        return plan_from_sources(profile, store, data_path), how
    return prepared.grids, "report.pipeline.prepare"


def group_step_ratio(members: int, stacked: Mapping[int, float]) -> float:
    """Time of one step of a stacked group of ``members`` runs over one solo step, from
    the measured ratios ``stacked`` (E -> group step / solo step): linear between the
    measured sizes, per member beyond the largest (one member trains solo: 1)."""
    if members == 1:
        return 1.0
    sizes = sorted(stacked)
    if members >= sizes[-1]:
        return stacked[sizes[-1]] * members / sizes[-1]
    if members <= sizes[0]:
        return stacked[sizes[0]] * members / sizes[0]
    hi = bisect.bisect_left(sizes, members)
    lo_e, hi_e = sizes[hi - 1], sizes[hi]
    if hi_e == members:
        return stacked[members]
    share = (members - lo_e) / (hi_e - lo_e)
    return stacked[lo_e] + share * (stacked[hi_e] - stacked[lo_e])


def projection_of(
    configs: Sequence[TrainConfig],
    timings: Mapping[tuple, tuple[float, float]],
    shape: Callable[[TrainConfig], tuple],
    stacked: Mapping[int, float] | None,
    group_size: int | None,
) -> dict:
    """Seconds to train ``configs`` one after another: each run's steps times its shape's
    step time plus its evaluations times its shape's evaluation time (``timings``: shape ->
    (s/step, s/evaluation)); and, with ``stacked`` ratios, in groups of at most
    ``group_size`` runs (``ensemble.ensemble_groups``), a group's step costing
    ``group_step_ratio`` solo steps of its shape and its members evaluated one by one."""
    train_s = sum(c.max_steps * timings[shape(c)][0] for c in configs)
    eval_s = sum(whole_split_evaluations(c) * timings[shape(c)][1] for c in configs)
    out = {
        "runs": len(configs),
        "steps": sum(c.max_steps for c in configs),
        "whole_split_evaluations": sum(whole_split_evaluations(c) for c in configs),
        "solo_train_s": train_s,
        "eval_s": eval_s,
        "solo_total_s": train_s + eval_s,
    }
    if stacked and group_size:
        groups = ensemble_groups(list(configs), group_size)
        stacked_train = sum(
            g[0].max_steps * timings[shape(g[0])][0] * group_step_ratio(len(g), stacked)
            for g in groups
        )
        out.update(
            group_size=group_size,
            groups=len(groups),
            runs_in_groups=sum(len(g) for g in groups if len(g) > 1),
            stacked_train_s=stacked_train,
            stacked_total_s=stacked_train + eval_s,
        )
    return out


def projection(ctx: Context) -> dict:
    from selfish_lib.report.plan import calibrate, plan_table, shape_of

    dev = ctx.device
    grids, how = ctx.plan()
    table = plan_table(grids, ctx.scratch / "plan" / "results")
    configs = list(table["config"])
    pending = int((table["status"] != "missing").sum())
    with training_device(dev):
        timings = calibrate(configs, ctx.corpus, str(dev), steps=ctx.sizes.calibrate_steps)
    step_time = ctx.measured.get("step_time")  # set when it timed solo and stacked steps
    stacked = group_size = None
    if step_time is not None:
        solo = step_time["paper_solo"]["median_ms"]
        stacked = {
            row["members"]: row["median_ms"] / solo
            for row in step_time["stacked"]
            if "error" not in row
        }
        group_size = step_time["best_stacked"]["members"]
    out = projection_of(configs, timings, shape_of, stacked, group_size)
    out["profile"] = ctx.sizes.plan
    out["plan_read_by"] = how
    out["runs_pending_tuning"] = pending
    out["shapes"] = [
        {
            "model": f"{s[0].n_layer}x{s[0].n_head}x{s[0].n_embd}, context {s[0].block_size}",
            "batch_size": s[1],
            "bilingual": s[2],
            "tokenizer": s[3],
            "runs": sum(shape_of(c) == s for c in configs),
            "steps": sum(c.max_steps for c in configs if shape_of(c) == s),
            "whole_split_evaluations": sum(
                whole_split_evaluations(c) for c in configs if shape_of(c) == s
            ),
            "step_ms": 1000 * t[0],
            "eval_s": t[1],
        }
        for s, t in timings.items()
    ]
    out["stacked_ratios"] = stacked
    out["assumptions"] = [
        "runs train one after another in one process on this one device; no time for "
        "checkpoints, table writing, tokenizer training or process start",
        f"step and evaluation times per model shape from report.plan.calibrate on this "
        f"device ({ctx.sizes.calibrate_steps} timed steps after one, median; one "
        "evaluation), under the training's device settings (deterministic algorithms)",
        "evaluations per run in whole-split evaluations "
        "(training.whole_split_evaluations, as report.plan counts them): the last whole, "
        "the ones before it each a 1/interim_eval_stride of one",
        "stacked: runs grouped as ensemble.ensemble_groups groups them (at most the best "
        "measured E); a group's step costs the solo step of its shape times the measured "
        "ratio (group step / solo step at the paper single-language shape, section "
        "step_time), linear between measured E: that the ratio holds at every shape is an "
        "assumption; members are evaluated one by one, as train_ensemble does",
        "runs whose value waits for tuning (chapter 07) stand at their placeholder config",
        "scenario logging, logging and the loop's other work are in neither the solo nor "
        "the stacked step time (section launches counts the loop's extra work)",
    ]
    hours = lambda s: s / 3600
    summary = (
        f"{out['runs']} runs, {out['steps']:,} steps: solo {hours(out['solo_total_s']):.2f} h"
        f" ({hours(out['eval_s']):.2f} h evaluating)"
    )
    if "stacked_total_s" in out:
        summary += f", stacked E<={group_size}: {hours(out['stacked_total_s']):.2f} h"
    out["summary"] = summary
    return out


# --- the run -------------------------------------------------------------------------------

SECTIONS: tuple[tuple[str, Callable[[Context], dict]], ...] = (
    ("environment", environment),
    ("resume", resume),
    ("step_time", step_time),
    ("launches", launches),
    ("determinism", determinism),
    ("hns_loss", hns_loss),
    ("cpu_vs_gpu", cpu_vs_gpu),
    ("tf32", tf32_check),
    ("eval_memory", eval_memory),
    ("projection", projection),
)


def not_chosen(ctx: Context) -> dict:
    """A section left out by ``--sections``."""
    raise SkipSection("not among --sections")


def _release(dev: torch.device) -> None:
    """Give cached device memory back between measurements."""
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def run_sections(
    sections: Sequence[tuple[str, Callable[[Context], dict]]],
    ctx: Context,
    report: dict,
    budget_s: float,
    *,
    began: float,
    clock: Callable[[], float] = time.perf_counter,
    save: Callable[[dict], object] | None = None,
    progress: bool = False,
) -> None:
    """Run each section into ``report['sections'][name]``: 'ok' with its result,
    'partial' with its result when some of its parts failed (``part_errors``), 'error'
    with the exception and its traceback, or 'skipped' with the reason (the section's
    own, or the budget of ``budget_s`` seconds since ``began`` spent before it started);
    ``save(report)`` after each one, and with ``progress`` a line on stdout."""
    for name, section in sections:
        used = clock() - began
        if used >= budget_s:
            entry = {
                "status": "skipped",
                "seconds": 0.0,
                "reason": f"time budget spent: {used:.0f} s of {budget_s:.0f} s used",
            }
        else:
            start = clock()
            try:
                result = section(ctx)
                entry = {"status": "partial" if "part_errors" in result else "ok", "result": result}
            except SkipSection as exc:
                entry = {"status": "skipped", "reason": str(exc)}
            except Exception as exc:  # recorded: the next section still runs
                entry = {
                    "status": "error",
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=-12),
                }
            entry["seconds"] = clock() - start
            with contextlib.suppress(Exception):
                _release(ctx.device)
        report["sections"][name] = entry
        if save is not None:
            save(report)
        if progress:
            print(f"[gpu_check] {name}: {entry['status']} ({entry['seconds']:.1f} s)", flush=True)


def table_rows(report: dict) -> list[list[str]]:
    """One row per section: name, status, what it found (or why not), seconds."""
    rows = []
    for name, entry in report["sections"].items():
        if entry["status"] in ("ok", "partial"):
            what = str(entry["result"].get("summary", ""))
        elif entry["status"] == "skipped":
            what = entry["reason"]
        else:
            what = entry["error"].splitlines()[0] if entry["error"] else "error"
        what = what if len(what) <= 120 else what[:117] + "..."
        rows.append([name, entry["status"], what, f"{entry['seconds']:.1f} s"])
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json", help="the JSON written")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=450.0,
        help="seconds after which the remaining sections are skipped",
    )
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument(
        "--dry",
        action="store_true",
        help="every section on the CPU at the smoke sizes (about a minute)",
    )
    parser.add_argument(
        "--data-path",
        default=None,
        help="the corpus file (default: $SELFISH_DATA, the cache or a download)",
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        default=None,
        metavar="NAME",
        help="run only these sections (the others are recorded as skipped): "
        + ", ".join(name for name, _ in SECTIONS),
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps of each step timing (default 40; 5 with --dry)",
    )
    args = parser.parse_args(argv)
    try:
        check_float("budget_s", args.budget_s, 0.0, min_inclusive=False)
        if args.steps is not None:
            check_int("steps", args.steps, 1)
        names = [name for name, _ in SECTIONS]
        for name in args.sections or ():
            if name not in names:
                raise ParameterError("sections", name, "names among " + ", ".join(names))
    except ParameterError as exc:
        parser.error(str(exc))
    args.device = "cpu" if args.dry else args.device
    try:
        args.resolved = resolve_device(args.device)
    except ParameterError as exc:
        parser.error(f"{exc}; --dry runs the CPU version")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    sizes = DRY_SIZES if args.dry else GPU_SIZES
    if args.steps is not None:
        sizes = dataclasses.replace(sizes, timed=args.steps)
    out = Path(args.out)
    report = {
        "script": "bench/gpu_check.py",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else list(argv),
        "dry": args.dry,
        "device": str(args.resolved),
        "budget_s": args.budget_s,
        "sizes": dataclasses.asdict(sizes),
        "sections": {},
    }
    save = lambda data: write_json(out, {**data, "wall_s": time.perf_counter() - began})
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as scratch:
        ctx = Context(
            device=args.resolved,
            dry=args.dry,
            sizes=sizes,
            data_path=args.data_path,
            scratch=Path(scratch),
        )
        chosen = [
            (name, section if args.sections is None or name in args.sections else not_chosen)
            for name, section in SECTIONS
        ]
        run_sections(chosen, ctx, report, args.budget_s, began=began, save=save, progress=True)
    report["wall_s"] = time.perf_counter() - began
    save(report)
    print(
        f"\ngpu_check on {report['device']}{' (dry)' if args.dry else ''}: "
        f"{report['wall_s']:.1f} s, written to {out}"
    )
    print_table(["section", "status", "result", "time"], table_rows(report))
    failures = [n for n, e in report["sections"].items() if e["status"] in ("error", "partial")]
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
