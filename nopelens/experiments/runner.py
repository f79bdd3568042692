"""Running a sweep: the job, the executors, the memory check, and :func:`sweep` itself.

:func:`sweep` validates every configuration before running any, then runs the missing ones
through a :class:`concurrent.futures.Executor`. Each job is :func:`run_config`, a pure,
picklable, top-level function of a plain dict that builds the model with
:func:`nopelens.build_model`, draws seeded random tokens, applies the grid's ablation hooks and
calls :func:`nopelens.analyze`, returning the score rows as plain dicts. Because the job and its
input and output are plain Python, any executor that can pickle a function by reference runs
the same sweep: the default local process pool, the in-process :class:`SequentialExecutor`, a
Dask ``Client.get_executor()`` or a small Ray adapter (see the README). Finished configurations
are appended to the results file as they come (:mod:`nopelens.experiments.records`).

One sweep at a time writes to a folder (:func:`nopelens.files.output_lock`); configurations that
would not fit in memory are refused before anything runs (:func:`check_sweep_memory`), and the
workers of the default pool die with the process that started them, even after a ``kill -9``
(:func:`init_pool_worker`).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from nopelens.experiments.grid import (
    DEFAULTS,
    complete_config,
    config_id,
    config_label,
    config_problems,
    context_length,
    expand_grid,
    model_extra,
    normalize_grids,
    raise_problems,
    value_problem,
)
from nopelens.experiments.records import (
    GRID_FILE,
    RESULTS_FILE,
    append_record,
    read_records,
    records_frame,
    repair_results,
)
from nopelens.experiments.workers import init_pool_worker, pool_context, start_time
from nopelens.files import clean_temp_files, output_lock, to_jsonable, write_json
from nopelens.memory import analysis_bytes, available_bytes, check_fits, format_bytes
from nopelens.validation import InvalidParameterError

logger = logging.getLogger(__name__)


# The job ----------------------------------------------------------------------------------------


def run_config(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one configuration: build the model, draw tokens, analyse, return the score rows.

    This is the job that executors run. It is a top-level function of a plain dict returning
    plain dicts, so it pickles by reference and runs unchanged in a process pool, on Ray or on
    Dask. It is deterministic in the configuration (``seed`` draws the weights, ``data_seed`` the
    tokens, the bootstrap and the prefix permutation).

    Args:
        config: A configuration; missing settings take their
            :data:`~nopelens.experiments.grid.DEFAULTS`.

    Returns:
        One dict per score row of :func:`nopelens.analyze` (``site, layer, metric, value, chance,
        ci_low, ci_high, n_seqs, seq_len``) plus ``config_id`` and ``elapsed_s`` (the seconds
        this configuration took).

    Raises:
        ValueError: If the configuration is invalid.

    Examples:
        >>> config = {"n_layers": 1, "d_model": 16, "n_heads": 2, "seq_len": 8, "n_seqs": 4,
        ...           "n_bootstrap": 10}
        >>> rows = run_config(config)
        >>> rows[0]["config_id"] == config_id(config), rows[0]["site"]
        (True, 'resid_post')
    """
    start = time.perf_counter()
    config = complete_config(config)
    problems = [
        f"the {k!r} setting must be {need}"
        for k, v in config.items()
        if k in DEFAULTS and (need := value_problem(k, v)) is not None
    ]
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        problems.append(f"unknown settings {unknown}")
    raise_problems(problems or config_problems(config))
    if not str(config["device"]).startswith("cuda"):  # on a GPU, analyze checks device memory
        check_fits(
            analysis_bytes(config),
            what=f"configuration {config_id(config)} ({config_label(config)})",
            func="sweep",
            hint="Use smaller sizes in the grid (seq_len, n_seqs, n_layers, d_model).",
        )

    from nopelens.analyzer import analyze
    from nopelens.measure import ablation_hooks, random_tokens
    from nopelens.models import build_model

    model = build_model(
        n_layers=config["n_layers"],
        d_model=config["d_model"],
        n_heads=config["n_heads"],
        d_vocab=config["d_vocab"],
        n_ctx=context_length(config),
        positional=config["positional"],
        attention=config["attention"],
        seed=config["seed"],
        device=config["device"],
        **model_extra(config),
    )
    tokens = random_tokens(
        config["n_seqs"], config["seq_len"], config["d_vocab"], seed=config["data_seed"]
    )
    hooks = ablation_hooks(model, config["ablation"], seed=config["data_seed"])
    report = analyze(
        model,
        tokens,
        sites=tuple(config["sites"]),
        centered=config["centered"],
        exclude_first=config["exclude_first"],
        n_bootstrap=config["n_bootstrap"],
        seed=config["data_seed"],
        fwd_hooks=hooks,
    )
    rows = to_jsonable(report.scores.to_dict(orient="records"))
    elapsed = time.perf_counter() - start
    cid = config_id(config)
    return [{"config_id": cid, **row, "elapsed_s": elapsed} for row in rows]


# Executors and the lock ---------------------------------------------------------------------------


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


