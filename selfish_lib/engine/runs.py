"""The run store: a run is named by the hash of its config and trained at most once.

``results/runs/<hash>/`` holds ``config.json``, the metric tables, the final
model and, written last, the ``COMPLETE`` marker. Work in progress lives in
``results/runs/.<hash>.partial/`` (with its checkpoint) and is renamed into
place only when complete, so an interrupted run never looks finished and the
next ``get_or_train`` resumes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
import torch

from .. import __version__
from .corpus import Corpus, load_corpus
from .evaluation import aggregate
from .model import GPT
from .training import TrainConfig, train

# Bump when a change to the library changes the numbers a config produces:
# every run is then retrained instead of silently mixing old and new numerics.
NUMERICS_VERSION = 1
ENV_VAR = "SELFISH_RESULTS"
MARKER = "COMPLETE"
TABLES = ("train_log", "train_tokens", "eval_tokens", "scenarios")


def default_results_dir() -> Path:
    """``$SELFISH_RESULTS`` if set, else ``./results``."""
    return Path(os.environ.get(ENV_VAR, "results"))


def config_hash(config: TrainConfig) -> str:
    """Stable 16-hex-digit id of everything that determines a run's numbers.

    Fields at their default value are left out of the hashed payload, so that a
    field added to TrainConfig later (with a default that reproduces the old
    behaviour) keeps every existing run id. The flip side: changing a default
    changes numbers under an unchanged id, so it requires bumping NUMERICS_VERSION.
    """
    defaults = TrainConfig().to_dict()
    fields = {k: v for k, v in config.to_dict().items() if v != defaults[k]}
    payload = {"config": fields, "numerics": NUMERICS_VERSION}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Run:
    """A completed run: its config, tables and final model, loaded lazily."""

    path: Path
    config: TrainConfig
    meta: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Run:
        """Open a completed run folder."""
        path = Path(path)
        if not (path / MARKER).exists():
            raise FileNotFoundError(f"{path} is not a completed run (no {MARKER} marker)")
        data = json.loads((path / "config.json").read_text())
        return cls(path, TrainConfig.from_dict(data["config"]), data.get("meta", {}))

    @property
    def id(self) -> str:
        """The config hash."""
        return self.path.name

    def _table(self, name: str) -> pd.DataFrame:
        return pd.read_csv(self.path / f"{name}.csv.gz")

    @cached_property
    def train_log(self) -> pd.DataFrame:
        """step, lr, loss (the objective), ce (full cross-entropy), grad_norm."""
        return self._table("train_log")

    @cached_property
    def train_tokens(self) -> pd.DataFrame:
        """Per logged step and target token: count, ce_sum, objective_sum (since the last log)."""
        return self._table("train_tokens")

    @cached_property
    def eval_tokens(self) -> pd.DataFrame:
        """Per evaluation step and token: validation sums (see evaluation.evaluate_split)."""
        return self._table("eval_tokens")

    @cached_property
    def scenarios(self) -> pd.DataFrame:
        """Per logged step and token: scenario, gradient and update norms (wide; see
        scenarios.ScenarioLog). Empty when the config's scenario_interval is 0."""
        return self._table("scenarios")

    def scenario_table(self, token_info: pd.DataFrame) -> pd.DataFrame:
        """The scenario log as a tidy table (step, token, symbol, rank, scenario, value, ...)."""
        from .scenarios import tidy

        return tidy(self.scenarios, token_info)

    def final_eval(self) -> pd.DataFrame:
        """Validation sums per token at the last step."""
        ev = self.eval_tokens
        return ev[ev["step"] == ev["step"].max()].drop(columns="step").reset_index(drop=True)

    def metrics(self, token_info: pd.DataFrame, by=("language",), step: int | None = None):
        """Validation metrics grouped by ``by`` at ``step`` (default: the last)."""
        ev = self.eval_tokens
        step = int(ev["step"].max()) if step is None else step
        return aggregate(ev[ev["step"] == step], token_info, by)

    def model(self, device: str = "cpu") -> GPT:
        """The final model, in eval mode."""
        state = torch.load(self.path / "model.pt", map_location=device, weights_only=False)
        from .model import GPTConfig

        model = GPT(GPTConfig(**state["gpt_config"]))
        model.load_state_dict(state["model"])
        return model.to(device).eval()


