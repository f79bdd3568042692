"""Time to reach accuracy: train every task's recommended model, NoPE and learned-PE.

Usage: python benchmarks/bench_train.py [--tasks a,b] [--positional none,learned]
       [--steps N] [--threads 2] [--set key=value ...] [--model-set key=value ...]

Prints one line per run: test accuracy (per token and exact match), the step at which the test
accuracy first reached 0.9 / 0.99, wall time and process CPU time. Timings depend on the machine
and its load; the README table was produced with this script on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import time


def _kv(items):
    out = {}
    for item in items or ():
        key, _, value = item.partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=None)
    parser.add_argument("--positional", default="none,learned")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", help="TrainConfig overrides key=value")
    parser.add_argument("--model-set", nargs="*", help="build_model overrides key=value")
    parser.add_argument("--task-set", nargs="*", help="task parameter overrides key=value")
    parser.add_argument("--json", default=None, help="append one JSON line per run here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from nopelens.training import SYNTHETIC_TASKS, build_task_model, default_config, get_task, train

    tasks = args.tasks.split(",") if args.tasks else list(SYNTHETIC_TASKS)
    for name in tasks:
        task = get_task(name, **_kv(args.task_set))
        for positional in args.positional.split(","):
            config = default_config(name, seed=args.seed, **_kv(args.set))
            model = build_task_model(
                task, positional=positional, seed=args.seed, **_kv(args.model_set)
            )
            wall, cpu = time.perf_counter(), time.process_time()
            result = train(model, task, config, progress=False)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            test = result.history.query("split == 'test' and metric == 'accuracy'")
            reach = {
                t: (int(test.step[test.value >= t].iloc[0]) if (test.value >= t).any() else None)
                for t in (0.9, 0.99)
            }
            row = {
                "task": name,
                "positional": positional,
                "steps": config.steps,
                "test_accuracy": round(result.final["test_accuracy"], 4),
                "test_exact_match": round(result.final["test_exact_match"], 4),
                "train_accuracy": round(result.final["train_accuracy"], 4),
                "step_0.9": reach[0.9],
                "step_0.99": reach[0.99],
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),
                "threads": args.threads,
                "load1": round(os.getloadavg()[0], 1),
                "chance": round(task.chance, 4),
                "model": {k: v for k, v in _kv(args.model_set).items()},
                "config": _kv(args.set),
                "task_args": _kv(args.task_set),
            }
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "a") as handle:
                    handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
