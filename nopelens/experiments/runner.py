"""Running a sweep: the job, the executors, the memory check, and :func:`sweep` itself.

:func:`sweep` validates every configuration before running any, then runs the missing ones on an
*executor*. Each job is :func:`run_config`, a pure top-level function of a plain dict: it builds
the model with :func:`nopelens.build_model` (and trains it on the configuration's ``task`` first,
if any), draws the configuration's token batch (:func:`config_tokens`), applies the grid's
ablation hooks and calls :func:`nopelens.analyze`, returning the score rows as plain dicts. A
configuration with a ``model`` setting loads that saved model and reads its ``text`` instead
(:func:`nopelens.experiments.sources.config_model_inputs`, shared with ``nopelens analyze``); its
record carries a fingerprint of the files read, and a resumed sweep refuses finished results of
files that have changed since (:func:`nopelens.experiments.sources.stale_problems`).

Executors: ``"local"`` (the default) is a process pool of persistent workers forked from a
preloaded fork server (:mod:`nopelens.experiments.workers`), or this process for one worker;
``"ray"`` runs the jobs as Ray tasks on a local or remote Ray cluster
(:mod:`nopelens.experiments.distributed`); any :class:`concurrent.futures.Executor` (a Dask
``Client.get_executor()``, say) runs them too. Whatever the executor, results stream back to
this process (the *driver*), which alone appends them to the results file, once per
configuration id (:mod:`nopelens.experiments.records`), so an interrupted sweep resumes where it
stopped with no duplicates.

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from nopelens.experiments.grid import (
    DEFAULTS,
    complete_config,
    config_id,
    config_label,
    config_problems,
    data_seed_of,
    expand_grid,
    normalize_grids,
    raise_problems,
    value_problem,
)
from nopelens.experiments.kept_models import keep_model, untrained_model
from nopelens.experiments.records import (
    GRID_FILE,
    RESULTS_FILE,
    append_record,
    read_records,
    records_frame,
    repair_results,
)
from nopelens.experiments.workers import _default_workers, _executor_for, shutdown_local_pool
from nopelens.files import clean_temp_files, output_lock, to_jsonable, write_json
from nopelens.memory import analysis_bytes, available_bytes, check_fits, format_bytes
from nopelens.validation import InvalidParameterError

logger = logging.getLogger(__name__)


# The job ----------------------------------------------------------------------------------------


def _check_config(config: dict[str, Any]) -> dict[str, Any]:
    """The complete configuration, or one error listing its problems."""
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
    return config


def tokens_key(config: dict[str, Any]) -> tuple[Any, ...]:
    """What a configuration's token batch depends on: configurations with one key share it.

    Examples:
        >>> from nopelens.experiments.grid import complete_config
        >>> a, b = complete_config({"seed": 0}), complete_config({"seed": 1})
        >>> tokens_key(a) == tokens_key(b)  # data_seed=None: each its own batch
        False
        >>> tokens_key({**a, "data_seed": 0}) == tokens_key({**b, "data_seed": 0})
        True
    """
    return (
        config.get("model"),
        config.get("text"),
        config["task"],
        config["n_seqs"],
        config["seq_len"],
        config["d_vocab"],
        data_seed_of(config),
    )


def config_tokens(config: dict[str, Any]) -> Any:
    """The token batch of a configuration, ``[n_seqs, seq_len]`` on the CPU.

    Random tokens (:func:`nopelens.random_tokens`) for a random-init configuration; held-out test
    examples of the task for a trained one. The seed is :func:`~nopelens.experiments.grid.
    data_seed_of`: shared when ``data_seed`` is set, the configuration's own otherwise.

    Examples:
        >>> from nopelens.experiments.grid import complete_config
        >>> config_tokens(complete_config({"n_seqs": 4, "seq_len": 8})).shape
        torch.Size([4, 8])
    """
    seed = data_seed_of(config)
    if config.get("model") is not None:  # a saved model's own inputs (it loads the model)
        from nopelens.experiments.sources import config_model_inputs

        return config_model_inputs(config, seed)[1].tokens.cpu()
    if config["task"] is not None:
        from nopelens.training import get_task

        return (
            get_task(config["task"]).sample(config["n_seqs"], split="test", generator=seed).tokens
        )
    from nopelens.measure import random_tokens

    return random_tokens(config["n_seqs"], config["seq_len"], config["d_vocab"], seed=seed)


def _config_model(config: dict[str, Any]) -> tuple[Any, dict[str, Any], tuple[str, Any] | None]:
    """The model (trained on its task, if any), its rows' extra columns, and what to keep of it."""
    model, entry = untrained_model(config)
    if config["task"] is None:
        return model, {}, entry
    from nopelens.training import default_config, get_task, train

    task = get_task(config["task"])
    steps = {} if config["train_steps"] is None else {"steps": config["train_steps"]}
    train_config = default_config(task, seed=data_seed_of(config), **steps)
    result = train(model, task, train_config, progress=False)
    final = result.final
    return (
        model,
        {"test_accuracy": float(final["test_accuracy"]), "chance_accuracy": float(task.chance)},
        None,
    )


