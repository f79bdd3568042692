"""Helpers the parts share: the profile's base model and tokens, score look-ups, sweep grids."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from nopelens.experiments.grid import override_grid
from nopelens.experiments.pipeline import Context
from nopelens.experiments.presets import preset
from nopelens.experiments.runner import sweep
from nopelens.models import HookedModel


def base_model(ctx: Context, seed: int) -> HookedModel:
    """The profile's base NoPE model with weight seed ``seed``, on the run's device."""
    from nopelens.models import build_model

    return build_model(**ctx.profile.model, n_ctx=ctx.profile.seq_len, seed=seed, device=ctx.device)


def profile_tokens(ctx: Context, n_seqs: int | None = None, *, distinct: bool = False) -> Any:
    """The profile's random token batch (``n_seqs`` sequences, default the profile's)."""
    from nopelens.measure import random_tokens

    prof = ctx.profile
    return random_tokens(
        n_seqs or prof.n_seqs,
        prof.seq_len,
        prof.model["d_vocab"],
        seed=prof.data_seed,
        distinct=distinct,
    )


def analyze_profile(
    ctx: Context, model: HookedModel, tokens: Any, sites: Any, **kwargs: Any
) -> Any:
    """:func:`nopelens.analyze` with the profile's bootstrap size and seed."""
    from nopelens.analyzer import analyze

    return analyze(
        model,
        tokens,
        sites=tuple(sites),
        n_bootstrap=ctx.profile.n_bootstrap,
        seed=ctx.profile.data_seed,
        **kwargs,
    )


def _last_block(scores: pd.DataFrame) -> str:
    blocks = [label for label in scores["layer"].astype(str).unique() if label != "embed"]
    return max(blocks, key=int)


def score_at(
    scores: pd.DataFrame, metric: str, *, site: str = "resid_post", layer: str | None = None
) -> dict[str, float]:
    """Mean value, chance and mean CI of one (site, layer, metric) over the rows given.

    ``layer=None`` is the last block.
    """
    layer = _last_block(scores) if layer is None else layer
    rows = scores[
        (scores["site"] == site)
        & (scores["layer"].astype(str) == layer)
        & (scores["metric"] == metric)
    ]
    return {
        "value": float(rows["value"].mean()),
        "chance": float(rows["chance"].mean()),
        "ci_low": float(rows["ci_low"].mean()),
        "ci_high": float(rows["ci_high"].mean()),
    }


def ap_nc(scores: pd.DataFrame, **kwargs: Any) -> dict[str, float]:
    """Adjacency probability and neighborhood concordance (with chance) at one site and layer.

    Examples:
        >>> scores = pd.DataFrame({
        ...     "site": "resid_post", "layer": ["0", "1", "1"],
        ...     "metric": ["adjacency_probability"] * 2 + ["neighborhood_concordance"],
        ...     "value": [0.1, 0.6, 0.8], "chance": [0.2, 0.2, 0.5],
        ...     "ci_low": 0.0, "ci_high": 1.0})
        >>> ap_nc(scores)
        {'AP': 0.6, 'AP_chance': 0.2, 'NC': 0.8, 'NC_chance': 0.5}
    """
    ap = score_at(scores, "adjacency_probability", **kwargs)
    nc = score_at(scores, "neighborhood_concordance", **kwargs)
    return {
        "AP": ap["value"],
        "AP_chance": ap["chance"],
        "NC": nc["value"],
        "NC_chance": nc["chance"],
    }


