"""Arguments shared by several subcommands: the model to build or load, and output files."""

from __future__ import annotations

import argparse
from typing import Any

from nopelens.spec import ACTIVATIONS, ATTENTION, INIT_MODES, NORMALIZATIONS, POSITIONAL


def add_model_arguments(parser: argparse.ArgumentParser, *, n_ctx: int = 64) -> None:
    """Add ``--model PATH`` or the ``build_model`` flags of a random-init model."""
    group = parser.add_argument_group("model (a saved checkpoint, or a random-init model)")
    group.add_argument("--model", metavar="PATH", help="checkpoint written by nopelens.save_model")
    group.add_argument("--n-layers", type=int, default=2)
    group.add_argument("--d-model", type=int, default=64)
    group.add_argument("--n-heads", type=int, default=4)
    group.add_argument("--d-mlp", type=int, default=None, help="default 4 * d_model")
    group.add_argument("--d-vocab", type=int, default=256)
    group.add_argument("--n-ctx", type=int, default=n_ctx)
    group.add_argument("--positional", choices=POSITIONAL, default="none")
    group.add_argument("--attention", choices=ATTENTION, default="causal")
    group.add_argument("--normalization", choices=NORMALIZATIONS, default="LN")
    group.add_argument("--act-fn", choices=ACTIVATIONS, default="gelu")
    group.add_argument("--init-mode", choices=INIT_MODES, default="gpt2")
    group.add_argument(
        "--init-range",
        type=float,
        default=None,
        help="initializer_range (default 0.8/sqrt(d_model) for gpt2)",
    )
    group.add_argument("--attn-only", action="store_true")
    group.add_argument("--seed", type=int, default=0, help="weights seed")
    group.add_argument("--device", default="cpu")


def model_kwargs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``build_model`` keyword arguments given by the model flags."""
    kwargs: dict[str, Any] = {
        "n_layers": args.n_layers,
        "d_model": args.d_model,
        "n_heads": args.n_heads,
        "d_vocab": args.d_vocab,
        "n_ctx": args.n_ctx,
        "positional": args.positional,
        "attention": args.attention,
        "seed": args.seed,
        "device": args.device,
        "normalization_type": None if args.normalization == "none" else args.normalization,
        "act_fn": args.act_fn,
        "init_mode": args.init_mode,
        "attn_only": args.attn_only,
    }
    if args.d_mlp is not None:
        kwargs["d_mlp"] = args.d_mlp
    if args.init_range is not None:
        kwargs["initializer_range"] = args.init_range
    return kwargs


def model_from_args(args: argparse.Namespace) -> Any:
    """Load ``--model`` or build the random-init model the flags describe."""
    from nopelens.models import build_model, load_model

    if args.model:
        return load_model(args.model, device=args.device)
    return build_model(**model_kwargs_from_args(args))


def add_output_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--out FILE`` (``.csv`` or ``.json``)."""
    parser.add_argument("--out", metavar="FILE", help="also write the table as .csv or .json")
