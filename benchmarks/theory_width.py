"""Finite width: how far the theory's predictions are from the model, as a function of d_model.

Usage: python benchmarks/theory_width.py [--widths 32,64,128,256,512] [--seeds 3] [--batch 64]
       [--seq-len 32] [--layers 3] [--threads 1] [--device auto] [--json FILE]

For each width, random-init causal NoPE models (LN, gelu MLP, 4 heads, vocabulary 4096; one per
seed) read ``--batch`` sequences of ``--seq-len`` distinct random tokens. At every site of block 0
and of the last block, and for every prediction of :func:`nopelens.analyzer.layer_theory`
(``first_layer``: block 0's pattern-based prediction; ``one_step``; ``propagated``), it reports
over the off-diagonal entries of the batch-mean matrices:

* ``mean``: the mean signed error ``observed - predicted`` (the systematic offset),
* ``max``: the largest absolute error, and ``rmse``,

averaged over seeds (with the spread over seeds). ``prop_no_mlp`` is the propagated prediction
with ``mlp="ignore"`` (``resid_post = resid_mid``): what ignoring the MLP costs.

At block 0, ``first_layer`` and ``one_step`` differ in one thing only: the first-layer Gram model
replaces each sequence's embedding Gram by its expectation (``sigma^2 T + mu^2 1 1^T``), while
``one_step`` keeps the sequence's own Gram and takes the value/output maps' traces from the
weights. The cosine of finite-width vectors is not
the cosine of their expected Gram (Jensen), so the difference between the two rows is the
finite-width offset of the first-layer theory, and ``one_step`` is its correction.

Prints the machine (CPU, SIMD level, threads, load average) first: the numbers here are not
timings, but the run takes minutes, so the load is printed beside them anyway.
"""

from __future__ import annotations

import argparse
import json
import math
import time

from _machine import machine_info, machine_lines


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="32,64,128,256,512")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument("--json", default=None)
    return parser.parse_args()


def _errors(observed, predicted):
    import torch

    n = observed.shape[-1]
    rows, cols = torch.triu_indices(n, n, offset=1)
    diff = (observed - predicted)[rows, cols].double()
    return float(diff.mean()), float(diff.abs().max()), float(diff.pow(2).mean().sqrt())


def run(args: argparse.Namespace) -> dict:
    import torch

    from nopelens import build_model, random_tokens
    from nopelens.analyzer import layer_theory

    torch.set_num_threads(args.threads)
    device = (
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    widths = [int(w) for w in args.widths.split(",")]
    rows = []
    for d in widths:
        for seed in range(args.seeds):
            model = build_model(
                n_layers=args.layers,
                d_model=d,
                n_heads=4,
                d_vocab=4096,
                n_ctx=args.seq_len,
                seed=seed,
                device=device,
            )
            tokens = random_tokens(args.batch, args.seq_len, 4096, seed=100 + seed, distinct=True)
            theory = layer_theory(
                model,
                tokens,
                predictions=("first_layer", "one_step", "propagated"),
                n_bootstrap=0,
            )
            ignored = layer_theory(
                model,
                tokens,
                predictions=("propagated",),
                sites="resid_post",
                mlp="ignore",
                n_bootstrap=0,
            )
            for index, layer in enumerate(ignored.layers):
                mean, worst, rmse = _errors(
                    ignored.observed["resid_post"][index],
                    ignored.predicted["propagated"]["resid_post"][index],
                )
                if layer in (0, ignored.layers[-1]):
                    rows.append(
                        {
                            "d_model": d,
                            "seed": seed,
                            "site": "resid_post",
                            "layer": layer,
                            "prediction": "prop_no_mlp",
                            "mean": mean,
                            "max": worst,
                            "rmse": rmse,
                        }
                    )
            for site in theory.sites:
                for index, layer in enumerate(theory.layers):
                    if layer not in (0, theory.layers[-1]):
                        continue
                    for name in theory.predictions:
                        mean, worst, rmse = _errors(
                            theory.observed[site][index], theory.predicted[name][site][index]
                        )
                        rows.append(
                            {
                                "d_model": d,
                                "seed": seed,
                                "site": site,
                                "layer": layer,
                                "prediction": name,
                                "mean": mean,
                                "max": worst,
                                "rmse": rmse,
                            }
                        )
    return {"rows": rows}


def _summary(rows):
    import pandas as pd

    frame = pd.DataFrame(rows)
    table = frame.groupby(["site", "layer", "prediction", "d_model"]).agg(
        mean=("mean", "mean"),
        mean_sd=("mean", "std"),
        max=("max", "mean"),
        max_sd=("max", "std"),
        rmse=("rmse", "mean"),
    )
    return table.reset_index()


def main() -> None:
    args = _args()
    info = machine_info()
    print("\n".join(machine_lines(info)))
    started = time.perf_counter()
    result = run(args)
    table = _summary(result["rows"])
    print(
        f"\nerrors observed - predicted over off-diagonal entries of the batch means "
        f"({args.seeds} seeds x {args.batch} sequences x {args.seq_len} tokens; mean ± sd "
        f"over seeds)"
    )
    print(
        f"{'site':<10} {'layer':>5} {'prediction':<12} {'d_model':>7} {'mean error':>16} "
        f"{'max error':>16} {'rmse':>7}  {'mean*sqrt(d)':>12}"
    )
    for r in table.itertuples(index=False):
        print(
            f"{r.site:<10} {r.layer:>5} {r.prediction:<12} {r.d_model:>7} "
            f"{r.mean:>+8.4f} ± {r.mean_sd:<6.4f} {r.max:>8.4f} ± {r.max_sd:<6.4f} "
            f"{r.rmse:>7.4f}  {r.mean * math.sqrt(r.d_model):>+12.3f}"
        )
    elapsed = time.perf_counter() - started
    print(f"\n{elapsed:.0f} s; load average after: {info_load()}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": info, "args": vars(args), **result}, handle, indent=1)


def info_load() -> str:
    import os

    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    main()