def seed_mean(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """Scores averaged over seeds per ``by`` value, with ``by`` renamed to ``model``."""
    keys = [by, "site", "layer", "metric"]
    return (
        frame.groupby(keys, sort=False)[["value", "chance", "ci_low", "ci_high"]]
        .mean()
        .reset_index()
        .rename(columns={by: "model"})
    )


def section(text: str, *contents: Any) -> list[Any]:
    """A dashboard section body: an explanation followed by its figures and tables."""
    return [text, *contents]


def sweep_grid(ctx: Context) -> list[dict[str, list[Any]]]:
    """The part's sweep grid, on the profile's data sizes, seeds and device.

    Settings: ``grid`` (sub-grids over the base model) or ``preset`` (a
    :data:`~nopelens.experiments.PRESETS` name, run as is except for the data sizes and seeds).
    """
    settings = ctx.config["settings"]
    grid = preset(settings["preset"]) if "preset" in settings else settings["grid"]
    prof = ctx.profile
    base = {
        "d_vocab": [prof.model["d_vocab"]],
        "seq_len": [prof.seq_len],
        "n_seqs": [prof.n_seqs],
        "n_bootstrap": [prof.n_bootstrap],
        "data_seed": [prof.data_seed],
        "seed": list(prof.seeds),
        "sites": [["resid_post"]],
    }
    if "preset" not in settings:
        base.update({k: [v] for k, v in prof.model.items() if k != "d_vocab"})
    out = []
    for sub in override_grid(grid, {}):
        out.append({**base, **sub, "device": [ctx.device]})
    return out


def run_part_sweep(ctx: Context) -> pd.DataFrame:
    """Run (or resume) the part's sweep in ``part_dir/sweep``; return its results frame."""
    return sweep(
        sweep_grid(ctx),
        out_dir=ctx.part_dir / "sweep",
        executor=ctx.executor,
        address=ctx.address,
        max_workers=ctx.profile.workers,
        progress=ctx.progress,
    )


def train_dir(part_dir: Path, task: str, positional: str, seed: int) -> Path:
    """The folder of one training run of the ``trained`` part."""
    return part_dir / "runs" / f"{task}-{positional}-seed{seed}"


def start_workers(workers: int, device: str) -> None:
    """Start the workers' fork server now when the run uses workers; returns at once.

    The fork server imports torch and TransformerLens in its own process (several seconds of
    CPU) on another core while this process works, so the sweeps' pool and :func:`map_jobs`
    later start their workers from it without waiting. Nothing happens with one worker.
    """
    from multiprocessing import forkserver

    from nopelens.experiments.workers import pool_context

    if workers > 1 and device == "cpu":
        if pool_context().get_start_method() == "forkserver":
            forkserver.ensure_running()


def parallel_jobs(ctx: Context, n_jobs: int) -> bool:
    """Whether :func:`map_jobs` runs ``n_jobs`` jobs in worker processes."""
    return min(ctx.profile.workers, n_jobs) > 1 and ctx.device == "cpu"


def job_context(ctx: Context, n_jobs: int) -> Context:
    """The context that each of a part's ``n_jobs`` jobs receives.

    Without the earlier parts' results (a job does not read them, and they need not be sent to
    a worker), and without progress bars when the jobs run in worker processes (their bars would
    interleave; :func:`map_jobs` counts finished jobs instead).
    """
    return dataclasses.replace(
        ctx, inputs={}, progress=ctx.progress and not parallel_jobs(ctx, n_jobs)
    )


#: The run's jobs started ahead of time (:func:`jobs_ahead`), while a ``reproduce`` run lasts.
_AHEAD: dict[str, Any] = {}


@contextlib.contextmanager
def jobs_ahead(workers: int, device: str, threads: int | None = None) -> Iterator[None]:
    """For the duration of a run: one worker process for jobs that parts start ahead of time.

    With several workers on the CPU, :func:`start_ahead` queues a part's jobs there, and
    :func:`map_jobs` later claims those that have started; otherwise nothing is started ahead.
    """
    if workers <= 1 or device != "cpu" or _AHEAD:
        yield
        return
    from nopelens.experiments.workers import BackgroundJobs

    with BackgroundJobs(threads or 1) as jobs:
        _AHEAD["jobs"] = jobs
        try:
            yield
        finally:
            _AHEAD.clear()


def _job_key(ctx: Context, fn: Callable[..., Any], key: Any) -> tuple[Any, ...]:
    return (str(ctx.part_dir), fn.__module__, fn.__qualname__, key)


def start_ahead(
    ctx: Context, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], keys: Sequence[Any]
) -> bool:
    """Queue ``fn(*job)`` for each job in the run's ahead-of-time worker; False if there is none.

    A part calls this from its ``prefetch`` function with exactly the jobs and keys that its
    ``run`` later passes to :func:`map_jobs`, which picks up the ones that have started.
    """
    jobs_now = _AHEAD.get("jobs")
    if jobs_now is None or not parallel_jobs(ctx, len(jobs)):
        return False
    jobs_now.start(fn, [(_job_key(ctx, fn, k), job) for k, job in zip(keys, jobs, strict=True)])
    return True


