"""Training models on the tasks: AdamW on the answer positions, evaluation, exact resume.

:func:`train` runs a plain PyTorch loop on a ``HookedTransformer`` (built by
:func:`nopelens.models.build.build_model`) and a :class:`~nopelens.training.tasks.Task`:

* the loss is the cross-entropy of the answer positions only (``Batch.answer_mask``), so a model
  is never trained to predict the random inputs of a task;
* AdamW with weight decay on the weight matrices (``W_*``) and none on biases and LayerNorm
  parameters; frozen parameters (the zero ``W_pos`` of a TransformerLens-recipe NoPE model) are
  not given to the optimiser at all, so nothing can re-create a positional signal. Models from
  ``build_model(positional="none")`` have no positional parameter in the first place;
* linear warm-up then cosine decay of the learning rate, and gradient clipping;
* evaluation on fixed train and test sets every ``eval_every`` steps (loss, per-token accuracy,
  exact match), logged and kept as a tidy history ``[step, split, metric, value]``;
* the batch of step ``s`` is drawn from a private ``torch.Generator`` seeded from
  ``(seed, s)``: the data order is a pure function of the seed and the step, so a run resumed
  from a checkpoint sees exactly the batches of an uninterrupted one;
* on the CPU, PyTorch's deterministic algorithms are switched on for the duration of the call
  (and restored after): with several threads the embedding gradient is otherwise summed in a
  thread-dependent order, and two runs with the same seed drift apart. On CUDA they stay off
  (they would need ``CUBLAS_WORKSPACE_CONFIG``), so GPU runs are not bit-reproducible.

With a ``checkpoint_dir``, the folder holds ``initial.pt`` (the untrained model, written before
the first step with :func:`nopelens.models.build.save_model`), ``checkpoint.pt`` (model, optimiser,
step, history: everything resume needs; written atomically every ``checkpoint_every`` steps, at the
end, and when training is interrupted with Ctrl-C), ``final.pt`` (the trained model) and
``history.csv``. Calling :func:`train` again on the same folder continues from ``checkpoint.pt``
and ends with the same weights, bit for bit, as a run that was never interrupted.
:func:`load_initial_and_final` loads the untrained and trained models for comparison.

TransformerLens' own ``transformer_lens.train.train`` is not used: it trains the next-token loss
over whole sequences (our tasks score only the answer positions), has no evaluation split, and
cannot resume (it saves weights only, not the optimiser or the data position).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from nopelens.files import atomic_torch_save, write_table
from nopelens.models import build_model, load_model, model_spec, save_model
from nopelens.training.tasks import TASKS, Task, answer_accuracy, answer_loss, get_task
from nopelens.validation import InvalidParameterError, check_choice, raise_all

logger = logging.getLogger(__name__)

_FORMAT = "nopelens-train"
_FORMAT_VERSION = 1
#: Config fields that change the weights a run ends with; a resumed run must keep them.
_TRAJECTORY_FIELDS = (
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
#: Metrics recorded at every evaluation, for the "train" and "test" splits.
METRICS: tuple[str, ...] = ("loss", "accuracy", "exact_match")
HISTORY_COLUMNS: tuple[str, ...] = ("step", "split", "metric", "value")

INITIAL = "initial.pt"
FINAL = "final.pt"
CHECKPOINT = "checkpoint.pt"
HISTORY = "history.csv"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of :func:`train`. Every field is validated on construction.

    Examples:
        >>> TrainConfig(steps=100).replace(lr=3e-4).lr
        0.0003
        >>> TrainConfig(steps=0)
        Traceback (most recent call last):
        ...
        nopelens.validation.InvalidParameterError: The 'steps' parameter of TrainConfig ...
    """

    steps: int = 2000
    """Number of optimiser steps."""
    batch_size: int = 64
    """Examples per step (and per evaluation batch)."""
    lr: float = 1e-3
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.1
    """AdamW weight decay, applied to the ``W_*`` matrices only."""
    warmup: int = 100
    """Steps of linear learning-rate warm-up from 0."""
    schedule: str = "cosine"
    """Learning rate after warm-up: cosine decay to ``min_lr_ratio * lr``, or constant."""
    min_lr_ratio: float = 0.1
    """Final learning rate of the cosine schedule, as a fraction of ``lr``."""
    beta2: float = 0.98
    """AdamW's second-moment decay (``beta1`` is 0.9)."""
    eval_every: int = 250
    """Evaluate every this many steps (and before the first and after the last step)."""
    eval_batches: int = 4
    """Evaluation set size per split, in batches of ``batch_size`` (drawn once, fixed)."""
    checkpoint_every: int = 500
    """Write ``checkpoint.pt`` every this many steps (and at the end)."""
    seed: int = 0
    """Seed of the data order and the evaluation sets (the weights have their own seed)."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this value; None disables clipping."""
    device: str | None = None
    """Device to train on; None keeps the model where it is."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        func = "TrainConfig"

        def check(name: str, ok: bool, what: str) -> None:
            if not ok:
                problems.append(
                    f"The {name!r} parameter of {func} must be {what}. "
                    f"Got {getattr(self, name)!r} instead."
                )

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_real(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        for name in ("steps", "batch_size", "eval_every", "eval_batches", "checkpoint_every"):
            check(name, is_int(getattr(self, name)) and getattr(self, name) >= 1, "an int >= 1")
        for name in ("warmup", "seed"):
            check(name, is_int(getattr(self, name)) and getattr(self, name) >= 0, "an int >= 0")
        check("lr", is_real(self.lr) and self.lr > 0, "a finite float > 0")
        check(
            "weight_decay",
            is_real(self.weight_decay) and self.weight_decay >= 0,
            "a finite float >= 0",
        )
        check(
            "min_lr_ratio",
            is_real(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1,
            "a float in [0, 1]",
        )
        check("beta2", is_real(self.beta2) and 0 < self.beta2 < 1, "a float in (0, 1)")
        check(
            "grad_clip",
            self.grad_clip is None or (is_real(self.grad_clip) and self.grad_clip > 0),
            "a finite float > 0 or None",
        )
        check("schedule", self.schedule in ("cosine", "constant"), "one of 'cosine', 'constant'")
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError):
                problems.append(
                    f"The 'device' parameter of {func} must be a torch device such as 'cpu' or "
                    f"'cuda', or None. Got {self.device!r} instead."
                )
        raise_all(problems, func)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise InvalidParameterError(
                f"TrainConfig has no field(s) {', '.join(repr(k) for k in unknown)}; its fields "
                f"are {', '.join(f.name for f in dataclasses.fields(self))}."
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict."""
        return dataclasses.asdict(self)


