"""The main job: every experiment of the paper in one resumable command.

:func:`reproduce` runs the experiment set of the design notes (§4) as an ordered table of small
*parts* (:data:`PARTS`): random-init NoPE models, a random-init hyperparameter sweep,
positional-encoding and bidirectional controls, models trained on position tasks (NoPE vs learned
positions, trained vs untrained), the first-layer theory with the attention-sharpness study,
position probes, a sequence length sweep and hook ablations. Each part writes its tables under
``out_dir/parts/<part>/`` atomically, its result as plain data and tensors with a checksum
(:mod:`nopelens.experiments.storage`: nothing is ever unpickled), and finishes with a ``done.json``
marker holding the exact configuration and seeds it ran with and the SHA-256 of every table.
Running again into the same folder reuses every part whose marker matches (the sweep itself is
resumable cell by cell), so an interrupted run continues where it stopped; a table that was
deleted or changed is rewritten from the stored result, and a result that is missing, damaged or
from an older nopelens is recomputed. One run at a time holds the folder
(:func:`nopelens.files.output_lock`), and temporary files left by a killed run are removed when
the next one starts.

At the end the run writes ``out_dir/summary.json`` (every number, with the configuration and seeds
that produced it) and ``out_dir/dashboard.html`` (one offline page with a table of contents, the
headline numbers and every figure).

Sizes live in named :class:`~nopelens.experiments.profiles.Profile` objects
(:mod:`nopelens.experiments.profiles`); the parts themselves in :mod:`nopelens.experiments.parts`.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from nopelens.experiments.parts.hybrid import figures_hybrid, part_hybrid, prefetch_hybrid
from nopelens.experiments.parts.layer_theory import figures_layer_theory, part_layer_theory
from nopelens.experiments.parts.mechanism import (
    figures_ablation,
    figures_theory,
    part_ablation,
    part_theory,
)
from nopelens.experiments.parts.probes import figures_probes, part_probes
from nopelens.experiments.parts.random_init import (
    figures_controls,
    figures_length,
    figures_random_init,
    figures_sweep,
    part_controls,
    part_length,
    part_random_init,
    part_sweep,
)
from nopelens.experiments.parts.trained import figures_trained, part_trained, prefetch_trained
from nopelens.experiments.pipeline import FORMAT_VERSION, Context, Part, PartResult, part_config
from nopelens.experiments.profiles import PROFILES, Profile
from nopelens.experiments.storage import (
    LEGACY_RESULT_FILE,
    RESULT_FILE,
    load_part_result,
    save_part_result,
)
from nopelens.files import (
    clean_temp_files,
    file_sha256,
    output_lock,
    write_json,
    write_table,
)
from nopelens.validation import InvalidParameterError, check_choice

logger = logging.getLogger(__name__)

PARTS: tuple[Part, ...] = (
    Part("random_init", "Random-init NoPE models", part_random_init, figures_random_init),
    Part("sweep", "Random-init hyperparameter sweep", part_sweep, figures_sweep),
    Part("controls", "Controls", part_controls, figures_controls),
    Part("theory", "First-layer theory", part_theory, figures_theory),
    Part("layer_theory", "The theory at every layer", part_layer_theory, figures_layer_theory),
    Part("length", "Sequence-length sweep", part_length, figures_length),
    Part("ablation", "Hook ablations", part_ablation, figures_ablation),
    Part("trained", "Trained models", part_trained, figures_trained, prefetch=prefetch_trained),
    Part("probes", "Position probes", part_probes, figures_probes, needs=("trained",)),
    Part(
        "hybrid", "Hybrid RoPE/NoPE stacks", part_hybrid, figures_hybrid, prefetch=prefetch_hybrid
    ),
)
"""The pipeline, in order."""


def _resolve_device(device: Any) -> str:
    """``"auto"`` -> CUDA when available, else the CPU; any other value must be a usable device."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind is None or (kind == "cuda" and not torch.cuda.is_available()):
        raise ValueError(
            "The 'device' parameter of reproduce must be 'auto', 'cpu' or an available torch "
            f"device such as 'cuda'. Got {device!r} instead"
            + (" (CUDA is not available here)." if kind == "cuda" else ".")
        )
    return str(device)


