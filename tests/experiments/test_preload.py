"""The fork server's preload: workers start with TransformerLens and the compiled kernels."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import sys
from nopelens.experiments.workers import PRELOAD
assert "transformer_lens" not in sys.modules
for name in PRELOAD:
    __import__(name)
from nopelens.measure import kernels
loaded = {len(f.signatures) for f in (kernels._make_keys, kernels._count_rows)}
print("transformer_lens" in sys.modules, kernels.COMPILED, loaded)
"""


def test_the_fork_server_preloads_transformer_lens_and_the_kernels():
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # no warning reaches a command's stderr
    tl, compiled, loaded = out.stdout.split(maxsplit=2)
    assert tl == "True"
    if compiled == "True":  # numba: both float32 and float64 versions are loaded
        assert loaded.strip() == "{2}"
