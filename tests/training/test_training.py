"""Training: exact resume, atomic and validated checkpoints, optimiser groups, bad input."""

from __future__ import annotations

import os

import pytest
import torch

MODEL = {"n_layers": 1, "d_model": 16, "n_heads": 2, "seed": 0}
CONFIG = {
    "steps": 12,
    "batch_size": 16,
    "eval_every": 3,
    "eval_batches": 1,
    "checkpoint_every": 4,
    "warmup": 2,
    "lr": 3e-3,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def setup(**config):
    from nopelens.training import TrainConfig, build_task_model, get_task

    task = get_task("parity", length=4)
    model = build_task_model(task, **MODEL)
    return model, task, TrainConfig(**{**CONFIG, **config})


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class Crash(RuntimeError):
    pass


def crash_at(step, exc=Crash):
    def callback(done):
        if done == step:
            raise exc(f"killed at step {done}")

    return callback


@pytest.fixture
def reference(tmp_path):
    """An uninterrupted run: its final weights and history."""
    from nopelens.training import train

    model, task, config = setup()
    result = train(model, task, config, checkpoint_dir=tmp_path / "ref", progress=False)
    return state(model), result


# -- resume ------------------------------------------------------------------------------------


def test_fresh_runs_are_deterministic(reference):
    from nopelens.training import train

    model, task, config = setup()
    train(model, task, config, progress=False)
    assert_same_weights(state(model), reference[0])
    other, task, config = setup(seed=1)  # another data order
    train(other, task, config, progress=False)
    assert any(not torch.equal(v, reference[0][k]) for k, v in state(other).items())


def test_multithreaded_runs_are_deterministic():
    """With 2 threads, the embedding gradient needs deterministic algorithms (scoped to train)."""
    from nopelens.training import TrainConfig, build_task_model, get_task, train

    task = get_task("stdlib_chars", length=32)  # without the fix, runs differ at this size
    config = TrainConfig(steps=4, batch_size=128, eval_every=4, eval_batches=1, warmup=1)
    torch.set_num_threads(2)  # restored by the autouse fixture
    runs = []
    for _ in range(2):
        model = build_task_model(task, n_layers=1, d_model=64, n_heads=2)
        train(model, task, config, progress=False)
        runs.append(state(model))
    assert not torch.are_deterministic_algorithms_enabled(), "global flag not restored"
    assert_same_weights(runs[0], runs[1])


def test_kill_and_resume_gives_the_same_weights(tmp_path, reference):
    """A crash at step 7 loses steps 5-7 (last checkpoint: step 4); resume redoes them exactly."""
    from nopelens.training import load_checkpoint, train

    model, task, config = setup()
    with pytest.raises(Crash, match="killed at step 7"):
        train(model, task, config, checkpoint_dir=tmp_path, progress=False, callback=crash_at(7))
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4
    assert not (tmp_path / "final.pt").exists()

    fresh, task, config = setup()  # a new process would rebuild the model from scratch
    result = train(fresh, task, config, checkpoint_dir=tmp_path, progress=False)
    assert result.finished and result.step == 12
    assert_same_weights(state(fresh), reference[0])
    ref_history = reference[1].history
    assert result.history.equals(ref_history), "resumed history differs"
    assert result.final == reference[1].final


def test_ctrl_c_saves_the_finished_steps(tmp_path, reference):
    from nopelens.training import load_checkpoint, train

    model, task, config = setup()
    with pytest.raises(KeyboardInterrupt):
        train(
            model,
            task,
            config,
            checkpoint_dir=tmp_path,
            progress=False,
            callback=crash_at(7, KeyboardInterrupt),
        )
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 7  # nothing lost
    fresh, task, config = setup()
    result = train(fresh, task, config, checkpoint_dir=tmp_path, progress=False)
    assert_same_weights(state(fresh), reference[0])
    assert result.history.equals(reference[1].history)


def test_ctrl_c_during_an_evaluation(tmp_path, reference, monkeypatch):
    """An interrupt inside the step-6 evaluation: the evaluation is redone before saving."""
    from nopelens.training import loop as training

    real_evaluate = training.evaluate
    calls = []

    def interrupted_evaluate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:  # steps 0, 3 and 6 each evaluate train then test
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(training, "evaluate", interrupted_evaluate)
    model, task, config = setup()
    with pytest.raises(KeyboardInterrupt):
        training.train(model, task, config, checkpoint_dir=tmp_path, progress=False)
    monkeypatch.undo()
    assert training.load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 6
    fresh, task, config = setup()
    result = training.train(fresh, task, config, checkpoint_dir=tmp_path, progress=False)
    assert_same_weights(state(fresh), reference[0])
    assert result.history.equals(reference[1].history)


def test_max_steps_this_run_then_resume(tmp_path, reference):
    from nopelens.training import train

    model, task, config = setup()
    part = train(model, task, config, checkpoint_dir=tmp_path, progress=False, max_steps_this_run=5)
    assert (part.step, part.finished, part.final_path) == (5, False, None)
    assert not (tmp_path / "final.pt").exists()
    rest = train(model, task, config, checkpoint_dir=tmp_path, progress=False)
    assert rest.finished and rest.final_path.exists()
    assert_same_weights(state(model), reference[0])
    # Resuming a finished run trains nothing and keeps the weights.
    again = train(setup()[0], task, config, checkpoint_dir=tmp_path, progress=False)
    assert again.step == 12 and again.history.equals(rest.history)


def test_resume_false_starts_over(tmp_path, reference):
    from nopelens.training import train

    model, task, config = setup()
    train(model, task, config, checkpoint_dir=tmp_path, progress=False, max_steps_this_run=4)
    fresh, task, config = setup()
    result = train(fresh, task, config, checkpoint_dir=tmp_path, progress=False, resume=False)
    assert result.history["step"].min() == 0 and result.step == 12
    assert_same_weights(state(fresh), reference[0])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"config": {"lr": 1e-3}},
            r"belongs to a different run: lr=0\.003 \(checkpoint\) vs "
            r"0\.001",
        ),
        ({"config": {"steps": 20}}, r"steps=12 \(checkpoint\) vs 20"),
        ({"model": {"seed": 1}}, r"model seed=0 \(checkpoint\) vs 1"),
        ({"task": {"length": 5}}, r"task .*'length': 4.* != .*'length': 5"),
    ],
)
def test_resume_refuses_another_run(tmp_path, change, match):
    from nopelens.training import build_task_model, get_task, train

    model, task, config = setup()
    train(model, task, config, checkpoint_dir=tmp_path, progress=False, max_steps_this_run=4)
    task = get_task("parity", **{"length": 4, **change.get("task", {})})
    model = build_task_model(task, **{**MODEL, **change.get("model", {})})
    config = config.replace(**change.get("config", {}))
    with pytest.raises(ValueError, match=match):
        train(model, task, config, checkpoint_dir=tmp_path, progress=False)


