"""Fault injection: ``kill -9`` at seeded points of train, sweep and reproduce, then rerun.

Each case runs a job uninterrupted in this process (the reference, recording the job's *file
events*: writes, fsyncs and renames under its folder, see ``faultchild.py``), then runs it again
in a child process that sends itself SIGKILL at a file event drawn from a seeded generator (mid
append, after the data of an atomic write but before its rename, right after a rename, right
after the lock is taken...), then reruns the job here. The rerun must end with exactly the
reference's outputs (the same weights bit for bit, the same tables, the same summary), no stray
temporary file, no lock left behind, and no process of the killed child still alive (worker
processes, fork server and resource tracker included).

A bounded sample (one point per job, about 30 s on 2 cores) runs in CI unmarked; the ``slow``
fuzzers try more seeded points and the full ``test`` profile of ``reproduce``.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import faultchild
import faultkit
import numpy as np
import pandas as pd
import pytest

#: Names that a finished folder must never hold.
_LEFTOVER = re.compile(r"(^\..+\.[a-z0-9_]{8}\.tmp$)|(^\.nopelens\.lock$)|(^result\.pt$)")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """``reference(job)``: the folder of an uninterrupted run of ``job`` here, and its events.

    Computed once per job and module. The sweep runs in this process (one worker): its results
    equal a pool's (``test_process_pool_matches_in_process_run``) and its file events are the
    same, in number and kind, as the two-worker run of the child.
    """
    cache: dict[str, tuple[Path, list[tuple[str, str]]]] = {}

    def get(job: str) -> tuple[Path, list[tuple[str, str]]]:
        if job not in cache:
            out = tmp_path_factory.mktemp(f"reference-{job}") / "out"
            with faultchild.file_events(out) as events:
                if job == "sweep":
                    faultchild.job_sweep(out, workers=1)
                else:
                    faultchild.JOBS[job](out)
            cache[job] = (out, list(events))
        return cache[job]

    return get


def _kill_point(events: list[tuple[str, str]], seed: int, only: str | None = None) -> int:
    """A seeded event number (1-based); with ``only``, one of the events on files of that name."""
    candidates = [i for i, (_, name) in enumerate(events) if only is None or name == only]
    return int(np.random.default_rng(seed).choice(candidates)) + 1


def _killed_child(job: str, out: Path, kill_at: int, timeout: float = 240) -> dict:
    """Run ``job`` in a child that kills itself at event ``kill_at``; what it left running."""
    done = subprocess.run(
        [faultkit.PYTHON, str(Path(faultchild.__file__)), job, str(out), str(kill_at)],
        capture_output=True,
        text=True,
        env=faultkit.env(),
        timeout=timeout,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr[-3000:])
    return json.loads(Path(f"{out}.procs.json").read_text())


def _assert_no_orphans(procs: dict) -> None:
    below = {int(pid): start for pid, start in procs["descendants"].items()}
    left = faultkit.wait_all_dead(below, timeout=20)
    assert not left, f"processes of the killed job still alive: {left}"


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _assert_clean(folder: Path) -> None:
    bad = [p for p in _files(folder) if _LEFTOVER.search(Path(p).name)]
    assert not bad, f"left behind: {bad}"


# -- train ---------------------------------------------------------------------------------------


def _assert_same_training(ref: Path, run: Path) -> None:
    import torch

    from nopelens.models import load_model
    from nopelens.training import load_checkpoint

    assert _files(run) == _files(ref)
    assert (run / "history.csv").read_bytes() == (ref / "history.csv").read_bytes()
    for name in ("initial.pt", "final.pt"):
        a, b = load_model(ref / name).state_dict(), load_model(run / name).state_dict()
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs"
    a, b = load_checkpoint(ref / "checkpoint.pt"), load_checkpoint(run / "checkpoint.pt")
    assert a["step"] == b["step"] == 24 and a["history"] == b["history"]
    for key in a["model_state"]:
        assert torch.equal(a["model_state"][key], b["model_state"][key]), key


def _train_case(reference, tmp_path: Path, seed: int) -> None:
    ref, events = reference("train")
    kill_at = _kill_point(events, seed)
    procs = _killed_child("train", tmp_path / "run", kill_at)
    _assert_no_orphans(procs)
    faultchild.job_train(tmp_path / "run")  # the rerun resumes
    _assert_same_training(ref, tmp_path / "run")
    _assert_clean(tmp_path / "run")


def test_train_killed_at_a_seeded_point_resumes_to_the_same_weights(reference, tmp_path):
    _train_case(reference, tmp_path, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 4))
def test_train_fuzz(reference, tmp_path, seed):
    _train_case(reference, tmp_path, seed)


# -- sweep ---------------------------------------------------------------------------------------


def _sweep_frame(folder: Path) -> pd.DataFrame:
    from nopelens.experiments import read_results

    return read_results(folder, grid=faultchild.SWEEP_GRID).drop(columns="elapsed_s")


def _sweep_case(reference, tmp_path: Path, seed: int, only: str | None) -> None:
    ref, events = reference("sweep")
    kill_at = _kill_point(events, seed, only)
    procs = _killed_child("sweep", tmp_path / "run", kill_at)
    if only is not None:  # killed while its workers run: they, the fork server and the
        assert len(procs["descendants"]) >= 3, procs  # resource tracker existed
    _assert_no_orphans(procs)
    faultchild.job_sweep(tmp_path / "run", workers=1)
    pd.testing.assert_frame_equal(_sweep_frame(tmp_path / "run"), _sweep_frame(ref))
    assert (tmp_path / "run" / "grid.json").read_bytes() == (ref / "grid.json").read_bytes()
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert len(lines) == len({json.loads(line)["config_id"] for line in lines}) == 8
    _assert_clean(tmp_path / "run")


def test_sweep_killed_while_its_workers_run_leaves_no_process_and_resumes(reference, tmp_path):
    _sweep_case(reference, tmp_path, seed=0, only="results.jsonl")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 4))
def test_sweep_fuzz(reference, tmp_path, seed):
    _sweep_case(reference, tmp_path, seed, only=None if seed % 2 else "results.jsonl")


# -- reproduce -----------------------------------------------------------------------------------


def _normalized_summary(folder: Path) -> dict:
    """summary.json without what legitimately differs between runs (times, reuse, folder)."""
    summary = json.loads((folder / "summary.json").read_text())
    summary.pop("out_dir")
    for part in summary["parts"].values():
        part.pop("seconds")
        part.pop("reused")
        for records in part["tables"].values():
            for row in records:
                row.pop("elapsed_s", None)
    return summary


def _assert_same_reproduction(ref: Path, run: Path) -> None:
    from nopelens.experiments.storage import RESULT_FILE, load_part_result

    assert _normalized_summary(run) == _normalized_summary(ref)
    summary = json.loads((run / "summary.json").read_text())
    for part in summary["parts"].values():
        for name in part["files"]:  # everything the summary lists is there and the same
            a, b = pd.read_csv(ref / name), pd.read_csv(run / name)
            pd.testing.assert_frame_equal(
                b.drop(columns="elapsed_s", errors="ignore"),
                a.drop(columns="elapsed_s", errors="ignore"),
                obj=name,
            )
    assert (run / "dashboard.html").read_text().startswith("<!DOCTYPE html>")
    for name in summary["part_order"]:  # every stored result loads and passes its checksum
        load_part_result(run / "parts" / name / RESULT_FILE)
    assert _files(run) == _files(ref)


def _reproduce_case(
    reference, tmp_path: Path, job: str, seed: int, only: str | None = None
) -> None:
    ref, events = reference(job)
    kill_at = _kill_point(events, seed, only)
    procs = _killed_child(job, tmp_path / "run", kill_at, timeout=600)
    _assert_no_orphans(procs)
    faultchild.JOBS[job](tmp_path / "run")
    _assert_same_reproduction(ref, tmp_path / "run")
    _assert_clean(tmp_path / "run")


def test_reproduce_killed_at_a_seeded_point_finishes_with_the_same_outputs(reference, tmp_path):
    _reproduce_case(reference, tmp_path, "reproduce_fake", seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 6))
def test_reproduce_fuzz_on_fake_parts(reference, tmp_path, seed):
    _reproduce_case(reference, tmp_path, "reproduce_fake", seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2))
def test_reproduce_killed_during_its_sweep(reference, tmp_path, seed):
    """The ``test`` profile with sweeps on two workers, killed while a sweep appends."""
    _reproduce_case(reference, tmp_path, "reproduce", seed, only="results.jsonl")


def test_deleted_and_changed_part_files_are_rebuilt_and_never_listed_missing(tmp_path, caplog):
    out = tmp_path / "run"
    faultchild.job_reproduce_fake(out)
    reference = {name: (out / name).read_bytes() for name in _files(out) if name.endswith(".csv")}
    (out / "parts" / "first" / "t.csv").unlink()
    (out / "parts" / "second" / "u.csv").write_text("seed,value\n0,999\n")
    with caplog.at_level("WARNING"):
        faultchild.job_reproduce_fake(out)
    assert "t.csv was missing; rewritten" in caplog.text
    assert "u.csv was changed; rewritten" in caplog.text
    summary = json.loads((out / "summary.json").read_text())
    assert all(part["reused"] for part in summary["parts"].values())
    for part in summary["parts"].values():
        for name in part["files"]:
            assert (out / name).read_bytes() == reference[name], name


def test_stray_temporary_files_are_removed_on_start(tmp_path, caplog):
    out = tmp_path / "run"
    faultchild.job_reproduce_fake(out)
    strays = [out / ".summary.json.k3j2h1g0.tmp", out / "parts" / "first" / ".t.csv.abcdefgh.tmp"]
    for stray in strays:
        stray.write_text("half a file")
    keep = out / "notes.tmp"
    keep.write_text("the user's own file")
    with caplog.at_level("WARNING"):
        faultchild.job_reproduce_fake(out)
    assert not any(stray.exists() for stray in strays)
    assert keep.read_text() == "the user's own file"
    assert "removed 2 temporary file(s)" in caplog.text


def test_child_harness_counts_the_same_events_as_this_process(reference, tmp_path):
    """The kill points drawn from the reference exist in the child (same events, same order)."""
    _, events = reference("reproduce_fake")
    done = subprocess.run(
        [faultkit.PYTHON, faultchild.__file__, "reproduce_fake", str(tmp_path / "run"), "0"],
        capture_output=True,
        text=True,
        env=faultkit.env(),
        timeout=240,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"events": len(events)}
    kinds = {kind for kind, _ in events}
    assert kinds == {"fsync", "replace"}, kinds  # atomic writes and the lock's note
    assert ("fsync", ".nopelens.lock") in events and ("replace", "done.json") in events
