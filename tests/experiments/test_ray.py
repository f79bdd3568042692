"""Sweeps on a real local Ray runtime (no mocks): same table as the local executor, exactly-once
appends after a killed worker, and the error messages.

The module starts one local Ray runtime with 2 CPUs on loopback (module-scoped fixture, bounded
in time by SIGALRM, shut down at the end). The first test runs in CI; the others are slow.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import signal
import sys
import threading
import time

import pandas as pd
import pytest
from grids import TINY

try:
    import ray
except ImportError:  # the tests that need a runtime are skipped; the error message is tested
    ray = None
needs_ray = pytest.mark.skipif(
    ray is None, reason="Ray is not installed (pip install 'nopelens[ray]')"
)


@contextlib.contextmanager
def deadline(seconds: int, what: str):
    """Raise TimeoutError if the block runs longer than ``seconds`` (main thread, POSIX)."""

    def expire(signum, frame):
        raise TimeoutError(f"{what} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray runtime: 2 CPUs, loopback only, no dashboard, no usage statistics."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if ray.is_initialized():
        ray.shutdown()
    with deadline(120, "starting a local Ray runtime"):
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
        )
    yield ray
    with deadline(60, "stopping the local Ray runtime"):
        ray.shutdown()


@pytest.fixture
def sw():
    return importlib.import_module("nopelens.experiments")


def _table(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns="elapsed_s").reset_index(drop=True)


@needs_ray
@pytest.mark.slow
def test_one_local_runtime_serves_every_sweep_of_a_keep_block(sw, tmp_path):
    # First in this file: the module's runtime (local_ray) is not started yet.
    distributed = importlib.import_module("nopelens.experiments.distributed")
    if ray.is_initialized():
        ray.shutdown()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    with deadline(240, "two sweeps on one local Ray runtime"):
        with distributed.keep_local_runtime():
            assert not ray.is_initialized()  # started by the first sweep that needs it
            first = sw.sweep(TINY, out_dir=tmp_path / "a", executor="ray", progress=False)
            assert ray.is_initialized()  # kept for the next sweep
            node = ray.get_runtime_context().get_node_id()
            second = sw.sweep(TINY, out_dir=tmp_path / "b", executor="ray", progress=False)
            assert ray.get_runtime_context().get_node_id() == node  # the same runtime
        assert not ray.is_initialized()  # stopped at the end of the block
    pd.testing.assert_frame_equal(_table(first), _table(second))


@needs_ray
def test_ray_sweep_gives_the_local_table_bit_for_bit(local_ray, sw, tmp_path):
    # two shared batches (data_seed=0, sent through the object store) and batches of their own
    grid = {**TINY, "seed": [0, 1], "data_seed": [0, None]}
    with deadline(240, "a 4-configuration Ray sweep"):
        on_ray = sw.sweep(
            grid, out_dir=tmp_path / "ray", executor="ray", max_workers=1, progress=False
        )
    local = sw.sweep(grid, out_dir=tmp_path / "local", max_workers=1, progress=False)
    pd.testing.assert_frame_equal(_table(on_ray), _table(local), check_exact=True)
    assert on_ray["config_id"].nunique() == 4
    lines = (tmp_path / "ray" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4  # one line per configuration, appended by the driver
    assert ray.is_initialized()  # the caller's runtime is used and left running


@needs_ray
def test_ray_sweep_of_saved_models_and_texts_gives_the_local_table(local_ray, sw, tmp_path):
    # the workers read the model folder and the texts themselves (absolute paths)
    from nopelens.models import write_tiny_hf_model

    folder = write_tiny_hf_model(tmp_path / "gpt2", architecture="gpt2", n_layers=1,
                                 d_model=16, n_heads=2, n_ctx=32, vocab_size=260)  # fmt: skip
    texts = []
    for name, text in (("a.txt", "def f(x):\n    return x + 1\n" * 40), ("b", "the fox " * 90)):
        (tmp_path / name).write_text(text, encoding="utf-8")
        texts.append(str(tmp_path / name))
    grid = {"model": [str(folder)], "text": texts, "n_seqs": 4, "seq_len": 12,
            "n_bootstrap": 20, "data_seed": 0}  # fmt: skip
    with deadline(240, "a saved-model Ray sweep"):
        on_ray = sw.sweep(grid, out_dir=tmp_path / "ray", executor="ray", progress=False)
    local = sw.sweep(grid, out_dir=tmp_path / "local", max_workers=1, progress=False)
    pd.testing.assert_frame_equal(_table(on_ray), _table(local), check_exact=True)
    assert on_ray["text"].nunique() == 2


def _job_pids() -> list[int]:
    """Ray worker processes that are running a nopelens task (process title ``ray::job``)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                title = handle.read().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(b"ray::job"):
            pids.append(int(entry))
    return pids


