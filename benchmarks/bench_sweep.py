"""Sweep throughput for the ``paper`` preset: where the time goes, local vs Ray, end to end.

Three measurements, each printed with the machine (CPU, SIMD level, threads) and the load average:

1. **In process** (``max_workers=1``, one torch thread, imports warmed): the time split of a
   sweep: the model forward pass (``HookedTransformer.forward``), building the model, analysing
   it minus its forward pass, drawing tokens, and the rest (validation, results file).
2. **End to end** (``nopelens sweep --preset paper -q`` in a fresh process, what a user waits
   for, imports and worker start-up included) with the local executor, and with
   ``--executor ray`` (a local Ray runtime started and stopped by the command) when Ray is
   installed.
3. Optionally the same command on another source tree (``--baseline-src DIR``, e.g.
   ``git archive HEAD | tar -x -C /tmp/base``), and a check that both give the same table
   (same seeds, same numbers; ``--set data_seed=0`` makes both share one batch).

Usage::

    python benchmarks/bench_sweep.py                          # whole preset, 2 workers
    python benchmarks/bench_sweep.py --limit 30 --skip-ray    # a subset, local only
    python benchmarks/bench_sweep.py --baseline-src /tmp/base --set data_seed=0 --json out.json

Prints configurations per minute for each mode and the share of time outside the forward pass.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine_info, machine_lines

REPO = Path(__file__).resolve().parents[1]


def _subset(configs: list[dict], limit: int | None) -> list[dict]:
    if limit is None or limit >= len(configs):
        return configs
    step = len(configs) / limit
    return [configs[int(i * step)] for i in range(limit)]


def _timers() -> dict[str, float]:
    """Wrap the forward pass, model construction, analysis, tokens and appends in timers."""
    from transformer_lens import HookedTransformer

    import nopelens.analyzer
    import nopelens.experiments.runner as runner

    spent = {"forward": 0.0, "build_model": 0.0, "analyze": 0.0, "tokens": 0.0, "append": 0.0}

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
    wrap(runner, "_config_model", "build_model")  # build_model (and training, for a task)
    wrap(nopelens.analyzer, "analyze", "analyze")  # run_config imports it at call time
    wrap(runner, "config_tokens", "tokens")
    wrap(runner, "append_record", "append")
    return spent


def _in_process(grid: list[dict], n: int) -> dict[str, float]:
    import torch

    import nopelens.experiments.preload  # noqa: F401 - what a pool worker starts with
    from nopelens.experiments import run_config, sweep

    torch.set_num_threads(1)
    run_config({**grid[0], "seed": 12345})  # imports: not the sweep's cost
    spent = _timers()
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        entries = [{key: [value] for key, value in c.items()} for c in grid]  # one-value axes
        sweep(entries, out_dir=Path(tmp) / "seq", max_workers=1, progress=False)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    analysis = spent["analyze"] - spent["forward"]
    rest = wall - spent["analyze"] - spent["build_model"] - spent["tokens"]
    figures = {
        "in_process_s": wall,
        "in_process_configs_per_min": 60 * n / wall,
        "in_process_cpu_s": cpu,
        "forward_s": spent["forward"],
        "build_model_s": spent["build_model"],
        "analysis_minus_forward_s": analysis,
        "tokens_s": spent["tokens"],
        "append_s": spent["append"],
        "rest_s": rest,
        "share_outside_forward": (wall - spent["forward"]) / wall,
    }
    print(
        f"in process (1 torch thread, warm): {wall:.1f} s, {60 * n / wall:.0f} configurations/min "
        f"({cpu:.1f} CPU s); forward pass {spent['forward']:.1f} s "
        f"({spent['forward'] / wall:.0%}), outside it {figures['share_outside_forward']:.0%}: "
        f"build_model {spent['build_model']:.1f} s ({spent['build_model'] / wall:.0%}), "
        f"analysis minus forward {analysis:.1f} s ({analysis / wall:.0%}), tokens "
        f"{spent['tokens']:.2f} s, results file {spent['append']:.2f} s, rest (validation, "
        f"ids, frames) {rest:.1f} s ({rest / wall:.0%})"
    )
    return figures


def _cli(
    args: argparse.Namespace, out: Path, extra: list[str], src: Path | None
) -> tuple[float, float]:
    """Wall seconds of ``nopelens sweep`` in a fresh process, and the driver's CPU seconds.

    The wall time (imports and start-up included) is what a user waits for. The CPU seconds are
    those of the command's own process (and the children it waited for; pool workers are
    children of the fork server and Ray's workers of Ray's daemons, so they are not counted):
    the driver's share of the work.
    """
    import resource

    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    if src is not None:
        env["PYTHONPATH"] = str(src)
    quiet = ["-q"]
    if src is not None:  # older trees spell it --no-progress
        usage = subprocess.run(
            [sys.executable, "-m", "nopelens", "sweep", "--help"],
            env=env,
            capture_output=True,
            text=True,
            cwd=tempfile.gettempdir(),
        ).stdout
        quiet = ["-q"] if " -q" in usage else ["--no-progress"]
    overrides = [f"--set={item}" for item in args.set]
    grid = ["--preset", args.preset] if args.grid is None else ["--grid", str(args.grid)]
    command = [sys.executable, "-m", "nopelens", "sweep", *grid, "--out", str(out)]
    command += ["--workers", str(args.workers), *quiet, *overrides, *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        command, check=True, env=env, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _same_table(a: Path, b: Path) -> bool:
    import pandas as pd

    columns = ["config_id", "site", "layer", "metric", "value", "chance", "ci_low", "ci_high"]
    left = pd.read_csv(a / "results.csv")[columns].sort_values(columns[:4]).reset_index(drop=True)
    right = pd.read_csv(b / "results.csv")[columns].sort_values(columns[:4]).reset_index(drop=True)
    return bool(left.equals(right))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--grid", type=Path, default=None, help="a grid file instead")
    parser.add_argument("--limit", type=int, default=None, help="in-process: a subset only")
    parser.add_argument("--cores", type=int, default=2, help="pin to this many cores")
    parser.add_argument("--workers", type=int, default=2, help="local workers / Ray CPUs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-in-process", action="store_true")
    parser.add_argument("--baseline-src", type=Path, default=None, help="another source tree")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, set(allowed[: args.cores]))
    from nopelens.experiments import PRESETS, expand_grid, load_grid, override_grid

    overrides = {k: json.loads(v) for k, _, v in (item.partition("=") for item in args.set)}
    base = load_grid(args.grid) if args.grid else PRESETS[args.preset]
    configs = expand_grid(override_grid(base, overrides))
    info = machine_info()
    print("\n".join(machine_lines(info)))
    print(f"grid {args.grid or args.preset!r}: {len(configs)} configurations; {args.set or ''}")
    figures: dict = {"configs": len(configs), "machine": info, "workers": args.workers}

    if not args.skip_in_process:
        subset = _subset(configs, args.limit)
        figures.update(_in_process(subset, len(subset)))
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("local", [], None)]
        if not args.skip_ray:
            runs.append(("ray", ["--executor", "ray"], None))
        if args.baseline_src is not None:
            runs.append(("baseline", [], args.baseline_src))
        for name, extra, src in runs:
            load = os.getloadavg()[0]
            seconds, cpu = _cli(args, Path(tmp) / name, extra, src)
            rate = 60 * len(configs) / seconds
            figures[f"{name}_end_to_end_s"] = seconds
            figures[f"{name}_configs_per_min"] = rate
            figures[f"{name}_driver_cpu_s"] = cpu
            figures[f"{name}_load_before"] = load
            print(
                f"end to end, {name} ({args.workers} workers, fresh process, imports and start-up "
                f"included): {seconds:.1f} s, {rate:.0f} configurations/min; driver {cpu:.1f} "
                f"CPU s (load before {load:.1f})"
            )
        if args.baseline_src is not None:
            same = _same_table(Path(tmp) / "local", Path(tmp) / "baseline")
            figures["same_table_as_baseline"] = same
            print(
                f"speed-up over the baseline: "
                f"{figures['local_configs_per_min'] / figures['baseline_configs_per_min']:.2f}x; "
                f"same table: {same}"
            )
        if not args.skip_ray:
            figures["ray_same_table_as_local"] = _same_table(Path(tmp) / "local", Path(tmp) / "ray")
            print(f"Ray table identical to the local one: {figures['ray_same_table_as_local']}")
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