# -- checkpoints -------------------------------------------------------------------------------


def test_checkpoint_folder_contents(tmp_path, reference):
    import pandas as pd

    from nopelens.training import load_initial_and_final

    model, task, _ = setup()
    untrained = state(model)
    folder = tmp_path / "ref"
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint.pt",
        "final.pt",
        "history.csv",
        "initial.pt",
    ]  # no temporary files left behind
    initial, final = load_initial_and_final(folder)
    assert_same_weights(state(initial), untrained)
    assert_same_weights(state(final), reference[0])
    history = pd.read_csv(folder / "history.csv")
    assert list(history.columns) == ["step", "split", "metric", "value"]
    assert len(history) == len(reference[1].history)
    result = reference[1]
    assert result.initial_path == folder / "initial.pt"
    assert result.final_path == folder / "final.pt"
    assert result.checkpoint_path == folder / "checkpoint.pt"


def test_train_result_repr_is_short(reference):
    result = reference[1]
    text = repr(result)
    assert len(text) < 600 and "\n" not in text
    assert text.startswith("TrainResult(task='parity', step=12/12, finished=True")
    assert f"test_accuracy={result.test_accuracy:.4g}" in text
    assert f"history={len(result.history)} rows" in text


def test_history_is_tidy(reference):
    history = reference[1].history
    assert list(history.columns) == ["step", "split", "metric", "value"]
    assert sorted(history.step.unique()) == [0, 3, 6, 9, 12]
    for split in ("train", "test"):
        metrics = history[history.split == split].groupby("step").metric.apply(sorted)
        assert all(m == ["accuracy", "exact_match", "loss"] for m in metrics)
    assert set(history.split) == {"train", "test", "train_batch"}
    final = reference[1].final
    assert set(final) == {
        f"{s}_{m}" for s in ("train", "test") for m in ("loss", "accuracy", "exact_match")
    }
    assert 0 <= reference[1].test_accuracy <= 1


