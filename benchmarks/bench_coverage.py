"""Coverage of the analyzer's confidence intervals, by simulation under a known truth (issue 14).

Usage: python benchmarks/bench_coverage.py [--replications 2000] [--resamples 1000] [--pool 4096]
       [--quick]

The truth. ``nopelens.analyze`` reports the mean over sequences of per-sequence scores (AP, NC)
with an interval over sequences. To know the true mean, a *pool* of per-sequence scores is
measured once on many sequences (``--pool`` random token sequences of 32 tokens, 256-token
vocabulary, through 2-layer d_model-64 random-init NoPE models, causal and bidirectional), and the
pool's mean is the truth. Each replication draws ``n_seqs`` scores from the pool with replacement
(i.i.d. from a distribution whose mean is known exactly), computes the interval with
``nopelens.measure.intervals.mean_interval`` (the code the analyzer runs), and checks whether it
covers the truth. Two parametric truths stress skewness: exponential (skew 2) and log-normal
(sigma 1, skew 6.2).

Output: for each truth, ``n_seqs`` in 8/16/32/64 and method (studentized, percentile, bca, t), the
actual coverage of the nominal 95% interval (with its binomial standard error) and the median
width; then
the studentized interval's coverage with 50 / 200 / 1000 / 2000 resamples at 16 and 32 sequences.
Replications are done in blocks of 50 with their own seed (the rows of one ``mean_interval`` call
share resamples).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

N_SEQS = (8, 16, 32, 64)
METHODS = ("studentized", "percentile", "bca", "t")
BLOCK = 50


def score_pools(pool: int) -> dict[str, np.ndarray]:
    """Per-sequence AP and NC of block 0 (and AP of the embedding) on ``pool`` sequences."""
    from nopelens import analyze, build_model, random_tokens

    tokens = random_tokens(pool, 32, 256, seed=11)
    pools = {}
    for attention in ("causal", "bidirectional"):
        model = build_model(
            n_layers=2, d_model=64, n_heads=4, d_vocab=256, n_ctx=32, attention=attention, seed=0
        )
        per_seq = analyze(model, tokens, layers=0, n_bootstrap=0, batch_size=512).per_sequence
        for metric, short in (("adjacency_probability", "AP"), ("neighborhood_concordance", "NC")):
            rows = per_seq[(per_seq.layer == "0") & (per_seq.metric == metric)]
            pools[f"{short} {attention} block 0"] = rows.value.to_numpy()
    rng = np.random.default_rng(5)
    pools["exponential"] = rng.exponential(size=1 << 18)
    pools["log-normal"] = rng.lognormal(sigma=1.0, size=1 << 18)
    return pools


def coverage(
    pool: np.ndarray, n: int, method: str, replications: int, resamples: int, seed: int
) -> tuple[float, float]:
    """Share of ``replications`` intervals covering the pool mean, and their median width.

    Scores in ``[0, 1]`` (AP, NC) get ``bounds=(0, 1)``, as in the analyzer.
    """
    from nopelens.measure.intervals import mean_interval

    truth = pool.mean()
    bounds = (0.0, 1.0) if pool.min() >= 0 and pool.max() <= 1 else None
    rng = np.random.default_rng(seed)
    hits, widths = [], []
    for block in range(0, replications, BLOCK):
        rows = min(BLOCK, replications - block)
        sample = rng.choice(pool, size=(rows, n))
        low, high = mean_interval(
            sample, method=method, n_resamples=resamples, seed=seed * 100_003 + block, bounds=bounds
        )
        hits.append((low <= truth) & (truth <= high))
        widths.append(high - low)
    return float(np.concatenate(hits).mean()), float(np.median(np.concatenate(widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--pool", type=int, default=4096)
    parser.add_argument("--quick", action="store_true", help="400 replications, pool 512")
    args = parser.parse_args()
    if args.quick:
        args.replications, args.pool = 400, 512
    start = time.perf_counter()
    print(
        f"machine: {os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    pools = score_pools(args.pool)
    se = (0.95 * 0.05 / args.replications) ** 0.5
    print(
        f"nominal 0.95; {args.replications} replications (binomial se {se:.4f}), "
        f"{args.resamples} resamples; truth = pool mean ({args.pool} sequences)\n"
    )
    header = f"{'truth':<26} {'mean':>7} {'n_seqs':>6} " + " ".join(f"{m:>18}" for m in METHODS)
    print(header + "\n" + "-" * len(header))
    for name, pool in pools.items():
        for n in N_SEQS:
            cells = []
            for method in METHODS:
                cover, width = coverage(pool, n, method, args.replications, args.resamples, n)
                cells.append(f"{cover:.3f} (w {width:.3g})".rjust(18))
            print(f"{name:<26} {pool.mean():>7.4f} {n:>6} " + " ".join(cells), flush=True)
    print("\nstudentized, by number of resamples:")
    for name in ("AP bidirectional block 0", "NC causal block 0", "exponential"):
        for n in (16, 32):
            cells = [
                f"B={b}: {coverage(pools[name], n, 'studentized', args.replications, b, n)[0]:.3f}"
                for b in (50, 200, 1000, 2000)
            ]
            print(f"  {name:<26} n_seqs {n:>3}  " + "  ".join(cells), flush=True)
    print(
        f"\n{time.perf_counter() - start:.0f} s; load average after: "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
