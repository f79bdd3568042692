"""Jobs started ahead of time: the background worker, map_jobs' claims, the trained part."""

from __future__ import annotations

import dataclasses
import operator
import time

import pandas as pd
import pytest


def _wait_started(jobs, n: int, timeout: float = 60.0) -> None:
    """Wait until ``n`` jobs have been sent to the worker (bounded)."""
    deadline = time.monotonic() + timeout
    while len(jobs._futures) < n:
        assert time.monotonic() < deadline, "the background worker never started the jobs"
        time.sleep(0.05)


def test_background_jobs_run_in_order_and_unstarted_ones_are_dropped(tmp_path):
    from nopelens.experiments.workers import BackgroundJobs

    with BackgroundJobs() as jobs:
        jobs.start(time.sleep, [("slow", (1.5,))])
        jobs.start(operator.add, [("later", (1, 2)), ("last", (3, 4))])
        _wait_started(jobs, 1)
        # one job at a time: while "slow" runs, "later" and "last" wait in our own queue
        assert len(jobs._futures) == 1
        assert jobs.claim("later") is None  # not started: dropped, the caller runs it
        assert jobs.claim("unknown") is None
        slow = jobs.claim("slow")
        assert slow is not None and slow.result(timeout=60) is None
        _wait_started(jobs, 2)
        last = jobs.claim("last")
        assert last is not None and last.result(timeout=60) == 7
        assert jobs.claim("last") is None  # a job is claimed once
        assert len(jobs._futures) == 2  # "later" never ran
    with pytest.raises(RuntimeError, match="after close"):
        jobs.start(operator.add, [("x", (1, 2))])


def test_close_does_not_wait_for_an_unclaimed_running_job():
    from nopelens.experiments.workers import BackgroundJobs

    jobs = BackgroundJobs()
    jobs.start(time.sleep, [("forever", (600,))])
    _wait_started(jobs, 1)
    started = time.monotonic()
    jobs.close()
    assert time.monotonic() - started < 60  # the sleeping worker was stopped, not awaited
    (future,) = jobs._futures
    assert future.done()


def _ctx(tmp_path, workers: int):
    from nopelens.experiments.pipeline import Context, part_config
    from nopelens.experiments.profiles import PROFILES
    from nopelens.experiments.reproduction import PARTS

    profile = dataclasses.replace(PROFILES["test"], workers=workers)
    part = next(p for p in PARTS if p.name == "trained")
    return part, Context(
        profile=profile,
        config=part_config(profile, part, "cpu"),
        part_dir=tmp_path / f"workers{workers}" / "trained",
        device="cpu",
        progress=False,
        inputs={},
    )


def test_map_jobs_takes_claimed_jobs_and_runs_the_rest_in_order(tmp_path):
    from nopelens.experiments.parts.common import jobs_ahead, map_jobs, start_ahead

    _, ctx = _ctx(tmp_path, workers=2)
    jobs = [(i, 10 * i) for i in range(5)]
    keys = [f"job{i}" for i in range(5)]
    with jobs_ahead(2, "cpu"):
        assert start_ahead(ctx, operator.add, jobs[:2], keys[:2])
        assert map_jobs(ctx, operator.add, jobs, desc="t", keys=keys) == [11 * i for i in range(5)]
    # outside a run there is no worker ahead: nothing is queued, map_jobs runs everything
    assert not start_ahead(ctx, operator.add, jobs, keys)
    assert map_jobs(ctx, operator.add, jobs, desc="t", keys=keys) == [11 * i for i in range(5)]


def test_trained_part_started_ahead_gives_the_numbers_of_one_process(tmp_path):
    import torch

    from nopelens.experiments.parts.common import jobs_ahead

    part, serial = _ctx(tmp_path, workers=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker: training's products depend on the thread count
    try:
        expected = part.run(serial)
    finally:
        torch.set_num_threads(threads)
    part, ctx = _ctx(tmp_path, workers=2)
    with jobs_ahead(2, "cpu"):
        assert part.prefetch(ctx)
        result = part.run(ctx)
    assert result.numbers == expected.numbers
    for name, table in expected.tables.items():
        got = result.tables[name]
        if "seconds" in table:
            table, got = table.drop(columns="seconds"), got.drop(columns="seconds")
        pd.testing.assert_frame_equal(got, table, check_exact=True)
