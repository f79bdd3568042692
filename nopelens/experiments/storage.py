"""Part results on disk without pickles: plain data, tidy tables and tensors, checksummed.

A :class:`~nopelens.experiments.pipeline.PartResult` holds headline numbers, tidy frames and the
report objects its figures are drawn from. :func:`save_part_result` writes it as one file of plain
data and tensors through :func:`nopelens.files.save_sealed` (a SHA-256 of the content inside the
file), and :func:`load_part_result` reads it back with :func:`nopelens.files.load_sealed`, which
loads with ``torch.load(weights_only=True)``: only dicts, lists, strings, numbers and tensors can
come out of the file, never code. A modified or corrupted file is refused.

The encoding (:func:`encode` / :func:`decode`) is exact: a frame keeps its column order, dtypes,
index and ``attrs`` (numeric columns as tensors, other columns as lists of plain values), and the
report objects are rebuilt from an allowlist of nopelens dataclasses (:data:`STORABLE`) by
calling their constructor with their stored fields. Anything else is refused when writing.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nopelens.experiments.pipeline import PartResult
from nopelens.files import DIGEST_KEY, load_sealed, save_sealed

#: The file of a part's result (``parts/<part>/result.sealed.pt``).
RESULT_FILE = "result.sealed.pt"
#: What older nopelens versions wrote (a pickle): never loaded, rebuilt instead.
LEGACY_RESULT_FILE = "result.pt"
_FORMAT = "nopelens-part-result"
_FORMAT_VERSION = 1
_KIND = "__kind__"

#: Report classes a part result may hold: encoded name -> (module, class name).
STORABLE: dict[str, tuple[str, str]] = {
    "PartResult": ("nopelens.experiments.pipeline", "PartResult"),
    "AnalysisReport": ("nopelens.analyzer.analysis", "AnalysisReport"),
    "FirstLayerTheory": ("nopelens.theory.first_layer", "FirstLayerTheory"),
    "SiteTheory": ("nopelens.theory.first_layer", "SiteTheory"),
    "GramParameters": ("nopelens.theory.gram", "GramParameters"),
    "ProbeReport": ("nopelens.probes.report", "ProbeReport"),
}


def _storable_name(obj: Any) -> str | None:
    cls = type(obj)
    for name, (module, qualname) in STORABLE.items():
        if cls.__module__ == module and cls.__qualname__ == qualname:
            return name
    return None


def _encode_column(series: pd.Series) -> dict[str, Any]:
    import torch

    dtype = series.dtype
    out: dict[str, Any] = {"dtype": str(dtype)}
    if isinstance(dtype, np.dtype) and dtype.kind in "biufc":
        values = series.to_numpy()
        try:
            out["tensor"] = torch.from_numpy(np.array(values, copy=True, order="C"))
            return out
        except TypeError:  # a numpy dtype torch does not have (uint32, ...): plain values
            pass
    out["values"] = [encode(v) for v in series.tolist()]
    return out


def _decode_column(data: dict[str, Any]) -> pd.Series:
    if "tensor" in data:
        return pd.Series(data["tensor"].numpy().copy())
    values = [decode(v) for v in data["values"]]
    dtype = data["dtype"]
    if dtype == "object":
        return pd.Series(values, dtype=object)
    return pd.Series(values).astype(dtype)


def _encode_index(index: pd.Index) -> dict[str, Any]:
    if isinstance(index, pd.RangeIndex):
        return {"range": [index.start, index.stop, index.step], "name": encode(index.name)}
    if isinstance(index, pd.MultiIndex):
        raise TypeError("a frame with a MultiIndex cannot be stored; reset_index() it first")
    return {"column": _encode_column(index.to_series()), "name": encode(index.name)}


def _decode_index(data: dict[str, Any]) -> pd.Index:
    if "range" in data:
        start, stop, step = data["range"]
        return pd.RangeIndex(start, stop, step, name=decode(data["name"]))
    return pd.Index(_decode_column(data["column"]), name=decode(data["name"]))


def _encode_frame(frame: pd.DataFrame) -> dict[str, Any]:
    return {
        _KIND: "frame",
        "columns": [encode(c) for c in frame.columns],
        "columns_dtype": str(frame.columns.dtype),
        "data": [_encode_column(frame.iloc[:, i]) for i in range(frame.shape[1])],
        "index": _encode_index(frame.index),
        "attrs": encode(dict(frame.attrs)),
    }


def _decode_frame(data: dict[str, Any]) -> pd.DataFrame:
    index = _decode_index(data["index"])
    columns = [_decode_column(c).set_axis(index) for c in data["data"]]
    frame = pd.concat(columns, axis=1) if columns else pd.DataFrame(index=index)
    frame.columns = pd.Index([decode(c) for c in data["columns"]], dtype=data["columns_dtype"])
    frame.attrs.update(decode(data["attrs"]))
    return frame


def encode(obj: Any) -> Any:
    """``obj`` as nested dicts, lists, strings, numbers, None and tensors only.

    These are the types that ``torch.load(weights_only=True)`` reads back. Plain dicts with
    string keys stay dicts; tuples, dicts with other keys, numpy arrays, frames
    and the dataclasses of :data:`STORABLE` become tagged dicts.

    Raises:
        TypeError: For any other type (a lambda, a model, an arbitrary object).

    Examples:
        >>> decode(encode({"a": (1, 2.5), 3: None}))
        {'a': (1, 2.5), 3: None}
    """
    import torch

    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biufc":
            return {_KIND: "array_list", "values": encode(obj.tolist()), "dtype": str(obj.dtype)}
        return {_KIND: "ndarray", "tensor": torch.from_numpy(np.array(obj, copy=True, order="C"))}
    if isinstance(obj, pd.DataFrame):
        return _encode_frame(obj)
    if isinstance(obj, list):
        return [encode(v) for v in obj]
    if isinstance(obj, tuple):
        return {_KIND: "tuple", "items": [encode(v) for v in obj]}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and _KIND not in obj:
            return {k: encode(v) for k, v in obj.items()}
        return {_KIND: "dict", "items": [[encode(k), encode(v)] for k, v in obj.items()]}
    name = _storable_name(obj)
    if name is not None and dataclasses.is_dataclass(obj):
        fields = {f.name: encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return {_KIND: "dataclass", "type": name, "fields": fields}
    raise TypeError(
        f"A part result cannot hold a {type(obj).__module__}.{type(obj).__qualname__}: only "
        "plain data, tensors, numpy arrays, DataFrames and the report classes "
        f"{', '.join(STORABLE)} are stored."
    )


def decode(obj: Any) -> Any:
    """The inverse of :func:`encode`.

    Raises:
        ValueError: For a tag or report class that is not known (a file from elsewhere).
    """
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    kind = obj.get(_KIND)
    if kind is None:
        return {k: decode(v) for k, v in obj.items()}
    if kind == "tuple":
        return tuple(decode(v) for v in obj["items"])
    if kind == "dict":
        return {decode(k): decode(v) for k, v in obj["items"]}
    if kind == "frame":
        return _decode_frame(obj)
    if kind == "ndarray":
        return obj["tensor"].numpy().copy()
    if kind == "array_list":
        return np.array(decode(obj["values"]), dtype=obj["dtype"])
    if kind == "dataclass" and obj.get("type") in STORABLE:
        module, qualname = STORABLE[obj["type"]]
        cls = getattr(importlib.import_module(module), qualname)
        fields = {k: decode(v) for k, v in obj["fields"].items()}
        init = {f.name for f in dataclasses.fields(cls) if f.init}
        instance = cls(**{k: v for k, v in fields.items() if k in init})
        for key, value in fields.items():
            if key not in init:
                object.__setattr__(instance, key, value)
        return instance
    raise ValueError(f"unknown stored object {kind!r} ({obj.get('type')!r})")


def save_part_result(result: PartResult, path: str | os.PathLike[str]) -> Path:
    """Write ``result`` to ``path`` atomically, as plain data and tensors with a checksum.

    Raises:
        TypeError: If the result holds an object that cannot be stored without a pickle.
    """
    payload = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "result": encode(result),
    }
    return save_sealed(payload, path)


def load_part_result(path: str | os.PathLike[str]) -> PartResult:
    """Read a part result written by :func:`save_part_result`; nothing in it is unpickled.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file is not a nopelens part result, is corrupt, or does not match its
            checksum (modified after it was written).
    """
    payload = load_sealed(path, what="nopelens part result")
    if payload.get("format") != _FORMAT or DIGEST_KEY not in payload:
        raise ValueError(f"{str(path)!r} is not a nopelens part result (no format or checksum).")
    if payload.get("format_version") != _FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has part-result format {payload.get('format_version')!r}; this "
            f"nopelens reads format {_FORMAT_VERSION}."
        )
    try:
        result = decode(payload["result"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(
            f"{str(path)!r} is not a readable part result ({type(err).__name__}: {err})."
        ) from None
    if not isinstance(result, PartResult):
        raise ValueError(f"{str(path)!r} does not hold a part result.")
    return result