def run_config(config: dict[str, Any], tokens: Any = None) -> list[dict[str, Any]]:
    """Run one configuration: build (and train) the model, draw tokens, analyse, return rows.

    This is the job that executors run. It is a top-level function of a plain dict returning
    plain dicts, so it pickles by reference and runs unchanged in a process pool, on Ray or on
    Dask. It is deterministic in the configuration: ``seed`` draws the weights,
    :func:`~nopelens.experiments.grid.data_seed_of` the tokens, the bootstrap and the prefix
    permutation (and, with a ``task``, the training data order).

    Args:
        config: A configuration; missing settings take their
            :data:`~nopelens.experiments.grid.DEFAULTS`.
        tokens: The configuration's token batch if the caller already has it (a batch shared by
            several configurations, sent once); None draws it (:func:`config_tokens`).

    Returns:
        One dict per score row of :func:`nopelens.analyze` (``site, layer, metric, value,
        chance, ci_low, ci_high, n_seqs, seq_len``) plus ``config_id`` and ``elapsed_s`` (the
        seconds this configuration took); trained configurations add ``test_accuracy`` and
        ``chance_accuracy``.

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
    config = _check_config(config)
    source = config["model"] is not None  # a saved model: its size is known once it is loaded
    if not source and not str(config["device"]).startswith("cuda"):
        check_fits(
            analysis_bytes(config),
            what=f"configuration {config_id(config)} ({config_label(config)})",
            func="sweep",
            hint="Use smaller sizes in the grid (seq_len, n_seqs, n_layers, d_model).",
        )

    from nopelens.analyzer import analyze
    from nopelens.measure import ablation_hooks

    seed = data_seed_of(config)
    if source:  # it reads its own files and tokenizer (nopelens.experiments.sources)
        from nopelens.experiments.sources import config_model_inputs

        model, inputs = config_model_inputs(config, seed)
        extra: dict[str, Any] = {}
        kept = None
        tokens = inputs.tokens if tokens is None else tokens
    else:
        model, extra, kept = _config_model(config)
    if tokens is None:
        tokens = config_tokens(config)
    hooks = ablation_hooks(model, config["ablation"], seed=seed)
    report = analyze(
        model,
        tokens,
        sites=tuple(config["sites"]),
        centered=config["centered"],
        exclude_first=config["exclude_first"],
        n_bootstrap=config["n_bootstrap"],
        seed=seed,
        fwd_hooks=hooks,
    )
    rows = to_jsonable(report.scores.to_dict(orient="records"))
    keep_model(kept)  # for the next configuration of its architecture in this process
    elapsed = time.perf_counter() - start
    cid = config_id(config)
    return [{"config_id": cid, **row, **extra, "elapsed_s": elapsed} for row in rows]


def run_configs(
    configs: Sequence[dict[str, Any]], tokens: Any = None
) -> list[tuple[str, list[dict[str, Any]]]]:
    """Run several configurations in one job: ``(config_id, rows)`` for each, in order.

    Small configurations run in batches so that each job is long compared with the cost of
    sending it; ``tokens`` (a batch that all of them share) is sent once for the batch.

    Examples:
        >>> configs = [{"n_layers": 1, "d_model": 16, "n_heads": 2, "seq_len": 8, "n_seqs": 4,
        ...             "n_bootstrap": 10, "seed": s} for s in (0, 1)]
        >>> [cid == config_id(c) for (cid, _), c in zip(run_configs(configs), configs)]
        [True, True]
    """
    return [(config_id(c), run_config(c, tokens)) for c in configs]


# The memory check -------------------------------------------------------------------------------


def check_sweep_memory(
    configs: Sequence[dict[str, Any]],
    *,
    max_workers: int | None = None,
    available: int | None = None,
) -> dict[str, Any]:
    """Check that the configurations fit in memory, alone and ``max_workers`` at a time.

    Each configuration's peak is :func:`nopelens.memory.analysis_bytes` (model, forward pass of
    one batch, activations, similarity matrices). Configurations of a saved or pretrained
    ``model`` are left out: their size is read only when the worker loads them (no weights are
    read here), and :func:`nopelens.analyze` checks device memory itself. The largest must fit
    in the available memory; so must ``workers`` of them at once, where ``workers`` is
    ``max_workers`` or, by default, the available CPUs, lowered to what fits (at least one).

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
    peaks = [(analysis_bytes(c), c) for c in configs if c.get("model") is None]
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