@contextlib.contextmanager
def _training_lock(partial: Path):
    """Hold an exclusive lock on a run in progress, waiting while another process holds it.

    An advisory ``flock`` on a file in the partial folder: the system releases it when
    its process ends, however it ends, so a crashed run never leaves a stale lock.
    """
    partial.mkdir(parents=True, exist_ok=True)
    with open(partial / "lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process that is training {partial.name[1:-8]} ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, float_format="%.10g")


def _train_into(
    config: TrainConfig,
    corpus: Corpus,
    partial: Path,
    final: Path,
    key: str,
    device: str,
    progress: bool,
) -> None:
    """Train (or resume) into ``partial``, write every file, then rename it to ``final``."""
    started = time.time()
    result = train(config, corpus, partial, device=device, progress=progress)
    assert result is not None
    for name in TABLES:
        _write_csv(getattr(result, name), partial / f"{name}.csv.gz")
    gpt_config = result.model.config
    torch.save(
        {"model": result.model.state_dict(), "gpt_config": gpt_config.__dict__},
        partial / "model.pt",
    )
    meta = {
        "library_version": __version__,
        "torch_version": torch.__version__,
        "device": result.device,
        "train_seconds": result.seconds,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime()),
        "wall_seconds_this_call": time.time() - started,
    }
    body = {"id": key, "config": config.to_dict(), "meta": meta}
    (partial / "config.json").write_text(json.dumps(body, indent=2))
    (partial / "checkpoint.pt").unlink(missing_ok=True)
    (partial / MARKER).write_text(key + "\n")
    (partial / "lock").unlink()  # a process still waiting on it holds the open file
    if final.exists():  # a stale incomplete folder (e.g. from another process): replace it
        shutil.rmtree(final)
    os.replace(partial, final)


def get_or_train(
    config: TrainConfig,
    *,
    corpus: Corpus | None = None,
    results_dir: str | os.PathLike | None = None,
    device: str = "auto",
    progress: bool = True,
) -> Run:
    """Return the completed run of ``config``, training (or resuming) it if needed."""
    root = Path(results_dir) if results_dir is not None else default_results_dir()
    runs = root / "runs"
    key = config_hash(config)
    final = runs / key
    if (final / MARKER).exists():
        return Run.load(final)
    if corpus is None:
        corpus = load_corpus()
    partial = runs / f".{key}.partial"
    with _training_lock(partial):
        if (final / MARKER).exists():  # finished by the process we waited for
            shutil.rmtree(partial, ignore_errors=True)  # only our lock file is left there
        else:
            _train_into(config, corpus, partial, final, key, device, progress)
    return Run.load(final)


def get_or_train_grid(
    configs: dict,
    *,
    corpus: Corpus | None = None,
    results_dir: str | os.PathLike | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """``get_or_train`` for every config of a dict (keys are the caller's labels, e.g.
    (objective, seed)); one progress bar over the runs, each run's own bar inside."""
    from tqdm.auto import tqdm

    if corpus is None:
        corpus = load_corpus()
    out = {}
    for key, config in tqdm(configs.items(), desc="runs", unit="run", disable=not progress):
        out[key] = get_or_train(
            config, corpus=corpus, results_dir=results_dir, device=device, progress=progress
        )
    return out


def stack_runs(runs: dict, table) -> pd.DataFrame:
    """Stack ``table(run)`` over the runs of a grid, with three columns in front:
    ``experiment`` (the first element of the run's key, or the key itself), ``objective``
    ('CE' or 'HNS') and ``seed``."""
    frames = []
    for key, run in runs.items():
        part = table(run).copy()
        part.insert(0, "seed", run.config.seed)
        part.insert(0, "objective", run.config.family)
        part.insert(0, "experiment", key[0] if isinstance(key, tuple) else key)
        frames.append(part)
    return pd.concat(frames, ignore_index=True)


def describe_runs(runs: dict, token_info: pd.DataFrame) -> pd.DataFrame:
    """One row per run of a grid: its key, id, objective, seed, steps, seconds and final
    validation loss per language."""
    rows = []
    for key, run in runs.items():
        final = run.metrics(token_info, by=["language"]).set_index("language")["loss"]
        rows.append(
            {
                "run": key,
                "id": run.id,
                "setting": run.config.setting,
                "objective": run.config.objective,
                "seed": run.config.seed,
                "steps": run.config.max_steps,
                "train_seconds": run.meta.get("train_seconds"),
                **{f"val_loss_{lang}": value for lang, value in final.items()},
            }
        )
    return pd.DataFrame(rows)


def list_runs(results_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per completed run: id, setting, objective, seed, steps, seconds, device."""
    root = Path(results_dir) if results_dir is not None else default_results_dir()
    rows = []
    for marker in sorted((root / "runs").glob(f"*/{MARKER}")):
        run = Run.load(marker.parent)
        rows.append(
            {
                "id": run.id,
                "setting": run.config.setting,
                "objective": run.config.objective,
                "seed": run.config.seed,
                "max_steps": run.config.max_steps,
                "train_seconds": run.meta.get("train_seconds"),
                "device": run.meta.get("device"),
            }
        )
    return pd.DataFrame(rows)
