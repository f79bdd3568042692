"""``nopelens train TASK --out DIR``: train a model on a task, with checkpoints and resume."""

from __future__ import annotations

import argparse
import ast
from typing import Any

from nopelens.cli.common import add_model_arguments, quiet, status
from nopelens.cli.vocabulary import add_quiet_argument
from nopelens.spec import TASKS

HELP = "train a model on a task (resumes if DIR already holds a checkpoint)"

#: The task names (nopelens.spec.TASKS, kept equal to nopelens.training.TASKS by a test).
TASK_NAMES: tuple[str, ...] = TASKS
#: CLI dest -> (TrainConfig field, type, help).
_TRAIN_FLAGS: dict[str, tuple[str, type, str]] = {
    "steps": ("steps", int, "optimiser steps (default: the task's recommendation)"),
    "batch_size": ("batch_size", int, "examples per step"),
    "lr": ("lr", float, "peak AdamW learning rate"),
    "weight_decay": ("weight_decay", float, "AdamW weight decay on the W_* matrices"),
    "warmup": ("warmup", int, "learning-rate warm-up steps"),
    "eval_every": ("eval_every", int, "evaluate every N steps"),
    "eval_batches": ("eval_batches", int, "evaluation batches per split"),
    "checkpoint_every": ("checkpoint_every", int, "write checkpoint.pt every N steps"),
    "train_seed": ("seed", int, "seed of the data order (default: --seed)"),
}
#: Model flags of add_model_arguments -> build_model keyword.
_MODEL_FLAGS: dict[str, str] = {
    "n_layers": "n_layers",
    "d_model": "d_model",
    "n_heads": "n_heads",
    "d_mlp": "d_mlp",
    "d_vocab": "d_vocab",
    "n_ctx": "n_ctx",
    "positional": "positional",
    "nope_layers": "nope_layers",
    "attention": "attention",
    "normalization": "normalization_type",
    "act_fn": "act_fn",
    "init_mode": "init_mode",
    "init_range": "initializer_range",
    "attn_only": "attn_only",
    "seed": "seed",
    "device": "device",
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the task, output, training and model arguments."""
    parser.add_argument("task", metavar="TASK", help=f"one of: {', '.join(TASK_NAMES)}")
    parser.add_argument(
        "--out",
        metavar="DIR",
        required=True,
        help="folder for initial.pt, checkpoint.pt, final.pt, history.csv, metrics.json",
    )
    parser.add_argument(
        "--task-arg",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="task parameter, e.g. --task-arg n_digits=2 (repeatable)",
    )
    group = parser.add_argument_group("training (defaults: the task's recommended config)")
    for dest, (_, kind, text) in _TRAIN_FLAGS.items():
        group.add_argument(
            f"--{dest.replace('_', '-')}", dest=dest, type=kind, default=None, help=text
        )
    group.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="N",
        help="stop after N steps in this run (rerun to resume)",
    )
    group.add_argument(
        "--fresh", action="store_true", help="ignore an existing checkpoint in DIR and start over"
    )
    group.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads (1 is often fastest for these small models)",
    )
    add_model_arguments(parser)
    add_quiet_argument(parser)
    # None means "not given": the task's recommended model (or the checkpoint's) fills it in.
    parser.set_defaults(**dict.fromkeys(_MODEL_FLAGS, None))


def _parse_task_args(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(
                f"The '--task-arg' option must look like KEY=VALUE. Got {item!r} instead."
            )
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _explicit_model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs = {}
    for dest, name in _MODEL_FLAGS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        kwargs[name] = None if (dest == "normalization" and value == "none") else value
    return kwargs


def run(args: argparse.Namespace) -> int:
    """Train, then print the final accuracies and where the files are."""
    from pathlib import Path

    out = Path(args.out)
    source = f"the model {args.model}" if args.model else "a new model"
    status(args, f"loading torch and TransformerLens, then task {args.task!r} and {source} ...")

    from nopelens.files import write_json
    from nopelens.models import build_model, describe_model, load_model, model_spec
    from nopelens.training import (
        CHECKPOINT,
        FINAL,
        HISTORY,
        INITIAL,
        default_config,
        default_model_kwargs,
        get_task,
        load_checkpoint,
        task_from_spec,
        train,
    )

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"The '--threads' option must be an int >= 1. Got {args.threads}.")
        import torch

        torch.set_num_threads(args.threads)
    task_args = _parse_task_args(args.task_arg)
    model_args = _explicit_model_kwargs(args)
    train_args = {
        field: getattr(args, dest)
        for dest, (field, _, _) in _TRAIN_FLAGS.items()
        if getattr(args, dest) is not None
    }
    resuming = (out / CHECKPOINT).exists() and not args.fresh
    if resuming:
        state = load_checkpoint(out / CHECKPOINT)
        saved = dict(state["task"])
        if saved.get("name") != args.task:
            raise ValueError(
                f"{str(out)!r} holds a checkpoint of task {saved.get('name')!r}, not "
                f"{args.task!r}: choose another --out, or pass --fresh to start over."
            )
        task = task_from_spec({**saved, **task_args})
        config = state["config"].replace(**train_args)
    else:
        task = get_task(args.task, **task_args)
        if "seed" not in train_args and args.seed is not None:
            train_args["seed"] = args.seed
        config = default_config(task, **train_args)

    if args.model:
        if any(k not in ("device", "seed") for k in model_args):
            raise ValueError(
                "--model cannot be combined with model-shape flags "
                f"({', '.join(sorted(model_args))})."
            )
        model = load_model(args.model, device=model_args.get("device"))
    elif resuming:
        model = build_model(**{**state["model_spec"], **model_args})
    else:
        model = build_model(**default_model_kwargs(task, **model_args))

    status(
        args,
        f"{'resuming' if resuming else 'training'} {describe_model(model)} on {task.name} "
        f"for {config.steps} steps into {out}",
    )
    result = train(
        model,
        task,
        config,
        checkpoint_dir=out,
        resume=not args.fresh,
        progress=not quiet(args),
        max_steps_this_run=args.stop_after,
    )
    write_json(
        out / "metrics.json",
        {
            "task": task.spec(),
            "model": model_spec(model),
            "config": config.to_dict(),
            "step": result.step,
            "finished": result.finished,
            "final": result.final,
            "seconds_this_run": result.seconds,
        },
    )

    state_text = "finished" if result.finished else "stopped, rerun to resume"
    print(
        f"{task.name}: {describe_model(model)}, step {result.step}/{config.steps} "
        f"({state_text}) in {result.seconds:.1f} s"
    )
    print(f"{'split':<6} {'loss':>8} {'accuracy':>9} {'exact_match':>12}")
    for split in ("train", "test"):
        final = result.final
        print(
            f"{split:<6} {final[f'{split}_loss']:>8.4f} {final[f'{split}_accuracy']:>9.4f} "
            f"{final[f'{split}_exact_match']:>12.4f}"
        )
    print(f"chance accuracy {task.chance:.4f}")
    files = [INITIAL, CHECKPOINT, HISTORY, "metrics.json"] + ([FINAL] if result.finished else [])
    print(f"wrote {', '.join(str(out / f) for f in files)}")
    return 0
