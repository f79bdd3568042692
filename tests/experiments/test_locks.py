"""One writer per output folder: train, sweep and reproduce share ``nopelens.files.output_lock``."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess

import faultkit
import pytest


def test_a_held_folder_is_refused_with_a_message_naming_the_holder(tmp_path):
    from nopelens.files import LOCK_FILE, output_lock
    from nopelens.validation import LockHeldError, NopelensError

    with faultkit.held_by_another_process(tmp_path) as pid:
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == pid and holder["host"] == socket.gethostname()
        with pytest.raises(LockHeldError) as info:
            with output_lock(tmp_path, "sweep folder"):
                pass
        message = str(info.value)
        assert isinstance(info.value, NopelensError)  # the CLI prints it as one line, exit 2
        assert message.startswith(f"The sweep folder {str(tmp_path)!r} is in use by pid {pid} ")
        assert f"on host {socket.gethostname()!r}" in message
        assert "command '-c " in message and f"started {holder['started']}" in message
        assert "\n" not in message
    # released by the holder: free again, and the lock file is gone
    with output_lock(tmp_path):
        pass
    assert not (tmp_path / LOCK_FILE).exists()


def test_the_lock_of_a_killed_holder_is_taken_over(tmp_path, caplog):
    from nopelens.files import LOCK_FILE, output_lock

    child = subprocess.Popen(
        [faultkit.PYTHON, "-c", faultkit._HOLD, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=faultkit.env(),
    )
    with child:
        assert child.stdout.readline().strip() == "held"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == child.pid  # stale note
    with caplog.at_level(logging.WARNING), output_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"taking over the lock left by pid {child.pid}" in caplog.text


_CONTEND = """
import os, sys, time
from nopelens.files import output_lock
from nopelens.validation import LockHeldError
folder, log, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
done = 0
while done < rounds:
    try:
        with output_lock(folder):
            with open(log, "a") as f:
                f.write(f"enter {os.getpid()}\\n")
                f.flush()
                time.sleep(0.002)
                f.write(f"leave {os.getpid()}\\n")
        done += 1
    except LockHeldError:
        time.sleep(0.001)
"""


def test_contending_processes_never_hold_the_lock_together(tmp_path):
    """Release deletes the lock file; a process that opened the old file must not win too."""
    folder, log = tmp_path / "out", tmp_path / "log.txt"
    procs = [
        subprocess.Popen(
            [faultkit.PYTHON, "-c", _CONTEND, str(folder), str(log), "20"], env=faultkit.env()
        )
        for _ in range(3)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 3 * 20 * 2
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):
        assert enter.startswith("enter ") and leave == enter.replace("enter", "leave"), (
            enter,
            leave,
        )


def test_a_lock_file_replaced_between_open_and_lock_is_not_trusted(tmp_path, monkeypatch):
    """The release race, step by step: B opens the lock file; A releases it (deletes it); C
    creates a new one and locks it; B's lock on the deleted file must not count."""
    import fcntl

    from nopelens import files
    from nopelens.validation import LockHeldError

    lock = tmp_path / files.LOCK_FILE
    lock.write_text("")
    real_try_lock, others = files._try_lock, []

    def interleaved(fd):
        if not others:  # first attempt of B: A and C act between B's open and B's flock
            lock.unlink()
            c = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(c, fcntl.LOCK_EX | fcntl.LOCK_NB)
            others.append(c)
        return real_try_lock(fd)

    monkeypatch.setattr(files, "_try_lock", interleaved)
    try:
        with pytest.raises(LockHeldError, match="is in use by another process"):
            with files.output_lock(tmp_path):
                pass
    finally:
        os.close(others[0])


def test_nesting_in_one_process_is_allowed(tmp_path):
    from nopelens.files import LOCK_FILE, output_lock

    with output_lock(tmp_path):
        with output_lock(tmp_path / "."):
            assert (tmp_path / LOCK_FILE).is_file()
        assert (tmp_path / LOCK_FILE).is_file()  # still held by the outer block
    assert not (tmp_path / LOCK_FILE).exists()


def test_reproduce_and_train_refuse_a_held_folder_before_any_work(tmp_path):
    from nopelens.experiments import reproduce
    from nopelens.training import TrainConfig, build_task_model, get_task, train
    from nopelens.validation import LockHeldError

    task = get_task("parity", length=4)
    model = build_task_model(task, n_layers=1, d_model=16, n_heads=2)
    with faultkit.held_by_another_process(tmp_path) as pid:
        with pytest.raises(LockHeldError, match=f"reproduce folder .* is in use by pid {pid} "):
            reproduce(tmp_path, profile="test", progress=False)
        with pytest.raises(LockHeldError, match=f"training folder .* is in use by pid {pid} "):
            train(model, task, TrainConfig(steps=2), checkpoint_dir=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_two_nopelens_train_into_the_same_out_the_second_refuses(tmp_path):
    out = tmp_path / "run"
    common = ["--task-arg", "length=4", "--n-layers", "1", "--d-model", "16", "--n-heads", "2"]
    first = faultkit.nopelens(
        "train", "parity", "--out", str(out), "--steps", "100000", "--quiet", *common
    )
    try:
        faultkit.wait_for(
            lambda: (out / "initial.pt").is_file(), 240, "the first run to start", first
        )
        second = faultkit.nopelens(
            "train", "parity", "--out", str(out), "--steps", "5", "--quiet", *common
        )
        _, stderr = second.communicate(timeout=240)
        assert second.returncode == 2, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, stderr  # quiet: the error alone, one line, no traceback
        assert lines[0].startswith("nopelens train: error: The training folder ")
        assert f"is in use by pid {first.pid} " in lines[0] and "Traceback" not in stderr
        assert first.poll() is None  # the first run was not disturbed
    finally:
        first.send_signal(signal.SIGINT)  # Ctrl-C: it saves a checkpoint and exits 130
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    assert (out / "checkpoint.pt").is_file() and not (out / ".nopelens.lock").exists()
