"""The trained part: models trained on position tasks, NoPE vs learned, trained vs untrained.

Each (task, positional type, weight seed) is trained with :func:`nopelens.training.train` in its
own resumable folder; the pattern is then scored on held-out task inputs before and after
training, and the test accuracy is reported beside it. The runs are independent: with
``workers > 1`` in the profile (and the CPU as device) they run in that many worker processes at
once (:func:`~nopelens.experiments.parts.common.map_jobs`), each on the profile's thread count,
so every number is the same as in one process.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from nopelens.experiments.parts.common import (
    analyze_profile,
    ap_nc,
    job_context,
    map_jobs,
    section,
    seed_mean,
    start_ahead,
    train_dir,
)
from nopelens.experiments.pipeline import Context, PartResult


def _train_and_score(
    ctx: Context, name: str, task: Any, tokens: Any, positional: str, seed: int
) -> tuple[dict[str, Any], pd.DataFrame, list[pd.DataFrame]]:
    """Train one run (or resume it); its final metrics, history and before/after scores."""
    from nopelens.training import build_task_model, default_config, load_initial_and_final, train

    settings = ctx.config["settings"]
    folder = train_dir(ctx.part_dir, name, positional, seed)
    model = build_task_model(
        task, positional=positional, seed=seed, device=ctx.device, **settings["model"]
    )
    config = default_config(task, seed=ctx.profile.data_seed, **settings["train"])
    result = train(model, task, config, checkpoint_dir=folder, progress=ctx.progress)
    labels = {"task": name, "positional": positional, "seed": seed}
    final = {**labels, **result.final, "chance_accuracy": task.chance}
    initial, trained = load_initial_and_final(folder, device=ctx.device)
    frames = [
        analyze_profile(ctx, m, tokens, ("resid_post",)).scores.assign(**labels, state=state)
        for state, m in (("untrained", initial), ("trained", trained))
    ]
    return final, result.history.assign(**labels), frames


def _trained_numbers(scores: pd.DataFrame, accuracy: pd.DataFrame) -> dict[str, Any]:
    """Per (task, positional): test accuracy and the pattern before and after training."""
    numbers: dict[str, Any] = {}
    for (name, positional), group in scores.groupby(["task", "positional"], sort=False):
        acc = accuracy[(accuracy["task"] == name) & (accuracy["positional"] == positional)]
        numbers[f"{name} {positional}"] = {
            "test_accuracy": float(acc["test_accuracy"].mean()),
            "test_exact_match": float(acc["test_exact_match"].mean()),
            "chance_accuracy": float(acc["chance_accuracy"].iloc[0]),
            **{
                f"{state} {where}": ap_nc(group[group["state"] == state], layer=layer)
                for state in ("untrained", "trained")
                for where, layer in (("layer 0", "0"), ("last layer", None))
            },
        }
    return numbers


def _jobs(ctx: Context) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, int]]]:
    """The part's training runs as :func:`map_jobs` jobs, and their keys."""
    from nopelens.training import get_task

    settings = ctx.config["settings"]
    jobs, keys = [], []
    n_jobs = len(settings["tasks"]) * len(settings["positional"]) * len(settings["seeds"])
    job_ctx = job_context(ctx, n_jobs)
    for name, task_kwargs in settings["tasks"].items():
        task = get_task(name, **task_kwargs)
        sample = task.sample(settings["n_seqs"], split="test", generator=ctx.profile.data_seed)
        for positional in settings["positional"]:
            for seed in settings["seeds"]:
                jobs.append((job_ctx, name, task, sample.tokens, positional, seed))
                keys.append((name, positional, seed))
    return jobs, keys


def prefetch_trained(ctx: Context) -> bool:
    """Start the part's training runs ahead of time (:func:`start_ahead`), longest first."""
    jobs, keys = _jobs(ctx)
    order = sorted(range(len(jobs)), key=lambda i: -_steps(ctx, jobs[i][2]) * jobs[i][2].seq_len)
    return start_ahead(ctx, _train_and_score, [jobs[i] for i in order], [keys[i] for i in order])


def _steps(ctx: Context, task: Any) -> int:
    from nopelens.training import default_config

    return default_config(task, **ctx.config["settings"]["train"]).steps


def part_trained(ctx: Context) -> PartResult:
    """Models trained on position tasks: NoPE vs learned positions, trained vs untrained.

    Settings: ``tasks`` (name -> task parameters), ``positional`` types, ``seeds`` (weight seeds),
    ``model`` and ``train`` (overrides of the task's recommended model and
    :class:`~nopelens.training.TrainConfig`; the data seed is the profile's), ``n_seqs`` held-out
    sequences to score. Runs live in ``runs/<task>-<positional>-seed<seed>/`` and resume.
    """
    jobs, keys = _jobs(ctx)
    runs = map_jobs(ctx, _train_and_score, jobs, desc="trained runs", keys=keys)
    frames, histories, finals = [], [], []
    for final, history, scored in runs:
        finals.append(final)
        histories.append(history)
        frames += scored
    scores = pd.concat(frames, ignore_index=True)
    accuracy = pd.DataFrame(finals)
    return PartResult(
        numbers=_trained_numbers(scores, accuracy),
        tables={
            "scores": scores,
            "accuracy": accuracy,
            "history": pd.concat(histories, ignore_index=True),
        },
    )


def figures_trained(result: PartResult) -> list[Any]:
    """Scores by layer before and after training, per task, then the accuracy table."""
    from nopelens.viz import score_by_layer_figure

    frame = result.tables["scores"]
    out = []
    for task, group in frame.groupby("task", sort=False):
        group = group.assign(model=group["positional"] + " " + group["state"])
        out.append(
            score_by_layer_figure(seed_mean(group, "model"), title=f"Trained vs untrained — {task}")
        )
    return [
        (
            "Trained models",
            section(
                "Scores by layer on held-out task inputs, before and after training (mean over "
                "weight "
                "seeds), for NoPE and learned absolute positions; then the test accuracy of "
                "each run.",
                *out,
                result.tables["accuracy"],
            ),
        )
    ]
