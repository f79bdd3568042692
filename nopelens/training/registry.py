"""The task registry: every task by name, and building a task from its name or its spec.

Examples:
    >>> task = get_task("addition")
    >>> task.d_vocab, task.seq_len
    (13, 13)
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from nopelens.training.synthetic import (
    Addition,
    IndexCounting,
    Modular,
    Parity,
    PreviousToken,
    Reverse,
)
from nopelens.training.task import Task
from nopelens.training.text import StdlibChars
from nopelens.validation import InvalidParameterError

#: Task name -> task class.
TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (PreviousToken, Reverse, Addition, Modular, Parity, IndexCounting, StdlibChars)
}
#: The synthetic tasks (every task but the character language model).
SYNTHETIC_TASKS: tuple[str, ...] = tuple(name for name in TASKS if name != "stdlib_chars")


def get_task(name: str, **kwargs: Any) -> Task:
    """Build a task by name.

    Args:
        name: One of :data:`TASKS`: ``previous_token``, ``reverse``, ``addition``, ``modular``,
            ``parity``, ``index_counting``, ``stdlib_chars``.
        **kwargs: The task's parameters (its dataclass fields), validated.

    Returns:
        The task.

    Raises:
        ValueError: For an unknown task name or parameter, or an invalid value.

    Examples:
        >>> get_task("modular", p=11, n_terms=2)
        Modular(test_fraction=0.2, p=11, n_terms=2, alternating=False)
        >>> get_task("sum")
        Traceback (most recent call last):
        ...
        nopelens.validation.InvalidParameterError: The 'name' parameter of get_task must be ...
    """
    if not isinstance(name, str) or name not in TASKS:
        close = difflib.get_close_matches(str(name), list(TASKS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InvalidParameterError(
            f"The 'name' parameter of get_task must be one of "
            f"{', '.join(repr(t) for t in TASKS)}. Got {name!r} instead.{hint}"
        )
    cls = TASKS[name]
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in kwargs if k not in fields]
    if unknown:
        raise InvalidParameterError(
            f"get_task got unknown parameter(s) {', '.join(repr(k) for k in unknown)} for task "
            f"{name!r}; its parameters are {', '.join(repr(f) for f in fields)}."
        )
    return cls(**kwargs)


def task_from_spec(spec: dict[str, Any]) -> Task:
    """Rebuild a task from :meth:`Task.spec` (as stored in training checkpoints).

    Examples:
        >>> task = get_task("reverse", length=4)
        >>> task_from_spec(task.spec()) == task
        True
    """
    spec = dict(spec)
    return get_task(spec.pop("name", None), **spec)