def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    """A crash while checkpoint.pt is being written leaves the old file, whole."""
    from nopelens.training import load_checkpoint, train

    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        if str(dst).endswith("checkpoint.pt"):
            calls.append(dst)
            if len(calls) == 2:
                raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    model, task, config = setup()
    with pytest.raises(OSError, match="disk full"):
        train(model, task, config, checkpoint_dir=tmp_path, progress=False)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other"])
def test_damaged_checkpoint_is_reported(tmp_path, damage):
    from nopelens.training import load_checkpoint, train

    model, task, config = setup()
    train(model, task, config, checkpoint_dir=tmp_path, progress=False, max_steps_this_run=4)
    path = tmp_path / "checkpoint.pt"
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        match = r"checkpoint\.pt' is not a readable training checkpoint \(truncated or corrupt"
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint")
        match = r"truncated or corrupt"
    else:
        torch.save({"hello": 1}, path)
        match = r"is not a nopelens training checkpoint"
    with pytest.raises(ValueError, match=match):
        load_checkpoint(path)
    with pytest.raises(
        ValueError,
        match=r"Delete it to restart training from scratch, or pass "
        r"resume=False",
    ):
        train(setup()[0], task, config, checkpoint_dir=tmp_path, progress=False)
    # resume=False ignores the damaged file and trains from scratch.
    result = train(
        setup()[0],
        task,
        config,
        checkpoint_dir=tmp_path,
        progress=False,
        resume=False,
        max_steps_this_run=1,
    )
    assert result.step == 1


def test_missing_checkpoint():
    from nopelens.training import load_checkpoint, load_initial_and_final

    with pytest.raises(FileNotFoundError, match="No training checkpoint"):
        load_checkpoint("/no/such/checkpoint.pt")
    with pytest.raises(FileNotFoundError):
        load_initial_and_final("/no/such/folder")


# -- optimiser ---------------------------------------------------------------------------------


def test_weight_decay_groups():
    from nopelens.training import TrainConfig, make_optimizer

    model, _, _ = setup()
    optimizer = make_optimizer(model, TrainConfig(weight_decay=0.5))
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = ([names[id(p)] for p in g["params"]] for g in optimizer.param_groups)
    assert optimizer.param_groups[0]["weight_decay"] == 0.5
    assert optimizer.param_groups[1]["weight_decay"] == 0.0
    assert all(n.rsplit(".", 1)[-1].startswith("W_") for n in decay)
    assert "embed.W_E" in decay and "blocks.0.attn.W_Q" in decay
    assert "blocks.0.ln1.w" in no_decay and "blocks.0.attn.b_Q" in no_decay
    assert not any("pos" in n for n in decay + no_decay), "NoPE has no positional parameter"


def test_frozen_zero_w_pos_stays_zero():
    """The TransformerLens recipe (zero, frozen W_pos) is left out of AdamW: still NoPE after."""
    from nopelens import is_nope
    from nopelens.training import TrainConfig, build_task_model, get_task, make_optimizer, train

    task = get_task("parity", length=4)
    model = build_task_model(task, **MODEL, positional="learned")
    model.pos_embed.W_pos.data.zero_()
    model.pos_embed.W_pos.requires_grad_(False)
    assert is_nope(model)
    config = TrainConfig(**{**CONFIG, "steps": 3, "weight_decay": 1.0})
    params = [p for g in make_optimizer(model, config).param_groups for p in g["params"]]
    assert all(p is not model.pos_embed.W_pos for p in params)
    train(model, task, config, progress=False)
    assert is_nope(model) and not model.pos_embed.W_pos.any()


def test_learning_rate_schedule():
    from nopelens.training import TrainConfig, lr_at

    config = TrainConfig(steps=100, lr=1.0, warmup=10, min_lr_ratio=0.1)
    rates = [lr_at(config, s) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False)), "cosine decays"
    assert rates[-1] == pytest.approx(0.1, abs=1e-3)
    constant = config.replace(schedule="constant")
    assert lr_at(constant, 50) == 1.0 and lr_at(config.replace(warmup=0), 0) == 1.0


def test_model_is_left_in_eval_mode_and_on_device():
    from nopelens.training import train

    model, task, config = setup(steps=2, device="cpu")
    train(model, task, config, progress=False)
    assert not model.training


def test_progress_bar_and_no_print(capsys, caplog):
    import logging

    from nopelens.training import train

    model, task, config = setup(steps=3)
    with caplog.at_level(logging.INFO, logger="nopelens.training.loop"):
        train(model, task, config, progress=False)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert any("test_accuracy=" in r.getMessage() for r in caplog.records)
    train(setup(steps=3)[0], task, config, progress=True)
    assert "train parity" in capsys.readouterr().err