#: The executors :func:`sweep` knows by name.
EXECUTORS: tuple[str, ...] = ("local", "ray")


def _check_sweep_args(executor: Any, max_workers: Any, max_configs: Any, address: Any) -> None:
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
    if isinstance(executor, str):
        if executor not in EXECUTORS:
            raise InvalidParameterError(
                f"The 'executor' parameter of {func} must be one of "
                f"{', '.join(repr(e) for e in EXECUTORS)}, a concurrent.futures.Executor or "
                f"None. Got {executor!r} instead."
            )
    elif executor is not None and not isinstance(executor, cf.Executor):
        raise InvalidParameterError(
            f"The 'executor' parameter of {func} must be 'local', 'ray', None or a "
            f"concurrent.futures.Executor. Got {type(executor).__name__} instead."
        )
    if address is not None:
        if executor != "ray":
            raise InvalidParameterError(
                f"The 'address' parameter of {func} is the address of a Ray cluster; it needs "
                f"executor='ray'. Got address={address!r} with executor={executor!r}."
            )
        if not isinstance(address, str) or not address.strip():
            raise InvalidParameterError(
                f"The 'address' parameter of {func} must be None or a Ray address such as "
                f"'10.0.0.5:6379', 'ray://head:10001' or 'auto'. Got {address!r} instead."
            )


