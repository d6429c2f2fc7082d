"""The run store: a run is named by the hash of its config, trained at most once, and
verified, not trusted, every time it is served.

``results/runs/<hash>/`` holds ``config.json``, the metric tables (``<table>.npz``: one
binary column each, exact, ``write_table``; runs stored before hold ``<table>.csv.gz``,
read as well), the final model, then ``manifest.json`` (the size and sha256 of every
file, the canonical config and its hash, the device the run trained on) and, written
last, the ``COMPLETE`` marker. Loading checks the folder name against
the hash of the config and every file against the manifest (sizes always, sha256 too
unless the run is larger than ``FULL_HASH_LIMIT``). A run that fails is moved aside to
``results/runs/.corrupt/`` (kept for inspection, never deleted) with a one-line warning
and trained again; it is never served. Work in progress lives in
``results/runs/.<hash>.partial/`` (with its checkpoint) and is renamed into place only
when complete, so an interrupted run never looks finished and the next
``get_or_train`` resumes it. The files a run must hold follow from its config
(``required_files``), and a manifest or config that cannot be read (binary, not JSON,
of another shape) makes the run corrupt like any other fault, named with the file.

Reading needs no write: a read-only store is verified, listed and served (no lock, no
partial folder for a complete run); a corrupt run in it is reported, not moved. A run
in training holds a lock in its partial folder that records its holder (pid, host,
since when), so that a process waiting for it can say who holds it and how to proceed.

CPU and GPU numbers are never mixed: a request names a device, and a stored run trained
on a device of another kind or precision (``training.device_record``, in the manifest) is
not served to it; it is moved aside to ``results/runs/.other-device/`` (kept, never
deleted, with a line that says why) and trained again on the device asked for. Run ids
do not name the device, so that every id of earlier versions stays what it was.

A subword run also stores its trained tokenizer (``tokenizer.json``, in the manifest);
a run whose stored tokenizer is not the one the corpus trains now (say, under another
version of ``tokenizers``) is set aside as stale and trained again, like a corrupt one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import sys
import time
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import __version__
from .corpus import CHARACTERS, Corpus, SubwordTokenizer, load_corpus, sha256_of
from .ensemble import train_ensemble
from .evaluation import aggregate
from .files import check_writable_folder, exclusive_lock, holder_message
from .model import GPT, ModelConfig
from .scenarios import tidy
from .training import (
    CHECKPOINT,
    LOG_DIR,
    MODEL_FIELDS,
    TABLE_COLUMNS,
    TrainConfig,
    TrainResult,
    device_identity,
    device_record,
    resolve_device,
    train,
)
from .validation import ParameterError, shown

# Bump when a change to the library changes the numbers a config produces:
# every run is then retrained instead of silently mixing old and new numerics.
# 2: CPU training with a fixed thread count (training.CPU_TRAINING_THREADS).
# 3: ranks count ties against the target (evaluation.position_metrics); the fused HNS
#    loss (losses.hns_cross_entropy); the scenario log's per-position and update columns.
NUMERICS_VERSION = 3
ENV_VAR = "SELFISH_RESULTS"
MARKER = "COMPLETE"
MANIFEST = "manifest.json"
CORRUPT_DIR = ".corrupt"
OTHER_DEVICE_DIR = ".other-device"
# Above this many bytes a load checks sizes only; `selfish verify` always hashes.
FULL_HASH_LIMIT = 512 << 20
TABLES = tuple(TABLE_COLUMNS)  # train_log, train_tokens, eval_tokens, scenarios
# A table's file: binary columns; earlier versions wrote gzipped CSV (read as well).
TABLE_SUFFIX, LEGACY_TABLE_SUFFIX = ".npz", ".csv.gz"
TOKENIZER = "tokenizer.json"


def default_results_dir() -> Path:
    """``$SELFISH_RESULTS`` if set, else ``./results``."""
    return Path(os.environ.get(ENV_VAR, "results"))


def results_root(results_dir: str | os.PathLike | None = None) -> Path:
    """The store's folder, checked before any work: a non-empty path that is a folder
    (or does not exist yet) below a folder this process may write."""
    raw = default_results_dir() if results_dir is None else results_dir
    return check_writable_folder(
        "results_dir", raw, "a folder for the run store (it is created if missing)"
    )


def existing_store(results_dir: str | os.PathLike | None = None, required: bool = True) -> Path:
    """The folder of a store that is only read (``verify``, ``runs``): it must exist and
    hold a ``runs/`` folder (unless not ``required``), and it may be read-only (an
    archive, a shared folder). ParameterError naming ``results_dir`` otherwise, so that a
    mistyped path given to ``verify`` is said to be one instead of verifying no runs."""
    raw = default_results_dir() if results_dir is None else results_dir
    if not isinstance(raw, (str, os.PathLike)) or not str(raw).strip():
        raise ParameterError("results_dir", raw, "the folder of a run store")
    root = Path(raw)
    if root.exists() and not root.is_dir():
        raise ParameterError("results_dir", str(raw), "the folder of a run store; it is a file")
    if required and not (root / "runs").is_dir():
        what = "does not exist" if not root.exists() else "holds no runs/ folder"
        raise ParameterError(
            "results_dir", str(raw), f"the folder of a run store (one with runs/); it {what}"
        )
    return root


# A run's folder is named by its id: 16 hexadecimal digits (``config_hash``).
RUN_ID = re.compile(r"[0-9a-f]{16}")


def config_hash(config: TrainConfig) -> str:
    """Stable 16-hex-digit id of everything that determines a run's numbers.

    The payload is the config's flat form (``TrainConfig.flat_dict``: model sizes and
    the objective's canonical values beside the other fields), with every value already
    normalised to its field's type, so 2 and 2.0 give one id. Fields at their default
    value are left out, so that a field added to TrainConfig later (with a default that
    reproduces the old behaviour) keeps every existing run id. The flip side: changing a
    default changes numbers under an unchanged id, so it requires bumping NUMERICS_VERSION.
    """
    defaults = _LEGACY_DEFAULTS
    fields = {k: v for k, v in config.flat_dict().items() if k not in defaults or v != defaults[k]}
    payload = {"config": fields, "numerics": NUMERICS_VERSION}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# The default of every flat field, the objective's included (CE: an infinite constant layout).
_LEGACY_DEFAULTS = {
    **TrainConfig().flat_dict(),
    "layout": "inf",
    "layout_schedule": "constant",
    "layout_end": "inf",
}


class CorruptRun(ValueError):
    """A run folder that does not match its manifest or its id; says which and why."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"corrupt run {path.name}: {reason}")


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` as an .npz archive (``np.load`` reads it): one ``.npy``
    member per column, in column order, every value exact. Integer columns (steps,
    tokens, counts: long runs of one value) are deflated, float columns stored as they
    are (full-precision floats hardly compress, and storing is what keeps writing
    fast). The members carry no time stamp, so equal tables are equal files."""
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
        for column in frame.columns:
            values = np.ascontiguousarray(frame[column].to_numpy())
            if values.dtype.kind not in "iufb":
                raise TypeError(f"{path.name}: column {column!r} is not numeric ({values.dtype})")
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, values, allow_pickle=False)
            info = zipfile.ZipInfo(f"{column}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            if values.dtype.kind == "f":
                archive.writestr(info, buffer.getvalue(), compress_type=zipfile.ZIP_STORED)
            else:
                archive.writestr(info, buffer.getvalue(), compress_type=zipfile.ZIP_DEFLATED,
                                 compresslevel=1)  # fmt: skip
    os.replace(tmp, path)


def table_file(folder: str | os.PathLike, name: str) -> Path:
    """The file of table ``name`` in a run folder: ``<name>.npz``, or the gzipped CSV of
    a run stored by an earlier version."""
    folder = Path(folder)
    binary = folder / f"{name}{TABLE_SUFFIX}"
    return binary if binary.exists() else folder / f"{name}{LEGACY_TABLE_SUFFIX}"


def read_table(folder: str | os.PathLike, name: str) -> pd.DataFrame:
    """Table ``name`` of a run folder, in either format (``table_file``)."""
    path = table_file(folder, name)
    if path.name.endswith(TABLE_SUFFIX):
        with np.load(path, allow_pickle=False) as archive:
            return pd.DataFrame({column: archive[column] for column in archive.files})
    return pd.read_csv(path)


def _manifest(folder: Path, key: str, config: TrainConfig, device: dict) -> dict:
    """Size and sha256 of every file of a finished run, with its config, id and the
    device it trained on (``training.device_record``)."""
    names = [p.name for p in sorted(folder.iterdir())
             if p.is_file() and p.name not in (MANIFEST, MARKER, "lock")]  # fmt: skip
    # hashing reads every byte; the files are independent, so they are read side by side
    with ThreadPoolExecutor(max_workers=4) as pool:
        digests = dict(zip(names, pool.map(lambda n: sha256_of(folder / n), names), strict=True))
    files = {n: {"size": (folder / n).stat().st_size, "sha256": digests[n]} for n in names}
    return {"id": key, "numerics": NUMERICS_VERSION, "config": config.to_dict(), "files": files,
            "device": device}  # fmt: skip


def check_run(path: str | os.PathLike, full: bool | None = None) -> TrainConfig:
    """The config of the completed run in ``path``, after checking that the folder is
    what its manifest says: the marker, the manifest, the config's hash equal to the
    folder's name and to the manifest's id, and every file of the manifest present with
    its size (and its sha256 when ``full``; None: when the run is under
    ``FULL_HASH_LIMIT`` bytes), every table among them in one of its formats. Raises
    CorruptRun with the first problem found."""
    return _check_run(Path(path), full)[0]


def required_files(config: TrainConfig) -> list[tuple[str, ...]]:
    """The files a completed run of ``config`` must hold, each as the names that may stand
    for it (a table in either format): its config, its model, every table, and a subword
    run's tokenizer. They follow from the config, not from the manifest, so that a file
    deleted and dropped from the manifest still makes the run corrupt."""
    needed: list[tuple[str, ...]] = [("config.json",), ("model.pt",)]
    needed += [(f"{name}{TABLE_SUFFIX}", f"{name}{LEGACY_TABLE_SUFFIX}") for name in TABLES]
    if config.tokenizer != CHARACTERS:
        needed.append((TOKENIZER,))
    return needed


def _read_json(path: Path, name: str):
    """The JSON value of the file ``name`` of the run folder ``path``; CorruptRun naming
    the file and what is wrong with it (missing, not UTF-8 text, not JSON, nested past
    what Python reads) otherwise, never a decoding error that names neither."""
    try:
        return json.loads((path / name).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise CorruptRun(path, f"no {name}") from None
    except IsADirectoryError:
        raise CorruptRun(path, f"{name} is a folder, not a file") from None
    except UnicodeDecodeError:
        raise CorruptRun(path, f"{name} is not UTF-8 text (binary or damaged bytes)") from None
    except json.JSONDecodeError as exc:
        raise CorruptRun(path, f"{name} is not JSON ({exc.msg} at byte {exc.pos})") from None
    except RecursionError:
        raise CorruptRun(path, f"{name} is nested too deeply to read") from None


def _manifest_files(path: Path, manifest: object) -> dict[str, dict]:
    """The ``files`` table of a manifest, checked for shape: a mapping of plain file names
    (no folder, nothing outside the run) to an integer size and a sha256 string."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise CorruptRun(path, f"{MANIFEST} is not a run's manifest (no table of files)")
    for name, entry in files.items():
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise CorruptRun(path, f"{MANIFEST} lists {shown(name)}, which is no file of the run")
        if not (isinstance(entry, dict) and type(entry.get("size")) is int and entry["size"] >= 0
                and isinstance(entry.get("sha256"), str)):  # fmt: skip
            raise CorruptRun(path, f"{MANIFEST} has no size and sha256 for {name}")
    return files


def _check_run(path: Path, full: bool | None) -> tuple[TrainConfig, dict, dict]:
    """``check_run``, and the manifest and the config.json it read."""
    if not (path / MARKER).exists():
        raise CorruptRun(path, f"no {MARKER} marker (the run never finished)")
    manifest = _read_json(path, MANIFEST)
    files = _manifest_files(path, manifest)
    body = _read_json(path, "config.json")
    try:
        config = TrainConfig.from_dict(body["config"])
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
        raise CorruptRun(path, "config.json cannot be read as a config") from None
    key = config_hash(config)
    if key != path.name:
        raise CorruptRun(path, f"config.json hashes to {key}, not to the folder's name")
    # compared as configs, not as dicts: a field added to TrainConfig later (with its
    # default) is absent from older manifests and must not make their runs corrupt
    try:
        listed = TrainConfig.from_dict(manifest["config"])
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
        raise CorruptRun(path, f"{MANIFEST} has no readable config") from None
    if manifest.get("id") != key or listed != config:
        raise CorruptRun(path, "config.json differs from the manifest's config")
    # what the config needs first: a file deleted and dropped from the manifest
    for names in required_files(config):
        if not set(names) & set(files):
            also = f" (nor the {names[1]} of earlier versions)" if len(names) > 1 else ""
            raise CorruptRun(path, f"{names[0]} is missing: the manifest lists no {names[0]}"
                                   f"{also}, which a run of its config holds")  # fmt: skip
    if full is None:
        full = sum(entry["size"] for entry in files.values()) <= FULL_HASH_LIMIT
    for name in sorted(files):
        entry, file = files[name], path / name
        if not file.is_file():
            raise CorruptRun(path, f"{name} is missing")
        size = file.stat().st_size
        if size != entry["size"]:
            raise CorruptRun(path, f"{name} has {size} bytes, the manifest says {entry['size']}")
        if full and sha256_of(file) != entry["sha256"]:
            raise CorruptRun(path, f"{name} differs from the manifest (sha256)")
    return config, manifest, body


def store_is_writable(runs: Path) -> bool:
    """Whether this process may change the ``runs/`` folder of a store (move a run aside,
    take a lock, train): False for a read-only store (an archive, a shared folder)."""
    return os.access(runs, os.W_OK | os.X_OK)


def _aside(path: Path, folder: str, tag: str = "") -> Path | None:
    """Move a run folder to ``<runs>/<folder>/<id>[.<tag>].<time>/`` (never deleted); None,
    moving nothing, when the store is read-only."""
    if not store_is_writable(path.parent):
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    base = f"{path.name}.{tag}.{stamp}" if tag else f"{path.name}.{stamp}"
    target = path.parent / folder / base
    n = 1
    while target.exists():
        target = path.parent / folder / f"{base}.{n}"
        n += 1
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    except PermissionError:  # read-only though access() said otherwise (a read-only mount)
        return None
    except OSError as exc:
        if exc.errno == errno.EROFS:
            return None
        raise
    return target


def set_aside(path: Path, reason: str) -> Path | None:
    """Move a corrupt run to ``<runs>/.corrupt/<id>.<time>/`` (never deleted) and say so in
    one line naming the run and the reason. In a read-only store the run is only
    reported, left where it is (and not served); None then."""
    target = _aside(path, CORRUPT_DIR)
    if target is None:
        print(f"corrupt run {path.name} ({reason}): not served, left in place (the store is "
              "read-only)", file=sys.stderr)  # fmt: skip
    else:
        print(f"corrupt run {path.name} ({reason}): moved to {target}; it will be trained "
              "again", file=sys.stderr)  # fmt: skip
    return target


def _device_of(manifest: dict, meta: dict) -> dict:
    """A run's device record: its manifest's, or for a run stored before manifests named
    devices, the kind its config.json's meta names ('cpu', 'cuda:0', ...) in fp32 (no
    earlier version allowed TF32)."""
    device = manifest.get("device")
    if isinstance(device, dict) and "kind" in device:
        return device
    kind = str(meta.get("device") or "unknown").partition(":")[0]
    return {"kind": kind, "precision": "fp32", "torch": meta.get("torch_version")}


def stored_device(path: str | os.PathLike) -> dict | None:
    """The device record of the run folder ``path`` as it stores it (``Run.device``),
    without verifying the run; None when it cannot be read."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
        meta = json.loads((Path(path) / "config.json").read_text()).get("meta", {})
        return _device_of(manifest, meta)
    except (OSError, ValueError, AttributeError):
        return None


def trained_elsewhere(path: str | os.PathLike, device: str) -> bool:
    """Whether the run folder ``path`` was trained on a device of another kind or
    precision than ``device`` (so that a request for ``device`` does not serve it)."""
    record = stored_device(path)
    wanted = device_record(resolve_device(device))
    return record is not None and device_identity(record) != device_identity(wanted)


def describe_device_record(record: dict) -> str:
    """A device record in a few words: 'cuda (NVIDIA H200, fp32, torch 2.5.1)'."""
    kind, precision = device_identity(record)
    details = [record.get("gpu"), precision, f"torch {record['torch']}" if record.get("torch")
               else None]  # fmt: skip
    return f"{kind} ({', '.join(d for d in details if d)})"


def device_mismatch(run: Run, device: torch.device | str) -> str | None:
    """Why the stored ``run`` may not be served to a request for ``device`` (a device of
    another kind or precision trained it), or None when it may."""
    wanted = device_record(torch.device(device))
    if device_identity(run.device) == device_identity(wanted):
        return None
    return (f"it was trained on {describe_device_record(run.device)} and this request is for "
            f"{describe_device_record(wanted)}: the numbers of different devices are never "
            "mixed")  # fmt: skip


def set_aside_other_device(run: Run, reason: str, device: torch.device) -> Path | None:
    """Move a run trained on another device to ``<runs>/.other-device/<id>.<kind>.<time>/``
    (kept, never deleted) and say why; in a read-only store only say why (None)."""
    target = _aside(run.path, OTHER_DEVICE_DIR, device_identity(run.device)[0])
    if target is None:
        print(f"run {run.id} not served ({reason}); left in place (the store is read-only)",
              file=sys.stderr)  # fmt: skip
        return None
    print(
        f"run {run.id} not served ({reason}): moved to {target}, kept; it will be "
        f"trained again on {device}",
        file=sys.stderr,
    )
    return target


@dataclass
class Run:
    """A completed run: its config, tables and final model, loaded lazily."""

    path: Path
    config: TrainConfig
    meta: dict = field(default_factory=dict)
    trained_now: bool = False  # True when this call trained it (not loaded from the store)
    wall_seconds: float | None = None  # wall time of that training call

    # the device it trained on (``training.device_record``; see ``load``)
    device: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike, full: bool | None = None) -> Run:
        """Open a completed run folder, verified (``check_run``); CorruptRun if it fails.
        A run stored before devices were recorded in manifests has the kind its
        ``config.json`` names ('cpu', 'cuda:0', ...) and fp32 (no earlier version
        allowed TF32)."""
        path = Path(path)
        config, manifest, body = _check_run(path, full)
        meta = body.get("meta")
        meta = meta if isinstance(meta, dict) else {}
        return cls(path, config, meta, device=_device_of(manifest, meta))

    @property
    def id(self) -> str:
        """The config hash."""
        return self.path.name

    def _table(self, name: str) -> pd.DataFrame:
        return read_table(self.path, name)

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

    def tokenizer(self) -> SubwordTokenizer | None:
        """The subword tokenizer the run was trained with (None for characters)."""
        if self.config.tokenizer == CHARACTERS:
            return None
        serialized = (self.path / TOKENIZER).read_text(encoding="utf-8")
        return SubwordTokenizer.from_serialized(self.config.tokenizer, serialized)

    def model(self, device: str = "cpu") -> GPT:
        """The final model, in eval mode, on ``device``."""
        state = torch.load(self.path / "model.pt", map_location="cpu", weights_only=False)
        sizes = dict(state["gpt_config"])
        # a field added later (tie_embeddings) is absent from older runs: its default
        model = GPT(
            ModelConfig(**{k: sizes[k] for k in MODEL_FIELDS if k in sizes}), sizes["vocab_size"]
        )
        model.load_state_dict(state["model"])
        return model.to(device).eval()


LOCK = "lock"


def lock_message(key: str, holder: object, lock: Path) -> str:
    """The line printed while a process waits for run ``key``'s lock: who holds it and
    how to proceed (``files.holder_message``)."""
    return holder_message(f"waiting for another process that is training run {key}", holder,
                          lock, "it stops at a step boundary with a checkpoint, which this "
                          "process resumes")  # fmt: skip


@contextlib.contextmanager
def _training_lock(partial: Path):
    """Hold an exclusive lock on a run in progress, waiting while another process holds it.

    An advisory ``flock`` on a file in the partial folder: the system releases it when
    its process ends, however it ends, so a crashed run never leaves a stale lock (the
    next process takes it over). The holder writes who it is into the file
    (``lock_holder``), and a process that waits says so in one line (``lock_message``).
    The file is opened without truncating it, so that waiting never erases the record.
    """
    partial.mkdir(parents=True, exist_ok=True)
    path = partial / LOCK
    key = partial.name[1 : -len(".partial")]
    with exclusive_lock(path, lambda holder: lock_message(key, holder, path)):
        # a checkpoint's temporary file left by a holder killed while writing it (kill -9)
        (partial / f"{CHECKPOINT}.tmp").unlink(missing_ok=True)
        yield


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
    _write_tokenizer(config, corpus, partial)
    _write_into(result, config, partial, final, key, started, {"executor": "solo"})


def _write_tokenizer(config: TrainConfig, corpus: Corpus, partial: Path) -> None:
    """Store a subword run's trained tokenizer beside its tables (nothing for characters)."""
    if config.tokenizer != CHARACTERS:
        tokenizer = corpus.with_tokenizer(config.tokenizer).tokenizer
        (partial / TOKENIZER).write_text(tokenizer.serialized, encoding="utf-8")


def stale_tokenizer(run: Run, corpus: Corpus) -> str | None:
    """Why ``run``'s stored tokenizer is not the one ``corpus`` trains for its config, or
    None when it is (always for characters)."""
    if run.config.tokenizer == CHARACTERS:
        return None
    stored = sha256_of(run.path / TOKENIZER)
    now = corpus.with_tokenizer(run.config.tokenizer).tokenizer.sha256
    if stored != now:
        return (f"its {TOKENIZER} (sha256 {stored[:12]}) is not the {run.config.tokenizer} "
                f"tokenizer the corpus trains now (sha256 {now[:12]})")  # fmt: skip
    return None


def _write_into(
    result: TrainResult,
    config: TrainConfig,
    partial: Path,
    final: Path,
    key: str,
    started: float,
    execution: dict,
) -> None:
    """Write a trained result's files into ``partial``, then rename it to ``final``."""
    sizes = {**result.model.config.to_dict(), "vocab_size": result.model.vocab_size}
    # The tables and the model are independent files: they are written side by side
    # (writing and zlib release the interpreter's lock).
    with ThreadPoolExecutor(max_workers=len(TABLES) + 1) as pool:
        writes = [pool.submit(write_table, getattr(result, name), partial / f"{name}{TABLE_SUFFIX}")
                  for name in TABLES]  # fmt: skip
        writes.append(
            pool.submit(
                torch.save,
                {"model": result.model.state_dict(), "gpt_config": sizes},
                partial / "model.pt",
            )
        )
        for write in writes:
            write.result()  # raises what a write raised
    meta = {
        "library_version": __version__,
        "torch_version": torch.__version__,
        "device": result.device,
        "train_seconds": result.seconds,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime()),
        "wall_seconds_this_call": time.time() - started,
        # how the run was trained (not part of its id): solo, or member i of an ensemble
        "execution": execution,
    }
    body = {"id": key, "config": config.to_dict(), "meta": meta}
    (partial / "config.json").write_text(json.dumps(body, indent=2))
    (partial / "checkpoint.pt").unlink(missing_ok=True)
    (partial / "checkpoint.rejected.pt").unlink(missing_ok=True)
    shutil.rmtree(partial / LOG_DIR, ignore_errors=True)  # the tables above hold every row
    device = result.device_record or {
        "kind": torch.device(result.device).type,
        "precision": "fp32",
        "torch": torch.__version__,
    }
    manifest = _manifest(partial, key, config, device)
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2))
    (partial / MARKER).write_text(key + "\n")
    (partial / LOCK).unlink()  # a process still waiting on it holds the open file
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
    """Return the completed run of ``config``, training (or resuming) it if needed.

    A stored run is served only to a request for a device of the kind and precision it
    trained on (``device_mismatch``); one of another is moved aside, kept, and trained
    again here.

    Serving a stored run only reads: a read-only store serves its runs (no lock, no
    partial folder is made for a complete run). Training needs a store this process may
    write, checked before any work."""
    runs = existing_store(results_dir, required=False) / "runs"
    dev = resolve_device(device)  # before anything is written
    key = config_hash(config)
    final = runs / key
    run = _load_verified(final, corpus, dev)
    if run is not None:
        return run
    results_root(results_dir)  # training writes: a read-only store is refused by name
    if corpus is None:
        corpus = load_corpus()
    partial = runs / f".{key}.partial"
    with _training_lock(partial):
        run = _load_verified(final, corpus, dev)  # finished by the process we waited for?
        if run is not None:
            shutil.rmtree(partial, ignore_errors=True)  # only our lock file is left there
            return run
        started = time.perf_counter()
        _train_into(config, corpus, partial, final, key, device, progress)
    run = Run.load(final)
    run.trained_now = True
    run.wall_seconds = time.perf_counter() - started
    return run


def get_or_train_group(
    configs: Sequence[TrainConfig],
    *,
    corpus: Corpus | None = None,
    results_dir: str | os.PathLike | None = None,
    device: str = "auto",
    progress: bool = True,
) -> list[Run]:
    """``get_or_train`` for configs of one ensemble group (``ensemble.group_key``): the
    runs not in the store yet train together as one batched model (``ensemble``).

    Every member's lock is held (taken in id order, so that two processes never wait
    on each other) while the group trains. A member that finds a checkpoint of its
    own in its partial folder resumes it alone (``train``); one that is left alone
    trains solo.
    """
    configs = list(dict.fromkeys(configs))
    runs = existing_store(results_dir, required=False) / "runs"
    dev = resolve_device(device)
    keys = {config: config_hash(config) for config in configs}
    found = {c: _load_verified(runs / k, corpus, dev) for c, k in keys.items()}
    if all(run is not None for run in found.values()):
        return [found[c] for c in configs]  # only read: a read-only store serves them
    results_root(results_dir)  # training writes: a read-only store is refused by name
    if corpus is None:
        corpus = load_corpus()
    out: dict[TrainConfig, Run] = {}
    with contextlib.ExitStack() as locks:
        waiting = [c for c in configs if found[c] is None]
        for config in sorted(waiting, key=keys.get):
            locks.enter_context(_training_lock(runs / f".{keys[config]}.partial"))
        alone, together = [], []
        for config in waiting:
            # finished by a process we waited for?
            run = _load_verified(runs / keys[config], corpus, dev)
            if run is not None:
                out[config] = run
            elif (runs / f".{keys[config]}.partial" / CHECKPOINT).exists():
                alone.append(config)  # its own checkpoint: it resumes by itself
            else:
                together.append(config)
        if len(together) == 1:
            alone += together
            together = []
        for config in alone:
            key = keys[config]
            started = time.perf_counter()
            _train_into(config, corpus, runs / f".{key}.partial", runs / key, key, device,
                        progress)  # fmt: skip
            out[config] = _fresh(runs / key, started)
        if together:
            out.update(_train_group_into(together, keys, runs, corpus, device, progress))
    for config in waiting:
        partial = runs / f".{keys[config]}.partial"
        if out[config].trained_now is False and partial.exists():
            shutil.rmtree(partial, ignore_errors=True)  # only our lock file is left there
    return [found[c] if found[c] is not None else out[c] for c in configs]


def _train_group_into(
    configs: list[TrainConfig],
    keys: dict[TrainConfig, str],
    runs: Path,
    corpus: Corpus,
    device: str,
    progress: bool,
) -> dict[TrainConfig, Run]:
    started = time.perf_counter()
    wall = time.time()
    partials = [runs / f".{keys[c]}.partial" for c in configs]
    results = train_ensemble(configs, corpus, partials, device=device, progress=progress)
    out = {}
    for index, (config, result, partial) in enumerate(zip(configs, results, partials, strict=True)):
        key = keys[config]
        execution = {"executor": "ensemble", "members": len(configs), "member": index}
        _write_tokenizer(config, corpus, partial)
        _write_into(result, config, partial, runs / key, key, wall, execution)
        out[config] = _fresh(runs / key, started)
    return out


def _fresh(final: Path, started: float) -> Run:
    """The run just written to ``final``, marked as trained by this call."""
    run = Run.load(final)
    run.trained_now = True
    run.wall_seconds = time.perf_counter() - started
    return run


def _load_verified(
    final: Path, corpus: Corpus | None = None, device: torch.device | None = None
) -> Run | None:
    """The run in ``final`` if it is there and sound (and, with ``corpus``, trained with
    the tokenizer the corpus gives now; with ``device``, trained on a device of its kind
    and precision); a corrupt or stale one is set aside, one of another device moved
    aside (None)."""
    if not final.exists():
        return None
    try:
        run = Run.load(final)
    except CorruptRun as exc:
        set_aside(final, exc.reason)
        return None
    stale = stale_tokenizer(run, corpus) if corpus is not None else None
    if stale is not None:
        set_aside(final, stale)
        return None
    other = device_mismatch(run, device) if device is not None else None
    if other is not None:
        set_aside_other_device(run, other, device)
        return None
    return run


def stored_run(
    config: TrainConfig,
    results_dir: str | os.PathLike | None = None,
    device: str | None = None,
) -> Run | None:
    """The completed, verified run of ``config`` in the store, or None if it is not there
    (nothing is trained; a corrupt folder is set aside). With ``device``, None also when
    the stored run trained on a device of another kind or precision (it is left where it
    is, and a line says why). The store may be read-only (a corrupt run is then only
    reported)."""
    final = existing_store(results_dir, required=False) / "runs" / config_hash(config)
    if not (final / MARKER).exists():
        return None
    run = _load_verified(final)
    if run is not None and device is not None:
        other = device_mismatch(run, resolve_device(device))
        if other is not None:
            print(f"run {run.id} not served ({other})", file=sys.stderr)
            return None
    return run


def verify_store(results_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Every run folder of a store, fully hashed: id, status ('ok' or 'corrupt') and the
    reason; corrupt runs are reported, not moved (``get_or_train`` moves them). A folder
    whose name is no run id is listed as 'not a run' and left alone. Reading needs no
    write access: a read-only store can be verified."""
    root = existing_store(results_dir)
    rows = []
    folder = root / "runs"
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not path.is_dir() or path.name.startswith("."):
            continue
        if not RUN_ID.fullmatch(path.name):
            rows.append({"id": path.name, "status": "not a run", "setting": None,
                         "objective": None, "seed": None,
                         "reason": "its name is not a run id; left alone"})  # fmt: skip
            continue
        try:
            config = check_run(path, full=True)
            rows.append(
                {
                    "id": path.name,
                    "status": "ok",
                    "setting": config.setting,
                    "objective": config.objective.label,
                    "seed": config.seed,
                    "reason": "",
                }
            )
        except CorruptRun as exc:
            rows.append(
                {
                    "id": path.name,
                    "status": "corrupt",
                    "setting": None,
                    "objective": None,
                    "seed": None,
                    "reason": exc.reason,
                }
            )
    return pd.DataFrame(rows, columns=["id", "status", "setting", "objective", "seed", "reason"])


def get_or_train_grid(
    configs: dict,
    *,
    corpus: Corpus | None = None,
    results_dir: str | os.PathLike | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """``get_or_train`` for every config of a dict (keys are the caller's labels, e.g.
    (objective, seed)); one progress bar over the runs, each run's own bar inside. The
    store may be read-only when every run is in it (``get_or_train``)."""
    existing_store(results_dir, required=False)  # a bad path is refused before any work
    resolve_device(device)
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
        part.insert(0, "objective", run.config.objective.arm)
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
                "objective": run.config.label,
                "seed": run.config.seed,
                "steps": run.config.max_steps,
                "train_seconds": run.meta.get("train_seconds"),
                **{f"val_loss_{lang}": value for lang, value in final.items()},
            }
        )
    return pd.DataFrame(rows)


def list_runs(results_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per completed run: id, setting, objective, seed, steps, seconds, device and
    status ('ok', or 'corrupt: <reason>' for a run that fails its size checks). The store
    may be read-only; a store not created yet has no run."""
    root = existing_store(results_dir, required=False)
    rows = []
    for marker in sorted((root / "runs").glob(f"*/{MARKER}")):
        try:
            run = Run.load(marker.parent, full=False)
        except CorruptRun as exc:
            rows.append({"id": marker.parent.name, "status": f"corrupt: {exc.reason}"})
            continue
        rows.append(
            {
                "id": run.id,
                "setting": run.config.setting,
                "objective": run.config.label,
                "seed": run.config.seed,
                "max_steps": run.config.max_steps,
                "train_seconds": run.meta.get("train_seconds"),
                "device": run.meta.get("device"),
                "precision": device_identity(run.device)[1],
                "status": "ok",
            }
        )
    return pd.DataFrame(rows)
