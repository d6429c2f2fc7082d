"""Files that are never half-written: write to a temporary name beside the target, then rename.

Used wherever the project writes a result (run store tables, claims, figures, reports), so
that an interrupted write leaves the previous file or none, never a truncated one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .validation import ParameterError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, payload: str | bytes) -> Path:
    """Write ``payload`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(payload.encode("utf-8") if isinstance(payload, str) else payload)
        # mkstemp creates the file private (0600); give it the usual permissions.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy/torch scalars unwrapped, non-finite floats as strings."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return jsonable(value.tolist())  # numpy arrays and scalars, torch tensors
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # 'inf', '-inf', 'nan': strict JSON has no such numbers
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot write {type(value).__name__} {value!r} to JSON")


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented strict JSON (see ``jsonable``), atomically."""
    return write_atomic(path, json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n")


def check_writable_folder(name: str, raw: object, allowed: str) -> Path:
    """``raw`` as a folder path that is, or can be created as, a writable folder: a
    non-empty path whose nearest existing ancestor is a folder this process may write.
    ParameterError naming ``name`` otherwise, before anything is written."""
    if not isinstance(raw, (str, os.PathLike)) or not str(raw).strip():
        raise ParameterError(name, raw, allowed)
    folder = Path(raw)
    if folder.exists() and not folder.is_dir():
        raise ParameterError(name, str(raw), allowed + "; that path is a file")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ParameterError(name, str(raw), allowed + f"; {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ParameterError(name, str(raw), allowed + f"; {existing} is read-only")
    return folder


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, waiting: str):
    """Hold an exclusive advisory lock on the file ``path`` for the block, printing
    ``waiting`` first when another process holds it. The system releases the lock
    when its process ends, however it ends, so a crash never leaves a stale lock."""
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(waiting, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
