"""Wall time of ``nopelens reproduce``: per-part seconds, the total, and the machine it ran on.

Usage: python benchmarks/bench_reproduce.py [--profile quick] [--device cpu] [--out DIR]
       [--json FILE]

Runs ``python -m nopelens reproduce --profile PROFILE -q`` in a fresh process (imports, worker
start-up and the dashboard included: what a user waits for) into a new temporary folder (or
``--out``, which must not hold finished parts: they would be reused), then prints each part's
seconds from its ``done.json``, the command's wall time, the CPU time of this process's waited
children (worker processes forked from a fork server are not among them), and the machine with
its load average before and after (``benchmarks/_machine.py``). Timings depend on the machine and
its load; the issue's target (``quick`` within 90 s) is for a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine_info, machine_lines

REPO = Path(__file__).resolve().parents[1]


def part_seconds(out: Path) -> dict[str, float]:
    """Part name -> seconds from ``out/parts/*/done.json``, in the order the parts finished."""
    rows = []
    for marker in (out / "parts").glob("*/done.json"):
        record = json.loads(marker.read_text())
        rows.append((marker.stat().st_mtime, marker.parent.name, float(record["seconds"])))
    return {name: seconds for _, name, seconds in sorted(rows)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", help="test, quick or full")
    parser.add_argument("--device", default=None, help="override the profile's device")
    parser.add_argument("--out", type=Path, default=None, help="default: a new temporary folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    before = machine_info()
    print("\n".join(machine_lines(before)))
    with tempfile.TemporaryDirectory(prefix="nopelens-bench-") as tmp:
        out = args.out or Path(tmp) / "run"
        command = [sys.executable, "-m", "nopelens", "reproduce", "--profile", args.profile]
        command += ["--out", str(out), "-q"] + (["--device", args.device] if args.device else [])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        print("$", " ".join(command[1:]), flush=True)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=REPO, check=False)
        wall = time.perf_counter() - start
        after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        parts = part_seconds(out) if (out / "parts").is_dir() else {}
    cpu = (after_children.ru_utime - children.ru_utime) + (
        after_children.ru_stime - children.ru_stime
    )
    load_after = [round(x, 2) for x in os.getloadavg()]
    width = max((len(name) for name in parts), default=4)
    for name, seconds in parts.items():
        print(f"  {name:<{width}} {seconds:7.1f} s")
    print(f"  {'sum of parts':<{width}} {sum(parts.values()):7.1f} s")
    print(
        f"reproduce --profile {args.profile}: {wall:.1f} s wall (exit {done.returncode}), "
        f"{cpu:.1f} s CPU of waited children; load average after: "
        f"{', '.join(f'{x:.2f}' for x in load_after)}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "profile": args.profile,
                    "device": args.device,
                    "exit_status": done.returncode,
                    "wall_s": round(wall, 2),
                    "children_cpu_s": round(cpu, 2),
                    "parts_s": parts,
                    "machine": before,
                    "load_average_after": load_after,
                },
                indent=2,
            )
        )
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