def _kill_a_worker_once_some_finished(results, killed: list[int], stop: threading.Event) -> None:
    """Wait until a configuration is written and a task runs, then SIGKILL its worker."""
    while not stop.is_set():
        done = results.exists() and results.read_bytes().count(b"\n") >= 1
        pids = _job_pids() if done else []
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
            return
        time.sleep(0.05)


@needs_ray
@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("retries", [3, 0])
def test_killed_worker_then_rerun_gives_the_same_table(
    local_ray, sw, tmp_path, monkeypatch, retries
):
    distributed = importlib.import_module("nopelens.experiments.distributed")
    monkeypatch.setattr(distributed, "MAX_RETRIES", retries)
    monkeypatch.setattr(distributed, "MAX_BATCH", 1)
    grid = {**TINY, "n_seqs": [32], "seq_len": [32], "n_bootstrap": [200], "seed": list(range(12))}
    out = tmp_path / "ray"
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(
        target=_kill_a_worker_once_some_finished, args=(out / "results.jsonl", killed, stop)
    )
    killer.start()
    try:
        with deadline(300, "a Ray sweep with a killed worker"):
            try:
                sw.sweep(grid, out_dir=out, executor="ray", progress=False)
                failed = None
            except RuntimeError as err:
                failed = err
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was killed: the sweep finished first"
    if retries:
        assert failed is None  # Ray reran the task of the dead worker
    else:
        assert failed is not None and "failed" in str(failed)
    with deadline(300, "rerunning the Ray sweep"):
        final = sw.sweep(grid, out_dir=out, executor="ray", progress=False)
    ids = [
        line.split(b'"config_id":"')[1][:12]
        for line in (out / "results.jsonl").read_bytes().splitlines()
    ]
    assert len(ids) == len(set(ids)) == 12  # nothing lost, nothing twice
    local = sw.sweep(grid, out_dir=tmp_path / "local", max_workers=1, progress=False)
    pd.testing.assert_frame_equal(_table(final), _table(local), check_exact=True)


@needs_ray
@pytest.mark.slow
def test_error_messages(local_ray, sw, tmp_path, monkeypatch):
    distributed = importlib.import_module("nopelens.experiments.distributed")
    with pytest.raises(ValueError, match=r"no Ray cluster answers at '127\.0\.0\.1:1'"):
        sw.sweep(TINY, out_dir=tmp_path / "a", executor="ray", address="127.0.0.1:1")
    with pytest.raises(ValueError, match=r"'address' parameter of sweep must be 'HOST:PORT'"):
        sw.sweep(TINY, out_dir=tmp_path / "a", executor="ray", address="nowhere")
    with pytest.raises(ValueError, match=r"needs executor='ray'"):
        sw.sweep(TINY, out_dir=tmp_path / "a", address="127.0.0.1:6379")
    # the test runtime has no GPU
    with pytest.raises(ValueError, match=r"has no GPU .*device='cuda'"):
        sw.sweep({**TINY, "device": ["cuda"]}, out_dir=tmp_path / "b", executor="ray")
    # a driver whose nopelens differs from the workers'
    nopelens = importlib.import_module("nopelens")
    installed = re.escape(nopelens.__version__)  # what the workers import
    monkeypatch.setattr(nopelens, "__version__", "0.0.0+driver")
    with pytest.raises(Exception, match=rf"run nopelens {installed}, this process 0\.0\.0\+driver"):
        sw.sweep(TINY, out_dir=tmp_path / "c", executor="ray")
    monkeypatch.undo()
    # a worker that cannot import nopelens: the probe reports it instead of failing to unpickle
    probe = distributed._make_probe()
    monkeypatch.setitem(sys.modules, "nopelens", None)
    assert "error" in probe() and "nopelens" in probe()["error"]


def test_ray_missing_names_the_extra(sw, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray sees
    with pytest.raises(ValueError, match=r"pip install 'nopelens\[ray\]'"):
        sw.sweep(TINY, out_dir=tmp_path, executor="ray", progress=False)
    with pytest.raises(ValueError, match=r"pip install 'nopelens\[ray\]'"):
        sw.reproduce(tmp_path / "r", profile="test", executor="ray", progress=False)


def test_only_the_auth_enabled_notice_is_dropped():
    """The notice that token authentication is on is dropped; every other Ray message passes."""
    import logging

    from nopelens.experiments.distributed import _drop_auth_notice

    def record(message):
        return logging.LogRecord("ray", logging.WARNING, __file__, 1, message, None, None)

    assert not _drop_auth_notice(record("Token authentication is enabled for this Ray cluster."))
    assert _drop_auth_notice(record("Token authentication is disabled for this Ray cluster."))
    assert _drop_auth_notice(record("The object store is full"))
