"""The results file of a sweep: one appended JSON line per finished configuration.

Every finished configuration is appended to ``out_dir/results.jsonl`` as ONE line (its config,
id and all its score rows), written by the parent process with a single ``os.write`` on an
``O_APPEND`` descriptor followed by ``fsync``. An interrupted run therefore leaves whole lines
plus at most one truncated last line, which readers ignore and the next sweep cuts off
(:func:`repair_results`) before appending. A rerun reads the finished ids and skips them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from nopelens.experiments.grid import (
    DEFAULTS,
    MODEL_KEYS,
    complete_config,
    config_id,
    expand_grid,
)
from nopelens.files import to_jsonable
from nopelens.spec import SCORE_COLUMNS

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
GRID_FILE = "grid.json"


def repair_results(path: Path) -> None:
    """Cut a truncated last line (from an interrupted write) off the results file."""
    if not path.exists():
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            logger.warning("%s: dropping a truncated last line (%d bytes)", path, len(data) - keep)
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())


def append_record(fd: int, record: Mapping[str, Any]) -> None:
    """Append one record as one JSON line with a single write (looping only on a short write)."""
    text = json.dumps(to_jsonable(record), sort_keys=True, allow_nan=False, separators=(",", ":"))
    view = memoryview((text + "\n").encode("utf-8"))
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)


def _iter_records(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1]:
        logger.warning("%s: ignoring a truncated last line (interrupted write)", path)
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s: ignoring unreadable line %d", path, number)
            continue
        if (
            isinstance(record, dict)
            and isinstance(record.get("config_id"), str)
            and isinstance(record.get("rows"), list)
        ):
            yield record
        else:
            logger.warning("%s: ignoring line %d (not a sweep record)", path, number)


def _results_path(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    return path / RESULTS_FILE if path.is_dir() or not path.suffix else path


def read_records(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The finished configurations in a results file: config id -> record.

    Each record holds ``config_id``, ``config`` and ``rows``. Whole lines only: a truncated last
    line or an unreadable line is ignored (with a logged warning). The first record of an id wins.

    Args:
        path: A sweep's ``out_dir`` or its ``results.jsonl``.

    Examples:
        >>> import tempfile
        >>> read_records(tempfile.mkdtemp())
        {}
    """
    records: dict[str, dict[str, Any]] = {}
    for record in _iter_records(_results_path(path)):
        records.setdefault(record["config_id"], record)
    return records


def records_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The tidy frame of some records: settings, then score columns, one row per score.

    Rows of a saved or pretrained ``model`` have no architecture settings (None in those
    columns, except ``nope_layers``): the model's own sizes are not in the grid.
    """
    score_columns = [*SCORE_COLUMNS, "elapsed_s"]
    config_columns = [k for k in DEFAULTS if k != "sites" and k not in score_columns]
    rows: list[dict[str, Any]] = []
    for record in records:
        config = complete_config(record["config"])
        if config["model"] is not None:
            config.update({k: None for k in MODEL_KEYS if k != "nope_layers"})
        base = {"config_id": record["config_id"], **{k: config[k] for k in config_columns}}
        rows.extend({**base, **row} for row in record["rows"])
    columns = ["config_id", *config_columns, *score_columns]
    frame = pd.DataFrame(rows, columns=None if rows else columns)
    extra = [c for c in frame.columns if c not in columns]
    return frame.reindex(columns=[*columns, *extra])


def read_results(path: str | os.PathLike[str], *, grid: Any = None) -> pd.DataFrame:
    """The results of a sweep as a tidy DataFrame: one row per configuration and score.

    Columns: ``config_id``, every setting of :data:`~nopelens.experiments.grid.DEFAULTS` except
    ``sites``, then the score columns of :func:`nopelens.analyze`
    (:data:`nopelens.spec.SCORE_COLUMNS`: ``site, layer, nope, metric, value, chance, ci_low,
    ci_high, ci_method, n_seqs, seq_len``; ``nope`` is missing, NaN, in results written before
    it existed) and ``elapsed_s``.

    Args:
        path: A sweep's ``out_dir`` or its ``results.jsonl``.
        grid: If given, only the configurations of this grid, in grid order.

    Examples:
        >>> import tempfile
        >>> read_results(tempfile.mkdtemp()).empty
        True
    """
    records = read_records(path)
    if grid is not None:
        ids = [config_id(c) for c in expand_grid(grid)]
        chosen = [records[i] for i in ids if i in records]
    else:
        chosen = list(records.values())
    return records_frame(chosen)
