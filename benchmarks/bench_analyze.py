"""Speed and memory of the neighborhood analyzer (issue 3), on CPU.

Usage: python benchmarks/bench_analyze.py [--threads 2] [--repeats 3] [--naive-seqs 4]
       [--skip-naive] [--skip-long]

(a) ``nopelens.analyze`` time / forward time, for 64 random sequences of 256 tokens through a
    6-layer, d_model-128 random-init NoPE model (site resid_post, so 7 layers with "embed";
    1000 bootstrap resamples). The forward is ``run_with_cache`` with only the needed hooks
    (``hook_embed`` and every ``blocks.L.hook_resid_post``), as ``collect_activations`` runs it.
    Both are timed interleaved, ``--repeats`` times; the minimum of each is reported.
(b) Speed-up over the naive approach: the same forward, then per sequence and per layer
    ``sklearn.metrics.pairwise.cosine_similarity`` on numpy arrays, AP with a Python loop over
    rows, NC with a Python loop over rows that compares all pairs of the row with numpy
    broadcasting (O(n^3) per matrix, partly vectorised: kinder to the baseline than a triple
    Python loop), and the mean matrix. The naive scoring is timed on ``--naive-seqs`` sequences
    and extrapolated linearly to 64 (it is linear in the number of sequences).
(c) One sequence of 4096 positions: ``self_similarity`` of random d_model-128 hidden states, then
    AP, NC and the distance profile: time, and peak memory (peak RSS of a fresh subprocess,
    minus its RSS after the imports).

Timings depend on the machine and on its load: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

BATCH, POS, LAYERS, D_MODEL, HEADS, VOCAB = 64, 256, 6, 128, 4, 512

_LONG = r"""
import json, time, torch
torch.set_num_threads({threads})
from nopelens.measure import (adjacency_probability, distance_profile,
                                 neighborhood_concordance, self_similarity)


def status(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1]) / 1024  # MiB


def timed(name, func, *args):
    start = time.perf_counter()
    value = func(*args)
    times[name] = time.perf_counter() - start
    return value


h = torch.randn(4096, 128, generator=torch.Generator().manual_seed(0))
neighborhood_concordance(torch.randn(8, 8))  # warm up (lazy imports)
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset the peak-RSS counter (VmHWM)
base = status("VmRSS")
times = {{}}
sim = timed("self_similarity", self_similarity, h)
ap = timed("adjacency_probability", adjacency_probability, sim)
nc = timed("neighborhood_concordance", neighborhood_concordance, sim)
prof = timed("distance_profile", distance_profile, sim)
print(json.dumps({{"times": times, "peak_mib": status("VmHWM") - base, "base_mib": base,
                  "ap": float(ap), "nc": float(nc)}}))
