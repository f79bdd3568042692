"""What :func:`~nopelens.training.train` returns: the history, the final metrics, the files."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd

from nopelens.training.checkpoint import CHECKPOINT, FINAL, INITIAL
from nopelens.training.config import TrainConfig


@dataclasses.dataclass(frozen=True, repr=False)
class TrainResult:
    """What :func:`~nopelens.training.train` returns.

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
        task: The task's :meth:`~nopelens.training.Task.spec`.
        seconds: Wall time of this call (not of earlier, resumed-from runs).
        checkpoint_dir: The checkpoint folder, or None.

    Printing one shows the task, the steps, the headline metrics and the history's size, never
    the frame itself.
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

    def __repr__(self) -> str:
        headline = ("test_accuracy", "test_exact_match", "test_loss", "train_loss")
        metrics = "".join(f", {k}={self.final[k]:.4g}" for k in headline if k in self.final)
        folder = "" if self.checkpoint_dir is None else f", checkpoint_dir='{self.checkpoint_dir}'"
        return (
            f"TrainResult(task={self.task.get('name')!r}, step={self.step}/{self.config.steps}, "
            f"finished={self.finished}{metrics}, history={len(self.history)} rows, "
            f"seconds={self.seconds:.1f}{folder})"
        )