def lr_at(config: TrainConfig, step: int) -> float:
    """Learning rate of the update that takes the model from ``step`` to ``step + 1`` steps.

    Examples:
        >>> cfg = TrainConfig(steps=100, lr=1.0, warmup=10, min_lr_ratio=0.0)
        >>> lr_at(cfg, 0), lr_at(cfg, 9), lr_at(cfg, 10), round(lr_at(cfg, 99), 4)
        (0.1, 1.0, 1.0, 0.0003)
    """
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    if config.schedule == "constant":
        return config.lr
    span = max(config.steps - config.warmup, 1)
    progress = min((step - config.warmup) / span, 1.0)
    low = config.lr * config.min_lr_ratio
    return low + (config.lr - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def derived_seed(seed: int, *labels: Any) -> int:
    """A 63-bit seed derived from ``seed`` and labels (stable across processes and platforms).

    Examples:
        >>> derived_seed(0, "train", 5) == derived_seed(0, "train", 5)
        True
        >>> derived_seed(0, "train", 5) == derived_seed(0, "train", 6)
        False
    """
    text = ":".join(str(x) for x in (seed, *labels)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def batch_generator(seed: int, step: int) -> torch.Generator:
    """The private generator of the training batch of ``step`` (what makes resume exact)."""
    return torch.Generator().manual_seed(derived_seed(seed, "train-batch", step))


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the ``W_*`` matrices, none on biases and norms.

    Parameters that do not require gradients (a frozen zero ``W_pos``) are left out entirely.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if name.rsplit(".", 1)[-1].startswith("W_") else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, config.beta2))


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        history: Tidy frame ``[step, split, metric, value]``. Splits ``"train"`` and ``"test"``
            (metrics ``loss``, ``accuracy`` per token, ``exact_match`` per example, on fixed
            evaluation sets) and ``"train_batch"`` (``loss``: mean training-batch loss since the
            previous evaluation).
        final: Metrics of the last evaluation, keyed ``"{split}_{metric}"`` (``test_accuracy``,
            ``test_exact_match``, ``train_loss``, ...).
        step: Optimiser steps completed.
        finished: Whether ``step == config.steps``.
        config: The training configuration.
        task: The task's :meth:`~nopelens.training.tasks.Task.spec`.
        seconds: Wall time of this call (not of earlier, resumed-from runs).
        checkpoint_dir: The checkpoint folder, or None.
    """

    history: pd.DataFrame
    final: dict[str, float]
    step: int
    finished: bool
    config: TrainConfig
    task: dict[str, Any]
    seconds: float
    checkpoint_dir: Path | None = None

    @property
    def test_accuracy(self) -> float:
        """Per-token test accuracy at the last evaluation."""
        return self.final["test_accuracy"]

    @property
    def initial_path(self) -> Path | None:
        """``initial.pt`` (the untrained model), if checkpoints were written."""
        return None if self.checkpoint_dir is None else self.checkpoint_dir / INITIAL

    @property
    def final_path(self) -> Path | None:
        """``final.pt`` (the trained model), if training finished with checkpoints."""
        if self.checkpoint_dir is None or not self.finished:
            return None
        return self.checkpoint_dir / FINAL

    @property
    def checkpoint_path(self) -> Path | None:
        """``checkpoint.pt`` (the resumable training state), if checkpoints were written."""
        return None if self.checkpoint_dir is None else self.checkpoint_dir / CHECKPOINT


# -- checkpoints -------------------------------------------------------------------------------


def _checkpoint_error(path: Path, reason: str) -> ValueError:
    return ValueError(
        f"{str(path)!r} {reason}. Delete it to restart training from scratch, or pass "
        "resume=False (nopelens train --fresh)."
    )


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint (``checkpoint.pt``) written by :func:`train`.

    Returns:
        A dict with ``step``, ``config`` (a :class:`TrainConfig`), ``task`` and ``model_spec``
        (dicts), ``history`` (list of rows), ``model_state``, ``optimizer_state`` and ``data``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is truncated, corrupt or not a nopelens training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No training checkpoint at {str(path)!r}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for torn or corrupt archives
        raise _checkpoint_error(
            path,
            f"is not a readable training checkpoint (truncated or corrupt file?): "
            f"{type(err).__name__}: {err}",
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
    path: Path,
    *,
    model: Any,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: TrainConfig,
    task: Task,
    history: list[list[Any]],
    batch_loss: tuple[float, int],
) -> None:
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
    atomic_torch_save(payload, path)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def _check_resumable(
    path: Path, state: dict[str, Any], model: Any, task: Task, config: TrainConfig
) -> None:
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
) -> tuple[Any, Any]:
    """The untrained (``initial.pt``) and trained (``final.pt``) models of a finished run.

    Raises:
        FileNotFoundError: If either file is missing (e.g. training has not finished).
    """
    folder = Path(checkpoint_dir)
    return load_model(folder / INITIAL, device=device), load_model(folder / FINAL, device=device)


# -- evaluation --------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: Any, task: Task, batches: list[Any]) -> dict[str, float]:
    """Mean loss, per-token accuracy and exact match of ``model`` over ``batches``.

    Batches must all have the same size (the means are then per answer token, per example).
    """
    was_training = model.training
    model.eval()
    totals = dict.fromkeys(METRICS, 0.0)
    for batch in batches:
        logits = model(batch.tokens)
        totals["loss"] += float(answer_loss(logits, batch))
        totals["accuracy"] += answer_accuracy(logits, batch, per="token")
        totals["exact_match"] += answer_accuracy(logits, batch, per="example")
    model.train(was_training)
    return {k: v / len(batches) for k, v in totals.items()}


def _eval_sets(task: Task, config: TrainConfig, device: torch.device) -> dict[str, list[Any]]:
    sets = {}
    for split in ("train", "test"):
        generator = torch.Generator().manual_seed(derived_seed(config.seed, "eval", split))
        sets[split] = [
            task.sample(config.batch_size, split=split, generator=generator).to(device)
            for _ in range(config.eval_batches)
        ]
    return sets


# -- the loop ----------------------------------------------------------------------------------


def _model_device(model: Any) -> torch.device:
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def _validate(
    model: Any, task: Any, config: Any, checkpoint_dir: Any, max_steps_this_run: Any, callback: Any
) -> None:
    problems = []
    func = "train"
    cfg = getattr(model, "cfg", None)
    if cfg is None or not isinstance(model, torch.nn.Module):
        problems.append(
            f"The 'model' parameter of {func} must be a HookedTransformer. "
            f"Got {type(model).__name__} instead."
        )
    if not isinstance(task, Task):
        problems.append(
            f"The 'task' parameter of {func} must be a nopelens task (see "
            f"nopelens.get_task). Got {type(task).__name__} instead."
        )
    if cfg is not None and isinstance(task, Task):
        if cfg.d_vocab < task.d_vocab:
            problems.append(
                f"The model's d_vocab={cfg.d_vocab} is smaller than the task's "
                f"d_vocab={task.d_vocab}; build it with d_vocab >= {task.d_vocab}."
            )
        if cfg.n_ctx < task.seq_len:
            problems.append(
                f"The model's n_ctx={cfg.n_ctx} is shorter than the task's "
                f"seq_len={task.seq_len}; build it with n_ctx >= {task.seq_len}."
            )
    if config is not None and not isinstance(config, TrainConfig):
        problems.append(
            f"The 'config' parameter of {func} must be a TrainConfig or None. "
            f"Got {type(config).__name__} instead."
        )
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
        problems.append(
            f"The 'checkpoint_dir' parameter of {func} must be a path or None. "
            f"Got {checkpoint_dir!r} instead."
        )
    if max_steps_this_run is not None and (
        isinstance(max_steps_this_run, bool)
        or not isinstance(max_steps_this_run, int)
        or max_steps_this_run < 1
    ):
        problems.append(
            f"The 'max_steps_this_run' parameter of {func} must be an int >= 1 or "
            f"None. Got {max_steps_this_run!r} instead."
        )
    if callback is not None and not callable(callback):
        problems.append(
            f"The 'callback' parameter of {func} must be callable or None. "
            f"Got {callback!r} instead."
        )
    raise_all(problems, func)


def train(
    model: Any,
    task: Any,
    config: Any = None,
    *,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool = True,
    max_steps_this_run: int | None = None,
    callback: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``task`` with AdamW; evaluate, checkpoint and resume.

    Args:
        model: A ``HookedTransformer`` with ``d_vocab >= task.d_vocab`` and
            ``n_ctx >= task.seq_len`` (see :func:`build_task_model`).
        task: The task (:func:`nopelens.get_task`).
        config: Hyperparameters; None uses :func:`default_config` of the task.
        checkpoint_dir: Folder for ``initial.pt``, ``checkpoint.pt``, ``final.pt`` and
            ``history.csv``; None trains without writing anything.
        resume: If the folder already holds ``checkpoint.pt``, continue from it (the model,
            task and trajectory-relevant config must match). False starts over.
        progress: Show a tqdm progress bar (on stderr).
        max_steps_this_run: Stop (cleanly, with a checkpoint) after this many steps in this
            call, even if ``config.steps`` is not reached; a later call resumes.
        callback: Called as ``callback(step)`` after every optimiser step (after that step's
            checkpoint, if any). An exception raised by it aborts training, like a crash; a
            ``KeyboardInterrupt`` (Ctrl-C) first saves a checkpoint of the finished steps.

    Returns:
        A :class:`TrainResult`; the model is left trained, in eval mode.

    Raises:
        ValueError: For invalid arguments, or a checkpoint that is corrupt or from another run.

    Examples:
        >>> from nopelens.training.tasks import get_task
        >>> task = get_task("parity", length=4)
        >>> model = build_task_model(task, n_layers=1, d_model=16, n_heads=2)
        >>> result = train(model, task, TrainConfig(steps=5, eval_every=5), progress=False)
        >>> result.finished, sorted(result.history["split"].unique())
        (True, ['test', 'train', 'train_batch'])
    """
    if config is None and isinstance(task, Task):
        config = default_config(task.name)
    _validate(model, task, config, checkpoint_dir, max_steps_this_run, callback)
    assert isinstance(config, TrainConfig)
    started = time.perf_counter()
    device = torch.device(config.device) if config.device is not None else _model_device(model)
    if _model_device(model) != device:
        model.to(device, print_details=False)
    optimizer = make_optimizer(model, config)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    step = 0
    history: list[list[Any]] = []
    batch_loss = (0.0, 0)  # sum and count of training-batch losses since the last evaluation
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        if resume and (folder / CHECKPOINT).exists():
            state = load_checkpoint(folder / CHECKPOINT)
            _check_resumable(folder / CHECKPOINT, state, model, task, config)
            model.load_state_dict(state["model_state"])
            optimizer.load_state_dict(state["optimizer_state"])
            step, history, batch_loss = state["step"], state["history"], state["batch_loss"]
            logger.info("resuming %s from step %d of %d", task.name, step, config.steps)
            if not (folder / INITIAL).exists():
                logger.warning(
                    "%s is missing: the untrained model cannot be restored", folder / INITIAL
                )
        else:
            for name in (CHECKPOINT, FINAL):
                (folder / name).unlink(missing_ok=True)
            save_model(model, folder / INITIAL)

    eval_sets = _eval_sets(task, config, device)

    def record(at: int) -> dict[str, float]:
        nonlocal batch_loss
        rows, out = [], {}
        for split, batches in eval_sets.items():
            for metric, value in evaluate(model, task, batches).items():
                rows.append([at, split, metric, value])
                out[f"{split}_{metric}"] = value
        if batch_loss[1]:
            rows.append([at, "train_batch", "loss", batch_loss[0] / batch_loss[1]])
        history.extend(rows)  # all of an evaluation's rows, or none
        batch_loss = (0.0, 0)
        logger.info(
            "%s step %d: %s", task.name, at, " ".join(f"{k}={v:.4f}" for k, v in out.items())
        )
        return out

    def eval_due(at: int) -> bool:
        return (at % config.eval_every == 0 or at == config.steps) and not (
            history and history[-1][0] == at
        )

    def checkpoint(at: int) -> None:
        if folder is not None:
            _save_checkpoint(
                folder / CHECKPOINT,
                model=model,
                optimizer=optimizer,
                step=at,
                config=config,
                task=task,
                history=history,
                batch_loss=batch_loss,
            )
            write_table(_history_frame(history), folder / HISTORY)

    if step == 0 and not history:
        record(0)
    stop = (
        config.steps if max_steps_this_run is None else min(config.steps, step + max_steps_this_run)
    )
    from tqdm.auto import tqdm

    bar = tqdm(
        total=config.steps,
        initial=step,
        disable=not progress,
        desc=f"train {task.name}",
        unit="step",
        dynamic_ncols=True,
    )
    model.train()
    # False from the start of optimizer.step() until the step's bookkeeping is done: a Ctrl-C
    # in that window could leave half-updated weights, which must not be checkpointed.
    consistent = True
    # With 2+ CPU threads the embedding gradient (an index_put with accumulation) is summed in a
    # thread-dependent order; PyTorch's deterministic algorithms make training bit-reproducible.
    # Scoped to this call. (On CUDA they would need CUBLAS_WORKSPACE_CONFIG, so they stay off.)
    deterministic = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        while step < stop:
            batch = task.sample(
                config.batch_size, split="train", generator=batch_generator(config.seed, step)
            ).to(device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(config, step)
            loss = answer_loss(model(batch.tokens), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            loss_value = float(loss.detach())
            consistent = False
            optimizer.step()
            step += 1
            batch_loss = (batch_loss[0] + loss_value, batch_loss[1] + 1)
            consistent = True
            bar.update(1)
            if eval_due(step):
                metrics = record(step)
                bar.set_postfix(
                    loss=f"{metrics['train_loss']:.3f}", test_acc=f"{metrics['test_accuracy']:.3f}"
                )
            if step % config.checkpoint_every == 0 or step == stop:
                checkpoint(step)
            if callback is not None:
                callback(step)
    except KeyboardInterrupt:
        if consistent and folder is not None:
            if eval_due(step):
                record(step)  # the evaluation the interrupt cut short; resume will not redo it
            checkpoint(step)
            logger.warning("interrupted at step %d; checkpoint saved, rerun to resume", step)
        raise
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        bar.close()
        model.eval()

    finished = step == config.steps
    if finished and folder is not None:
        save_model(model, folder / FINAL)
        write_table(_history_frame(history), folder / HISTORY)
    last = max(row[0] for row in history)
    final = {
        f"{split}_{metric}": value
        for at, split, metric, value in history
        if at == last and split in ("train", "test")
    }
    return TrainResult(
        history=_history_frame(history),
        final=final,
        step=step,
        finished=finished,
        config=config,
        task=task.spec(),
        seconds=time.perf_counter() - started,
        checkpoint_dir=folder,
    )


def _history_frame(rows: list[list[Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    return frame.astype({"step": "int64", "value": "float64"})


# -- per-task defaults -------------------------------------------------------------------------

#: Recommended model (``build_model`` kwargs besides d_vocab/n_ctx/positional) and training
#: config per task, measured to reach high test accuracy on 2 CPU cores (see the README).
RECOMMENDED: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "previous_token": ({"n_layers": 2, "d_model": 64, "n_heads": 4}, {"steps": 1000}),
    "reverse": ({"n_layers": 2, "d_model": 64, "n_heads": 4}, {"steps": 2000}),
    # NoPE needs the third layer and the longer run (2 layers, 2000 steps: 78% per digit).
    "addition": ({"n_layers": 3, "d_model": 64, "n_heads": 4}, {"steps": 4000, "lr": 2e-3}),
    # Strong weight decay makes the learned-PE control generalise too (0.1: 82% test).
    "modular": (
        {"n_layers": 2, "d_model": 64, "n_heads": 4},
        {"steps": 2500, "lr": 3e-3, "weight_decay": 1.0},
    ),
    "parity": ({"n_layers": 2, "d_model": 64, "n_heads": 4}, {"steps": 3000, "lr": 3e-3}),
    "index_counting": ({"n_layers": 2, "d_model": 64, "n_heads": 4}, {"steps": 1500}),
    "stdlib_chars": ({"n_layers": 2, "d_model": 128, "n_heads": 4}, {"steps": 1000, "lr": 3e-3}),
}


def _task_name(task: Task | str, func: str) -> str:
    name = task.name if isinstance(task, Task) else task
    check_choice(name, "task", tuple(TASKS), func)
    return name


def default_config(task: Task | str, **overrides: Any) -> TrainConfig:
    """The recommended :class:`TrainConfig` for a task (by name or instance), with overrides.

    Examples:
        >>> default_config("parity", steps=10).steps
        10
    """
    name = _task_name(task, "default_config")
    return TrainConfig(**{**RECOMMENDED[name][1], **overrides})


def default_model_kwargs(task: Task | str, **overrides: Any) -> dict[str, Any]:
    """The recommended ``build_model`` kwargs for a task, with ``d_vocab``/``n_ctx`` filled in.

    Examples:
        >>> kwargs = default_model_kwargs("addition", positional="learned")
        >>> kwargs["d_vocab"], kwargs["n_ctx"], kwargs["positional"]
        (13, 13, 'learned')
    """
    name = _task_name(task, "default_model_kwargs")
    instance = task if isinstance(task, Task) else get_task(name)
    return {
        **RECOMMENDED[name][0],
        "d_vocab": instance.d_vocab,
        "n_ctx": instance.seq_len,
        "positional": "none",
        **overrides,
    }


def build_task_model(task: Task | str, **overrides: Any) -> Any:
    """Build the recommended model for a task (NoPE unless ``positional=`` says otherwise).

    Examples:
        >>> model = build_task_model("parity", positional="learned", seed=1)
        >>> model.cfg.d_vocab, model.cfg.n_ctx
        (4, 11)
    """
    return build_model(**default_model_kwargs(task, **overrides))


__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "evaluate",
    "default_config",
    "default_model_kwargs",
    "build_task_model",
    "load_checkpoint",
    "load_initial_and_final",
    "lr_at",
    "make_optimizer",
    "RECOMMENDED",
]
