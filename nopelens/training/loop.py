"""Training models on the tasks: AdamW on the answer positions, evaluation, exact resume.

:func:`train` runs a plain PyTorch loop on a ``HookedTransformer`` (built by
:func:`nopelens.models.build_model`) and a :class:`~nopelens.training.Task`:

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
  thread-dependent order, and two runs with the same seed drift apart. Their filling of every
  new tensor with NaN (a debugging aid that costs about a tenth of a small model's step and
  changes no result) is switched off meanwhile. On CUDA they stay off (they would need
  ``CUBLAS_WORKSPACE_CONFIG``), so GPU runs are not bit-reproducible;
* the optimiser and the gradient clipping use PyTorch's multi-tensor (``foreach``) kernels: the
  same arithmetic as the per-parameter loop, bit for bit, without its per-tensor Python cost.

With a ``checkpoint_dir``, the folder holds ``initial.pt``, ``checkpoint.pt``, ``final.pt`` and
``history.csv`` (see :mod:`nopelens.training.checkpoint`). Calling :func:`train` again on the
same folder continues from ``checkpoint.pt`` and ends with the same weights, bit for bit, as a run
that was never interrupted, even one killed with ``kill -9``. One process at a time trains into a
folder: a second one is refused with a message naming the first
(:func:`nopelens.files.output_lock`), and temporary files a killed run left are removed.

TransformerLens' own ``transformer_lens.train.train`` is not used: it trains the next-token loss
over whole sequences (our tasks score only the answer positions), has no evaluation split, and
cannot resume (it saves weights only, not the optimiser or the data position).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nopelens.files import clean_temp_files, output_lock, write_table
from nopelens.models import HookedModel, save_model
from nopelens.training.checkpoint import (
    CHECKPOINT,
    FINAL,
    HISTORY,
    INITIAL,
    _check_resumable,
    _history_frame,
    _save_checkpoint,
    load_checkpoint,
)
from nopelens.training.config import (
    TrainConfig,
    batch_generator,
    derived_seed,
    lr_at,
    make_optimizer,
)
from nopelens.training.recipes import default_config
from nopelens.training.result import TrainResult
from nopelens.training.task import Batch, Task, answer_accuracy, answer_loss
from nopelens.validation import raise_all

logger = logging.getLogger(__name__)

#: Metrics recorded at every evaluation, for the "train" and "test" splits.
METRICS: tuple[str, ...] = ("loss", "accuracy", "exact_match")


# -- evaluation ------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: HookedModel, task: Task, batches: list[Batch]) -> dict[str, float]:
    """Mean loss, per-token accuracy and exact match of ``model`` over ``batches``.

    Batches must all have the same size (the means are then per answer token, per example).
    The model is run in eval mode and left in the mode it was in.

    Returns:
        ``{"loss": ..., "accuracy": ..., "exact_match": ...}`` (:data:`METRICS`).
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


def _eval_sets(task: Task, config: TrainConfig, device: torch.device) -> dict[str, list[Batch]]:
    """The fixed evaluation sets: ``eval_batches`` batches per split, drawn from the seed."""
    sets = {}
    for split in ("train", "test"):
        generator = torch.Generator().manual_seed(derived_seed(config.seed, "eval", split))
        sets[split] = [
            task.sample(config.batch_size, split=split, generator=generator).to(device)
            for _ in range(config.eval_batches)
        ]
    return sets


# -- the loop --------------------------------------------------------------------------------------


def _model_device(model: HookedModel) -> torch.device:
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


def _deterministic_on_cpu(device: torch.device) -> Callable[[], None]:
    """On the CPU, deterministic algorithms on and NaN-filling off; returns what restores both."""
    from torch.utils import deterministic as module

    deterministic: Any = module  # its flag is a module property that type checkers do not see
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        deterministic.fill_uninitialized_memory,
    )
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
        deterministic.fill_uninitialized_memory = False

    def restore() -> None:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        deterministic.fill_uninitialized_memory = before[2]

    return restore


