"""Speed and memory of the neighborhood analyzer (issues 3 and 17), on a CPU or a CUDA device.

Usage: python benchmarks/bench_analyze.py [--threads 2] [--repeats 3] [--naive-seqs 4]
       [--device cpu|cuda] [--skip-naive] [--skip-long] [--skip-jit] [--json FILE]

Prints the machine first (CPU, NumPy SIMD level, torch threads, numba, load average), then:

(a) ``nopelens.analyze`` time / forward time, for 64 random sequences of 256 tokens through a
    6-layer, d_model-128 random-init NoPE model (site resid_post, so 7 layers with "embed";
    1000 bootstrap resamples). The forward is ``run_with_cache`` with only the needed hooks
    (``hook_embed`` and every ``blocks.L.hook_resid_post``), as ``collect_activations`` runs it.
    Both are timed interleaved, ``--repeats`` times; the minimum of each is reported, in wall
    time and in process CPU time (less sensitive to other work on the machine).
(a2) Where analyze's extra time goes, on the same 448 similarity matrices of 256 x 256: the
    self-similarity, AP, the distance profile, and neighborhood concordance by each code path
    (compiled numba kernel, NumPy fallback, and torch on the device with ``--device cuda``),
    and AP+NC in one pass (``neighborhood_counts``, what analyze runs), checked to give
    identical counts and hits; NC time per matrix.
(j) The numba kernels' one-off costs, each in a fresh process: compiling into an empty cache
    (once after installing), and loading from the cache (once per process).
(b) Speed-up over the naive approach: the same forward, then per sequence and per layer
    ``sklearn.metrics.pairwise.cosine_similarity`` on numpy arrays, AP with a Python loop over
    rows, NC with a Python loop over rows that compares all pairs of the row with numpy
    broadcasting (O(n^3) per matrix, partly vectorised: kinder to the baseline than a triple
    Python loop), and the mean matrix. The naive scoring is timed on ``--naive-seqs`` sequences
    and extrapolated linearly to 64 (it is linear in the number of sequences).
(c) One sequence of 4096 positions: ``self_similarity`` of random d_model-128 hidden states, then
    AP, NC (compiled, and the NumPy fallback) and the distance profile: time, and peak memory
    (peak RSS of a fresh subprocess, minus its RSS after the imports).

Timings depend on the machine and on its load: run it on an idle machine, or compare the CPU-time
ratios printed beside the wall-time ones.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

from _machine import machine_info, machine_lines

BATCH, POS, LAYERS, D_MODEL, HEADS, VOCAB = 64, 256, 6, 128, 4, 512

_LONG = r"""
import json, time, torch
torch.set_num_threads({threads})
import nopelens.measure.concordance as conc
from nopelens.measure import (adjacency_probability, distance_profile,
                                 neighborhood_concordance, self_similarity)

device = torch.device({device!r})
cuda = device.type == "cuda"


def status(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1]) / 1024  # MiB


def timed(name, func, *args):
    start, cpu = time.perf_counter(), time.process_time()
    value = func(*args)
    if cuda:
        torch.cuda.synchronize()
    times[name] = time.perf_counter() - start
    cpu_times[name] = time.process_time() - cpu
    return value


h = torch.randn(4096, 128, generator=torch.Generator().manual_seed(0)).to(device)
neighborhood_concordance(torch.randn(8, 8, device=device))  # warm up (lazy imports)
conc.concordance_counts(torch.randn(40, 256, 256))  # loads the compiled kernels
if cuda:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset the peak-RSS counter (VmHWM)
base = status("VmRSS")
times, cpu_times = {{}}, {{}}
sim = timed("self_similarity", self_similarity, h)
ap = timed("adjacency_probability", adjacency_probability, sim)
nc = timed("neighborhood_concordance", neighborhood_concordance, sim)
hits, counts = timed("neighborhood_counts (AP+NC, one pass)", conc.neighborhood_counts, sim)
prof = timed("distance_profile", distance_profile, sim)
peak = status("VmHWM") - base
gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
compiled = conc._compiled_counts(0) is not None
extra = {{}}
if cuda:  # the same matrix on the CPU, for comparison
    extra["nc_cpu"] = float(timed("cpu: neighborhood_concordance", neighborhood_concordance,
                                  sim.cpu()))
