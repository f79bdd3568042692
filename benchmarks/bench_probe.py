"""Benchmark: the default position-probe call, at 256 x 64 x d_model 128 and at 100k x 512.

The activations are synthetic but shaped like a first causal layer at random init: each hidden
state is a GELU of its token's embedding plus the running (Cesaro) mean of i.i.d. value vectors,
so the neighborhood pattern, a 1/i variance and a weak linear signal are all present.

Prints the machine (CPU, NumPy SIMD level from ``numpy.show_runtime()``'s lists, torch threads)
and the load average next to every figure, then:

1. the default ``probe_positions`` call (3 split seeds; hidden, cosine and variance families at
   full and matched capacity; ridge, logistic and isotonic probes; control task and shuffled
   labels) on 256 sequences x 64 positions x d_model 128: wall and CPU seconds, and the ratio to
   the 10 s budget (issue 17);
2. the same call on 1563 x 64 = 100,032 tokens x d_model 512: wall, CPU, ratio to 60 s;
3. the opt-in MLP probe (``probes="mlp"``) on the layer of [1];
4. ``--check-same``: the default call of [1] with the logistic loss and gradient from autograd
   (the implementation before the closed-form gradient) against the closed form, on the same
   seeds: how many rows are identical, and the largest change of each metric, absolute and in
   seed standard deviations;
5. nopelens' torch probes against scikit-learn (``Ridge`` over the same alpha grid and
   ``LogisticRegression(lbfgs)``) on the same standardised hidden features and one target.

With other work running, compare CPU times (``time.process_time``), not wall times. The probe
fits of a layer run ``--threads`` at a time, each on one torch thread
(:mod:`nopelens.probes.layer`; each worker thread sets it, since a new thread does not inherit
it), so the figures (and the results) do not suffer from torch's intra-op threads waiting for
each other on a busy machine; on a quiet 2-core machine the wall time is about half the CPU
time.

Usage:
    python benchmarks/bench_probe.py [--threads 2] [--skip-large] [--check-same] [--skip-sklearn]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

try:  # the shared machine report of benchmarks/ (prints NumPy's SIMD lists, threads, load)
    from _machine import machine_info, machine_lines
except ImportError:  # pragma: no cover - running from a checkout without it
    machine_info = machine_lines = None


def print_machine() -> None:
    """CPU, NumPy SIMD level (``numpy.show_runtime()``), torch threads, load average."""
    if machine_info is not None:
        print("\n".join(machine_lines(machine_info())))
        return
    import platform

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    np.show_runtime()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load {os.getloadavg()}")


def load() -> str:
    """The 1-minute load average, for the line of each figure."""
    return f"load {os.getloadavg()[0]:.2f}"


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
    for metric, probe in (
        ("r2", "ridge"),
        ("accuracy", "logistic"),
        ("r2", "isotonic"),
        ("accuracy", "mlp"),
    ):
        sel = rows[key & (rows["metric"] == metric) & (rows["probe"] == probe)]
        if len(sel):
            print(
                "    "
                + ", ".join(
                    f"{r.feature} {probe} {metric} {r.value:.3f} (chance {r.chance:.3f})"
                    for r in sel.itertuples()
                )
            )


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def run_default(label: str, hidden, tokens, budget: float | None, **kwargs):
    """Time one probe_positions call and print its line; returns the report."""
    from nopelens.probes import probe_positions

    before = load()
    report, wall, cpu = timed(lambda: probe_positions({"0": hidden}, tokens, **kwargs))
    ratio = f", wall / {budget:.0f} s budget = {wall / budget:.2f}" if budget else ""
    print(
        f"{label}: wall {wall:.1f} s, cpu {cpu:.1f} s{ratio} "
        f"({before} before, {load()} after; {len(report.per_seed)} per-seed rows)"
    )
    _summary(report.results)
    return report


def check_same(hidden, tokens) -> None:
    """[4] The default call with autograd's logistic gradient against the closed form."""
    import nopelens.probes.fitting as fitting
    from nopelens.probes import probe_positions

    fast = fitting._loss_and_grad

    def autograd_loss(x, y, weight, bias, lam, x_t=None, **_):  # recomputes, ignores caches
        with torch.enable_grad():
            w = weight.detach().requires_grad_(True)
            b = bias.detach().requires_grad_(True)
            loss = (
                torch.nn.functional.cross_entropy(x @ w + b, y.reshape(-1))
                + 0.5 * lam * w.pow(2).sum()
            )
            grad_w, grad_b = torch.autograd.grad(loss, [w, b])
        return loss.detach(), grad_w, grad_b

    fitting._loss_and_grad = autograd_loss
    try:
        reference, wall_ref, cpu_ref = timed(lambda: probe_positions({"0": hidden}, tokens))
    finally:
        fitting._loss_and_grad = fast
    report, wall, cpu = timed(lambda: probe_positions({"0": hidden}, tokens))
    a, b = reference.per_seed, report.per_seed
    same = int((a["value"].to_numpy() == b["value"].to_numpy()).sum())
    print(
        f"[4] same seeds, autograd reference (cpu {cpu_ref:.1f} s) vs closed-form gradient "
        f"(cpu {cpu:.1f} s, {cpu_ref / cpu:.1f}x): {same} of {len(a)} per-seed values identical"
    )
    keys = ["feature", "capacity", "probe", "target", "metric"]
    agg_a = a.groupby(keys)["value"].agg(["mean", "std"])
    agg_b = b.groupby(keys)["value"].mean()
    diff = (agg_a["mean"] - agg_b).abs()
    rel = diff / agg_a["std"].replace(0.0, np.nan)
    table = diff.to_frame("max_abs").assign(in_seed_sd=rel).groupby(level=["probe", "metric"]).max()
    for (probe, metric), row in table.iterrows():
        print(
            f"    {probe:9s} {metric:12s} largest change of a seed mean {row.max_abs:.4f} "
            f"({row.in_seed_sd:.2f} seed SD)"
        )


