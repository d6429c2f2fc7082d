"""The Ray executor: every unit of work a Ray task, on any node of a Ray cluster, all of
them writing into one shared run store.

``train_all(..., executor="ray", address=...)`` (``selfish reproduce --executor ray``)
hands each unit of ``executors.work_units`` (one planned run, or a group of runs trained
together) to ``run_units`` here, which submits it as one Ray task that asks for

- ``num_cpus=1``: training on the CPU pins one thread (``training.CPU_TRAINING_THREADS``,
  for bit-identical numbers), so one task is one core;
- ``num_gpus=1 / tasks_per_gpu`` as well when the device is CUDA: Ray then shows the
  task one GPU (``CUDA_VISIBLE_DEVICES``), shared with at most ``tasks_per_gpu - 1``
  other tasks, and the task trains on ``cuda``, its only GPU. A run of the paper profile
  fills a small part of a large GPU; several tasks on one GPU keep it busy (each task
  still holds one CPU core).

The task loads the corpus itself, from a path every node must see (it is sha256-verified
on load, so a node with another file fails instead of training on it), and trains into
the store by its absolute path. Results come back with ``ray.wait`` under a progress bar.
Ctrl-C cancels the tasks not finished yet; a task that raises is reported with the id of
its run(s) (``RayRunError``) and the other tasks are cancelled. Ray interrupts a running
task as Ctrl-C interrupts training (``training.train`` stops at a step boundary and keeps
its checkpoint); it is given ``CANCEL_GRACE_S`` seconds for that. A run stopped half-way
keeps its partial folder and checkpoint, and the next call resumes it.

Without ``address`` a local Ray cluster is started for the call (``jobs`` CPUs, no
dashboard) and shut down after; with one (``auto``: the cluster this node belongs to or
``$RAY_ADDRESS``; ``HOST:PORT``) the existing cluster is used, and its own CPUs and GPUs
decide how many tasks run at once. Such an address is checked first, before any work
and within ``ADDRESS_TIMEOUT_S`` seconds (``check_reachable``): ``auto`` must find a
cluster, and something must answer at its host and port; otherwise one line names
``--address`` and the value, instead of Ray's own minute of retries. When Ray is
already initialised in this process, it is used as it is.

The shared filesystem. Every node reads and writes the store the way one machine does
(``runs.get_or_train``): an exclusive ``fcntl.flock`` on ``runs/.<id>.partial/lock``
while a run trains (a second task given the same config waits for it, then loads the
finished run instead of training it again), files written in the partial folder, then
one ``os.replace`` of that folder onto ``runs/<id>``. Across machines this needs a POSIX
filesystem mounted at the same path on every node on which

- ``flock`` locks are seen by every client (NFSv4, and NFSv3 with its lock manager: the
  Linux client maps flock onto byte-range locks; Lustre mounted with ``flock``, not
  ``localflock``; BeeGFS with global file locks, ``tuneUseGlobalFileLocks``; GPFS), and
  the lock of a node that dies is released (NFSv4: when its lease expires);
- a rename within one directory is atomic: a reader sees the old name or the whole new
  folder (POSIX ``rename``, which these filesystems provide).

Locks local to one client (Lustre ``localflock``, many FUSE and object-store mounts)
would let two nodes train one run into one partial folder at once: keep the store off
such a mount. A client that caches failed lookups (NFS ``lookupcache=all``, the
default) may not see for a few seconds a run that another node has just finished; a
task that waited for it then trains it again, which costs the work twice but gives the
same numbers (``lookupcache=positive`` avoids it). The corpus is only read.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

from .runs import config_hash
from .validation import ParameterError, check_int

INSTALL = 'pip install -e ".[ray]"'
CANCEL_GRACE_S = 15.0  # for cancelled tasks to write their checkpoint
# How long a cluster's address may take to answer before it is refused: a head that
# runs answers a connection at once, even across a data centre.
ADDRESS_TIMEOUT_S = 2.0
# Tasks sharing one GPU at most: beyond this, CPU cores and GPU memory run out first.
MAX_TASKS_PER_GPU = 64


class RayNotInstalled(ParameterError):
    """``executor='ray'`` (``--executor ray``) where the ray package is not installed."""

    def __init__(self, reason: str) -> None:
        super().__init__("executor", "ray", "an installed ray package")
        self.reason = reason
        self.args = (
            f"executor='ray' (--executor ray) needs the ray package, which cannot be imported"
            f" here ({reason}): install the project's ray extra with {INSTALL}",
        )


class RayClusterUnreachable(ParameterError):
    """``--address`` names no Ray cluster that answers: says which value, what was found
    (what ``auto`` resolved to) and what to give instead."""

    def __init__(self, address: str, detail: str) -> None:
        allowed = "the address of a running Ray cluster"
        super().__init__("address", address, allowed)
        self.detail = detail
        self.args = (
            f"--address {address}: {detail}; give the HOST:PORT of a running Ray cluster's "
            "head (`ray start --head` prints it), auto on a node of that cluster, or no "
            "--address for a local cluster started for the command",
        )


class RayRunError(RuntimeError):
    """A Ray task failed: names its run(s) and the error the task raised (``__cause__``)."""

    def __init__(self, ids: Sequence[str], cause: BaseException | None, detail: str) -> None:
        self.ids, self.cause = list(ids), cause
        what = "run " + ids[0] if len(ids) == 1 else "runs " + ", ".join(ids) + " (one unit)"
        super().__init__(f"{what} failed in a Ray task: {detail}")


def require_ray():
    """The ray module; RayNotInstalled (saying how to install it) when it cannot be imported."""
    try:
        # Optional (the project's ray extra) and slow to import: only for executor='ray'.
        import ray
    except ImportError as exc:
        raise RayNotInstalled(str(exc) or type(exc).__name__) from None
    return ray


def check_address(address: object) -> str:
    """A Ray cluster address: a non-empty string such as auto or HOST:PORT."""
    if not isinstance(address, str) or not address.strip():
        raise ParameterError("address", address, "a Ray cluster address: auto or HOST:PORT")
    return address.strip()


def _host_and_port(text: str) -> tuple[str, int] | None:
    """(host, port) of ``HOST:PORT``, ``[IPv6]:PORT`` or ``ray://HOST:PORT``; None when
    ``text`` is none of them."""
    host, colon, port = text.removeprefix("ray://").rpartition(":")
    host = host.strip().removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _auto_address(ray) -> str | None:
    """What ``auto`` means on this node, as Ray resolves it ($RAY_ADDRESS, the cluster
    ``ray start`` recorded, a cluster process running here); RayClusterUnreachable when
    there is none. None when this Ray version cannot be asked (``ray.init`` then says)."""
    try:
        from ray._private import services  # what ray.init itself calls for "auto"
    except ImportError:
        return None
    resolve = getattr(services, "canonicalize_bootstrap_address", None)
    if resolve is None:
        return None
    try:
        return resolve("auto")
    except ConnectionError:
        raise RayClusterUnreachable(
            "auto",
            "no Ray cluster runs on this node (none started with `ray start`, "
            "and $RAY_ADDRESS is not set)",
        ) from None
    except Exception:  # noqa: BLE001 - another Ray version's internals: leave it to ray.init
        return None


def check_reachable(address: str, timeout: float = ADDRESS_TIMEOUT_S) -> None:
    """Check, within about ``timeout`` seconds and before any work, that the Ray cluster at
    ``address`` (``auto`` or ``HOST:PORT``, as ``check_address`` returns it) is there:
    ``auto`` resolves to a cluster, and something answers at its host and port.
    RayClusterUnreachable naming the address otherwise. ``local`` (a new cluster,
    started for the call) needs no check."""
    if address == "local":
        return
    target = address
    if address == "auto":
        resolved = _auto_address(require_ray())
        if resolved is None:
            return
        target = resolved
    where = _host_and_port(target)
    if where is None:
        shown = address if target == address else f"{address} (resolved to {target})"
        raise ParameterError("address", shown, "auto or HOST:PORT of a Ray cluster's head")
    named = "" if target == address else f" (auto resolved to {target})"
    try:
        with socket.create_connection(where, timeout=timeout):
            pass
    except TimeoutError:
        raise RayClusterUnreachable(
            address, f"nothing answered at {target}{named} within {timeout:g} s"
        ) from None
    except socket.gaierror:
        raise RayClusterUnreachable(address, f"the host {where[0]} cannot be resolved") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RayClusterUnreachable(
            address, f"no Ray cluster answers at {target}{named} ({reason.lower()})"
        ) from None


def task_resources(device_kind: str, tasks_per_gpu: int = 1) -> dict[str, float]:
    """What one task asks Ray for: one CPU, and on CUDA the share 1 / ``tasks_per_gpu``
    of one GPU (Ray places up to that many tasks on each GPU)."""
    tasks_per_gpu = check_int("tasks_per_gpu", tasks_per_gpu, 1, MAX_TASKS_PER_GPU)
    if device_kind == "cuda":
        return {"num_cpus": 1, "num_gpus": 1 / tasks_per_gpu}
    if device_kind == "cpu":
        return {"num_cpus": 1, "num_gpus": 0}
    raise ParameterError("device", device_kind, "cpu or cuda with executor='ray'")


def run_units(
    units: Sequence[Sequence[Any]],
    body: Callable[..., list],
    args: tuple,
    *,
    device_kind: str,
    address: str | None = None,
    local_cpus: int | None = None,
    progress: bool = True,
    tasks_per_gpu: int = 1,
) -> list:
    """``body(unit, *args)`` for every unit as one Ray task; the results of all of them,
    concatenated in the order of ``units`` (``body`` returns one item per config).

    ``body`` is a module-level function (Ray pickles it by reference: every node imports
    the library); ``args`` are plain values (paths as strings). Ray is initialised here
    when it is not yet (``address``; None: a local cluster of ``local_cpus`` CPUs) and
    then shut down again at the end.
    """
    ray = require_ray()
    resources = task_resources(device_kind, tasks_per_gpu)
    if not units:
        return []
    started_here = not ray.is_initialized()
    if started_here:
        if address is None:  # "local": a new cluster, never someone else's found on this node
            ray.init(address="local", num_cpus=local_cpus, include_dashboard=False)
        else:
            ray.init(address=address, include_dashboard=False)
    try:
        return _run(ray, units, body, args, resources, progress)
    finally:
        if started_here:
            ray.shutdown()


def _run(ray, units, body, args, resources, progress) -> list:
    task = ray.remote(body).options(**resources)
    refs = [task.remote(tuple(unit), *args) for unit in units]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[list | None] = [None] * len(refs)
    pending = list(refs)
    total = sum(len(unit) for unit in units)
    share = resources.get("num_gpus")
    where = f"{share:.3g} gpu" if share else "1 cpu"
    bar = tqdm(total=total, desc=f"runs (ray, {where} a task)", unit="run",
               disable=not progress)  # fmt: skip
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                i = index[ref]
                results[i] = _result(ray, ref, units[i])
                bar.update(len(units[i]))
    except BaseException:
        # Ctrl-C, or a task that failed: stop the others (a running one stops at a step
        # boundary with its checkpoint; the next call resumes it).
        _cancel(ray, pending)
        raise
    finally:
        bar.close()
    return [item for part in results for item in (part or [])]


def _cancel(ray, refs: list) -> None:
    """Cancel the tasks of ``refs`` and give the running ones a moment to stop cleanly."""
    for ref in refs:
        ray.cancel(ref)
    if refs:
        with contextlib.suppress(Exception):  # cancelled and failed tasks: their errors
            ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)


def _result(ray, ref, unit) -> list:
    """The task's result, or RayRunError naming its run(s)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if cause is not None:
            first = (str(cause).strip().splitlines() or [""])[0]
            detail = f"{type(cause).__name__}: {first}" if first else type(cause).__name__
        else:
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise RayRunError([config_hash(c) for c in unit], cause, detail) from cause
    except ray.exceptions.RayError as exc:  # a worker or node lost, out of memory, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RayRunError([config_hash(c) for c in unit], exc, first) from exc


def absolute(path: str | os.PathLike) -> str:
    """``path`` made absolute (a task may run in another working directory, or node)."""
    return os.path.abspath(os.fspath(path))
