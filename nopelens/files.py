"""Atomic file output: nothing half-written survives an interruption.

Every writer goes through :func:`atomic_write_bytes`: the data goes to a temporary file in the
destination folder, is flushed and fsynced, and is then renamed over the destination
(``os.replace`` is atomic on POSIX and Windows). A reader sees the old file or the new file,
never a torn one.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import tempfile
import threading
from collections.abc import Iterator
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


# Output-folder locks and temporary-file hygiene ---------------------------------------------------

#: Name of the lock file that :func:`output_lock` keeps in every output folder.
LOCK_FILE = ".nopelens.lock"
#: Temporary files of :func:`atomic_write_bytes`: ``.<name>.<8 mkstemp characters>.tmp``.
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
#: Folders (real paths) whose lock this process holds -> (descriptor, nesting depth).
_HELD: dict[str, list[int]] = {}
_HELD_GUARD = threading.Lock()

logger = logging.getLogger(__name__)


def _holder_info() -> dict[str, Any]:
    """Who is taking a lock: pid, host, command line and start time (ISO 8601, local time)."""
    import socket
    import sys
    import time

    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(
            [os.path.basename(sys.argv[0]) if sys.argv else "python", *sys.argv[1:]]
        )[:300],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _write_holder(fd: int, holder: dict[str, Any]) -> None:
    data = json.dumps(holder, sort_keys=True).encode("utf-8") + b"\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _describe_holder(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "another process (it is just starting, or did not say who it is)"
    import socket

    text = (
        f"pid {holder['pid']} on host {holder.get('host', '?')!r} "
        f"(command {holder.get('command', '?')!r}, started {holder.get('started', '?')})"
    )
    if holder.get("host") == socket.gethostname() and not _pid_alive(holder["pid"]):
        text += "; that process has exited but a process it started still holds the lock"
    return text


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock on ``fd`` without waiting; False if another process holds it.

    The kernel releases the lock when the holder exits, however it exits (``kill -9``
    included), so a lock can never be left behind by a dead process and taking over a stale one
    needs no clean-up and has no race.
    """
    try:
        import fcntl
    except ImportError:  # Windows: a byte-range lock far past the holder's note
        import msvcrt

        os.lseek(fd, 1 << 20, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike[str], what: str = "output folder") -> Iterator[Path]:
    """Hold ``folder`` exclusively: one writer per output folder, across processes and hosts.

    The lock is an advisory ``flock`` on ``folder/.nopelens.lock``, held for the duration of
    the ``with`` block (the file is removed when the block ends). A second process (``nopelens
    train``, ``sweep`` or ``reproduce`` into the same folder) is refused at once with
    :class:`~nopelens.validation.LockHeldError`, whose message names the holder (pid, host,
    command, start time, written into the lock file). The kernel drops the lock when its holder
    dies (even by ``kill -9``), so a stale lock file is simply taken over (with a log line
    naming the dead holder); there is no pid check and no race. Nesting in one process is
    allowed (the inner ``with`` is a no-op), so a command may lock its folder and call a library
    function that locks it again.

    Args:
        folder: The output folder (created if missing).
        what: What the folder is, for the message (``"training folder"``).

    Yields:
        The folder, as a :class:`~pathlib.Path`.

    Raises:
        LockHeldError: If another process holds the folder.

    Examples:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with output_lock(folder, "demo folder") as locked:
        ...     with output_lock(folder):  # the same process may nest
        ...         (locked / LOCK_FILE).is_file()
        True
        >>> (locked / LOCK_FILE).exists()  # released
        False
    """
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(path)
    with _HELD_GUARD:
        if key in _HELD:
            _HELD[key][1] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield path
        finally:
            with _HELD_GUARD:
                _HELD[key][1] -= 1
        return
    fd = _acquire(path / LOCK_FILE, what)
    try:
        previous = _read_holder(fd)
        if previous.get("pid"):
            logger.warning(
                "%s: taking over the lock left by %s, which was interrupted",
                path,
                _describe_holder(previous).split(";")[0],
            )
        _write_holder(fd, _holder_info())
        with _HELD_GUARD:
            _HELD[key] = [fd, 1]
        try:
            yield path
        finally:
            with _HELD_GUARD:
                del _HELD[key]
            with contextlib.suppress(OSError):
                os.unlink(path / LOCK_FILE)  # while still holding it: see _acquire
    finally:
        os.close(fd)


def _acquire(lock: Path, what: str) -> int:
    """Open and lock ``lock``; the descriptor. Refuse if another process holds it.

    A clean release deletes the lock file while holding it, so a process that opened the old
    file just before may lock a file that no longer has a name: after locking, the descriptor
    must still be the file at ``lock`` (same device and inode), else it tries again.
    """
    from nopelens.validation import LockHeldError

    for _ in range(100):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(fd):
                raise LockHeldError(
                    f"The {what} {str(lock.parent)!r} is in use by "
                    f"{_describe_holder(_read_holder(fd))}. Wait for it to finish, or use "
                    "another output folder."
                )
            opened = os.fstat(fd)
            try:
                named = os.stat(lock)
            except FileNotFoundError:
                named = None
        except BaseException:
            os.close(fd)
            raise
        if named is not None and (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino):
            return fd
        os.close(fd)  # the file was released and removed meanwhile: take the new one
    raise OSError(f"could not lock {str(lock)!r}: it keeps being replaced")


def _held_by_other(folder: Path) -> bool:
    """Whether another process holds ``folder``'s lock right now."""
    lock = folder / LOCK_FILE
    if os.path.realpath(folder) in _HELD or not lock.is_file():
        return False
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        return not _try_lock(fd)  # closing the descriptor releases a lock taken here
    finally:
        os.close(fd)


def clean_temp_files(folder: str | os.PathLike[str], *, recursive: bool = True) -> list[Path]:
    """Remove the temporary files that an interrupted :func:`atomic_write_bytes` left behind.

    Only names of that function's own pattern (``.<name>.<8 characters>.tmp``) are removed, and
    subfolders whose lock another live process holds are skipped (it may be writing there). Call
    it while holding :func:`output_lock` on ``folder``.

    Args:
        folder: The output folder.
        recursive: Also clean its subfolders.

    Returns:
        The files removed.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / ".results.csv.a1b2c3d4.tmp").write_text("half")
        >>> _ = (folder / "notes.tmp").write_text("not ours")
        >>> [p.name for p in clean_temp_files(folder)], sorted(p.name for p in folder.iterdir())
        (['.results.csv.a1b2c3d4.tmp'], ['notes.tmp'])
    """
    removed: list[Path] = []
    root = Path(folder)
    if not root.is_dir():
        return removed
    for current, dirs, names in os.walk(root):
        here = Path(current)
        for name in names:
            if _TEMP_NAME.match(name):
                with contextlib.suppress(FileNotFoundError):
                    (here / name).unlink()
                    removed.append(here / name)
        if not recursive:
            break
        dirs[:] = [d for d in dirs if not _held_by_other(here / d)]
    if removed:
        logger.warning(
            "%s: removed %d temporary file(s) left by an interrupted write", root, len(removed)
        )
    return removed


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, as hex.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x"
        >>> file_sha256(atomic_write_bytes(p, b""))[:16]
        'e3b0c44298fc1c14'
    """
    import hashlib

    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()
