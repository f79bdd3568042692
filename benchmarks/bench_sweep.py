"""Sweep throughput for the ``paper`` preset, and where the time goes.

Runs the preset (or an evenly spaced subset, ``--limit``) twice into fresh folders:

1. in this process (``max_workers=1``, ``--threads`` torch threads, default 1), with
   ``HookedTransformer.forward``, ``build_model`` and ``analyze`` wrapped in timers, which gives
   the share of the time spent outside the model forward pass;
2. through the default process pool (``--workers``, one torch thread per worker).

Usage::

    python benchmarks/bench_sweep.py                 # whole preset, 2 cores
    python benchmarks/bench_sweep.py --limit 30      # a subset
    python benchmarks/bench_sweep.py --cores 2 --workers 2 --json bench.json

Prints configurations per minute for both modes, their ratio, and the time split of mode 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def _subset(configs: list[dict], limit: int | None) -> list[dict]:
    if limit is None or limit >= len(configs):
        return configs
    step = len(configs) / limit
    return [configs[int(i * step)] for i in range(limit)]


def _timers():
    """Wrap the forward pass, model construction and analyze in accumulating timers."""
    from transformer_lens import HookedTransformer

    import nopelens.analyzer.analysis as analysis
    import nopelens.models.build as models

    spent = {"forward": 0.0, "build_model": 0.0, "analyze": 0.0}

    def wrap(owner, name, key):
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - start

        setattr(owner, name, timed)

    wrap(HookedTransformer, "forward", "forward")
    wrap(models, "build_model", "build_model")
    wrap(analysis, "analyze", "analyze")
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--limit", type=int, default=None, help="evenly spaced subset size")
    parser.add_argument("--cores", type=int, default=2, help="pin the process to this many cores")
    parser.add_argument("--workers", type=int, default=2, help="process-pool workers")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the in-process run (more than 1 is much slower "
        "on a loaded machine: threads wait for each other)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override a setting in every grid (e.g. n_seqs=16)",
    )
    parser.add_argument("--skip-pool", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, set(allowed[: args.cores]))
    import torch

    from nopelens.experiments import PRESETS, expand_grid, override_grid, sweep

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(args.threads)
    overrides = {}
    for item in args.set:
        key, _, text = item.partition("=")
        overrides[key] = json.loads(text)
    grid = override_grid(PRESETS[args.preset], overrides)
    configs = _subset(expand_grid(grid), args.limit)
    n = len(configs)
    print(
        f"preset {args.preset!r}: {len(expand_grid(grid))} configurations, running {n} "
        f"on {cores} cores ({platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}); load average before: "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )

    # warm the imports so that mode 1 measures the sweep, not `import transformer_lens`
    import nopelens.analyzer.analysis  # noqa: F401
    from nopelens.experiments import run_config

    run_config({**configs[0], "seed": 12345})
    spent = _timers()

    figures: dict[str, float] = {
        "configs": n,
        "cores": cores,
        "threads": args.threads,
        "load_before": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu_start = time.perf_counter(), time.process_time()
        sweep(configs, out_dir=Path(tmp) / "seq", max_workers=1, progress=False)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    outside = wall - spent["forward"]
    figures.update(
        {
            "in_process_s": wall,
            "in_process_configs_per_min": 60 * n / wall,
            "in_process_cpu_s": cpu,
            "configs_per_cpu_min": 60 * n / cpu,
            "forward_s": spent["forward"],
            "build_model_s": spent["build_model"],
            "analyze_s": spent["analyze"],
            "share_outside_forward": outside / wall,
        }
    )
    print(
        f"in-process ({args.threads} torch thread(s)): {wall:.1f} s, "
        f"{60 * n / wall:.1f} configurations/min; {cpu:.1f} CPU s, "
        f"{60 * n / cpu:.1f} configurations per CPU-minute (what an idle core would give)"
    )
    print(
        f"  forward pass {spent['forward']:.1f} s ({spent['forward'] / wall:.0%}); outside "
        f"the forward pass {outside:.1f} s ({outside / wall:.0%}): build_model "
        f"{spent['build_model']:.1f} s ({spent['build_model'] / wall:.0%}), analyze minus "
        f"forward {spent['analyze'] - spent['forward']:.1f} s "
        f"({(spent['analyze'] - spent['forward']) / wall:.0%}), rest (tokens, validation, "
        f"results file) {wall - spent['analyze'] - spent['build_model']:.1f} s"
    )

    if not args.skip_pool:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            sweep(configs, out_dir=Path(tmp) / "pool", max_workers=args.workers, progress=False)
            pool_wall = time.perf_counter() - start
        figures.update(
            {
                "pool_workers": args.workers,
                "pool_s": pool_wall,
                "pool_configs_per_min": 60 * n / pool_wall,
            }
        )
        print(
            f"process pool ({args.workers} workers x 1 thread, including worker start-up): "
            f"{pool_wall:.1f} s, {60 * n / pool_wall:.1f} configurations/min "
            f"({wall / pool_wall:.2f}x the in-process rate)"
        )
    figures["load_after"] = os.getloadavg()[0]
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