def _pending_configs(
    configs: list[dict[str, Any]], results_path: Path, max_configs: int | None
) -> list[dict[str, Any]]:
    """The configurations not finished in ``results_path`` (at most ``max_configs`` of them)."""
    from nopelens.experiments.sources import stale_problems

    repair_results(results_path)
    done = read_records(results_path)
    raise_problems(stale_problems(configs, done, str(results_path)))
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
    address: str | None = None,
    max_workers: int | None = None,
    progress: bool = True,
    max_configs: int | None = None,
) -> pd.DataFrame:
    """Run every configuration of ``grid`` that ``out_dir`` has not finished; return all results.

    Every configuration is validated first (:func:`~nopelens.experiments.expand_grid`); nothing
    runs if any is bad. Finished configurations in ``out_dir/results.jsonl`` are skipped, the
    others run on ``executor`` (each job is :func:`run_config`) and stream back to this process,
    which alone appends them, one line each and once per configuration id, as they finish. If a
    job raises, the configurations finished so far stay written, the ones not started are
    cancelled, and the error is raised naming the configuration; running the same sweep again
    continues from there (also after a killed worker or a killed driver).

    Args:
        grid: A dict of setting -> list of values, a list of such dicts, or a
            :data:`~nopelens.experiments.PRESETS` entry; ``{"model": [...], "text": [...]}``
            analyses saved models on texts (:mod:`nopelens.experiments.sources`).
        out_dir: Folder of ``results.jsonl`` and ``grid.json`` (created if needed).
        executor: ``"local"`` or ``None`` (the default): a local process pool of ``max_workers``
            workers (forked from a preloaded fork server, one torch thread each, killed with
            this process: see :func:`init_pool_worker`; kept for the next sweep of this
            process), or this process when ``max_workers == 1`` or one configuration is pending.
            ``"ray"``: Ray tasks on the cluster at ``address``, or on a local Ray runtime
            started for this sweep and stopped after it
            (:func:`~nopelens.experiments.distributed.run_on_ray`; ``pip install
            'nopelens[ray]'``). Or any :class:`concurrent.futures.Executor` (e.g. a Dask
            ``client.get_executor()``); it is not shut down.
        address: With ``executor="ray"``: the address of a running Ray cluster (``"host:6379"``,
            ``"ray://host:10001"`` or ``"auto"``), which is used and left running. None: start
            a local Ray runtime on this machine.
        max_workers: Worker processes of the local pool (default: the available CPUs, as many
            as fit in memory); with Ray, the most configurations running at once (default: the
            cluster's CPUs, or GPUs for ``device="cuda"``); with another executor, the number
            of jobs kept in flight (default: all).
        progress: Show a progress bar (on stderr).
        max_configs: Run at most this many pending configurations now (the rest stay pending).

    Returns:
        :func:`~nopelens.experiments.read_results` of the grid's configurations, in grid order.

    Raises:
        ValueError: For an invalid grid or argument, or configurations that would not fit in
            memory (:func:`check_sweep_memory`), before anything runs; with Ray, also for a
            missing Ray, an unreachable address or a cluster without the GPUs asked for.
        NopelensError: If Ray workers cannot import this nopelens (or run another version).
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
    _check_sweep_args(executor, max_workers, max_configs, address)
    if executor == "ray":  # Ray missing, or nothing at the address: say so before any work
        from nopelens.experiments.distributed import check_address, import_ray

        import_ray()
        if address is not None:
            check_address(address)
    out = Path(out_dir)
    results_path = out / RESULTS_FILE
    with output_lock(out, "sweep folder"):
        clean_temp_files(out, recursive=False)
        pending = _pending_configs(configs, results_path, max_configs)
        workers = max_workers
        if executor in (None, "local") and pending:
            workers = check_sweep_memory(pending, max_workers=max_workers)["workers"]
        _write_manifest(out, grid, configs)
        if pending:
            with ResultWriter(results_path, total=len(pending), progress=progress) as writer:
                if executor == "ray":
                    from nopelens.experiments.distributed import run_on_ray

                    run_on_ray(pending, writer, address=address, max_workers=workers)
                else:
                    _run(pending, writer, None if executor == "local" else executor, workers)
    records = read_records(results_path)
    return records_frame([records[i] for i in (config_id(c) for c in configs) if i in records])


class ResultWriter:
    """The driver's end of a sweep: appends each finished configuration once, in finishing order.

    Every executor hands its results to :meth:`add`; a configuration id that was already
    appended in this run is ignored (a retried task that reports twice), so the results file
    holds each configuration once. Use as a context manager: the file descriptor and the
    progress bar are closed at the end.
    """

    def __init__(self, path: Path, *, total: int, progress: bool) -> None:
        from nopelens.progress import progress_bar

        self.path = path
        self.written: set[str] = set()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._bar = progress_bar(total=total, desc="sweep", unit="config", quiet=not progress)

    def add(self, config: dict[str, Any], rows: list[dict[str, Any]]) -> bool:
        """Append one finished configuration; False (nothing written) if it already was."""
        from nopelens.experiments.sources import source_fingerprint

        cid = config_id(config)
        if cid in self.written:
            return False
        record = {"config_id": cid, "config": config, "rows": rows}
        fingerprint = source_fingerprint(config)  # files of a saved model (and text): stat/hash
        if fingerprint is not None:
            record["fingerprint"] = fingerprint
        append_record(self._fd, record)
        self.written.add(cid)
        self._bar.update()
        return True

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()
        os.close(self._fd)


def _failure(config: dict[str, Any], err: BaseException) -> RuntimeError:
    """The error raised when a configuration fails, naming it."""
    return RuntimeError(
        f"Configuration {config_id(config)} ({config_label(config)}) failed: "
        f"{type(err).__name__}: {err}"
    )


def _run(
    pending: list[dict[str, Any]],
    writer: ResultWriter,
    executor: cf.Executor | None,
    max_workers: int | None,
) -> None:
    """Run ``pending`` on ``executor`` (or the local pool / this process), appending results.

    The local pool is kept for the next sweep unless this one fails or is interrupted, in which
    case it is shut down (its running jobs are not waited for beyond their end).
    """
    executor, in_flight, shared = _executor_for(executor, max_workers, len(pending))
    try:
        _submit_and_append(executor, pending, in_flight, writer)
    except BaseException:
        if shared:
            shutdown_local_pool()
        raise


def _submit_and_append(
    executor: cf.Executor, pending: list[dict[str, Any]], in_flight: int, writer: ResultWriter
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
                try:
                    rows = future.result()
                except Exception as err:
                    raise _failure(config, err) from err
                writer.add(config, rows)
    except BaseException:
        for future in running:
            future.cancel()
        raise