def sklearn_comparison(hidden, d_model: int, pos: int, n_seq: int, rows: int) -> None:
    """[5] torch ridge / logistic against scikit-learn on one target."""
    from sklearn.linear_model import LogisticRegression, Ridge

    from nopelens.probes import (
        RELATIVE_ALPHAS,
        logistic_predict,
        regression_metrics,
        ridge_predict,
        standardize,
    )

    flat = hidden.reshape(-1, d_model).cpu()
    n_tokens = flat.shape[0]
    y = torch.arange(pos).repeat(n_seq)
    n_fit = min(rows, int(0.6 * n_tokens))
    n_val = n_fit // 4
    xf, xv, xt = standardize(flat[:n_fit], flat[n_fit : n_fit + n_val], flat[-n_tokens // 4 :])
    yf, yv, yt = y[:n_fit], y[n_fit : n_fit + n_val], y[-n_tokens // 4 :]
    print(f"[5] torch vs scikit-learn, {n_fit} fit + {n_val} val rows, one target ({load()})")
    (pred, _), t_ridge, _ = timed(
        lambda: ridge_predict(xf, yf[:, None].float(), xv, yv[:, None].float(), xt)
    )
    r2_torch = regression_metrics(pred[:, 0].numpy(), yt.numpy())["r2"]

    def sk_ridge():
        scale = float((xf - xf.mean(0)).pow(2).sum()) / d_model
        errors = [
            float(
                (
                    (
                        Ridge(alpha=a * scale).fit(xf.numpy(), yf.numpy()).predict(xv.numpy())
                        - yv.numpy()
                    )
                    ** 2
                ).mean()
            )
            for a in RELATIVE_ALPHAS
        ]
        best = RELATIVE_ALPHAS[int(np.argmin(errors))]
        x_all, y_all = torch.cat([xf, xv]).numpy(), torch.cat([yf, yv]).numpy()
        return Ridge(alpha=best * scale).fit(x_all, y_all).predict(xt.numpy())

    sk_pred, t_sk_ridge, _ = timed(sk_ridge)
    r2_sk = regression_metrics(sk_pred, yt.numpy())["r2"]
    print(
        f"    ridge path ({len(RELATIVE_ALPHAS)} alphas + refit): torch {t_ridge:.2f} s "
        f"(R2 {r2_torch:.3f}), sklearn {t_sk_ridge:.2f} s (R2 {r2_sk:.3f}), "
        f"sklearn/torch = {t_sk_ridge / t_ridge:.1f}x"
    )
    (cls, lams), t_log, _ = timed(
        lambda: logistic_predict(xf, yf[:, None], xv, yv[:, None], xt, pos)
    )
    acc_torch = float((cls[:, 0] == yt).float().mean())

    def sk_logistic():
        model = LogisticRegression(C=1.0 / (lams[0] * n_fit), max_iter=100)
        return model.fit(xf.numpy(), yf.numpy()).predict(xt.numpy())

    sk_cls, t_sk_log, _ = timed(sk_logistic)
    acc_sk = float((sk_cls == yt.numpy()).mean())
    print(
        f"    logistic: torch (penalty path) {t_log:.2f} s (acc {acc_torch:.3f}); sklearn lbfgs "
        f"at the chosen penalty only {t_sk_log:.2f} s (acc {acc_sk:.3f}); "
        f"sklearn/torch = {t_sk_log / t_log:.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (CI has 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sequences", type=int, default=1563, help="sequences of the large run")
    parser.add_argument("--pos", type=int, default=64)
    parser.add_argument("--d-model", type=int, default=512, help="width of the large run")
    parser.add_argument("--skip-default", action="store_true", help="skip [1] (256 x 64 x 128)")
    parser.add_argument("--skip-large", action="store_true", help="skip [2] (100k x 512)")
    parser.add_argument("--skip-full", action="store_true", help="alias of --skip-large")
    parser.add_argument("--mlp", action="store_true", help="run [3], the opt-in MLP probe")
    parser.add_argument("--check-same", action="store_true", help="run [4]")
    parser.add_argument("--skip-sklearn", action="store_true", help="skip [5]")
    parser.add_argument(
        "--sklearn-rows", type=int, default=20000, help="training rows of [5] (sklearn is slow)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print_machine()
    from nopelens.probes import probe_positions

    small, small_tokens = synthetic_layer(256, 64, 128, 256)
    small = small.to(args.device)
    probe_positions({"0": small[:8, :8]}, small_tokens[:8, :8], seeds=(0,))  # imports, warm-up
    if not args.skip_default:
        run_default(
            f"[1] default probe_positions, 256 x 64 tokens x d_model 128, {args.device}",
            small,
            small_tokens,
            10.0,
        )
    large = None
    if not (args.skip_large or args.skip_full):
        large, large_tokens = synthetic_layer(args.sequences, args.pos, args.d_model, 256)
        large = large.to(args.device)
        n_tokens = large.shape[0] * large.shape[1]
        run_default(
            f"[2] default probe_positions, {n_tokens} tokens x d_model {args.d_model}, "
            f"{args.device}",
            large,
            large_tokens,
            60.0,
        )
    if args.mlp:
        run_default(
            "[3] probes='mlp' (3 seeds, every family, both capacities), 256 x 64 x 128",
            small,
            small_tokens,
            None,
            probes="mlp",
        )
    if args.check_same:
        check_same(small, small_tokens)
    if not args.skip_sklearn:
        if large is None:
            large, _ = synthetic_layer(args.sequences, args.pos, args.d_model, 256)
        sklearn_comparison(large, args.d_model, args.pos, args.sequences, args.sklearn_rows)
    print(f"done ({load()}); numpy {np.__version__}, torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
