"""Benchmark: position probes on 100k tokens x d_model 512 (the issue-5 target: < 60 s on a CPU).

The activations are synthetic but shaped like a first causal layer at random init: each hidden
state is a GELU of its token's embedding plus the running (Cesaro) mean of i.i.d. value vectors,
so the neighborhood pattern, a 1/i variance and a weak linear signal are all present. Sizes:
1563 sequences x 64 positions = 100,032 tokens, d_model 512.

Prints, on this machine:

1. the probe implementation on the 512-d hidden states (the issue's target): one split, ridge
   with its alpha path and logistic regression with its lambda path, each for the position,
   control-task and shuffled-label targets: wall and CPU seconds, and the ratio to 60 s;
2. the default ``probe_positions`` call on that layer (3 seeds; hidden, cosine and variance
   families at full and matched capacity; ridge, logistic and isotonic probes; all controls);
3. nopelens' torch probes against scikit-learn (``Ridge`` over the same alpha grid and
   ``LogisticRegression(lbfgs)``) on the same standardised hidden features and one target:
   seconds and the sklearn / nopelens ratios, plus the test scores of each (they should agree).

Usage:
    python benchmarks/bench_probe.py [--threads 2] [--sequences 1563] [--skip-full] [--skip-sklearn]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def synthetic_layer(n_seq: int, pos: int, d_model: int, d_vocab: int, seed: int = 0):
    """Hidden states [n_seq, pos, d_model] and token ids [n_seq, pos] of a causal-mean layer."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, d_vocab, (n_seq, pos), generator=g)
    embed = torch.randn(d_vocab, d_model, generator=g)
    values = torch.randn(d_vocab, d_model, generator=g) * 2.0 + torch.randn(d_model, generator=g)
    cesaro = values[tokens].cumsum(dim=1) / torch.arange(1, pos + 1)[:, None]
    hidden = torch.nn.functional.gelu(embed[tokens] + cesaro)
    return hidden, tokens


def _summary(rows) -> None:
    key = (rows["target"] == "position") & (rows["capacity"] == "full")
    for metric, probe in (("r2", "ridge"), ("accuracy", "logistic"), ("r2", "isotonic")):
        sel = rows[key & (rows["metric"] == metric) & (rows["probe"] == probe)]
        if len(sel):
            print(
                "    "
                + ", ".join(f"{r.feature} {probe} {metric} {r.value:.3f}" for r in sel.itertuples())
            )


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (CI has 2)")
    parser.add_argument("--sequences", type=int, default=1563)
    parser.add_argument("--pos", type=int, default=64)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument(
        "--skip-full", action="store_true", help="skip the default 3-seed, all-families call"
    )
    parser.add_argument(
        "--sklearn-rows",
        type=int,
        default=20000,
        help="training rows of the sklearn comparison (sklearn is slow)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from nopelens.probes import (
        RELATIVE_ALPHAS,
        logistic_predict,
        probe_positions,
        regression_metrics,
        ridge_predict,
        standardize,
    )

    hidden, tokens = synthetic_layer(args.sequences, args.pos, args.d_model, 256)
    hidden = hidden.to(args.device)
    n_tokens = hidden.shape[0] * hidden.shape[1]
    print(
        f"activations: {tuple(hidden.shape)} = {n_tokens} tokens x d_model {args.d_model}, "
        f"device {args.device}, torch threads {torch.get_num_threads()}"
    )

    report, wall, cpu = timed(
        lambda: probe_positions(
            {"0": hidden}, tokens, seeds=(0,), features="hidden", equal_dim=None
        )
    )
    print(
        f"[1] the probe implementation on {n_tokens} tokens x d_model {args.d_model}: one split, "
        f"hidden features, ridge (17-alpha path + refit) and logistic (6-lambda path), each "
        f"for the position, control and shuffled targets: wall {wall:.1f} s, cpu {cpu:.1f} s, "
        f"wall / 60 s budget = {wall / 60:.2f}"
    )
    _summary(report.results)
    if not args.skip_full:
        report, wall, cpu = timed(lambda: probe_positions({"0": hidden}, tokens))
        print(
            f"[2] the default probe_positions call on this layer (3 seeds; hidden, cosine, "
            f"variance at full and matched capacity; ridge, logistic, isotonic; all controls): "
            f"wall {wall:.1f} s, cpu {cpu:.1f} s, wall / 60 s = {wall / 60:.2f}"
        )
        _summary(report.results)

    if args.skip_sklearn:
        return
    from sklearn.linear_model import LogisticRegression, Ridge

    flat = hidden.reshape(-1, args.d_model).cpu()
    y = torch.arange(args.pos).repeat(args.sequences)
    n_fit = min(args.sklearn_rows, int(0.6 * n_tokens))
    n_val = n_fit // 4
    xf, xv, xt = standardize(flat[:n_fit], flat[n_fit : n_fit + n_val], flat[-n_tokens // 4 :])
    yf, yv, yt = y[:n_fit], y[n_fit : n_fit + n_val], y[-n_tokens // 4 :]
    print(f"[3] torch vs scikit-learn, {n_fit} fit + {n_val} val rows, one target")

    (pred, _), t_ridge, _ = timed(
        lambda: ridge_predict(xf, yf[:, None].float(), xv, yv[:, None].float(), xt)
    )
    r2_torch = regression_metrics(pred[:, 0].numpy(), yt.numpy())["r2"]

    def sk_ridge():
        scale = float((xf - xf.mean(0)).pow(2).sum()) / args.d_model
        best = min(
            RELATIVE_ALPHAS,
            key=lambda a: float(
                (
                    (
                        Ridge(alpha=a * scale).fit(xf.numpy(), yf.numpy()).predict(xv.numpy())
                        - yv.numpy()
                    )
                    ** 2
                ).mean()
            ),
        )
        x_all = torch.cat([xf, xv]).numpy()
        y_all = torch.cat([yf, yv]).numpy()
        return Ridge(alpha=best * scale).fit(x_all, y_all).predict(xt.numpy())

    sk_pred, t_sk_ridge, _ = timed(sk_ridge)
    r2_sk = regression_metrics(sk_pred, yt.numpy())["r2"]
    print(
        f"    ridge path ({len(RELATIVE_ALPHAS)} alphas + refit): torch {t_ridge:.2f} s "
        f"(R2 {r2_torch:.3f}), sklearn {t_sk_ridge:.2f} s (R2 {r2_sk:.3f}), "
        f"sklearn/torch = {t_sk_ridge / t_ridge:.1f}x"
    )

    (cls, lams), t_log, _ = timed(
        lambda: logistic_predict(xf, yf[:, None], xv, yv[:, None], xt, args.pos)
    )
    acc_torch = float((cls[:, 0] == yt).float().mean())
    lam = lams[0]

    def sk_logistic():
        model = LogisticRegression(C=1.0 / (lam * n_fit), max_iter=100)
        return model.fit(xf.numpy(), yf.numpy()).predict(xt.numpy())

    sk_cls, t_sk_log, _ = timed(sk_logistic)
    acc_sk = float((sk_cls == yt.numpy()).mean())
    print(
        f"    logistic: torch (penalty path) {t_log:.2f} s (acc {acc_torch:.3f}); "
        f"sklearn lbfgs at the chosen penalty only {t_sk_log:.2f} s (acc {acc_sk:.3f}); "
        f"sklearn/torch = {t_sk_log / t_log:.1f}x"
    )
    print(f"    chance accuracy {1 / args.pos:.4f}; numpy {np.__version__}")


if __name__ == "__main__":
    main()