@dataclasses.dataclass(eq=False)
class _Run:
    """The state that one call of :func:`train` advances, and the steps that advance it.

    :meth:`prepare` puts the model on its device, builds the optimiser, resumes or starts the
    checkpoint folder and draws the evaluation sets; :meth:`fit` takes the optimiser steps
    (:meth:`train_step`), evaluating (:meth:`record`) and checkpointing (:meth:`checkpoint`) when
    due; :meth:`finish` saves the trained model and returns the :class:`TrainResult`.
    """

    model: HookedModel
    task: Task
    config: TrainConfig
    device: torch.device
    optimizer: torch.optim.Optimizer
    folder: Path | None
    step: int = 0
    """Optimiser steps completed (over every call on the same folder)."""
    history: list[list[Any]] = dataclasses.field(default_factory=list)
    """History rows ``[step, split, metric, value]``."""
    batch_loss: tuple[float, int] = (0.0, 0)
    """Sum and count of the training-batch losses since the last evaluation."""
    eval_sets: dict[str, list[Batch]] = dataclasses.field(default_factory=dict)
    """The fixed evaluation batches of each split."""
    consistent: bool = True
    """False from the start of ``optimizer.step()`` until the step's bookkeeping is done: a
    Ctrl-C in that window could leave half-updated weights, which must not be checkpointed."""

    @classmethod
    def prepare(
        cls,
        model: HookedModel,
        task: Task,
        config: TrainConfig,
        checkpoint_dir: str | os.PathLike[str] | None,
        *,
        resume: bool,
    ) -> _Run:
        """Move the model, build the optimiser, open the folder, draw the evaluation sets."""
        device = torch.device(config.device) if config.device is not None else _model_device(model)
        if _model_device(model) != device:
            model.to(device, print_details=False)
        folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
        run = cls(model, task, config, device, make_optimizer(model, config), folder)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            if resume and (folder / CHECKPOINT).exists():
                run.resume_from_checkpoint()
            else:
                run.start_folder()
        run.eval_sets = _eval_sets(task, config, device)
        return run

    def resume_from_checkpoint(self) -> None:
        """Load model, optimiser, step and history from ``checkpoint.pt``, if it is this run's."""
        assert self.folder is not None
        state = load_checkpoint(self.folder / CHECKPOINT)
        _check_resumable(self.folder / CHECKPOINT, state, self.model, self.task, self.config)
        self.model.load_state_dict(state["model_state"])
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.step, self.history = state["step"], state["history"]
        self.batch_loss = state["batch_loss"]
        logger.info("resuming %s from step %d of %d", self.task.name, self.step, self.config.steps)
        if not (self.folder / INITIAL).exists():
            logger.warning(
                "%s is missing: the untrained model cannot be restored", self.folder / INITIAL
            )

    def start_folder(self) -> None:
        """Remove an earlier run's checkpoint and final model; save the untrained model."""
        assert self.folder is not None
        for name in (CHECKPOINT, FINAL):
            (self.folder / name).unlink(missing_ok=True)
        save_model(self.model, self.folder / INITIAL)

    def record(self) -> dict[str, float]:
        """Evaluate on both splits at the current step; append every row to the history at once.

        Returns:
            The metrics, keyed ``"{split}_{metric}"``.
        """
        rows, out = [], {}
        for split, batches in self.eval_sets.items():
            for metric, value in evaluate(self.model, self.task, batches).items():
                rows.append([self.step, split, metric, value])
                out[f"{split}_{metric}"] = value
        if self.batch_loss[1]:
            rows.append([self.step, "train_batch", "loss", self.batch_loss[0] / self.batch_loss[1]])
        self.history.extend(rows)  # all of an evaluation's rows, or none
        self.batch_loss = (0.0, 0)
        logger.info(
            "%s step %d: %s",
            self.task.name,
            self.step,
            " ".join(f"{k}={v:.4f}" for k, v in out.items()),
        )
        return out

    def eval_due(self) -> bool:
        """Whether the current step is an evaluation step that has not been evaluated yet."""
        at = self.step
        return (at % self.config.eval_every == 0 or at == self.config.steps) and not (
            self.history and self.history[-1][0] == at
        )

    def checkpoint(self) -> None:
        """Write ``checkpoint.pt`` and ``history.csv`` at the current step, if there is a folder."""
        if self.folder is not None:
            _save_checkpoint(
                self.folder,
                model=self.model,
                optimizer=self.optimizer,
                step=self.step,
                config=self.config,
                task=self.task,
                history=self.history,
                batch_loss=self.batch_loss,
            )

    def train_step(self) -> None:
        """One AdamW update on the training batch of the current step."""
        config = self.config
        batch = self.task.sample(
            config.batch_size, split="train", generator=batch_generator(config.seed, self.step)
        ).to(self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(config, self.step)
        loss = answer_loss(self.model(batch.tokens), batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), config.grad_clip, foreach=self.device.type == "cpu"
            )
        loss_value = float(loss.detach())
        self.consistent = False
        self.optimizer.step()
        self.step += 1
        self.batch_loss = (self.batch_loss[0] + loss_value, self.batch_loss[1] + 1)
        self.consistent = True

    def fit(self, stop: int, *, progress: bool, callback: Callable[[int], None] | None) -> None:
        """Take optimiser steps until ``stop``, evaluating and checkpointing when due.

        With 2+ CPU threads the embedding gradient (an index_put with accumulation) is summed in
        a thread-dependent order, so PyTorch's deterministic algorithms are on for the duration
        (on the CPU only: on CUDA they would need ``CUBLAS_WORKSPACE_CONFIG``), without their
        NaN-filling of new tensors, then both are restored. A Ctrl-C saves a checkpoint of the
        finished steps first. The model is left in eval mode.
        """
        from nopelens.progress import progress_bar

        bar = progress_bar(
            total=self.config.steps,
            initial=self.step,
            quiet=not progress,
            desc=f"train {self.task.name}",
            unit="step",
        )
        self.model.train()
        restore = _deterministic_on_cpu(self.device)
        try:
            while self.step < stop:
                self.train_step()
                bar.update(1)
                if self.eval_due():
                    metrics = self.record()
                    bar.set_postfix(
                        loss=f"{metrics['train_loss']:.3f}",
                        test_acc=f"{metrics['test_accuracy']:.3f}",
                    )
                if self.step % self.config.checkpoint_every == 0 or self.step == stop:
                    self.checkpoint()
                if callback is not None:
                    callback(self.step)
        except KeyboardInterrupt:
            self.save_interrupted()
            raise
        finally:
            restore()
            bar.close()
            self.model.eval()

    def save_interrupted(self) -> None:
        """After a Ctrl-C: finish a cut-short evaluation and checkpoint, if the state is whole."""
        if self.consistent and self.folder is not None:
            if self.eval_due():
                self.record()  # the evaluation the interrupt cut short; resume will not redo it
            self.checkpoint()
            logger.warning("interrupted at step %d; checkpoint saved, rerun to resume", self.step)

    def finish(self, started: float) -> TrainResult:
        """Save the trained model if the run is complete; the result, timed from ``started``."""
        finished = self.step == self.config.steps
        if finished and self.folder is not None:
            save_model(self.model, self.folder / FINAL)
            write_table(_history_frame(self.history), self.folder / HISTORY)
        last = max(row[0] for row in self.history)
        final = {
            f"{split}_{metric}": value
            for at, split, metric, value in self.history
            if at == last and split in ("train", "test")
        }
        return TrainResult(
            history=_history_frame(self.history),
            final=final,
            step=self.step,
            finished=finished,
            config=self.config,
            task=self.task.spec(),
            seconds=time.perf_counter() - started,
            checkpoint_dir=self.folder,
        )


