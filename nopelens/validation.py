"""Argument validation with uniform, actionable error messages.

Every public entry point validates its arguments here before doing any work, so that a bad value
fails fast with a message naming the argument, the allowed values and the value received
(the scikit-learn template), instead of a deep traceback from inside TransformerLens or torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


class InvalidParameterError(ValueError, TypeError):
    """Raised for a bad argument: both a ValueError and a TypeError (as in scikit-learn).

    Catch it as either; a wrong type and a wrong value get the same treatment and the same
    message template.
    """


class NopelensError(Exception):
    """An expected failure that is not a bad argument: a lock held, a run interrupted.

    The command line prints it as one line (exit code 2), like an :class:`InvalidParameterError`.
    """


class LockHeldError(NopelensError):
    """Another live process holds the output folder; the message names it."""


def _fmt(value: Any) -> str:
    return repr(value)


def check_choice(value: Any, name: str, allowed: Iterable[Any], func: str) -> Any:
    """Check that ``value`` is one of ``allowed``.

    Args:
        value: The value received.
        name: The argument name, used in the message.
        allowed: The allowed values.
        func: The public function that received the argument.

    Returns:
        ``value`` unchanged.

    Raises:
        InvalidParameterError: If ``value`` is not allowed.

    Examples:
        >>> check_choice("none", "positional", ("none", "learned"), "build_model")
        'none'
    """
    allowed = tuple(allowed)
    try:
        ok = value in allowed
    except TypeError:  # unhashable or incomparable
        ok = False
    if not ok:
        raise InvalidParameterError(
            f"The {name!r} parameter of {func} must be one of "
            f"{', '.join(_fmt(a) for a in allowed)}. Got {_fmt(value)} instead."
        )
    return value


def check_int(
    value: Any,
    name: str,
    func: str,
    *,
    min: int | None = None,  # noqa: A002 - mirrors the message
    max: int | None = None,  # noqa: A002
) -> int:
    """Check that ``value`` is an int (not a bool) within ``[min, max]``.

    Examples:
        >>> check_int(3, "n_layers", "build_model", min=1)
        3
    """
    bounds = _bounds_text(min, max)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameterError(
            f"The {name!r} parameter of {func} must be an int{bounds}. Got {_fmt(value)} instead."
        )
    if (min is not None and value < min) or (max is not None and value > max):
        raise InvalidParameterError(
            f"The {name!r} parameter of {func} must be an int{bounds}. Got {_fmt(value)} instead."
        )
    return value


def check_float(
    value: Any,
    name: str,
    func: str,
    *,
    min: float | None = None,  # noqa: A002
    max: float | None = None,  # noqa: A002
    min_inclusive: bool = True,
) -> float:
    """Check that ``value`` is a finite real number within bounds.

    Examples:
        >>> check_float(0.5, "confidence", "analyze", min=0.0, max=1.0)
        0.5
    """
    op = ">=" if min_inclusive else ">"
    parts = []
    if min is not None:
        parts.append(f"{op} {min}")
    if max is not None:
        parts.append(f"<= {max}")
    bounds = (" " + " and ".join(parts)) if parts else ""
    message = (
        f"The {name!r} parameter of {func} must be a finite float{bounds}. "
        f"Got {_fmt(value)} instead."
    )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidParameterError(message)
    value = float(value)
    if not math.isfinite(value):
        raise InvalidParameterError(message)
    if min is not None and (value < min if min_inclusive else value <= min):
        raise InvalidParameterError(message)
    if max is not None and value > max:
        raise InvalidParameterError(message)
    return value


def check_sequence_of_choices(
    values: Any, name: str, allowed: Sequence[Any], func: str
) -> tuple[Any, ...]:
    """Check a non-empty sequence whose items are each in ``allowed``; a single item is promoted.

    Examples:
        >>> check_sequence_of_choices("a", "sites", ("a", "b"), "f")
        ('a',)
    """
    if isinstance(values, (str, int)):
        values = (values,)
    try:
        values = tuple(values)
    except TypeError:
        raise InvalidParameterError(
            f"The {name!r} parameter of {func} must be a non-empty sequence of "
            f"{', '.join(_fmt(a) for a in allowed)}. Got {_fmt(values)} instead."
        ) from None
    if not values:
        raise InvalidParameterError(
            f"The {name!r} parameter of {func} must be a non-empty sequence of "
            f"{', '.join(_fmt(a) for a in allowed)}. Got an empty sequence instead."
        )
    for item in values:
        check_choice(item, name, allowed, func)
    return values


def raise_all(problems: list[str], func: str) -> None:
    """Raise one ValueError that lists every problem found, if there are any.

    Examples:
        >>> raise_all([], "build_model")
    """
    if problems:
        if len(problems) == 1:
            raise InvalidParameterError(problems[0])
        raise InvalidParameterError(
            f"{func} received {len(problems)} invalid arguments:\n- " + "\n- ".join(problems)
        )


def _bounds_text(min: int | None, max: int | None) -> str:  # noqa: A002
    if min is not None and max is not None:
        return f" in [{min}, {max}]"
    if min is not None:
        return f" >= {min}"
    if max is not None:
        return f" <= {max}"
    return ""
