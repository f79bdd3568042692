"""Progress on stderr for long loops, and one-line status messages.

Two functions, both torch-free so that a command can call them before its heavy imports:

* :func:`progress_bar` wraps a loop in a ``tqdm`` bar on stderr. In a terminal it redraws in
  place; when stderr is not a terminal (a CI log, a pipe, a Jupyter cell) it writes plain lines
  instead (at most one every few seconds, and the final count), so logs hold no redraws.
  It uses ``tqdm.std`` (never ``tqdm.auto``), so a notebook shows no ``IProgress`` warning.
* :func:`say` writes one flushed line on stderr (what is being loaded, where a file was written).

* :func:`log_progress` advances a bar for each record a library logger emits (a per-layer or
  per-step log line), so a long library call shows progress without taking a callback.

All are silent with ``quiet=True`` (the command line's ``-q/--quiet``).

Examples:
    >>> total = 0
    >>> for i in progress_bar(range(3), desc="demo", quiet=True):
    ...     total += i
    >>> total
    3
    >>> say("never shown", quiet=True)
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.std import tqdm

__all__ = ["log_progress", "progress_bar", "say"]

#: Seconds between two plain progress lines when stderr is not a terminal.
LINE_INTERVAL = 10.0
_LINE_FORMAT = (
    "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
)


class _Sink:
    """A file that swallows what tqdm writes itself (carriage-return redraws, the last newline)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


class _LineProgress(tqdm):  # type: ignore[type-arg]
    """A tqdm bar that prints each update as its own line (for logs that are not terminals)."""

    def __init__(self, *args: Any, stream: Any, **kwargs: Any) -> None:
        self._stream = stream
        self._last_line = ""
        super().__init__(*args, file=_Sink(stream), **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        line = (self.__str__() if msg is None else msg).strip()
        if line and line != self._last_line:
            self._stream.write(line + "\n")
            self._stream.flush()
            self._last_line = line
        return True


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | float | None = None,
    desc: str,
    unit: str = "it",
    quiet: bool = False,
    initial: int | float = 0,
) -> Any:
    """A progress bar on stderr: redrawn in a terminal, plain lines elsewhere, nothing if quiet.

    Args:
        iterable: What to loop over (``None``: call ``.update(n)`` by hand).
        total: Number of items (default ``len(iterable)`` when it has one).
        desc: What is progressing, e.g. ``"analyze resid_post"``.
        unit: What one item is, e.g. ``"layer"``.
        quiet: Show nothing (the bar still counts and iterates).
        initial: The count to start from (a resumed run).

    Returns:
        A ``tqdm.std.tqdm`` object: iterate it, or call ``update``, ``set_postfix_str`` and
        ``close`` (or use it as a context manager).

    Examples:
        >>> import io, contextlib
        >>> err = io.StringIO()
        >>> with contextlib.redirect_stderr(err):
        ...     for _ in progress_bar(range(2), desc="layers", unit="layer"):
        ...         pass
        >>> print(err.getvalue().splitlines()[-1].split(" [")[0])
        layers: 100% 2/2
    """
    stream = sys.stderr
    if quiet:
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=True)
    if _is_terminal(stream):
        return tqdm(
            iterable,
            total=total,
            desc=desc,
            unit=unit,
            initial=initial,
            file=stream,
            dynamic_ncols=True,
        )
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return _LineProgress(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        stream=stream,
        mininterval=LINE_INTERVAL,
        # Without a total tqdm ignores bar_format and writes "desc: 2fit [00:01, 1.9fit/s]".
        bar_format=_LINE_FORMAT if total else None,
    )


def say(message: str, *, quiet: bool = False) -> None:
    """Write ``message`` as one line on stderr, flushed at once (nothing if ``quiet``).

    Examples:
        >>> import io, contextlib
        >>> err = io.StringIO()
        >>> with contextlib.redirect_stderr(err):
        ...     say("loading gpt2")
        >>> err.getvalue().splitlines()
        ['loading gpt2']
    """
    if quiet:
        return
    stream = sys.stderr
    stream.write(message.rstrip("\n") + "\n")
    stream.flush()


class _BarHandler(logging.Handler):
    """Advance ``bar`` by one for each record at ``level``; pass louder records on to the root."""

    def __init__(self, bar: Any, level: int, passthrough: int) -> None:
        super().__init__(level=level)
        self.bar = bar
        self.passthrough = passthrough

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= self.passthrough:
            self.bar.clear()
            logging.getLogger().handle(record)
            self.bar.refresh()
        total = getattr(record, "progress_total", None)
        if total is not None:  # the library announces how many units follow
            self.bar.total = total
            if isinstance(self.bar, _LineProgress):
                self.bar.bar_format = _LINE_FORMAT
            self.bar.refresh()
            return
        if record.levelno == self.level:
            self.bar.set_postfix_str(record.getMessage()[:60], refresh=False)
            self.bar.update(1)


@contextlib.contextmanager
def log_progress(
    logger: str,
    *,
    desc: str,
    unit: str = "it",
    total: int | None = None,
    level: int = logging.INFO,
    quiet: bool = False,
) -> Iterator[Any]:
    """A progress bar advanced by one for each ``level`` record that ``logger`` emits.

    For a library function that logs one line per unit of work (a layer probed, a scale of a
    sweep) but takes no progress callback. A record with ``extra={"progress_total": n}`` sets
    the bar's total to ``n`` instead of advancing it (the library knows the count; the caller
    does not). While the block runs, ``logger`` emits ``level``
    records even if logging is configured quieter; they move the bar (their text becomes its
    postfix) and reach the usual handlers only if those would have shown them anyway (``-v``).

    Args:
        logger: Name of the logger, e.g. ``"nopelens.probes.positions"``.
        desc: What is progressing.
        unit: What one record stands for.
        total: How many records to expect (``None``: count without a total).
        level: The level of the per-unit records.
        quiet: Show no bar.

    Yields:
        The bar (see :func:`progress_bar`).

    Examples:
        >>> import io, contextlib, logging
        >>> err = io.StringIO()
        >>> with contextlib.redirect_stderr(err):
        ...     with log_progress("demo.lib", desc="layers", unit="layer", total=2) as bar:
        ...         for layer in range(2):
        ...             logging.getLogger("demo.lib").info("layer %d", layer)
        >>> bar.n, err.getvalue().splitlines()[-1].split(" [")[0]
        (2, 'layers: 100% 2/2')
    """
    log = logging.getLogger(logger)
    shown = log.getEffectiveLevel()
    old_level, old_propagate = log.level, log.propagate
    bar = progress_bar(total=total, desc=desc, unit=unit, quiet=quiet)
    handler = _BarHandler(bar, level, passthrough=shown)
    log.addHandler(handler)
    log.setLevel(min(level, shown))
    log.propagate = False
    try:
        yield bar
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = old_propagate
        bar.close()
