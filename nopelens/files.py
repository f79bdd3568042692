"""Atomic file output: nothing half-written survives an interruption.

Every writer goes through :func:`atomic_write_bytes`: the data goes to a temporary file in the
destination folder, is flushed and fsynced, and is then renamed over the destination
(``os.replace`` is atomic on POSIX and Windows). A reader sees the old file or the new file,
never a torn one.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating parent folders.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.bin"
        >>> atomic_write_bytes(p, b"abc").read_bytes()
        b'abc'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:  # mkstemp creates 0600 files: keep an existing file's mode, else rw-r--r--
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, tuples, paths and NaN to plain JSON values.

    Non-finite floats become ``None`` (JSON has no NaN).

    Examples:
        >>> to_jsonable({"a": (1, float("nan"))})
        {'a': [1, None]}
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return to_jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes, int)):
        return to_jsonable(obj.item())
    return obj


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON with sorted keys, atomically (NaN written as null)."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def write_table(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a DataFrame as CSV or JSON (records) according to the suffix, atomically.

    Raises:
        ValueError: If the suffix is neither ``.csv`` nor ``.json``.
    """
    path = Path(path)
    if path.suffix == ".csv":
        return atomic_write_text(path, df.to_csv(index=False))
    if path.suffix == ".json":
        return write_json(path, df.to_dict(orient="records"))
    raise ValueError(
        "The 'out' parameter must be a path ending in '.csv' or '.json'. "
        f"Got {str(path)!r} instead."
    )


#: The key under which :func:`save_sealed` stores the payload's SHA-256.
DIGEST_KEY = "sha256"


def _feed(hasher: Any, obj: Any) -> None:
    """Feed a canonical byte form of ``obj`` (nested dicts/lists of plain data and tensors)."""
    if isinstance(obj, dict):
        hasher.update(b"{")
        for key in sorted(obj, key=repr):
            hasher.update(repr(key).encode())
            _feed(hasher, obj[key])
        hasher.update(b"}")
    elif isinstance(obj, (list, tuple)):
        hasher.update(b"[")
        for item in obj:
            _feed(hasher, item)
        hasher.update(b"]")
    elif hasattr(obj, "dtype") and hasattr(obj, "shape") and hasattr(obj, "view"):  # a tensor
        import torch

        flat = obj.detach().cpu().contiguous().reshape(-1)
        hasher.update(f"T{obj.dtype}{tuple(obj.shape)}".encode())
        if flat.numel():
            hasher.update(flat.view(torch.uint8).numpy().tobytes())
    else:
        hasher.update(repr(obj).encode())


def payload_digest(payload: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint payload (every key but :data:`DIGEST_KEY`), as hex.

    Examples:
        >>> import torch
        >>> a = payload_digest({"w": torch.ones(2), "step": 3})
        >>> a == payload_digest({"step": 3, "w": torch.ones(2)})
        True
        >>> a == payload_digest({"w": torch.tensor([1.0, 1.5]), "step": 3})
        False
    """
    import hashlib

    hasher = hashlib.sha256()
    _feed(hasher, {k: v for k, v in payload.items() if k != DIGEST_KEY})
    return hasher.hexdigest()


def save_sealed(payload: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """``torch.save`` plain data and tensors atomically, with their SHA-256 inside the file."""
    return atomic_torch_save({**payload, DIGEST_KEY: payload_digest(payload)}, path)


def load_sealed(path: str | os.PathLike[str], *, what: str) -> dict[str, Any]:
    """Load a file written by :func:`save_sealed` and verify its checksum.

    Only plain data and tensors are read (``weights_only=True``: nothing is unpickled into code).
    A file without a checksum (an older format) is returned as is: its caller decides.

    Args:
        path: The file.
        what: What the file should be, for the messages (e.g. ``"nopelens checkpoint"``).

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If the file is unreadable, not a dict, or its content does not match its
            checksum (corrupted or modified).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No {what} at {str(path)!r}: no such file.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for torn or corrupt archives
        first = str(err).split(".")[0].splitlines()[0] if str(err) else ""
        raise ValueError(
            f"{str(path)!r} is not a readable {what} (truncated or corrupt file?): "
            f"{type(err).__name__}: {first}"
        ) from None
    if not isinstance(payload, dict):
        raise ValueError(f"{str(path)!r} is not a {what}.")
    stored = payload.get(DIGEST_KEY)
    if stored is not None and stored != payload_digest(payload):
        raise ValueError(
            f"{str(path)!r} does not match its checksum: the file was corrupted or modified "
            f"after it was written. Refusing to load it."
        )
    return payload
