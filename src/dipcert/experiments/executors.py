"""Where the groups of cells of an experiment run: in this process, or on Dask distributed.

An executor takes a task (a picklable function of one group of cells) and the groups, costliest
first, and yields each group with its result as soon as it finishes; the caller (the engine)
writes every result itself, so only one process ever writes the result store.

- :class:`InProcess` (the default) runs the groups one after the other here.
- :class:`DaskExecutor` sends each group as one task to a ``dask.distributed`` cluster: a
  ``LocalCluster`` of N worker processes that it starts (``--cluster local:N``) or an existing
  scheduler (``--scheduler ADDRESS``). A worker lost mid-task costs only the tasks it held, which
  the scheduler gives to another worker; cancelling (Ctrl-C, or an error in a task) cancels every
  task of the client. Every task first checks that its worker runs the client's package
  versions (:class:`WorkerMismatch` otherwise). Dask is the optional extra ``dipcert[dask]``,
  imported only here and only when used.

Torch threads per task are set on the worker, never sent by the client: a task reads
``DIPCERT_THREADS`` from its worker's environment (``--cluster local:N`` sets it to cores/N; start
your own workers with ``DIPCERT_THREADS=T dask worker ADDRESS --nthreads 1``) and keeps torch's
setting where it is unset.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

import torch

from ..components import cluster_workers

Group = TypeVar("Group")
THREADS_VARIABLE = "DIPCERT_THREADS"
CONNECT_TIMEOUT = "20s"  # how long a client waits for a scheduler to answer
DASK_MISSING = "this needs Dask distributed, an optional extra: pip install 'dipcert[dask]'"


class MissingExtra(RuntimeError):
    """An optional dependency the chosen executor needs is not installed."""


def _timed(task: Callable, group):
    """Run ``task(group)`` with the torch threads the environment asks for; result and seconds."""
    threads = os.environ.get(THREADS_VARIABLE)
    if threads:
        torch.set_num_threads(int(threads))
    start = time.perf_counter()
    return task(group), time.perf_counter() - start


class WorkerMismatch(ValueError):
    """A Dask worker runs other package versions than the client: its rows would not belong in the
    client's table (whose stamp records the client's versions)."""


def _on_worker(task: Callable, group, expected: dict):
    """``_timed`` on a Dask worker, after checking that it runs the client's package versions."""
    from ..report import versions

    found = versions()
    if found != expected:
        changed = ", ".join(f"{pkg} {expected.get(pkg, 'none')} here, {found.get(pkg, 'none')} there"
                            for pkg in sorted(set(found) | set(expected)) if found.get(pkg) != expected.get(pkg))
        raise WorkerMismatch(f"a Dask worker on {socket.gethostname()} runs other versions ({changed}); install "
                             "the client's versions on every worker")
    return _timed(task, group)


class InProcess:
    """Every group in this process, one after the other, with this process's torch threads."""

    description = "in-process"

    def run(self, task: Callable, groups: Sequence[Group]) -> Iterator[tuple[Group, object, float]]:
        for group in groups:
            yield (group, *_timed(task, group))


class DaskExecutor:
    """Every group as one task of a ``dask.distributed`` client; results arrive as tasks finish."""

    def __init__(self, client, description: str) -> None:
        self.client, self.description = client, description

    def run(self, task: Callable, groups: Sequence[Group]) -> Iterator[tuple[Group, object, float]]:
        from distributed import as_completed

        from ..report import versions

        expected = versions()
        # pure=False: a key of its own per submission (another client's equal group is another task);
        # the priority keeps the caller's order, costliest first
        futures = {self.client.submit(_on_worker, task, group, expected, priority=len(groups) - i, pure=False): group
                   for i, group in enumerate(groups)}
        try:
            for future in as_completed(futures):
                result, seconds = future.result()
                yield futures[future], result, seconds
                future.release()
        finally:  # an error, Ctrl-C, or the caller stopping early: cancel what is left
            self.client.cancel([f for f in futures if not f.done()])


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise MissingExtra(DASK_MISSING) from None
    return distributed


@contextmanager
def open_executor(cluster: str | None = None, scheduler: str | None = None) -> Iterator[InProcess | DaskExecutor]:
    """The executor of ``--cluster local:N`` / ``--scheduler ADDRESS`` (at most one), in-process
    otherwise; a cluster started here is shut down on leaving."""
    if cluster and scheduler:
        raise ValueError("--cluster and --scheduler exclude each other: give one")
    if not cluster and not scheduler:
        yield InProcess()
        return
    distributed = _import_distributed()
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise OSError(f"no Dask scheduler answered at {scheduler} ({exc})") from None
        with client:
            yield DaskExecutor(client, f"scheduler {scheduler}")
        return
    workers = cluster_workers(cluster)
    threads = max(1, available_cores() // workers)
    environment = {THREADS_VARIABLE: str(threads)}
    saved = dict(os.environ)  # the nannies set OMP_NUM_THREADS=1 and more here, for their workers
    try:
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                      silence_logs=logging.ERROR, env=environment) as local, \
                distributed.Client(local) as client:
            yield DaskExecutor(client, f"local cluster of {workers} worker processes, {threads} torch thread(s) each")
    finally:  # ... and leave them: what this process starts later would inherit one thread
        os.environ.clear()
        os.environ.update(saved)


__all__ = ["DaskExecutor", "InProcess", "MissingExtra", "WorkerMismatch", "THREADS_VARIABLE", "available_cores", "open_executor"]