def test_default_config_and_model_for_every_task():
    from nopelens.training import TASKS, TrainConfig, default_config, default_model_kwargs

    for name in TASKS:
        assert isinstance(default_config(name), TrainConfig)
        kwargs = default_model_kwargs(name)
        assert kwargs["positional"] == "none" and kwargs["n_ctx"] >= 2
    assert default_config("addition", steps=7).steps == 7
    with pytest.raises(ValueError, match=r"The 'task' parameter of default_config must be one of"):
        default_config("sum")


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, r"The 'steps' parameter of TrainConfig must be an int >= 1\. Got 0 instead"),
        ({"batch_size": -2}, r"'batch_size' parameter of TrainConfig must be an int >= 1"),
        ({"lr": 0.0}, r"The 'lr' parameter of TrainConfig must be a finite float > 0\. Got 0\.0"),
        ({"lr": float("nan")}, r"'lr' parameter of TrainConfig must be a finite float > 0"),
        ({"weight_decay": -0.1}, r"'weight_decay' parameter .* float >= 0"),
        ({"warmup": -1}, r"'warmup' parameter of TrainConfig must be an int >= 0"),
        ({"grad_clip": 0.0}, r"'grad_clip' parameter .* > 0 or None"),
        (
            {"schedule": "linear"},
            r"'schedule' parameter .* one of 'cosine', 'constant'\. "
            r"Got 'linear'",
        ),
        ({"beta2": 1.0}, r"'beta2' parameter of TrainConfig must be a float in \(0, 1\)"),
        ({"device": "gpu:x"}, r"'device' parameter of TrainConfig must be a torch device"),
    ],
)
def test_bad_config_values(kwargs, match):
    from nopelens.training import TrainConfig

    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_every_config_problem_is_listed():
    from nopelens.training import TrainConfig

    with pytest.raises(ValueError, match=r"TrainConfig received 2 invalid arguments") as info:
        TrainConfig(steps=0, lr=-1.0)
    assert "'steps'" in str(info.value) and "'lr'" in str(info.value)
    with pytest.raises(ValueError, match=r"TrainConfig has no field\(s\) 'step'"):
        TrainConfig().replace(step=3)


def test_bad_train_arguments():
    from nopelens import build_model
    from nopelens.training import train

    model, task, config = setup()
    short = build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=4, n_ctx=4)
    with pytest.raises(ValueError, match=r"n_ctx=4 is shorter than the task's seq_len=7"):
        train(short, task, config, progress=False)
    small_vocab = build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=3, n_ctx=8)
    with pytest.raises(ValueError, match=r"d_vocab=3 is smaller than the task's d_vocab=4"):
        train(small_vocab, task, config, progress=False)
    with pytest.raises(ValueError, match=r"The 'task' parameter of train must be a nopelens task"):
        train(model, "parity", config, progress=False)
    with pytest.raises(ValueError, match=r"The 'config' parameter of train must be a TrainConfig"):
        train(model, task, {"steps": 3}, progress=False)
    with pytest.raises(ValueError, match=r"'max_steps_this_run' parameter of train must be an int"):
        train(model, task, config, progress=False, max_steps_this_run=0)


def test_foreach_kernels_do_the_per_parameter_arithmetic_bit_for_bit(reference, monkeypatch):
    """The multi-tensor AdamW and clipping give the weights of the per-parameter loop exactly."""
    from nopelens.training import config as config_module, loop, train

    assert all(
        g["foreach"] for g in config_module.make_optimizer(setup()[0], setup()[2]).param_groups
    )
    make = config_module.make_optimizer

    def per_parameter(model, config):
        optimizer = make(model, config)
        for group in optimizer.param_groups:
            group["foreach"] = False
        return optimizer

    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(loop, "make_optimizer", per_parameter)
    monkeypatch.setattr(
        torch.nn.utils, "clip_grad_norm_", lambda p, c, foreach=None: clip(p, c, foreach=False)
    )
    model, task, config = setup()
    train(model, task, config, progress=False)
    assert_same_weights(state(model), reference[0])


def test_determinism_settings_are_restored():
    from torch.utils import deterministic

    from nopelens.training import train

    fill = deterministic.fill_uninitialized_memory
    enabled = torch.are_deterministic_algorithms_enabled()
    model, task, config = setup(steps=2)
    train(model, task, config, progress=False)
    assert deterministic.fill_uninitialized_memory == fill
    assert torch.are_deterministic_algorithms_enabled() == enabled