"""


def naive_scores(hidden):
    """What a researcher would write: per sequence and layer, sklearn cosine + loops.

    ``hidden`` is a list (per layer) of ``[batch, pos, d_model]`` numpy arrays.
    """
    import numpy as np
    from sklearn.metrics.pairwise import cosine_similarity

    out = []
    mean = []
    for layer in hidden:
        total = np.zeros((layer.shape[1], layer.shape[1]))
        for seq in layer:
            sim = cosine_similarity(seq)
            total += sim
            n = len(sim)
            hits = 0
            for i in range(n):
                row = sim[i].copy()
                row[i] = -np.inf
                hits += abs(int(np.argmax(row)) - i) == 1
            num, den = 0.0, 0
            idx = np.arange(n)
            for i in range(n):
                others = idx != i
                v, d = sim[i][others], np.abs(idx[others] - i)
                nearer = d[:, None] < d[None, :]
                num += ((v[:, None] > v[None, :]) & nearer).sum()
                num += 0.5 * ((v[:, None] == v[None, :]) & nearer).sum()
                den += nearer.sum()
            out.append((hits / n, num / den))
        mean.append(total / len(layer))
    return out, mean


def naive_python_nc(sim):
    """NC as a triple Python loop over a list-of-lists matrix (what the definition reads like)."""
    n = len(sim)
    num, den = 0.0, 0
    for i in range(n):
        row = sim[i]
        for j in range(n):
            if j == i:
                continue
            dij = abs(i - j)
            for k in range(n):
                if k != i and dij < abs(i - k):
                    den += 1
                    num += 1.0 if row[j] > row[k] else 0.5 if row[j] == row[k] else 0.0
    return num / den


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-seqs", type=int, default=4)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from nopelens import analyze, build_model, random_tokens

    model = build_model(
        n_layers=LAYERS, d_model=D_MODEL, n_heads=HEADS, d_vocab=VOCAB, n_ctx=POS, seed=0
    )
    tokens = random_tokens(BATCH, POS, VOCAB, seed=0)
    names = {"hook_embed", *(f"blocks.{layer}.hook_resid_post" for layer in range(LAYERS))}

    def forward():
        with torch.no_grad():
            _, cache = model.run_with_cache(
                tokens, names_filter=lambda n: n in names, return_type=None
            )
        return cache

    def run_analyze():
        return analyze(model, tokens, batch_size=BATCH)

    forward()
    run_analyze()  # warm up
    fwd, ana, fwd_cpu, ana_cpu = [], [], [], []
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        forward()
        fwd.append(time.perf_counter() - t)
        fwd_cpu.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        run_analyze()
        ana.append(time.perf_counter() - t)
        ana_cpu.append(time.process_time() - c)
    figures = {
        "machine": f"{os.cpu_count()} CPUs, torch threads {args.threads}",
        "load_average": os.getloadavg(),
        "forward_s": min(fwd),
        "analyze_s": min(ana),
        "ratio": min(ana) / min(fwd),
        "forward_cpu_s": min(fwd_cpu),
        "analyze_cpu_s": min(ana_cpu),
        "ratio_cpu": min(ana_cpu) / min(fwd_cpu),
    }
    print(
        f"(a) batch {BATCH}, pos {POS}, {LAYERS} layers, d_model {D_MODEL} ({figures['machine']})"
    )
    print(
        f"    forward (run_with_cache, needed hooks only): {min(fwd):.3f} s  "
        f"(runs: {', '.join(f'{x:.3f}' for x in fwd)})"
    )
    print(
        f"    analyze (7 layers, AP+NC+CI+profiles):       {min(ana):.3f} s  "
        f"(runs: {', '.join(f'{x:.3f}' for x in ana)})"
    )
    print(
        f"    ratio analyze / forward = {figures['ratio']:.2f}  (target <= 1.25); "
        f"in process CPU time {figures['ratio_cpu']:.2f} "
        f"({min(ana_cpu):.2f} s / {min(fwd_cpu):.2f} s); load average "
        f"{figures['load_average'][0]:.1f}"
    )

    if not args.skip_naive:
        k = args.naive_seqs
        cache = forward()
        t = time.perf_counter()
        cache = forward()
        hidden = [cache[n].numpy() for n in sorted(names, key=lambda n: (n != "hook_embed", n))]
        naive_fwd = time.perf_counter() - t
        t = time.perf_counter()
        scores, _ = naive_scores([layer[:k] for layer in hidden])
        naive_part = time.perf_counter() - t
        naive_total = naive_fwd + naive_part * BATCH / k
        figures.update(
            naive_scoring_s_measured=naive_part,
            naive_seqs_measured=k,
            naive_total_s_extrapolated=naive_total,
            speedup_total=naive_total / min(ana),
            speedup_scoring=(naive_part * BATCH / k) / max(min(ana) - min(fwd), 1e-9),
        )
        print(
            f"(b) naive (sklearn cosine_similarity + Python loops), scoring measured on {k} of "
            f"{BATCH} sequences in {naive_part:.2f} s, extrapolated linearly to {BATCH}:"
        )
        print(
            f"    naive total (forward + scoring) ~ {naive_total:.1f} s; analyze "
            f"{min(ana):.2f} s -> speed-up {figures['speedup_total']:.0f}x (target >= 20x)"
        )
        print(
            f"    scoring only: naive ~ {naive_part * BATCH / k:.1f} s vs analyze - forward "
            f"{min(ana) - min(fwd):.2f} s -> {figures['speedup_scoring']:.0f}x"
        )
        from sklearn.metrics.pairwise import cosine_similarity

        naive_sim = cosine_similarity(hidden[-1][0]).tolist()
        t = time.perf_counter()
        naive_python_nc(naive_sim)
        one = time.perf_counter() - t
        total_py = naive_fwd + one * BATCH * len(hidden)
        figures.update(
            python_loop_nc_one_matrix_s=one,
            python_loop_total_s=total_py,
            speedup_python_loop=total_py / min(ana),
        )
        print(
            f"    a literal triple Python loop for NC: {one:.1f} s per {POS}x{POS} matrix, "
            f"~{total_py / 60:.0f} min for all {BATCH * len(hidden)} -> "
            f"{figures['speedup_python_loop']:.0f}x"
        )

    if not args.skip_long:
        out = subprocess.run(
            [sys.executable, "-c", _LONG.format(threads=args.threads)],
            capture_output=True,
            text=True,
            check=True,
        )
        long = json.loads(out.stdout.strip().splitlines()[-1])
        figures["long_4096"] = long
        total = sum(long["times"].values())
        print(
            f"(c) one sequence of 4096 positions (d_model 128): {total:.2f} s, peak memory "
            f"+{long['peak_mib']:.0f} MiB over {long['base_mib']:.0f} MiB after imports"
        )
        for name, seconds in long["times"].items():
            print(f"    {name:<26} {seconds:.3f} s")
        print(
            f"    AP {long['ap']:.4f} (chance {2 / 4096:.4f}), NC {long['nc']:.4f} "
            f"(i.i.d. Gaussian states: chance)"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
