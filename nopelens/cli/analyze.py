"""``nopelens analyze``: the neighborhood scores of every layer of a model, as a table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nopelens.cli.common import add_model_arguments, add_output_argument, model_from_args
from nopelens.validation import InvalidParameterError

HELP = (
    "Measure the neighborhood pattern (adjacency probability AP and neighborhood concordance NC, "
    "with chance levels and bootstrap CIs) at every layer of a model on random tokens."
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the model flags and the analysis flags."""
    add_model_arguments(parser)
    group = parser.add_argument_group("analysis")
    group.add_argument("--batch", type=int, default=64, help="number of random sequences")
    group.add_argument("--seq-len", type=int, default=32, help="tokens per sequence")
    group.add_argument("--tokens-seed", type=int, default=0, help="seed of the random tokens")
    group.add_argument(
        "--sites", default="resid_post", help="comma-separated hook sites, e.g. resid_post,attn_out"
    )
    group.add_argument(
        "--layers", default=None, help="comma-separated block indices (default: all blocks)"
    )
    group.add_argument(
        "--centered",
        action="store_true",
        help="subtract each sequence's mean hidden state before the cosines",
    )
    group.add_argument(
        "--exclude-first",
        action="store_true",
        help="drop position 0 (BOS / attention sink) before computing",
    )
    group.add_argument(
        "--n-bootstrap",
        type=int,
        default=1000,
        help="bootstrap resamples for the 95%% CI (0: none)",
    )
    add_output_argument(parser)


def _split(text: str, name: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise InvalidParameterError(
            f"The '--{name}' option must be a comma-separated list. Got {text!r} instead."
        )
    return items


def _layers(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(item) for item in _split(text, "layers"))
    except ValueError:
        raise InvalidParameterError(
            f"The '--layers' option must be comma-separated block indices such as 0,1. "
            f"Got {text!r} instead."
        ) from None


def _check_out(out: str | None) -> None:
    if out is not None and Path(out).suffix not in (".csv", ".json"):
        raise InvalidParameterError(
            f"The '--out' option must be a path ending in '.csv' or '.json'. Got {out!r} instead."
        )


def format_table(scores: Any) -> str:
    """One line per (site, layer): AP and NC with their bootstrap CI and chance level."""
    header = (
        f"{'site':<14} {'layer':<6} {'AP':>6} {'95% CI':>15} {'chance':>7}   "
        f"{'NC':>6} {'95% CI':>15} {'chance':>7}"
    )
    lines = [header, "-" * len(header)]
    wide = scores.set_index(["site", "layer", "metric"])
    seen: list[tuple[str, str]] = []
    for site, layer in zip(scores["site"], scores["layer"], strict=True):
        if (site, layer) not in seen:
            seen.append((site, layer))
    for site, layer in seen:
        cells = []
        for metric in ("adjacency_probability", "neighborhood_concordance"):
            row = wide.loc[(site, layer, metric)]
            ci = f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
            cells.append(f"{row['value']:>6.3f} {ci:>15} {row['chance']:>7.3f}")
        lines.append(f"{site:<14} {layer:<6} {cells[0]}   {cells[1]}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Build or load the model, analyse random tokens, print the table, write ``--out``."""
    _check_out(args.out)
    sites = _split(args.sites, "sites")
    layers = _layers(args.layers)
    from nopelens.analyzer import analyze
    from nopelens.files import write_table
    from nopelens.measure import random_tokens

    model = model_from_args(args)
    n_ctx = model.cfg.n_ctx
    if args.seq_len > n_ctx:
        raise InvalidParameterError(
            f"The '--seq-len' option ({args.seq_len}) is longer than the model's n_ctx ({n_ctx}). "
            f"Use --seq-len <= {n_ctx}" + ("." if args.model else f" or --n-ctx {args.seq_len}.")
        )
    tokens = random_tokens(args.batch, args.seq_len, model.cfg.d_vocab, seed=args.tokens_seed)
    report = analyze(
        model,
        tokens,
        sites=sites,
        layers=layers,
        centered=args.centered,
        exclude_first=args.exclude_first,
        n_bootstrap=args.n_bootstrap,
    )
    options = [
        o
        for o, on in (("centered", args.centered), ("first position excluded", args.exclude_first))
        if on
    ]
    print(
        f"{report.model_label} · {args.batch} random sequences x {args.seq_len} tokens "
        f"(tokens seed {args.tokens_seed})"
        + (f" · {', '.join(options)}" if options else "")
        + (
            f" · 95% bootstrap CI over sequences ({args.n_bootstrap} resamples)"
            if args.n_bootstrap
            else ""
        )
    )
    print(format_table(report.scores))
    print("AP chance = 2/n (n positions); NC chance = 0.5; 1.0 = perfect neighborhood pattern.")
    if args.out:
        path = write_table(report.scores, args.out)
        print(f"wrote {path}")
    return 0
