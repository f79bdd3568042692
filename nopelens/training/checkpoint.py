"""Training checkpoints: the files of a run's folder, written atomically and checked on resume.

With a ``checkpoint_dir``, :func:`~nopelens.training.train` keeps in it:

* ``initial.pt`` (:data:`INITIAL`): the untrained model, written before the first step with
  :func:`nopelens.models.save_model`;
* ``checkpoint.pt`` (:data:`CHECKPOINT`): model, optimiser, step and history, everything resume
  needs; written atomically with its SHA-256 inside every ``checkpoint_every`` steps, at the
  end, and when training is interrupted with Ctrl-C (read back, without unpickling anything and
  checking the checksum, with :func:`load_checkpoint`);
* ``final.pt`` (:data:`FINAL`): the trained model, once the run has finished;
* ``history.csv`` (:data:`HISTORY`): the tidy history ``[step, split, metric, value]``.

A checkpoint is only resumed by the run it belongs to: the same task, the same model spec and
the same config fields that shape the trajectory (steps, batch size, learning-rate schedule,
weight decay, seed, clipping); anything else is refused with a message that says how to start
over. :func:`load_initial_and_final` loads the untrained and trained models of a finished run
for comparison.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from nopelens.files import load_sealed, save_sealed, write_table
from nopelens.models import HookedModel, load_model, model_spec
from nopelens.training.config import TrainConfig
from nopelens.training.task import Task

#: File name of the untrained model in a checkpoint folder.
INITIAL = "initial.pt"
#: File name of the trained model (written when the run finishes).
FINAL = "final.pt"
#: File name of the resumable training state.
CHECKPOINT = "checkpoint.pt"
#: File name of the tidy history table.
HISTORY = "history.csv"
#: Columns of the history, one row per (step, split, metric).
HISTORY_COLUMNS: tuple[str, ...] = ("step", "split", "metric", "value")
#: Config fields that change the weights a run ends with; a resumed run must keep them.
_TRAJECTORY_FIELDS: tuple[str, ...] = (
    "steps",
    "batch_size",
    "lr",
    "weight_decay",
    "warmup",
    "schedule",
    "min_lr_ratio",
    "seed",
    "grad_clip",
    "beta2",
)

_FORMAT = "nopelens-train"
_FORMAT_VERSION = 1


def _history_frame(rows: list[list[Any]]) -> pd.DataFrame:
    """The history rows ``[step, split, metric, value]`` as a tidy frame."""
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    return frame.astype({"step": "int64", "value": "float64"})


def _checkpoint_error(path: Path, reason: str) -> ValueError:
    return ValueError(
        f"{str(path)!r} {reason}. Delete it to restart training from scratch, or pass "
        "resume=False (nopelens train --fresh)."
    )


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint (``checkpoint.pt``) written by :func:`~nopelens.training.train`.

    Returns:
        A dict with ``step``, ``config`` (a :class:`TrainConfig`), ``task`` and ``model_spec``
        (dicts), ``history`` (list of rows), ``model_state``, ``optimizer_state`` and ``data``.

    Only plain data and tensors are read (``weights_only``), and the file's SHA-256 is checked
    (:func:`nopelens.files.load_sealed`; checkpoints of older versions have none).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is truncated, corrupt, modified after it was written, or not a
            nopelens training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No training checkpoint at {str(path)!r}.")
    try:
        payload = load_sealed(path, what="training checkpoint")
    except ValueError as err:  # unreadable, or does not match its checksum
        raise ValueError(
            f"{err} Delete it to restart training from scratch, or pass resume=False "
            "(nopelens train --fresh)."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise _checkpoint_error(path, "is not a nopelens training checkpoint")
    if payload.get("format_version") != _FORMAT_VERSION:
        raise _checkpoint_error(
            path,
            f"has format version {payload.get('format_version')!r}; this nopelens reads "
            f"version {_FORMAT_VERSION}",
        )
    try:
        return {
            "step": int(payload["step"]),
            "config": TrainConfig(**json.loads(payload["config_json"])),
            "task": json.loads(payload["task_json"]),
            "model_spec": json.loads(payload["model_spec_json"]),
            "history": json.loads(payload["history_json"]),
            "batch_loss": tuple(payload["batch_loss"]),
            "data": json.loads(payload["data_json"]),
            "model_state": payload["model_state"],
            "optimizer_state": payload["optimizer_state"],
        }
    except (KeyError, TypeError, ValueError) as err:
        raise _checkpoint_error(path, f"is incomplete ({type(err).__name__}: {err})") from None


def _save_checkpoint(
    folder: Path,
    *,
    model: HookedModel,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: TrainConfig,
    task: Task,
    history: list[list[Any]],
    batch_loss: tuple[float, int],
) -> None:
    """Write ``checkpoint.pt`` (atomically: a crash keeps the previous one) and ``history.csv``.

    Args:
        folder: The checkpoint folder.
        model: The model being trained.
        optimizer: Its optimiser (the AdamW moments are saved too).
        step: Optimiser steps completed.
        config: The training configuration.
        task: The task.
        history: The history rows so far.
        batch_loss: Sum and count of the training-batch losses since the last evaluation.
    """
    payload = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "step": step,
        "config_json": json.dumps(config.to_dict()),
        "task_json": json.dumps(task.spec()),
        "model_spec_json": json.dumps(model_spec(model)),
        "history_json": json.dumps(history),
        "batch_loss": list(batch_loss),
        # The batch of step s comes from batch_generator(seed, s): the generator state is the
        # seed and the next step, both stored here.
        "data_json": json.dumps(
            {"scheme": "blake2b(seed:train-batch:step)", "seed": config.seed, "next_step": step}
        ),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer_state": _to_cpu(optimizer.state_dict()),
    }
    save_sealed(payload, folder / CHECKPOINT)
    write_table(_history_frame(history), folder / HISTORY)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def _check_resumable(
    path: Path, state: dict[str, Any], model: HookedModel, task: Task, config: TrainConfig
) -> None:
    """Refuse to resume from a checkpoint of another run.

    Args:
        path: The checkpoint file (for the message).
        state: What :func:`load_checkpoint` read from it.
        model: The model about to be trained.
        task: The task about to be trained on.
        config: The training configuration of this call.

    Raises:
        ValueError: Naming every difference: the task spec, the model spec, or a field of
            ``_TRAJECTORY_FIELDS``.
    """
    problems = []
    if state["task"] != task.spec():
        problems.append(f"task {state['task']} != {task.spec()}")
    spec = model_spec(model)
    if state["model_spec"] != spec:
        diff = sorted(
            k
            for k in set(spec) | set(state["model_spec"])
            if spec.get(k) != state["model_spec"].get(k)
        )
        problems.append(
            "model "
            + ", ".join(
                f"{k}={state['model_spec'].get(k)!r} (checkpoint) vs {spec.get(k)!r}" for k in diff
            )
        )
    old = state["config"]
    for name in _TRAJECTORY_FIELDS:
        if getattr(old, name) != getattr(config, name):
            problems.append(
                f"{name}={getattr(old, name)!r} (checkpoint) vs {getattr(config, name)!r}"
            )
    if problems:
        raise _checkpoint_error(path, "belongs to a different run: " + "; ".join(problems))


def load_initial_and_final(
    checkpoint_dir: str | os.PathLike[str], device: str | torch.device | None = None
) -> tuple[HookedModel, HookedModel]:
    """The untrained (``initial.pt``) and trained (``final.pt``) models of a finished run.

    Raises:
        FileNotFoundError: If either file is missing (e.g. training has not finished).
    """
    folder = Path(checkpoint_dir)
    return load_model(folder / INITIAL, device=device), load_model(folder / FINAL, device=device)
