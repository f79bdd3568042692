"""The training configuration and what follows from it alone: learning rate, data order, optimiser.

:class:`TrainConfig` holds the hyperparameters of :func:`~nopelens.training.train`. From it alone
follow the learning rate of every step (:func:`lr_at`: linear warm-up, then cosine decay or a
constant), the data order (:func:`batch_generator`: the batch of step ``s`` comes from a private
generator seeded from ``(seed, s)``, so a resumed run sees the batches of an uninterrupted one)
and the AdamW parameter groups (:func:`make_optimizer`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any

import torch

from nopelens.validation import InvalidParameterError, raise_all


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


def make_optimizer(model: Any, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the ``W_*`` matrices, none on biases and norms.

    Parameters that do not require gradients (a frozen zero ``W_pos``) are left out entirely.
    The multi-tensor (``foreach``) implementation is used on every device: on the CPU it does
    the per-parameter arithmetic bit for bit, without the per-tensor Python loop.
    """
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if name.rsplit(".", 1)[-1].startswith("W_") else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, config.beta2), foreach=True)