def map_jobs(
    ctx: Context,
    fn: Callable[..., Any],
    jobs: Sequence[tuple[Any, ...]],
    *,
    desc: str,
    keys: Sequence[Any] | None = None,
) -> list[Any]:
    """``[fn(*job) for job in jobs]``, in worker processes when the profile has several workers.

    With ``ctx.profile.workers > 1``, more than one job and the CPU as device, the jobs run in
    the local pool of that many worker processes that the sweeps keep
    (:func:`nopelens.experiments.workers.pool_context`; they die with this process), each on
    one torch thread (or in a pool of their own on ``ctx.profile.threads`` threads): the same
    arithmetic as in this process, so the same numbers. Jobs queued ahead of time under ``keys``
    (:func:`start_ahead`) are shared with that worker: the ones it has started are taken from
    it, the others go to the pool as its workers become free, so that the last jobs spread over
    every process. Results come back in the order of ``jobs``; the first job to fail raises
    here, after cancelling the jobs not started. ``fn`` must be a module-level function and the
    jobs picklable; in workers, a progress bar (``desc``) counts finished jobs.
    """
    from nopelens.experiments.workers import (
        _local_pool,
        init_pool_worker,
        pool_context,
        shutdown_local_pool,
        start_time,
    )
    from nopelens.progress import progress_bar

    if not parallel_jobs(ctx, len(jobs)):
        return [fn(*job) for job in jobs]
    ahead = _AHEAD.get("jobs")
    names = [_job_key(ctx, fn, k) for k in keys] if keys is not None and ahead else None
    own = None
    if (ctx.profile.threads or 1) != 1:
        own = cf.ProcessPoolExecutor(
            max_workers=min(ctx.profile.workers, len(jobs)),
            mp_context=pool_context(),
            initializer=init_pool_worker,
            initargs=(int(ctx.profile.threads or 1), os.getpid(), start_time(os.getpid())),
        )
    pool = own or _local_pool(ctx.profile.workers)
    futures: list[cf.Future | None] = [None] * len(jobs)
    pending = list(range(len(jobs)))  # not handed out yet (may still start ahead meanwhile)
    in_pool: set[cf.Future] = set()
    counted: set[cf.Future] = set()

    def take(i: int, *, only_started: bool) -> cf.Future | None:
        """Job ``i``'s future if it started ahead; else None (and, unless only_started, ours)."""
        if ahead is None or names is None or (only_started and not ahead.started(names[i])):
            return None
        return ahead.claim(names[i])

    try:
        with progress_bar(total=len(jobs), desc=desc, unit="job", quiet=not ctx.progress) as bar:
            while len(counted) < len(jobs):
                for i in list(pending):  # jobs that started ahead are taken as they are
                    if (started := take(i, only_started=True)) is not None:
                        futures[i] = started
                        pending.remove(i)
                while pending and len(in_pool) < ctx.profile.workers:  # a free pool worker
                    i = pending.pop(0)
                    started = take(i, only_started=False)
                    if started is None:
                        started = pool.submit(fn, *jobs[i])
                        in_pool.add(started)
                    futures[i] = started
                running = [f for f in futures if f is not None and f not in counted]
                finished, _ = cf.wait(
                    running, timeout=0.5 if pending else None, return_when=cf.FIRST_COMPLETED
                )
                for future in finished:
                    future.result()  # the first failure, as soon as it is known
                    counted.add(future)
                    in_pool.discard(future)
                    bar.update(1)
        return [future.result() for future in futures]  # type: ignore[union-attr]
    except BaseException:
        for handed_out in futures:
            if handed_out is not None:
                handed_out.cancel()
        if own is None:
            shutdown_local_pool()  # as a failed sweep does: no job of this run goes on running
        raise
    finally:
        if own is not None:
            own.shutdown(wait=True, cancel_futures=True)
