"""The jobs of the fault-injection tests, and a child process that kills itself mid-job.

``python faultchild.py JOB OUT KILL_AT`` runs one job (:data:`JOBS`) into folder ``OUT`` and sends
itself SIGKILL at the ``KILL_AT``-th *file event* under ``OUT`` (0: never). File events, counted
in this process only and in a deterministic order, are:

* ``os.write`` to a regular file: the kill comes after half of the bytes are written (a torn
  appended line);
* ``os.fsync``: the kill comes after the data is durable but before the temporary file of an
  atomic write is renamed (a stray ``.tmp``), or right after an appended line;
* ``os.replace``: the kill comes right after a file was renamed into place.

Before it kills itself the child writes the processes below it (workers, fork server, resource
tracker) to ``OUT.procs.json``, so that the test can check that none survives it. The tests import
the same job functions to compute the uninterrupted reference in their own process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
for folder in (HERE.parent, HERE):  # tests/ (the shared grids), then this folder first
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from grids import TINY  # noqa: E402

#: The sweep grid of the sweep job: eight tiny configurations, 10 bootstrap resamples each.
SWEEP_GRID = {**TINY, "n_bootstrap": [10], "seed": list(range(8))}


def job_train(out: Path) -> None:
    """Train a tiny model on parity for 24 steps, checkpointing every 4 (resumable)."""
    from nopelens.training import TrainConfig, build_task_model, get_task, train

    task = get_task("parity", length=4)
    model = build_task_model(task, n_layers=1, d_model=16, n_heads=2, seed=0)
    config = TrainConfig(
        steps=24, batch_size=16, eval_every=8, eval_batches=1, checkpoint_every=4, seed=0
    )
    train(model, task, config, checkpoint_dir=out, progress=False)


def job_sweep(out: Path, workers: int = 2) -> None:
    """The eight-configuration sweep, on ``workers`` worker processes."""
    from nopelens.experiments import sweep

    sweep(SWEEP_GRID, out_dir=out, max_workers=workers, progress=False)


def _fake_parts():
    """Two cheap parts with tables and a tensor object (the reproduce machinery, no models)."""
    import importlib

    import pandas as pd
    import torch

    module = importlib.import_module("nopelens.experiments.reproduction")

    def make(name, needs=()):
        def run_part(ctx):
            scale = ctx.config["settings"]["scale"]
            base = ctx.inputs["first"].numbers["x"] if needs else 0.0
            frame = pd.DataFrame({"seed": list(ctx.profile.seeds), "value": scale, "name": name})
            weights = torch.arange(6, dtype=torch.float32).reshape(2, 3) * scale
            return module.PartResult(
                numbers={"x": base + scale},
                tables={"t": frame, "u": frame.assign(value=frame["value"] * 2)},
                objects={"weights": weights},
            )

        return module.Part(name, name.title(), run_part, lambda result: [], needs)

    return (make("first"), make("second", ("first",)))


def job_reproduce_fake(out: Path) -> None:
    """``reproduce`` on the pipeline of two cheap fake parts."""
    import dataclasses
    import importlib

    module = importlib.import_module("nopelens.experiments.reproduction")
    parts, module.PARTS = module.PARTS, _fake_parts()
    profile = dataclasses.replace(
        module.PROFILES["test"],
        name="fake",
        parts={"first": {"scale": 1.0}, "second": {"scale": 2.0}},
    )
    try:
        module.reproduce(out, profile=profile, progress=False)
    finally:
        module.PARTS = parts


def job_reproduce(out: Path) -> None:
    """``reproduce`` with the ``test`` profile, its sweeps on two worker processes."""
    import dataclasses

    from nopelens.experiments import PROFILES, reproduce

    profile = dataclasses.replace(PROFILES["test"], workers=2)
    reproduce(out, profile=profile, progress=False)


JOBS: dict[str, Callable[[Path], None]] = {
    "train": job_train,
    "sweep": job_sweep,
    "reproduce_fake": job_reproduce_fake,
    "reproduce": job_reproduce,
}


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _descendants() -> dict[int, str]:
    """Every process below this one: pid -> start time (``/proc/<pid>/stat`` field 22)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2 :].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            starts[int(entry)] = fields[19]
    out, stack = {}, [os.getpid()]
    while stack:
        for child in children.get(stack.pop(), []):
            out[child] = starts[child]
            stack.append(child)
    return out


@contextlib.contextmanager
def file_events(out: Path, kill_at: int = 0) -> Iterator[list[tuple[str, str]]]:
    """Patch ``os`` to record the file events under ``out`` (and die at the ``kill_at``-th).

    Yields:
        The list of events so far, ``(kind, file name)``, in order.
    """
    root = os.path.realpath(out)
    events: list[tuple[str, str]] = []
    real_write, real_fsync, real_replace = os.write, os.fsync, os.replace

    def die() -> None:
        procs = Path(str(out) + ".procs.json")
        procs.write_text(json.dumps({"pid": os.getpid(), "descendants": _descendants()}))
        os.kill(os.getpid(), signal.SIGKILL)

    def event(kind: str, name: str) -> bool:
        events.append((kind, os.path.basename(name)))
        return len(events) == kill_at

    def write(fd, data):
        path = _fd_path(fd)
        if path.startswith(root) and stat.S_ISREG(os.fstat(fd).st_mode) and len(data) > 1:
            if event("write", path):
                real_write(fd, bytes(data)[: len(data) // 2])
                die()
        return real_write(fd, data)

    def fsync(fd):
        real_fsync(fd)
        path = _fd_path(fd)
        if path.startswith(root) and event("fsync", path):
            die()

    def replace(src, dst, **kwargs):
        real_replace(src, dst, **kwargs)
        if os.path.realpath(dst).startswith(root) and event("replace", str(dst)):
            die()

    os.write, os.fsync, os.replace = write, fsync, replace
    try:
        yield events
    finally:
        os.write, os.fsync, os.replace = real_write, real_fsync, real_replace


def main(argv: list[str]) -> int:
    job, out, kill_at = argv[0], Path(argv[1]), int(argv[2])
    import torch

    torch.set_num_threads(1)
    with file_events(out, kill_at) as events:
        JOBS[job](out)
    print(json.dumps({"events": len(events)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
