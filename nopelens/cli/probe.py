"""``nopelens probe``: position probes (hidden / cosine / variance features) with their controls."""

from __future__ import annotations

import argparse

from nopelens.cli.common import (
    add_input_arguments,
    add_load_arguments,
    add_model_arguments,
    add_output_argument,
)
from nopelens.cli.vocabulary import (
    add_position_arguments,
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


def run(args: argparse.Namespace) -> int:
    """Build or load the model, probe it, print the winners per layer, write the tables."""
    from pathlib import Path

    from nopelens.cli.common import model_from_args, tokens_from_args
    from nopelens.files import write_table
    from nopelens.probes import probe_positions

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
    model = model_from_args(args)
    inputs = tokens_from_args(
        args,
        model,
        n_seqs=args.n_seqs,
        seq_len=args.seq_len,
        seed=args.data_seed,
        distinct=args.distinct,
    )
    tokens = inputs.tokens
    report = probe_positions(
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
    print(
        f"position probes: {report.config.get('model', {}).get('label', 'model')}, "
        f"{inputs.description}, seeds {list(args.seeds)}"
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
    if args.out:
        write_table(report.results, args.out)
        print(f"wrote {args.out}")
    if args.per_seed:
        write_table(report.per_seed, args.per_seed)
        print(f"wrote {args.per_seed}")
    return 0
