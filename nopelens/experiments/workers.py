"""Worker processes of the default sweep pool: fast to start, one thread, die with the driver.

A sweep's default pool forks its workers from a *fork server*: a fresh process that imports torch
and TransformerLens once (:data:`PRELOAD`), so each worker starts in a fraction of a second and
never inherits the OpenMP state of a process that already ran torch (plain ``fork`` can deadlock
there). Each worker runs on one torch thread (:func:`init_worker`).

A fork-server worker is a child of the fork server, not of the process that runs the sweep (the
*driver*), and it waits for jobs on a pipe that the driver's death does not close; the fork server
in turn waits for its workers, and the resource tracker for all of them. After a ``kill -9`` of the
driver they would all wait forever, holding their memory. :func:`init_pool_worker` therefore
makes every worker watch the driver and kill itself the moment the driver is gone; the fork server
and the resource tracker then see their last client leave and exit on their own (checked by
``tests/experiments/test_faults.py``, which kills drivers with SIGKILL).
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

#: Modules the fork server imports once, so that workers start without importing torch,
#: TransformerLens or the compiled kernels again (:mod:`~nopelens.experiments.preload`).
PRELOAD = [
    "nopelens.experiments.workers",
    "nopelens.experiments.runner",
    "nopelens.measure.activations",
    "nopelens.analyzer.analysis",
    "nopelens.measure.ablation",
    "nopelens.experiments.preload",
]


def init_worker(n_threads: int = 1) -> None:
    """Limit torch to ``n_threads`` threads in a worker process (avoids oversubscription).

    The default process pool calls it through :func:`init_pool_worker`; call it once per worker
    when running sweeps on another engine (Ray, Dask).
    """
    os.environ["OMP_NUM_THREADS"] = str(n_threads)
    os.environ["MKL_NUM_THREADS"] = str(n_threads)
    import torch

    torch.set_num_threads(n_threads)
    with contextlib.suppress(RuntimeError):  # only allowed before the first inter-op work
        torch.set_num_interop_threads(n_threads)


def start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, Linux), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _is_running(pid: int, start: str | None) -> bool:
    """Whether ``pid`` is still the process that started at ``start`` (None: any process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start is None or start_time(pid) in (start, None)


def _wait_for_exit(pid: int, start: str | None) -> None:
    """Return when process ``pid`` (started at ``start``) has exited.

    Linux: a pidfd of the process becomes readable when it exits (no polling, no pid reuse:
    the start time is compared after the pidfd pins the process). Elsewhere: poll every 0.5 s.
    """
    import select

    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if fd is None:
        while _is_running(pid, start):
            time.sleep(0.5)
        return
    try:
        if _is_running(pid, start):
            select.select([fd], [], [])
    finally:
        os.close(fd)


def _exit_with_driver(pid: int, start: str | None) -> None:
    """Kill this worker as soon as the driver process ``pid`` is gone (a daemon thread's job)."""
    _wait_for_exit(pid, start)
    os.kill(os.getpid(), signal.SIGKILL)


def _die_with_parent() -> None:
    """Linux: have the kernel send SIGKILL to this process when its parent exits."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def init_pool_worker(n_threads: int, driver_pid: int, driver_start: str | None) -> None:
    """Initializer of the default process pool: one torch thread, and die with the driver.

    A worker of a fork-server pool is a child of the fork server, not of the process that runs
    the sweep (the *driver*), and it waits for jobs on a pipe that the driver's death does not
    close: after a ``kill -9`` of the driver, workers, fork server and resource tracker would
    wait forever. Each worker therefore watches the driver (a pidfd on Linux, polling
    elsewhere) from a daemon thread and kills itself when the driver is gone, and asks the
    kernel to kill it if its parent (the fork server) dies. The fork server and the resource
    tracker then see their last client leave and exit on their own.

    Args:
        n_threads: torch threads per worker (see :func:`init_worker`).
        driver_pid: ``os.getpid()`` of the driver.
        driver_start: The driver's start time (``/proc/<pid>/stat``), which tells it apart from
            a later process that reuses its pid; None where unknown.
    """
    _die_with_parent()
    if not _is_running(driver_pid, driver_start):
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(
        target=_exit_with_driver,
        args=(driver_pid, driver_start),
        name="nopelens-driver-watch",
        daemon=True,
    ).start()
    init_worker(n_threads)


def pool_context() -> multiprocessing.context.BaseContext:
    """A fork server preloaded with torch and TransformerLens where available, else spawn.

    Plain ``fork`` of a process that has already run torch can deadlock in OpenMP; the fork
    server is a fresh single-threaded process that imports the heavy modules once and forks
    each worker from there (about 3x faster to start two workers than ``spawn`` here).
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


def start_fork_server() -> None:
    """Start the preloaded fork server now, so that its imports overlap the caller's own work.

    The fork server imports torch and TransformerLens (:data:`PRELOAD`, about 10 s of CPU);
    a command that will run a local pool calls this first, before it imports anything heavy
    itself, and the two processes import side by side. It stops when this process exits. A
    no-op where there is no fork server (then workers are spawned).
    """
    context = pool_context()
    if context.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


# Executors: this process, or the pool kept between sweeps -----------------------------------------


class SequentialExecutor(cf.Executor):
    """A :class:`concurrent.futures.Executor` that runs each job in this process at submit time.

    Exceptions are stored in the returned future (as in a real pool); ``KeyboardInterrupt``
    propagates immediately.
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        """Run ``fn(*args, **kwargs)`` now and return a finished future."""
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:  # noqa: BLE001 - delivered through the future
            future.set_exception(err)
        return future


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _default_workers(max_workers: int | None, n_jobs: int) -> int:
    workers = _available_cpus() if max_workers is None else max_workers
    return max(1, min(workers, n_jobs))


#: The local process pool kept between sweeps of this process: (workers, pool). Starting a pool
#: costs a fork server that imports torch and TransformerLens (about 10 s of CPU); a process that
#: runs several sweeps (``reproduce``) pays it once. Shut down at exit, or when a sweep fails.
_POOL: dict[str, Any] = {}


def _local_pool(workers: int) -> cf.ProcessPoolExecutor:
    """The persistent process pool of ``workers`` workers (started on first use)."""
    pool = _POOL.get("pool")
    if pool is not None and (_POOL.get("workers") != workers or getattr(pool, "_broken", False)):
        shutdown_local_pool()
        pool = None
    if pool is None:
        pool = cf.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=pool_context(),
            initializer=init_pool_worker,
            initargs=(1, os.getpid(), start_time(os.getpid())),
        )
        if not _POOL.get("atexit"):
            atexit.register(shutdown_local_pool)
            _POOL["atexit"] = True
        _POOL.update(pool=pool, workers=workers, pid=os.getpid())
    return pool


def shutdown_local_pool() -> None:
    """Stop the process pool that :func:`sweep` keeps between sweeps (if any); idempotent.

    It is stopped at exit anyway; call this to free its worker processes earlier.
    """
    pool = _POOL.pop("pool", None)
    _POOL.pop("workers", None)
    if pool is not None and _POOL.get("pid") == os.getpid():
        pool.shutdown(wait=True, cancel_futures=True)


def _executor_for(
    executor: cf.Executor | None, workers: int | None, n_pending: int
) -> tuple[cf.Executor, int, bool]:
    """The executor, how many jobs to keep in flight on it, and whether it is the shared pool.

    Without a caller's executor: this process for one worker, else the persistent local process
    pool of ``workers`` workers (that die with this process) with two jobs in flight per worker.
    """
    if executor is not None:
        return executor, n_pending if workers is None else workers, False
    workers = _default_workers(workers, n_pending)
    if workers == 1:
        return SequentialExecutor(), 1, False
    return _local_pool(workers), 2 * workers, True


# Jobs started ahead of time ---------------------------------------------------------------------


class BackgroundJobs:
    """Jobs started ahead of time, one at a time, in one worker process; claimed later by key.

    ``reproduce`` starts the longest independent jobs of a later part (the training runs of the
    ``trained`` part) here when the run begins, so that they use the core that the earlier,
    single-process parts leave idle. When the later part asks for a job
    (:meth:`claim`), it gets the job's future if the job has started (running or finished), or
    None if it has not (the job is then removed from the queue and the part runs it itself).
    Jobs are sent to the worker one at a time, so no job waits in the pool's own queue behind
    another. The worker is forked like the sweeps' (:func:`pool_context`, one torch thread by
    default, dies with this process), so a job computes exactly what it computes elsewhere.

    Use as a context manager: at exit the jobs not started are dropped and the worker is stopped
    without waiting for a running job (a training run is resumable; it dies with its worker).

    Examples:
        >>> import operator
        >>> with BackgroundJobs() as jobs:
        ...     jobs.start(operator.add, [("a", (1, 2))])
        ...     future = jobs.claim("a")  # None if the job had not started yet
        ...     future.result() if future is not None else operator.add(1, 2)
        3
    """

    def __init__(self, n_threads: int = 1) -> None:
        self._n_threads = n_threads
        self._lock = threading.Lock()
        self._queue: list[tuple[Any, Callable[..., Any], tuple[Any, ...]]] = []
        self._started: dict[Any, cf.Future] = {}
        self._futures: list[cf.Future] = []  # every job sent, claimed or not
        self._pool: cf.ProcessPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self, fn: Callable[..., Any], jobs: list[tuple[Any, tuple[Any, ...]]]) -> None:
        """Queue ``fn(*args)`` for each ``(key, args)`` of ``jobs``, in order; returns at once."""
        with self._lock:
            if self._closed:
                raise RuntimeError("BackgroundJobs: start() after close()")
            self._queue += [(key, fn, tuple(args)) for key, args in jobs]
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._feed, name="nopelens-background-jobs", daemon=True
                )
                self._thread.start()

    def _next(self) -> cf.Future | None:
        with self._lock:
            if self._closed or not self._queue:
                self._thread = None
                return None
            key, fn, args = self._queue.pop(0)
            if self._pool is None:
                self._pool = cf.ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=pool_context(),
                    initializer=init_pool_worker,
                    initargs=(self._n_threads, os.getpid(), start_time(os.getpid())),
                )
            future = self._pool.submit(fn, *args)
            self._started[key] = future
            self._futures.append(future)
            return future

    def _feed(self) -> None:
        while (future := self._next()) is not None:
            cf.wait([future])

    def started(self, key: Any) -> bool:
        """Whether job ``key`` has been sent to the worker and not claimed yet."""
        with self._lock:
            return key in self._started

    def claim(self, key: Any) -> cf.Future | None:
        """The future of job ``key`` if it has started; None (and dequeued) if not or unknown."""
        with self._lock:
            future = self._started.pop(key, None)
            if future is None:
                self._queue = [job for job in self._queue if job[0] != key]
            return future

    def close(self) -> None:
        """Drop the jobs not started and stop the worker (a running job dies with it)."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            pool, self._pool = self._pool, None
            busy = any(not future.done() for future in self._futures)
            self._started.clear()
        if pool is not None:
            if busy:  # a job nobody claimed (the run failed): do not wait for it
                for process in list((getattr(pool, "_processes", None) or {}).values()):
                    with contextlib.suppress(Exception):
                        process.terminate()
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BackgroundJobs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