def _executor_for(
    executor: cf.Executor | None, workers: int | None, n_pending: int
) -> tuple[cf.Executor, int]:
    """The executor to use and how many jobs to keep in flight on it.

    Without a caller's executor: this process for one worker, else a process pool of
    ``workers`` workers (that die with this process) with two jobs in flight per worker.
    """
    if executor is not None:
        return executor, n_pending if workers is None else workers
    workers = _default_workers(workers, n_pending)
    if workers == 1:
        return SequentialExecutor(), 1
    pool = cf.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=pool_context(),
        initializer=init_pool_worker,
        initargs=(1, os.getpid(), start_time(os.getpid())),
    )
    return pool, 2 * workers


def check_sweep_memory(
    configs: Sequence[dict[str, Any]],
    *,
    max_workers: int | None = None,
    available: int | None = None,
) -> dict[str, Any]:
    """Check that the configurations fit in memory, alone and ``max_workers`` at a time.

    Each configuration's peak is :func:`nopelens.memory.analysis_bytes` (model, forward pass of
    one batch, activations, similarity matrices). The largest must fit in the available memory;
    so must ``workers`` of them at once, where ``workers`` is ``max_workers`` or, by default,
    the available CPUs, lowered to what fits (at least one).

    Args:
        configs: Complete configurations (:func:`~nopelens.experiments.expand_grid`).
        max_workers: Worker processes asked for (None: as many as fit, up to the CPUs).
        available: Available bytes (None: :func:`nopelens.memory.available_bytes`).

    Returns:
        ``peak_bytes`` (the largest configuration), ``workers`` (the processes to use),
        ``total_bytes`` (``workers * peak_bytes``) and ``available_bytes`` (None if unknown).

    Raises:
        InvalidParameterError: If one configuration does not fit, or ``max_workers`` of them do
            not, stating the estimate and the available memory.

    Examples:
        >>> from nopelens.experiments import expand_grid
        >>> configs = expand_grid({"seq_len": [16, 32]})
        >>> check_sweep_memory(configs, max_workers=2, available=2**30)["workers"]
        2
        >>> try:
        ...     check_sweep_memory(expand_grid({"seq_len": [100_000]}), available=2**30)
        ... except ValueError as err:
        ...     print(str(err)[:49])
        sweep would need about 23.5 TiB for configuration
    """
    if available is None:
        available = available_bytes()
    peaks = [(analysis_bytes(c), c) for c in configs]
    peak, largest = max(peaks, key=lambda item: item[0]) if peaks else (0, {})
    workers = _default_workers(max_workers, len(configs))
    if peaks:
        check_fits(
            peak,
            what=f"configuration {config_id(largest)} ({config_label(largest)})",
            func="sweep",
            available=available,
            hint="Use smaller sizes in the grid (seq_len, n_seqs, n_layers, d_model).",
        )
    if available is not None and peak and workers * peak > available:
        fit = max(1, available // peak)
        if max_workers is not None:
            raise InvalidParameterError(
                f"sweep would need about {format_bytes(workers * peak)} for {workers} workers "
                f"(up to {format_bytes(peak)} each), but only {format_bytes(available)} of "
                f"memory is available. Use at most {fit} worker(s) (--workers {fit})."
            )
        logger.info("sweep: %d worker(s) fit in memory (of %d CPUs)", fit, workers)
        workers = int(fit)
    return {
        "peak_bytes": peak,
        "workers": workers,
        "total_bytes": workers * peak,
        "available_bytes": available,
    }


# The sweep --------------------------------------------------------------------------------------


def _check_sweep_args(executor: Any, max_workers: Any, max_configs: Any) -> None:
    func = "sweep"
    if max_workers is not None and (
        isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
    ):
        raise InvalidParameterError(
            f"The 'max_workers' parameter of {func} must be None or an int >= 1. "
            f"Got {max_workers!r} instead."
        )
    if max_configs is not None and (
        isinstance(max_configs, bool) or not isinstance(max_configs, int) or max_configs < 0
    ):
        raise InvalidParameterError(
            f"The 'max_configs' parameter of {func} must be None or an int >= 0. "
            f"Got {max_configs!r} instead."
        )
    if executor is not None and not isinstance(executor, cf.Executor):
        raise InvalidParameterError(
            f"The 'executor' parameter of {func} must be None or a concurrent.futures.Executor. "
            f"Got {type(executor).__name__} instead."
        )


def _pending_configs(
    configs: list[dict[str, Any]], results_path: Path, max_configs: int | None
) -> list[dict[str, Any]]:
    """The configurations not finished in ``results_path`` (at most ``max_configs`` of them)."""
    repair_results(results_path)
    done = read_records(results_path)
    pending = [c for c in configs if config_id(c) not in done]
    if max_configs is not None:
        pending = pending[:max_configs]
    logger.info(
        "sweep: %d configurations, %d already finished, %d to run now",
        len(configs),
        sum(config_id(c) in done for c in configs),
        len(pending),
    )
    return pending


def _write_manifest(out: Path, grid: Any, configs: list[dict[str, Any]]) -> None:
    """Write ``grid.json``: the grid as run, and its configuration ids in grid order."""
    write_json(
        out / GRID_FILE,
        {
            "grids": normalize_grids(grid),
            "n_configs": len(configs),
            "config_ids": [config_id(c) for c in configs],
        },
    )


def sweep(
    grid: Any,
    *,
    out_dir: str | os.PathLike[str],
    executor: Any = None,
    max_workers: int | None = None,
    progress: bool = True,
    max_configs: int | None = None,
) -> pd.DataFrame:
    """Run every configuration of ``grid`` that ``out_dir`` has not finished; return all results.

    Every configuration is validated first (:func:`~nopelens.experiments.expand_grid`); nothing
    runs if any is bad. Finished configurations in ``out_dir/results.jsonl`` are skipped, the
    others run through ``executor`` (each job is ``run_config(config)``) and are appended, one
    line each, as they finish. If a job raises, the configurations finished so far stay written,
    the ones not started are cancelled, and the error is raised naming the configuration; running
    the same sweep again continues from there.

    Args:
        grid: A dict of setting -> list of values, a list of such dicts, or a
            :data:`~nopelens.experiments.PRESETS` entry.
        out_dir: Folder of ``results.jsonl`` and ``grid.json`` (created if needed).
        executor: Any :class:`concurrent.futures.Executor` (e.g. a Dask ``client.get_executor()``
            or a Ray adapter); it is not shut down. ``None``: a local process pool of
            ``max_workers`` workers (forked from a fork server, one torch thread each, killed
            with this process: see :func:`init_pool_worker`), or this process when
            ``max_workers == 1`` or a single configuration is pending.
        max_workers: Worker processes of the default pool (default: the available CPUs, as many
            as fit in memory); with an ``executor``, the number of jobs kept in flight (default:
            all).
        progress: Show a progress bar (tqdm, on stderr).
        max_configs: Run at most this many pending configurations now (the rest stay pending).

    Returns:
        :func:`~nopelens.experiments.read_results` of the grid's configurations, in grid order.

    Raises:
        ValueError: For an invalid grid or argument, or configurations that would not fit in
            memory (:func:`check_sweep_memory`), before anything runs.
        RuntimeError: If a configuration fails (after writing the finished ones).
        LockHeldError: If another process holds ``out_dir`` (:func:`nopelens.files.output_lock`).

    Examples:
        >>> import tempfile
        >>> grid = {"n_layers": [1], "d_model": [16], "n_heads": [2], "seq_len": [8],
        ...         "n_seqs": [4], "n_bootstrap": [10], "seed": [0, 1]}
        >>> frame = sweep(grid, out_dir=tempfile.mkdtemp(), max_workers=1, progress=False)
        >>> frame["config_id"].nunique()
        2
    """
    configs = expand_grid(grid)
    _check_sweep_args(executor, max_workers, max_configs)
    out = Path(out_dir)
    results_path = out / RESULTS_FILE
    with output_lock(out, "sweep folder"):
        clean_temp_files(out, recursive=False)
        pending = _pending_configs(configs, results_path, max_configs)
        workers = max_workers
        if executor is None and pending:
            workers = check_sweep_memory(pending, max_workers=max_workers)["workers"]
        _write_manifest(out, grid, configs)
        if pending:
            _run(pending, results_path, executor, workers, progress)
    records = read_records(results_path)
    return records_frame([records[i] for i in (config_id(c) for c in configs) if i in records])


def _run(
    pending: list[dict[str, Any]],
    results_path: Path,
    executor: cf.Executor | None,
    max_workers: int | None,
    progress: bool,
) -> None:
    """Run ``pending`` on ``executor`` (or an own one, shut down at the end), appending results."""
    from tqdm.auto import tqdm

    own = executor is None
    executor, in_flight = _executor_for(executor, max_workers, len(pending))
    fd = os.open(results_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    bar = tqdm(total=len(pending), desc="sweep", unit="config", disable=not progress)
    try:
        _submit_and_append(executor, pending, in_flight, fd, bar)
    finally:
        bar.close()
        os.close(fd)
        if own:
            executor.shutdown(wait=True, cancel_futures=True)


def _submit_and_append(
    executor: cf.Executor, pending: list[dict[str, Any]], in_flight: int, fd: int, bar: Any
) -> None:
    """Keep ``in_flight`` jobs submitted; append each result as it finishes, in finishing order.

    On the first failure (or an interrupt) the jobs not started are cancelled and the error is
    raised naming the configuration.
    """
    queue = list(reversed(pending))
    running: dict[cf.Future, dict[str, Any]] = {}
    try:
        while queue or running:
            while queue and len(running) < in_flight:
                config = queue.pop()
                running[executor.submit(run_config, config)] = config
            finished, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
            for future in finished:
                config = running.pop(future)
                cid = config_id(config)
                try:
                    rows = future.result()
                except Exception as err:
                    raise RuntimeError(
                        f"Configuration {cid} ({config_label(config)}) failed: "
                        f"{type(err).__name__}: {err}"
                    ) from err
                append_record(fd, {"config_id": cid, "config": config, "rows": rows})
                bar.update()
    except BaseException:
        for future in running:
            future.cancel()
        raise
