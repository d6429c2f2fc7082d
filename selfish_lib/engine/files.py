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
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
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


def lock_holder() -> dict:
    """What a process writes into a lock it takes: its pid, host, the time it took the
    lock and its command line (shortened), so that whoever waits can be told who holds it."""
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": " ".join(sys.argv)[:200]}  # fmt: skip


def process_state(pid: int) -> str | None:
    """The state letter of process ``pid`` on this machine (Linux ``/proc``: 'R' running,
    'S' sleeping, 'T' stopped, ...); None when it cannot be read (gone, or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]  # after "pid (command)", the name may hold ")"


def holder_message(head: str, holder: object, lock: Path, kept: str) -> str:
    """The line printed while a process waits for a lock: ``head``, who holds it (pid,
    host, since when, read from the lock file; whether it is stopped, when it runs on
    this machine) and how to proceed; ``kept`` says what ending the holder keeps."""
    gone = "a lock whose holder is gone is taken over automatically"
    pid = holder.get("pid") if isinstance(holder, dict) else None
    if type(pid) is not int or pid <= 0:
        return (f"{head} (its holder is not recorded in {lock}); to proceed, wait for it or end "
                f"that process; {gone}")  # fmt: skip
    host = str(holder.get("host") or "an unknown host")
    where = f"pid {pid} on {host}, since {holder.get('since') or 'an unknown time'}"
    here = host == socket.gethostname()
    elsewhere = "" if here else f" on {host}"
    if here and process_state(pid) in ("T", "t"):
        # a stopped process takes no SIGTERM until it is continued
        return (f"{head}: {where}; it is stopped (Ctrl-Z or SIGSTOP). To proceed, let it go "
                f"on (`kill -CONT {pid}`) and wait, or end it (`kill {pid}; kill -CONT {pid}`: "
                f"{kept}); {gone}")  # fmt: skip
    return (f"{head}: {where}. To proceed, wait for it, or end it (`kill {pid}`{elsewhere}: "
            f"{kept}); {gone}")  # fmt: skip


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, waiting: Callable[[object], str]):
    """Hold an exclusive advisory lock on the file ``path`` for the block; when another
    process holds it, print ``waiting(holder)`` (the holder's record, or None) and wait.

    The system releases the lock when its process ends, however it ends, so a crash
    never leaves a stale lock. The holder writes who it is into the file
    (``lock_holder``); the file is opened without truncating it, so that waiting never
    erases the record."""
    with open(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(handle.read() or "null")
            except (ValueError, RecursionError):
                holder = None
            print(waiting(holder), file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(lock_holder()) + "\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
