"""The pieces of the reproduction pipeline: a :class:`Part`, its :class:`Context` and result.

A part is one step of :func:`~nopelens.experiments.reproduce`: a function from a
:class:`Context` (the profile, the part's configuration, its folder and the results of the
parts it reads) to a :class:`PartResult` (headline numbers, tidy tables, objects for figures),
plus a function that draws the part's dashboard figures from that result. :func:`part_config`
is what a finished part's ``done.json`` marker must match for the part to be reused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from nopelens.experiments.profiles import Profile
from nopelens.files import to_jsonable

#: Bumped whenever a part's output format changes, so that old ``done.json`` markers are ignored
#: (3: results stored as plain data and tensors, never pickled; tables checksummed).
FORMAT_VERSION = 3


def _short(value: Any) -> str:
    """A few characters for one headline number: numbers to 3 digits, containers by size."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, (int, float)):
        return f"{value:.3g}"
    if isinstance(value, Mapping):
        return f"{{{len(value)} keys}}"
    if isinstance(value, (list, tuple)):
        return f"[{len(value)} items]"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "...'"


@dataclasses.dataclass(repr=False)
class PartResult:
    """What a part hands back: headline numbers, tidy tables and objects for its figures.

    Attributes:
        numbers: Headline numbers (JSON-able), copied into ``summary.json``.
        tables: Tidy frames, written as CSV and copied into ``summary.json`` as records.
        objects: Report objects that the part's figures are drawn from: plain data, tensors,
            frames and the report classes of
            :data:`nopelens.experiments.storage.STORABLE` (stored without pickles).

    Examples:
        >>> PartResult({"AP": 0.8123, "NC": 0.7, "by_layer": {"0": 1.0}},
        ...            tables={"scores": pd.DataFrame({"value": [1.0, 2.0]})})
        PartResult(numbers: AP=0.812, NC=0.7, by_layer={1 keys}; tables: scores 2x1)
    """

    numbers: dict[str, Any]
    tables: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)
    objects: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:
        shown = list(self.numbers.items())[:6]
        numbers = ", ".join(f"{key}={_short(value)}" for key, value in shown)
        if len(self.numbers) > len(shown):
            numbers += f", ... (+{len(self.numbers) - len(shown)} more)"
        text = f"PartResult(numbers: {numbers or 'none'}"
        if self.tables:
            tables = ", ".join(f"{k} {v.shape[0]}x{v.shape[1]}" for k, v in self.tables.items())
            text += f"; tables: {tables}"
        if self.objects:
            text += f"; objects: {', '.join(str(k) for k in self.objects)}"
        return text + ")"


@dataclasses.dataclass(frozen=True, repr=False)
class Context:
    """What a part function receives.

    Attributes:
        profile: The run's profile.
        config: This part's configuration (profile-wide settings merged with the part's own).
        part_dir: The folder of this part's files.
        device: The resolved torch device.
        progress: Whether to show progress bars.
        inputs: Results of the parts this one depends on.
        executor: Where the part's sweeps run: ``"local"`` (a local process pool) or ``"ray"``
            (see :func:`~nopelens.experiments.sweep`). It does not change any number, so it is
            not part of :func:`part_config`.
        address: The Ray cluster of ``executor="ray"`` (None: a local Ray runtime).
    """

    profile: Profile
    config: dict[str, Any]
    part_dir: Path
    device: str
    progress: bool
    inputs: dict[str, PartResult]
    executor: str = "local"
    address: str | None = None

    def __repr__(self) -> str:
        return (
            f"Context({self.config.get('part')!r}, profile={self.profile.name!r}, "
            f"device={self.device!r}, part_dir={str(self.part_dir)!r}, "
            f"inputs=[{', '.join(self.inputs)}])"
        )


@dataclasses.dataclass(frozen=True)
class Part:
    """One step of the pipeline.

    Attributes:
        name: Folder name under ``parts/`` and key in ``summary.json``.
        title: Section title in the dashboard.
        run: Computes the part from a :class:`Context`.
        figures: Draws the part's dashboard figures from its result.
        needs: Names of earlier parts whose results ``run`` reads.
        prefetch: Optional: queues the part's longest independent jobs when the run begins
            (:func:`~nopelens.experiments.parts.common.start_ahead`), so that they run on the
            core that earlier single-process parts leave idle; ``run`` picks them up. It gets
            the same :class:`Context` as ``run`` (without ``inputs``) and must queue exactly the
            jobs ``run`` would compute, so the numbers do not depend on it.
    """

    name: str
    title: str
    run: Callable[[Context], PartResult]
    figures: Callable[[PartResult], list[Any]]
    needs: tuple[str, ...] = ()
    prefetch: Callable[[Context], Any] | None = None


def part_config(profile: Profile, part: Part, device: str) -> dict[str, Any]:
    """The JSON-able configuration of ``part`` under ``profile``: what its marker must match.

    It holds the profile-wide settings (base model, seeds, data sizes, device), the part's own
    settings, and the settings of the parts it reads (``inputs``), so that changing any of them
    reruns the part.

    Examples:
        >>> from nopelens.experiments.profiles import PROFILES
        >>> part = Part("probes", "Position probes", print, print, needs=("trained",))
        >>> config = part_config(PROFILES["test"], part, "cpu")
        >>> config["part"], config["seeds"], list(config["inputs"])
        ('probes', [0], ['trained'])
    """
    config = {
        "format_version": FORMAT_VERSION,
        "part": part.name,
        "device": device,
        "seeds": list(profile.seeds),
        "data_seed": profile.data_seed,
        "model": dict(profile.model),
        "n_seqs": profile.n_seqs,
        "seq_len": profile.seq_len,
        "n_bootstrap": profile.n_bootstrap,
        "settings": dict(profile.parts.get(part.name, {})),
        "inputs": {name: dict(profile.parts.get(name, {})) for name in part.needs},
    }
    return to_jsonable(config)
