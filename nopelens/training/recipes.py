"""Per-task recipes: the recommended model and training config for every task.

:data:`RECOMMENDED` holds, per task, the ``build_model`` keyword arguments (besides ``d_vocab``,
``n_ctx`` and ``positional``, which follow from the task) and the :class:`TrainConfig` overrides
that were measured to reach high test accuracy on 2 CPU cores (see the README).
"""

from __future__ import annotations

from typing import Any

from nopelens.models import HookedModel, build_model
from nopelens.training.config import TrainConfig
from nopelens.training.registry import TASKS, get_task
from nopelens.training.task import Task
from nopelens.validation import check_choice

#: Task name -> (recommended ``build_model`` kwargs, :class:`TrainConfig` overrides).
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


def build_task_model(task: Task | str, **overrides: Any) -> HookedModel:
    """Build the recommended model for a task (NoPE unless ``positional=`` says otherwise).

    Args:
        task: The task, or its name.
        **overrides: ``build_model`` keyword arguments that replace the recommended ones
            (:func:`default_model_kwargs`), such as ``positional``, ``seed`` or ``device``.

    Returns:
        A freshly initialised ``HookedTransformer`` from :func:`nopelens.models.build_model`, with
        ``d_vocab`` and ``n_ctx`` fitted to the task.

    Examples:
        >>> model = build_task_model("parity", positional="learned", seed=1)
        >>> model.cfg.d_vocab, model.cfg.n_ctx
        (4, 11)
    """
    return build_model(**default_model_kwargs(task, **overrides))
