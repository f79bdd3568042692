"""Checking and shaping what the figure builders are given: frames, matrices and selections.

Every check raises a ``ValueError`` naming the parameter and the figure function, in the sklearn
template ("The 'sites' parameter of theory_figure must be one or more of ... Got ... instead.").
Layers are categories in the order ``embed, 0, 1, ...`` (:func:`layer_order`).

Figures stay light: matrices are sent as rounded ``float32`` arrays (:func:`light`; plotly stores
them as packed binary, about 5 characters per value).

Examples:
    >>> layer_order(["1", "embed", 10, "0", 2])
    ['embed', '0', '1', '2', '10']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "as_numpy",
    "light",
    "layer_key",
    "layer_order",
    "check_frame",
    "select",
    "choose_sites",
]


def as_numpy(value: Any, name: str, func: str) -> np.ndarray:
    """A float64 numpy copy of a tensor, array or nested list."""
    if hasattr(value, "detach"):
        value = value.detach().to("cpu").double().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"The {name!r} parameter of {func} must be a tensor or array of numbers. "
            f"Got {type(value).__name__} instead."
        ) from None


def light(array: Any, decimals: int = 4) -> np.ndarray:
    """Round and cast to float32: what the figure stores (packed binary in the HTML)."""
    return np.round(np.asarray(array, dtype=np.float64), decimals).astype(np.float32)


def layer_key(label: Any) -> tuple[int, float, str]:
    """Sort key of a layer label: ``embed`` first, then blocks by number, then other labels."""
    text = str(label)
    if text == "embed":
        return (0, -1.0, text)
    try:
        return (1, float(text), text)
    except ValueError:
        return (2, 0.0, text)


def layer_order(values: Any) -> list[str]:
    """Distinct layer labels as strings, ``embed`` first, then blocks in numeric order."""
    return sorted({str(v) for v in values}, key=layer_key)


def check_frame(frame: Any, name: str, func: str, required: Sequence[str]) -> pd.DataFrame:
    """``frame`` itself, once checked to be a non-empty DataFrame with the ``required`` columns."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(
            f"The {name!r} parameter of {func} must be a pandas DataFrame. "
            f"Got {type(frame).__name__} instead."
        )
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"The {name!r} parameter of {func} must have the columns {list(required)}; "
            f"missing {missing} (it has {list(frame.columns)})."
        )
    if frame.empty:
        raise ValueError(f"The {name!r} parameter of {func} must be a non-empty DataFrame.")
    return frame


def select(
    frame: pd.DataFrame, column: str, values: Any, name: str, func: str
) -> tuple[pd.DataFrame, list[Any]]:
    """Rows whose ``column`` is in ``values`` (all distinct values, in order, when None)."""
    present = list(dict.fromkeys(frame[column].tolist()))
    if values is None:
        return frame, present
    if isinstance(values, (str, int)):
        values = [values]
    values = list(values)
    unknown = [v for v in values if v not in present]
    if unknown or not values:
        raise ValueError(
            f"The {name!r} parameter of {func} must be one or more of "
            f"{', '.join(repr(v) for v in present)}. Got {values!r} instead."
        )
    return frame[frame[column].isin(values)], values


def choose_sites(sites: Any, available: list[str], func: str) -> list[str]:
    """The requested sites (all when ``None``), each checked against ``available``."""
    if sites is None:
        return list(available)
    chosen = [sites] if isinstance(sites, str) else list(sites)
    if not chosen or any(s not in available for s in chosen):
        raise ValueError(
            f"The 'sites' parameter of {func} must be one or more of "
            f"{', '.join(repr(s) for s in available)}. Got {sites!r} instead."
        )
    return chosen
