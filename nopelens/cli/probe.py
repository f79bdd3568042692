"""``nopelens probe``: position probes (hidden / cosine / variance features) with their controls."""

from __future__ import annotations

import argparse
from typing import Any

from nopelens.cli.common import (
    add_input_arguments,
    add_load_arguments,
    add_model_arguments,
    add_output_argument,
    announce_loaded,
    announce_loading,
    log_settings,
    model_from_args,
    quiet,
    tokens_from_args,
)
from nopelens.cli.vocabulary import (
    add_position_arguments,
    add_quiet_argument,
    add_site_arguments,
    add_token_arguments,
    flatten,
)

HELP = (
    "probe every layer for absolute position from hidden-state, cosine-similarity and "
    "variance features, with chance levels, control task, shuffled labels and seeds"
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``probe`` arguments."""
    add_model_arguments(parser)
    add_load_arguments(parser)
    add_input_arguments(parser)
    add_token_arguments(parser, n_seqs=64)
    add_site_arguments(parser)
    add_position_arguments(parser)
    probe = parser.add_argument_group("probes")
    probe.add_argument(
        "--features",
        nargs="+",
        default=["hidden", "cosine", "variance"],
        metavar="FAMILY",
        help="hidden, cosine, variance",
    )
    probe.add_argument(
        "--probes",
        nargs="+",
        default=["ridge", "logistic", "isotonic"],
        metavar="KIND",
        help="ridge, logistic, isotonic, mlp",
    )
    probe.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0, 1, 2],
        metavar="SEED",
        help="probe seeds (split, control labels, shuffle)",
    )
    probe.add_argument(
        "--init-seeds",
        nargs="+",
        type=int,
        default=None,
        metavar="SEED",
        help="also rebuild the model at these weight seeds and report intervals over them",
    )
    probe.add_argument(
        "--extrapolate-from",
        type=int,
        default=None,
        metavar="K",
        help="length split: train on positions < K, test on positions >= K",
    )
    probe.add_argument("--mlp-hidden", type=int, default=64, help="hidden units of the mlp probe")
    probe.add_argument("--test-fraction", type=float, default=0.25)
    probe.add_argument("--val-fraction", type=float, default=0.2)
    probe.add_argument(
        "--equal-dim",
        type=int,
        default=4,
        help="dimension of the capacity-matched rows (0: skip them)",
    )
    probe.add_argument("--no-embed", action="store_true", help="skip the embedding layer")
    probe.add_argument("--no-control-task", action="store_true")
    probe.add_argument("--no-shuffled-control", action="store_true")
    probe.add_argument(
        "--no-random-init",
        action="store_true",
        help="skip the random-init baseline of a trained --model",
    )
    probe.add_argument("--max-iter", type=int, default=20, help="L-BFGS iterations per penalty")
    add_output_argument(parser)
    parser.add_argument(
        "--per-seed", metavar="FILE", help="also write the per-seed rows as .csv or .json"
    )
    add_quiet_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Build or load the model, probe it, print the winners per layer, write the tables."""
    from pathlib import Path

    for flag, path in (("--out", args.out), ("--per-seed", args.per_seed)):
        if path is not None and Path(path).suffix not in (".csv", ".json"):
            raise ValueError(
                f"The '{flag}' argument must be a path ending in '.csv' or '.json'. "
                f"Got {path!r} instead."
            )
    if args.equal_dim < 0:
        raise ValueError(
            f"The '--equal-dim' argument must be an int >= 0 (0 skips the capacity-matched rows). "
            f"Got {args.equal_dim} instead."
        )
    start = announce_loading(args)
    from nopelens.files import write_table
    from nopelens.progress import log_progress

    model = model_from_args(args)
    inputs = tokens_from_args(args, model)
    announce_loaded(args, model, inputs, start)
    tokens = inputs.tokens
    log_settings(
        args,
        sites=flatten(args.sites),
        layers=args.layers or "all",
        features=args.features,
        probes=args.probes,
        seeds=args.seeds,
        init_seeds=args.init_seeds,
    )
    # probe_positions logs one INFO line per (model, site, layer) it probes
    with log_progress("nopelens.probes.positions", desc="probe", unit="layer", quiet=quiet(args)):
        report = _probe(args, model, tokens)
    _print_report(args, report, inputs.description)
    for flag_path, table in ((args.out, report.results), (args.per_seed, report.per_seed)):
        if flag_path:
            print(f"wrote {write_table(table, flag_path)}")
    return 0


def _probe(args: argparse.Namespace, model: Any, tokens: Any) -> Any:
    from nopelens.probes import probe_positions

    return probe_positions(
        model,
        tokens,
        sites=flatten(args.sites),
        layers=args.layers,
        features=args.features,
        probes=args.probes,
        seeds=args.seeds,
        test_fraction=args.test_fraction,
        val_fraction=args.val_fraction,
        equal_dim=args.equal_dim or None,
        centered=args.centered,
        drop_first=args.exclude_first,
        include_embed=not args.no_embed,
        control_task=not args.no_control_task,
        shuffled_control=not args.no_shuffled_control,
        random_init_baseline=not args.no_random_init,
        max_iter=args.max_iter,
        init_seeds=args.init_seeds,
        extrapolate_from=args.extrapolate_from,
        mlp_hidden=args.mlp_hidden,
        batch_size=args.batch_size,
    )


def _print_report(args: argparse.Namespace, report: Any, description: str) -> None:
    print(
        f"position probes: {report.config.get('model', {}).get('label', 'model')}, "
        f"{description}, seeds {list(args.seeds)}"
    )
    metric = "spearman" if {"ridge", "isotonic"} & set(args.probes) else "accuracy"
    for model_label in report.config["models"]:
        table = report.compare(metric, model=model_label)
        print(f"best feature family per layer ({metric}, model={model_label}):")
        for row in table.itertuples():
            margin = ""
            if hasattr(row, "margin") and row.margin == row.margin:
                margin = (
                    f"  +{row.margin:.3f} over {row.runner_up} "
                    f"[{row.margin_ci_low:.3f}, {row.margin_ci_high:.3f}]"
                )
            print(
                f"  {row.site:>10} {row.layer:>5}: {row.winner:<8} ({row.winner_probe}) "
                f"{row.value:.3f} (chance {row.chance:.3f}){margin}"
            )
