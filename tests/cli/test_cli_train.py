"""``nopelens train`` in-process: files written, resume, and bad arguments."""

from __future__ import annotations

import json
import warnings

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_cli(*argv):
    from nopelens.cli.app import main

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return main(["train", *argv])


def test_task_names_match_the_registry():
    from nopelens.cli.train import TASK_NAMES
    from nopelens.training import TASKS

    assert TASK_NAMES == tuple(TASKS)


def test_train_writes_checkpoints_history_and_metrics(tmp_path, capsys, tiny_train):
    import pandas as pd

    from nopelens.models import load_model

    out = tmp_path / "run"
    assert run_cli("parity", "--out", str(out), "--task-arg", "length=4", *tiny_train) == 0
    printed = capsys.readouterr().out
    assert "parity: NoPE causal L1 d16 h2" in printed and "step 6/6 (finished)" in printed
    assert "test " in printed and "exact_match" in printed and "chance accuracy 0.5000" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt",
        "final.pt",
        "history.csv",
        "initial.pt",
        "metrics.json",
    ]
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == ["step", "split", "metric", "value"]
    assert sorted(history.step.unique()) == [0, 3, 6]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == {
        "name": "parity",
        "test_fraction": 0.2,
        "length": 4,
        "running": False,
    }
    assert metrics["model"]["d_vocab"] == 4 and metrics["model"]["n_ctx"] == 7
    assert metrics["config"]["steps"] == 6 and metrics["finished"] is True
    assert set(metrics["final"]) >= {"test_accuracy", "train_accuracy", "test_exact_match"}
    assert load_model(out / "final.pt").cfg.n_layers == 1


def test_learned_positional_flag(tmp_path, capsys, tiny_train):
    out = tmp_path / "learned"
    assert (
        run_cli(
            "previous_token",
            "--out",
            str(out),
            "--positional",
            "learned",
            "--threads",
            "1",
            "--task-arg",
            "length=4",
            "--task-arg",
            "n_symbols=3",
            *tiny_train,
        )
        == 0
    )
    assert "learned-PE causal" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["positional"] == "learned"


def test_rerun_resumes_from_the_checkpoint(tmp_path, capsys, tiny_train):
    import torch

    from nopelens.models import load_model

    whole, parts = tmp_path / "whole", tmp_path / "parts"
    args = ["parity", "--task-arg", "length=4", *tiny_train]
    assert run_cli(*args, "--out", str(whole)) == 0
    assert run_cli(*args, "--out", str(parts), "--stop-after", "4") == 0
    assert "step 4/6 (stopped, rerun to resume)" in capsys.readouterr().out
    assert not (parts / "final.pt").exists()
    # The rerun needs no flags besides the task: the model, task and config come from DIR.
    assert run_cli("parity", "--out", str(parts), "--quiet") == 0
    assert "step 6/6 (finished)" in capsys.readouterr().out
    a, b = load_model(whole / "final.pt"), load_model(parts / "final.pt")
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_fresh_starts_over(tmp_path, capsys, tiny_train):
    args = ["parity", "--task-arg", "length=4", *tiny_train, "--out", str(tmp_path)]
    assert run_cli(*args, "--stop-after", "2") == 0
    assert run_cli(*args, "--fresh") == 0
    assert "step 6/6 (finished)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["sum"], r"The 'name' parameter of get_task must be one of .* Got 'sum' instead"),
        (["parity", "--task-arg", "length"], r"--task-arg' option must look like KEY=VALUE"),
        (["parity", "--task-arg", "bits=3"], r"unknown parameter\(s\) 'bits' for task 'parity'"),
        (["parity", "--steps", "0"], r"The --steps option must be an int >= 1"),
        (
            ["parity", "--n-heads", "3"],
            r"--n-heads option must divide "
            r"d_model=16",
        ),
        (["parity", "--n-ctx", "3"], r"n_ctx=3 is shorter than the task's seq_len=7"),
        (["parity", "--threads", "0"], r"The '--threads' option must be an int >= 1"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, argv, match, tiny_train):
    import re

    tiny = [a for a in tiny_train if a not in ("--steps", "6")] if "--steps" in argv else tiny_train
    if argv[0] == "parity" and "--task-arg" not in argv:
        argv = [*argv, "--task-arg", "length=4"]
    assert run_cli(argv[0], "--out", str(tmp_path / "x"), *tiny, *argv[1:]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nopelens train: error:")
    assert re.search(match, err), err


def test_resume_of_another_task_is_refused(tmp_path, capsys, tiny_train):
    assert (
        run_cli(
            "parity",
            "--task-arg",
            "length=4",
            *tiny_train,
            "--out",
            str(tmp_path),
            "--stop-after",
            "2",
        )
        == 0
    )
    assert run_cli("reverse", "--out", str(tmp_path), "--quiet") == 2
    assert "holds a checkpoint of task 'parity', not 'reverse'" in capsys.readouterr().err


def test_resume_with_a_changed_flag_is_refused(tmp_path, capsys, tiny_train):
    assert (
        run_cli(
            "parity",
            "--task-arg",
            "length=4",
            *tiny_train,
            "--out",
            str(tmp_path),
            "--stop-after",
            "2",
        )
        == 0
    )
    assert run_cli("parity", "--out", str(tmp_path), "--quiet", "--lr", "0.1") == 2
    from nopelens.training import default_config

    lr = default_config("parity").lr
    assert f"belongs to a different run: lr={lr} (checkpoint) vs 0.1" in capsys.readouterr().err


def test_help_lists_the_tasks(capsys):
    from nopelens.cli.app import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "index_counting" in capsys.readouterr().out