conc._compiled_counts = lambda entries: None  # the NumPy fallback, for comparison
extra["nc_numpy"] = float(timed("cpu: NC NumPy fallback", neighborhood_concordance, sim.cpu()))
print(json.dumps({{"device": str(device), "times": times, "cpu_times": cpu_times,
                  "peak_mib": peak, "base_mib": base, "gpu_peak_mib": gpu_peak,
                  "ap": float(ap), "nc": float(nc), "compiled": compiled, **extra}}))
"""

_JIT = r"""
import json, time
start = time.perf_counter()
import numpy as np
from nopelens.measure import kernels
imported = time.perf_counter()
kernels.concordance_counts(np.ones((1, 4, 4), np.float32))
first32 = time.perf_counter()
kernels.concordance_counts(np.ones((1, 4, 4), np.float64))
first64 = time.perf_counter()
print(json.dumps({"compiled": kernels.COMPILED, "import_s": imported - start,
                  "float32_first_call_s": first32 - imported,
                  "float64_first_call_s": first64 - first32}))
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


def best_of(repeats, func, *args, sync=None):
    """(value, min wall s, min process CPU s) over ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        value = func(*args)
        if sync is not None:
            sync()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return value, min(walls), min(cpus)


@contextlib.contextmanager
def numpy_path():
    """Force the NumPy fallback of the concordance counts (as without numba)."""
    import nopelens.measure.concordance as conc

    saved = conc._compiled_counts
    conc._compiled_counts = lambda entries: None
    try:
        yield
    finally:
        conc._compiled_counts = saved


def ratio_section(args, figures, model, tokens, names, sync):
    import torch

    from nopelens import analyze

    def forward():
        with torch.no_grad():
            _, cache = model.run_with_cache(
                tokens, names_filter=lambda n: n in names, return_type=None
            )
        sync()
        return cache

    def run_analyze():
        report = analyze(model, tokens, batch_size=BATCH)
        sync()
        return report

    forward()
    run_analyze()  # warm up (and load the compiled kernels)
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
    figures.update(
        forward_s=min(fwd),
        analyze_s=min(ana),
        ratio=min(ana) / min(fwd),
        forward_cpu_s=min(fwd_cpu),
        analyze_cpu_s=min(ana_cpu),
        ratio_cpu=min(ana_cpu) / min(fwd_cpu),
        load_average_after_a=os.getloadavg(),
    )
    print(f"(a) batch {BATCH}, pos {POS}, {LAYERS} layers, d_model {D_MODEL}, on {args.device}")
    print(
        f"    forward (run_with_cache, needed hooks only): {min(fwd):.3f} s wall, "
        f"{min(fwd_cpu):.2f} s CPU  (runs: {', '.join(f'{x:.3f}' for x in fwd)})"
    )
    print(
        f"    analyze (7 layers, AP+NC+CI+profiles):       {min(ana):.3f} s wall, "
        f"{min(ana_cpu):.2f} s CPU  (runs: {', '.join(f'{x:.3f}' for x in ana)})"
    )
    print(
        f"    ratio analyze / forward = {figures['ratio']:.2f} wall, {figures['ratio_cpu']:.2f} "
        f"process CPU time (target <= 1.25); load average now "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    return forward


def breakdown_section(args, figures, forward, sync):
    import torch

    import nopelens.measure.concordance as conc
    from nopelens.measure import (
        adjacency_hits,
        adjacency_probability,
        distance_profile,
        self_similarity,
    )

    cache = forward()
    hidden = torch.stack(
        [cache[n] for n in sorted(cache.keys(), key=lambda n: (n != "hook_embed", n))]
    ).float()  # [layer, batch, pos, d_model]
    reps = max(1, args.repeats)
    sims, t_sim, c_sim = best_of(reps, self_similarity, hidden, sync=sync)
    count = sims.shape[0] * sims.shape[1]
    layers = sims.shape[0]
    _, t_ap, c_ap = best_of(reps, adjacency_probability, sims, sync=sync)
    means = sims.double().mean(dim=1)  # analyze profiles the batch-mean matrix of each layer
    _, t_prof, c_prof = best_of(reps, distance_profile, means, sync=sync)
    cpu_sims = sims.cpu()
    counts, t_nc, c_nc = best_of(reps, conc.concordance_counts, cpu_sims)
    compiled = conc._compiled_counts(0) is not None
    (hits, counts_f), t_f, c_f = best_of(reps, conc.neighborhood_counts, cpu_sims)
    with numpy_path():
        counts_np, t_np, c_np = best_of(1, conc.concordance_counts, cpu_sims)
    rows = [
        ("self_similarity", count, t_sim, c_sim),
        ("adjacency_probability", count, t_ap, c_ap),
        (f"distance_profile ({layers} means)", layers, t_prof, c_prof),
        ("NC compiled (numba)" if compiled else "NC, default CPU path", count, t_nc, c_nc),
        ("NC NumPy fallback", count, t_np, c_np),
        ("AP+NC in one pass (analyze)", count, t_f, c_f),
    ]
    same = torch.equal(counts, counts_np) and torch.equal(counts, counts_f)
    same = same and torch.equal(hits, adjacency_hits(cpu_sims))
    if sims.device.type != "cpu":
        counts_dev, t_dev, c_dev = best_of(reps, conc.concordance_counts, sims, sync=sync)
        rows.append((f"NC torch on {sims.device.type}", count, t_dev, c_dev))
        same = same and torch.equal(counts_dev.cpu(), counts)
    fwd = figures["forward_s"]
    print(
        f"(a2) the same {count} matrices of {POS}x{POS} ({layers} layers x {BATCH} sequences), "
        f"each step on its own; share = wall / forward wall:"
    )
    for name, k, wall, cpu in rows:
        print(
            f"    {name:<27} {wall:7.3f} s wall {cpu:7.3f} s CPU  {wall / fwd:6.1%} of forward"
            f"  ({1e3 * wall / k:.3f} ms wall, {1e3 * cpu / k:.3f} ms CPU per matrix)"
        )
    print(f"    NC counts and AP hits identical across paths: {same}")
    if not same:
        raise SystemExit("the concordance code paths disagree")
    figures["breakdown"] = {
        name: {"matrices": k, "wall_s": wall, "cpu_s": cpu, "ms_per_matrix": 1e3 * wall / k}
        for name, k, wall, cpu in rows
    }
    figures.update(
        nc_compiled=compiled,
        nc_ms_per_matrix=1e3 * t_nc / count,
        nc_cpu_ms_per_matrix=1e3 * c_nc / count,
        nc_numpy_ms_per_matrix=1e3 * t_np / count,
        nc_numpy_cpu_ms_per_matrix=1e3 * c_np / count,
        nc_speedup_over_numpy=t_np / t_nc,
    )
    return cache


def jit_section(figures):
    """Compile into an empty numba cache, then load from it: each in a fresh process."""
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        runs = []
        for _ in range(2):
            t = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", _JIT], capture_output=True, text=True, check=True, env=env
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            result["process_s"] = time.perf_counter() - t
            runs.append(result)
    figures["jit"] = {"cold": runs[0], "cached": runs[1]}
    if not runs[0]["compiled"]:
        print("(j) numba is not available: the NumPy path runs (no compile step)")
        return
    cold, cached = runs
    print(
        f"(j) numba kernels, fresh process each: import numba+kernels {cold['import_s']:.2f} s;"
        f" first call compiling into an empty cache {cold['float32_first_call_s']:.2f} s "
        f"(float32) + {cold['float64_first_call_s']:.2f} s (float64), once after installing; "
        f"first call loading from the cache {cached['float32_first_call_s']:.2f} s + "
        f"{cached['float64_first_call_s']:.2f} s, once per process (and only in a process that "
        f"counts >= 2M matrix entries)"
    )


def naive_section(args, figures, forward, names):
    k = args.naive_seqs
    forward()
    t = time.perf_counter()
    cache = forward()
    hidden = [cache[n].cpu().numpy() for n in sorted(names, key=lambda n: (n != "hook_embed", n))]
    naive_fwd = time.perf_counter() - t
    t = time.perf_counter()
    naive_scores([layer[:k] for layer in hidden])
    naive_part = time.perf_counter() - t
    naive_total = naive_fwd + naive_part * BATCH / k
    ana = figures["analyze_s"]
    figures.update(
        naive_scoring_s_measured=naive_part,
        naive_seqs_measured=k,
        naive_total_s_extrapolated=naive_total,
        speedup_total=naive_total / ana,
        speedup_scoring=(naive_part * BATCH / k) / max(ana - figures["forward_s"], 1e-9),
    )
    print(
        f"(b) naive (sklearn cosine_similarity + Python loops), scoring measured on {k} of "
        f"{BATCH} sequences in {naive_part:.2f} s, extrapolated linearly to {BATCH}:"
    )
    print(
        f"    naive total (forward + scoring) ~ {naive_total:.1f} s; analyze "
        f"{ana:.2f} s -> speed-up {figures['speedup_total']:.0f}x (target >= 20x)"
    )
    print(
        f"    scoring only: naive ~ {naive_part * BATCH / k:.1f} s vs analyze - forward "
        f"{ana - figures['forward_s']:.2f} s -> {figures['speedup_scoring']:.0f}x"
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
        speedup_python_loop=total_py / ana,
    )
    print(
        f"    a literal triple Python loop for NC: {one:.1f} s per {POS}x{POS} matrix, "
        f"~{total_py / 60:.0f} min for all {BATCH * len(hidden)} -> "
        f"{figures['speedup_python_loop']:.0f}x"
    )


def long_section(args, figures):
    out = subprocess.run(
        [sys.executable, "-c", _LONG.format(threads=args.threads, device=args.device)],
        capture_output=True,
        text=True,
        check=True,
    )
    long = json.loads(out.stdout.strip().splitlines()[-1])
    figures["long_4096"] = long
    total = sum(  # the one-pass AP+NC line repeats two others
        v for k, v in long["times"].items() if not k.startswith(("cpu: ", "neighborhood_counts"))
    )
    memory = f"+{long['peak_mib']:.0f} MiB RSS over {long['base_mib']:.0f} MiB after imports"
    if long["gpu_peak_mib"] is not None:
        memory += f", {long['gpu_peak_mib']:.0f} MiB peak on the GPU"
    print(
        f"(c) one sequence of 4096 positions (d_model 128), on {long['device']}: {total:.2f} s; "
        f"peak memory {memory}"
    )
    for name, seconds in long["times"].items():
        print(f"    {name:<32} {seconds:.3f} s wall, {long['cpu_times'][name]:.3f} s CPU")
    print(
        f"    AP {long['ap']:.4f} (chance {2 / 4096:.4f}), NC {long['nc']:.4f} (i.i.d. Gaussian "
        f"states: chance); compiled CPU path loaded: {long['compiled']}"
    )
    others = [long[k] for k in ("nc_cpu", "nc_numpy") if k in long]
    if any(v != long["nc"] for v in others):
        raise SystemExit("the concordance code paths disagree at n = 4096")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-seqs", type=int, default=4)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--skip-jit", action="store_true")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    figures: dict = {"machine": machine_info(), "device": args.device}
    print("\n".join(machine_lines(figures["machine"])))

    from nopelens import build_model, random_tokens

    model = build_model(
        n_layers=LAYERS, d_model=D_MODEL, n_heads=HEADS, d_vocab=VOCAB, n_ctx=POS, seed=0
    ).to(args.device)
    tokens = random_tokens(BATCH, POS, VOCAB, seed=0).to(args.device)
    names = {"hook_embed", *(f"blocks.{layer}.hook_resid_post" for layer in range(LAYERS))}
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    forward = ratio_section(args, figures, model, tokens, names, sync)
    breakdown_section(args, figures, forward, sync)
    if not args.skip_jit:
        jit_section(figures)
    if not args.skip_naive:
        naive_section(args, figures, forward, names)
    if not args.skip_long:
        long_section(args, figures)
    figures["load_average_end"] = os.getloadavg()
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
