"""``nopelens sweep``: a resumable hyperparameter sweep of the neighborhood scores."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nopelens.cli.vocabulary import add_quiet_argument

HELP = (
    "Sweep random-init or trained models over a grid (--grid FILE.json|.toml or --preset "
    "paper|length|controls|ablations), or analyse many saved models and texts (--models, "
    "--texts), locally or on Ray (--executor ray); resumable: rerun the same command to continue."
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``sweep`` arguments."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--grid", metavar="FILE", help="grid file (.json or .toml)")
    source.add_argument(
        "--preset",
        metavar="NAME",
        help="a named grid: paper, length, controls, ablations or hybrid (RoPE/NoPE stacks)",
    )
    source.add_argument(
        "--models",
        nargs="+",
        metavar="SOURCE",
        help="analyse these saved or pretrained models (what `nopelens analyze --model` takes: "
        "a .pt checkpoint, a `nopelens train` folder, a local Hugging Face folder, or a "
        "TransformerLens name in the local cache); the grid {model: SOURCES, text: TEXTS}",
    )
    parser.add_argument(
        "--texts",
        nargs="+",
        metavar="FILE",
        help="with --models: read each of these texts (a UTF-8 file, a folder of text files or "
        "'stdlib') with every model's tokenizer; without it, each model reads the inputs "
        "`nopelens analyze` gives it",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        required=True,
        help="folder of results.jsonl (appended, resumable), results.csv, "
        "summary.csv and grid.json",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes (default: the available CPUs; 1 runs in this process); with "
        "--executor ray, the most configurations running at once (default: the cluster's CPUs)",
    )
    parser.add_argument(
        "--max-configs",
        type=int,
        default=None,
        metavar="K",
        help="run at most K pending configurations now",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="set KEY in every grid; VALUE is JSON, a list sweeps it "
        "(e.g. --set n_seqs=8 --set 'seed=[0,1]'); repeatable",
    )
    parser.add_argument(
        "--report-layers",
        choices=("each", "last"),
        default="each",
        help="summarise every layer, or only each model's last block",
    )
    parser.add_argument(
        "--by",
        action="append",
        default=[],
        metavar="SETTING",
        help="summarise separately for each value of SETTING (e.g. --by "
        "attention for the controls preset); repeatable",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="count a configuration only if its CI is this far above chance "
        "(e.g. 0.1: NC above 0.6)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the grid and count the configurations; run nothing",
    )
    add_executor_arguments(parser)
    add_quiet_argument(parser)


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """``--executor {local,ray}`` and ``--address ADDR`` (shared with ``nopelens reproduce``)."""
    group = parser.add_argument_group("where configurations run")
    group.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: a process pool on this machine; ray: Ray tasks (pip install "
        "'nopelens[ray]'), on a local Ray runtime or the cluster at --address",
    )
    group.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="a running Ray cluster (HOST:PORT, ray://HOST:PORT or auto) for --executor ray; "
        "default: start a local Ray runtime and stop it at the end",
    )


def _overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set takes KEY=VALUE (VALUE in JSON). Got {item!r} instead.")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare word such as RMS
        out[key.strip()] = value
    return out


def run(args: argparse.Namespace) -> int:
    """Validate the grid, run what is missing, write the tables and print the failure ranges."""
    if args.executor == "local" and args.workers != 1 and not args.dry_run:
        from nopelens.experiments.workers import start_fork_server

        start_fork_server()  # its imports run while this process imports and validates
        import scipy.stats  # noqa: F401 - for the summary; imported while the workers start
    from nopelens.experiments import (
        RESULTS_FILE,
        check_sweep_memory,
        config_id,
        expand_grid,
        failure_ranges,
        load_grid,
        override_grid,
        preset,
        read_records,
        summarize,
        sweep,
    )
    from nopelens.files import write_table
    from nopelens.memory import format_bytes

    if args.texts and not args.models:
        raise ValueError("--texts needs --models (a random-init model has no tokenizer).")
    if args.models:
        grid: Any = {"model": args.models, **({"text": args.texts} if args.texts else {})}
    else:
        grid = load_grid(args.grid) if args.grid else preset(args.preset)
    grid = override_grid(grid, _overrides(args.overrides))
    configs = expand_grid(grid)
    out = Path(args.out)
    done = read_records(out) if out.is_dir() else {}
    finished = sum(config_id(c) in done for c in configs)
    if args.dry_run:
        memory = check_sweep_memory(configs, max_workers=args.workers)
        available = memory["available_bytes"]
        print(
            f"{len(configs)} configurations; {finished} already finished in {out}; "
            f"{len(configs) - finished} to run. Peak memory {format_bytes(memory['peak_bytes'])} "
            f"per configuration, {memory['workers']} worker(s); available "
            f"{format_bytes(available) if available is not None else 'unknown'}."
            + (
                " Saved models are not in the estimate (their size is read when loaded)."
                if any(c["model"] is not None for c in configs)
                else ""
            )
        )
        return 0
    frame = sweep(
        grid,
        out_dir=out,
        executor=args.executor,
        address=args.address,
        max_workers=args.workers,
        progress=not args.quiet,
        max_configs=args.max_configs,
    )
    n_done = frame["config_id"].nunique() if not frame.empty else 0
    write_table(frame, out / "results.csv")
    summary = summarize(frame, by=args.by, margin=args.margin, layers=args.report_layers)
    write_table(summary, out / "summary.csv")
    print(
        f"{n_done} of {len(configs)} configurations finished ({n_done - finished} run now); "
        f"results in {out / RESULTS_FILE}, tables in {out / 'results.csv'} and "
        f"{out / 'summary.csv'}."
    )
    if not summary.empty:
        counts = summary["verdict"].value_counts().to_dict()
        print(
            "summary rows: "
            + ", ".join(f"{counts.get(v, 0)} {v}" for v in ("holds", "mixed", "fails"))
        )
    for line in failure_ranges(summary):
        print(f"- {line}")
    return 0
