"""What a benchmark ran on: CPU, SIMD level, threads, load. Shared by the scripts in benchmarks/.

Usage (from a benchmark in this folder)::

    from _machine import machine_info, machine_lines

    info = machine_info()          # a JSON-able dict
    print("\\n".join(machine_lines(info)))

or ``python benchmarks/_machine.py`` to print it. The SIMD lists are those of
``numpy.show_runtime()`` (baseline, found and not found among NumPy's dispatch targets; NumPy's
sorts and many ufuncs run the best found one). Timings on the same machine differ by SIMD level
(e.g. AVX2 ``X86_V3`` against AVX-512 ``X86_V4`` / ``AVX512_ICL``) and by load, so every
benchmark prints both next to its figures; with other work running, compare CPU-time ratios
(``time.process_time``) rather than wall-time ratios.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

# Python puts a script's own folder first on sys.path, so a module in benchmarks/ named like a
# package (coverage.py) would shadow it for everything imported later (numba imports `coverage`).
# The benchmarks import this module first; after it, nothing more is imported from this folder.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numpy_simd() -> dict[str, list[str]]:
    """NumPy's SIMD baseline, and its dispatch targets found / not found on this CPU.

    The same lists ``numpy.show_runtime()`` prints under ``simd_extensions``.
    """
    try:
        from numpy._core._multiarray_umath import (
            __cpu_baseline__,
            __cpu_dispatch__,
            __cpu_features__,
        )
    except ImportError:  # NumPy < 2
        from numpy.core._multiarray_umath import (  # type: ignore[no-redef]
            __cpu_baseline__,
            __cpu_dispatch__,
            __cpu_features__,
        )
    found = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
    missing = [f for f in __cpu_dispatch__ if not __cpu_features__.get(f)]
    return {"baseline": list(__cpu_baseline__), "found": found, "not_found": missing}


def machine_info() -> dict[str, Any]:
    """CPU, cores, NumPy SIMD, torch threads and CPU capability, CUDA device, load average."""
    import numpy as np
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": cores,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "numpy_simd": numpy_simd(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        import numba

        info["numba"] = numba.__version__
    except Exception as error:  # not installed (or broken): the NumPy fallback runs
        info["numba"] = None
        info["numba_error"] = f"{type(error).__name__}: {error}"
    return info


def simd_level(info: dict[str, Any]) -> str:
    """The best x86 level NumPy found (``X86_V4`` = AVX-512, ``X86_V3`` = AVX2), plus extras."""
    found = info["numpy_simd"]["found"]
    levels = [f for f in found if f.startswith("X86_V")] or info["numpy_simd"]["baseline"][-1:]
    extra = [f for f in found if f.startswith("AVX512_")]
    return " ".join((levels[-1:] if levels else ["?"]) + extra)


def machine_lines(info: dict[str, Any]) -> list[str]:
    """Two or three printable lines describing ``info``."""
    lines = [
        f"machine: {info['cpu']}, {info['usable_cpus']} usable of {info['logical_cpus']} CPUs; "
        f"NumPy {info['numpy']} SIMD {simd_level(info)} (found: "
        f"{', '.join(info['numpy_simd']['found']) or 'none'}); torch {info['torch']} "
        f"({info['torch_cpu_capability']}, {info['torch_threads']} threads); numba "
        f"{info['numba'] or 'unavailable, ' + info.get('numba_error', '')}",
        f"load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in info['load_average'])}",
    ]
    if info["cuda"]:
        lines.insert(1, f"CUDA device: {info['cuda']}")
    return lines


if __name__ == "__main__":
    print("\n".join(machine_lines(machine_info())))
