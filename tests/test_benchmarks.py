"""The benchmark scripts still run: the GPU script refuses the CPU, the sweep benchmark runs a grid.

Timings are never asserted (they belong to the benchmarks' own output); these tests only catch a
benchmark that an API change broke, which otherwise goes unnoticed until someone measures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from grids import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="this machine has CUDA: gpu.sh would run"
)
def test_gpu_script_refuses_a_machine_without_cuda_in_one_line(tmp_path):
    results = tmp_path / "gpu.json"
    out = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), str(results)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("gpu.sh: no CUDA device")
    assert json.loads(results.read_text())["status"] == "not_run"


def test_sweep_benchmark_runs_a_grid_in_process_and_end_to_end(tmp_path):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({**TINY, "nope_layers": [[]], "seed": [0, 1, 2]}))
    figures = tmp_path / "figures.json"
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_sweep.py"),
            "--grid",
            str(grid),
            "--skip-ray",
            "--workers",
            "2",
            "--json",
            str(figures),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(figures.read_text())
    assert result["configs"] == 3
    assert result["in_process_configs_per_min"] > 0 and result["local_end_to_end_s"] > 0
    assert 0 <= result["share_outside_forward"] <= 1