def _read_marker(part_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The ``done.json`` record of a finished part whose configuration is ``config``, else None."""
    import json

    marker = part_dir / "done.json"
    if not marker.is_file():
        if (part_dir / LEGACY_RESULT_FILE).is_file():
            logger.warning(
                "%s: %s is from an older nopelens; it is never unpickled: rebuilding the part",
                part_dir.name,
                LEGACY_RESULT_FILE,
            )
        return None
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        logger.warning("%s: unreadable done.json (%s), rerunning", part_dir.name, err)
        return None
    stored = record.get("config") if isinstance(record, dict) else None
    if not isinstance(stored, dict) or stored.get("format_version") != FORMAT_VERSION:
        logger.warning(
            "%s: written by an older nopelens (its %s is never unpickled), rebuilding",
            part_dir.name,
            LEGACY_RESULT_FILE,
        )
        return None
    if stored != config:
        logger.info("%s: configuration changed, rerunning", part_dir.name)
        return None
    return record


def _restore_tables(part_dir: Path, result: PartResult, record: dict[str, Any]) -> None:
    """Rewrite every table of a reused part that is missing or differs from its checksum."""
    digests = record.get("digests") or {}
    for name, frame in result.tables.items():
        path = part_dir / f"{name}.csv"
        existed = path.is_file()
        if existed and file_sha256(path) == digests.get(path.name):
            continue
        write_table(frame, path)
        logger.warning(
            "%s: %s was %s; rewritten from the stored result",
            part_dir.name,
            path.name,
            "changed" if existed else "missing",
        )
        if file_sha256(path) != digests.get(path.name):
            record.setdefault("digests", {})[path.name] = file_sha256(path)
            write_json(part_dir / "done.json", record)


def _load_done(part_dir: Path, config: dict[str, Any]) -> tuple[PartResult, dict[str, Any]] | None:
    """The stored result of a finished part whose marker matches ``config``, else None.

    The result is read without unpickling anything (:func:`load_part_result`); a missing,
    damaged or modified result means the part is recomputed. Missing or modified tables are
    rewritten from the result.
    """
    record = _read_marker(part_dir, config)
    if record is None:
        return None
    try:
        result = load_part_result(part_dir / RESULT_FILE)
    except (OSError, ValueError) as err:
        logger.warning("%s: cannot reuse the stored result (%s), rerunning", part_dir.name, err)
        return None
    if sorted(f"{name}.csv" for name in result.tables) != sorted(record.get("files", [])):
        logger.warning("%s: done.json does not list the result's tables, rerunning", part_dir.name)
        return None
    _restore_tables(part_dir, result, record)
    return result, record


def _run_part(part: Part, ctx: Context) -> tuple[PartResult, dict[str, Any]]:
    """Compute ``part``, write its tables, result and marker (the marker last)."""
    start = time.perf_counter()
    ctx.part_dir.mkdir(parents=True, exist_ok=True)
    (ctx.part_dir / "done.json").unlink(missing_ok=True)
    result = part.run(ctx)
    digests = {}
    for name, frame in result.tables.items():
        path = write_table(frame, ctx.part_dir / f"{name}.csv")
        digests[path.name] = file_sha256(path)
    save_part_result(result, ctx.part_dir / RESULT_FILE)
    legacy = ctx.part_dir / LEGACY_RESULT_FILE
    if legacy.is_file():
        legacy.unlink()
        logger.warning("%s: removed the old pickled %s", ctx.part_dir.name, LEGACY_RESULT_FILE)
    record = {
        "config": ctx.config,
        "numbers": result.numbers,
        "files": sorted(digests),
        "digests": digests,
        "seconds": round(time.perf_counter() - start, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(ctx.part_dir / "done.json", record)
    return result, record


def _profile_of(profile: str | Profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    check_choice(profile, "profile", tuple(PROFILES), "reproduce")
    return PROFILES[profile]


def reproduce(
    out_dir: str | Path,
    *,
    profile: str | Profile = "quick",
    progress: bool = True,
    device: str | None = None,
    executor: str = "local",
    address: str | None = None,
) -> dict[str, Any]:
    """Run every experiment of the paper and write ``summary.json`` and ``dashboard.html``.

    Finished parts found in ``out_dir`` with the same configuration are reused, not recomputed.

    Args:
        out_dir: Output folder (created if missing).
        profile: ``"test"``, ``"quick"`` or ``"full"`` (see
            :data:`~nopelens.experiments.PROFILES`), or a
            :class:`~nopelens.experiments.profiles.Profile`.
        progress: Show progress bars on stderr.
        device: Override the profile's device (``"cpu"``, ``"cuda"``, ``"auto"``).
        executor: Where the parts' sweeps run: ``"local"`` (a local process pool, the default)
            or ``"ray"`` (Ray tasks; see :func:`~nopelens.experiments.sweep`). The numbers do
            not depend on it, so parts finished with one executor are reused with the other.
        address: With ``executor="ray"``, a running Ray cluster (None: a local Ray runtime per
            sweep).

    Returns:
        The summary written to ``out_dir/summary.json``: for each part its configuration and seeds,
        headline numbers, tables (as records), files, run time and whether it was reused.

    Raises:
        ValueError: If ``profile`` is not a known profile name, ``device`` is not usable, or
            ``executor`` / ``address`` are not valid.
        LockHeldError: If another process is writing to ``out_dir``.

    Examples:
        >>> sorted(PROFILES), [part.name for part in PARTS][:3]
        (['full', 'quick', 'test'], ['random_init', 'sweep', 'controls'])
        >>> try:
        ...     reproduce("unused", profile="fast")
        ... except ValueError as err:
        ...     print(str(err).split(". ")[0])
        The 'profile' parameter of reproduce must be one of 'test', 'quick', 'full'
    """
    prof = _profile_of(profile)
    resolved = _resolve_device(device if device is not None else prof.device)
    _check_executor(executor, address)
    out = Path(out_dir)
    with output_lock(out, "reproduce folder"):
        clean_temp_files(out)
        # each part's figures are drawn in a thread as soon as the part is done, on the core
        # that waits while the pool's workers finish a later part's jobs
        with cf.ThreadPoolExecutor(1, thread_name_prefix="nopelens-figures") as drawer:
            with _torch_threads(prof.threads), _ray_for_the_run(executor, address):
                drawn: dict[str, cf.Future] = {}
                results, records = _run_parts(
                    prof,
                    resolved,
                    out,
                    progress,
                    executor=executor,
                    address=address,
                    drawer=drawer,
                    drawn=drawn,
                )
            summary = _summary(prof, resolved, results, records, out)
            write_json(out / "summary.json", summary)
            sections = [s for part in PARTS for s in drawn[part.name].result()]
            _write_dashboard(out / "dashboard.html", prof, sections, summary)
    return summary


def _check_executor(executor: Any, address: Any) -> None:
    """``executor`` is ``"local"`` or ``"ray"``; ``address`` only goes with ``"ray"``."""
    check_choice(executor, "executor", ("local", "ray"), "reproduce")
    if address is not None and (executor != "ray" or not isinstance(address, str)):
        raise InvalidParameterError(
            "The 'address' parameter of reproduce is the address of a Ray cluster (a string) "
            f"and needs executor='ray'. Got address={address!r} with executor={executor!r}."
        )
    if executor == "ray":  # Ray missing, or nothing at the address: say so before any part runs
        from nopelens.experiments.distributed import check_address, import_ray

        import_ray()
        if address is not None:
            check_address(address)


@contextlib.contextmanager
def _ray_for_the_run(executor: str, address: str | None) -> Iterator[None]:
    """With ``executor="ray"`` and no address: one local Ray runtime for every part's sweeps.

    Each sweep would otherwise start and stop its own (several seconds each); the first sweep
    starts it (none if every part is reused) and it stops at the end of the run.
    """
    if executor != "ray" or address is not None:
        yield
        return
    from nopelens.experiments.distributed import keep_local_runtime

    with keep_local_runtime():
        yield


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's CPU thread count for the duration of the run, then restore it."""
    import torch

    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_parts(
    prof: Profile,
    device: str,
    out: Path,
    progress: bool,
    *,
    executor: str = "local",
    address: str | None = None,
    drawer: cf.Executor | None = None,
    drawn: dict[str, cf.Future] | None = None,
) -> tuple[dict[str, PartResult], dict[str, dict[str, Any]]]:
    """Run or reuse every part, in order.

    With a ``drawer``, each part's figures start drawing on it as soon as the part is done;
    their futures go into ``drawn`` (part name -> future of the part's sections).
    """
    drawn = {} if drawn is None else drawn
    from nopelens.experiments.parts.common import jobs_ahead, start_workers
    from nopelens.progress import progress_bar

    start_workers(prof.workers, device)  # the parts' workers get ready on another core

    def context(part: Part, inputs: dict[str, PartResult]) -> Context:
        return Context(
            profile=prof,
            config=part_config(prof, part, device),
            part_dir=out / "parts" / part.name,
            device=device,
            progress=progress,
            inputs=inputs,
            executor=executor,
            address=address,
        )

    done = {
        part.name: _load_done(out / "parts" / part.name, part_config(prof, part, device))
        for part in PARTS
    }
    results: dict[str, PartResult] = {}
    records: dict[str, dict[str, Any]] = {}
    with jobs_ahead(prof.workers, device, prof.threads):
        for part in PARTS:  # the long jobs of later parts start on the core left idle
            if part.prefetch is not None and done[part.name] is None:
                part.prefetch(context(part, {}))
        bar = progress_bar(PARTS, desc=f"reproduce[{prof.name}]", unit="part", quiet=not progress)
        for part in bar:
            bar.set_postfix_str(part.name)
            stored = done[part.name]
            if stored is not None:
                result, record = stored
                record = {**record, "reused": True}
                logger.info("%s: reused", part.name)
            else:
                ctx = context(part, {name: results[name] for name in part.needs})
                result, record = _run_part(part, ctx)
                record = {**record, "reused": False}
                logger.info("%s: done in %.1f s", part.name, record["seconds"])
            results[part.name] = result
            records[part.name] = record
            if drawer is not None:
                drawn[part.name] = drawer.submit(part.figures, result)
    return results, records


def _summary(
    profile: Profile,
    device: str,
    results: dict[str, PartResult],
    records: dict[str, dict[str, Any]],
    out: Path,
) -> dict[str, Any]:
    from importlib.metadata import version

    import torch

    from nopelens import __version__

    parts = {}
    for part in PARTS:
        result, record = results[part.name], records[part.name]
        parts[part.name] = {
            "title": part.title,
            "config": record["config"],
            "numbers": result.numbers,
            "tables": {k: v.to_dict(orient="records") for k, v in result.tables.items()},
            "files": [f"parts/{part.name}/{f}" for f in record["files"]],
            "seconds": record["seconds"],
            "reused": record["reused"],
        }
    return {
        "nopelens_version": __version__,
        "torch_version": torch.__version__,
        "transformer_lens_version": version("transformer-lens"),
        "profile": profile.name,
        "profile_config": dataclasses.asdict(profile),
        "device": device,
        "headline": _headline(results),
        "part_order": [part.name for part in PARTS],
        "parts": parts,
        "files": {"summary": "summary.json", "dashboard": "dashboard.html"},
        "out_dir": str(out.resolve()),
    }


def _headline(results: dict[str, PartResult]) -> dict[str, Any]:
    """The headline numbers of every part, keyed by part name (what the dashboard leads with)."""
    return {name: result.numbers for name, result in results.items()}


def _description(profile: Profile, summary: dict[str, Any]) -> str:
    seconds = sum(p["seconds"] for p in summary["parts"].values())
    reused = [name for name, p in summary["parts"].items() if p["reused"]]
    lines = [
        f"Profile **{profile.name}** ({profile.description}) on `{summary['device']}`; "
        f"model seeds {list(profile.seeds)}, data seed {profile.data_seed}; "
        f"{seconds:.0f} s of computation.",
        "",
        "Every number below, with the configuration and seeds that produced it, is in "
        "`summary.json`; each part's tables are CSV files under `parts/<part>/`. Run "
        f"`nopelens reproduce --out DIR --profile {profile.name}` to regenerate this page.",
    ]
    if reused:
        lines += ["", f"Reused finished parts: {', '.join(reused)}."]
    return "\n".join(lines)


def load_results(out_dir: str | Path) -> dict[str, PartResult]:
    """The finished parts of a :func:`reproduce` run in ``out_dir``, in pipeline order.

    Parts without a ``done.json`` marker (not run yet, or interrupted) are left out, and so are
    parts written by an older nopelens (a pickled ``result.pt``, which is never loaded: rerun
    :func:`reproduce` to rebuild them). Results are read as plain data and tensors and checked
    against their checksum (:func:`~nopelens.experiments.storage.load_part_result`).

    Args:
        out_dir: The folder given to :func:`reproduce`.

    Returns:
        Part name -> :class:`PartResult` (numbers, tables and the objects its figures use).

    Raises:
        FileNotFoundError: If ``out_dir`` does not exist.
        ValueError: If a finished part's result file is damaged or was modified.

    Examples:
        >>> import tempfile
        >>> load_results(tempfile.mkdtemp())
        {}
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise FileNotFoundError(f"No reproduce folder at {str(out)!r}: no such folder.")
    results = {}
    for part in PARTS:
        part_dir = out / "parts" / part.name
        if not (part_dir / "done.json").is_file():
            continue
        if not (part_dir / RESULT_FILE).is_file():
            logger.warning(
                "%s: no %s (a run of an older nopelens? its %s is never unpickled); rerun "
                "reproduce to rebuild it",
                part.name,
                RESULT_FILE,
                LEGACY_RESULT_FILE,
            )
            continue
        results[part.name] = load_part_result(part_dir / RESULT_FILE)
    return results


def part_sections(results: Mapping[str, PartResult]) -> list[tuple[str, Any]]:
    """The dashboard sections ``(heading, content)`` of the given parts, in pipeline order.

    ``content`` is a plotly figure, a DataFrame, a markdown string or a list of these (the
    section format of :func:`nopelens.viz.write_dashboard`).

    Args:
        results: Part name -> result, e.g. from :func:`load_results`.

    Returns:
        The sections, figures built by :mod:`nopelens.viz`.
    """
    sections: list[tuple[str, Any]] = []
    for part in PARTS:
        if part.name in results:
            sections.extend(part.figures(results[part.name]))
    return sections


#: Figures being drawn for the results of the current run (by ``id`` of the result), so that
#: :func:`part_sections` picks them up instead of drawing them again.
_DRAWN: dict[int, cf.Future] = {}


def _write_dashboard(
    path: Path, profile: Profile, sections: list[tuple[str, Any]], summary: dict[str, Any]
) -> Path:
    from nopelens.experiments.verdicts import headline_verdicts
    from nopelens.viz import write_dashboard

    return write_dashboard(
        path,
        sections,
        title=f"nopelens reproduce — {profile.name}",
        summary=summary["headline"],
        description=_description(profile, summary),
        headline=headline_verdicts(summary),
        summary_titles={name: part["title"] for name, part in summary["parts"].items()},
    )
