"""Every long command says what it is loading before it imports torch (which takes seconds)."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Run the CLI, but stop the process the moment torch or TransformerLens is first imported,
#: after writing a marker on stderr: whatever stderr holds before the marker was printed
#: before any heavy import.
_STOP_AT_HEAVY_IMPORT = """
import os, sys

class StopAtHeavyImport:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformer_lens"):
            sys.stderr.write("<heavy import: " + name + ">\\n")
            sys.stderr.flush()
            os._exit(0)
        return None

sys.meta_path.insert(0, StopAtHeavyImport())
from nopelens.cli.app import main
sys.exit(main(sys.argv[1:]))
"""

COMMANDS = {
    "analyze": ["analyze", "--n-layers", "3"],
    "theory": ["theory", "--model", "gpt2"],
    "probe": ["probe"],
    "dashboard": ["dashboard", "--out", "never-written.html"],
    "train": ["train", "parity", "--out", "never-written"],
}
EXPECTED = {
    "analyze": "nopelens analyze: loading torch and TransformerLens, then a random-init model "
    "(3 layers, d_model 64, positional none, weights seed 0) ...",
    "theory": "nopelens theory: loading torch and TransformerLens, then the TransformerLens "
    "model 'gpt2' (from the local Hugging Face cache) ...",
    "probe": "nopelens probe: loading torch and TransformerLens, then a random-init model",
    "dashboard": "nopelens dashboard: loading torch and TransformerLens, then a random-init",
    "train": "nopelens train: loading torch and TransformerLens, then task 'parity' and a new "
    "model ...",
}


def _stderr(argv: list[str], tmp_path) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _STOP_AT_HEAVY_IMPORT, *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    return result.stderr.splitlines()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_first_line_comes_before_torch(name, tmp_path):
    lines = _stderr(COMMANDS[name], tmp_path)
    assert len(lines) == 2, lines
    assert lines[0].startswith(EXPECTED[name]), lines[0]
    assert lines[1].startswith("<heavy import: "), lines


@pytest.mark.parametrize("name", ["analyze", "train"])
def test_quiet_says_nothing(name, tmp_path):
    lines = _stderr([*COMMANDS[name], "--quiet"], tmp_path)
    assert len(lines) == 1 and lines[0].startswith("<heavy import: "), lines
