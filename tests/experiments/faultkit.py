"""Helpers of the fault-injection tests: subprocesses, process trees, locks held elsewhere.

Imported by the tests of this folder as ``faultkit`` (pytest puts the folder on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def env(**extra: str) -> dict[str, str]:
    """The environment of a child: one thread, the repository importable, no colours."""
    out = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NO_COLOR": "1"}
    out["PYTHONPATH"] = os.pathsep.join([str(REPO), out.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out.update(extra)
    return out


def default_sigint() -> None:
    """In the child before exec: let Ctrl-C through (pytest-xdist workers ignore SIGINT, and an
    ignored SIGINT is inherited, so the child would never see the test's Ctrl-C)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def nopelens(*args: str, **kwargs) -> subprocess.Popen:
    """Start ``python -m nopelens ARGS`` (stdout and stderr captured)."""
    kwargs.setdefault("preexec_fn", default_sigint)
    return subprocess.Popen(
        [PYTHON, "-m", "nopelens", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        **kwargs,
    )


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` now: pid -> start time (to tell a reused pid apart)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    out, stack = {}, [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            fields = _stat(child)
            if fields is not None:
                out[child] = fields[19]
                stack.append(child)
    return out


def alive(processes: dict[int, str]) -> list[int]:
    """The processes of a :func:`descendants` snapshot that still run (zombies count as dead)."""
    out = []
    for pid, start in processes.items():
        fields = _stat(pid)
        if fields is not None and fields[19] == start and fields[0] not in ("Z", "X"):
            out.append(pid)
    return out


def wait_all_dead(processes: dict[int, str], timeout: float = 15.0) -> list[int]:
    """Wait until none of ``processes`` runs; the survivors after ``timeout`` (then killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = alive(processes)
        if not left:
            return []
        time.sleep(0.1)
    left = alive(processes)
    for pid in left:  # do not leak them into the rest of the test session
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll ``condition()`` every 20 ms; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


_HOLD = """
import sys
from nopelens.files import output_lock
with output_lock(sys.argv[1], "test folder"):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def held_by_another_process(folder: Path) -> Iterator[int]:
    """Hold ``folder``'s output lock in a child process; yield the child's pid."""
    with subprocess.Popen(
        [PYTHON, "-c", _HOLD, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env(),
    ) as child:
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "held"
            yield child.pid
        finally:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(timeout=30)