def train(
    model: HookedModel,
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
            ``n_ctx >= task.seq_len`` (see :func:`~nopelens.training.build_task_model`).
        task: The task (:func:`nopelens.get_task`).
        config: Hyperparameters; None uses :func:`~nopelens.training.default_config` of the task.
        checkpoint_dir: Folder for ``initial.pt``, ``checkpoint.pt``, ``final.pt`` and
            ``history.csv``; None trains without writing anything.
        resume: If the folder already holds ``checkpoint.pt``, continue from it (the model,
            task and trajectory-relevant config must match). False starts over.
        progress: Show a progress bar on stderr (:func:`nopelens.progress.progress_bar`).
        max_steps_this_run: Stop (cleanly, with a checkpoint) after this many steps in this
            call, even if ``config.steps`` is not reached; a later call resumes.
        callback: Called as ``callback(step)`` after every optimiser step (after that step's
            checkpoint, if any). An exception raised by it aborts training, like a crash; a
            ``KeyboardInterrupt`` (Ctrl-C) first saves a checkpoint of the finished steps.

    Returns:
        A :class:`~nopelens.training.TrainResult`; the model is left trained, in eval mode.

    Raises:
        ValueError: For invalid arguments, or a checkpoint that is corrupt or from another run.
        LockHeldError: If another process is training into ``checkpoint_dir``
            (:func:`nopelens.files.output_lock`).

    Examples:
        >>> from nopelens.training import build_task_model, get_task
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
    with contextlib.ExitStack() as stack:
        if checkpoint_dir is not None:  # one writer per folder; a killed writer's files go
            stack.enter_context(output_lock(checkpoint_dir, "training folder"))
            clean_temp_files(checkpoint_dir, recursive=False)
        run = _Run.prepare(model, task, config, checkpoint_dir, resume=resume)
        if run.step == 0 and not run.history:
            run.record()
        stop = (
            config.steps
            if max_steps_this_run is None
            else min(config.steps, run.step + max_steps_this_run)
        )
        run.fit(stop, progress=progress, callback=callback)
        return run.finish(started)
