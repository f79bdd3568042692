"""The tiny sweep grid shared by the sweep tests (and by the fault-injection child).

Imported as ``grids`` by the tests of every folder: pytest puts ``tests/`` on ``sys.path`` because
``tests/conftest.py`` lives there (no ``__init__.py``, the default ``prepend`` import mode), as it
puts each test folder there for ``faultkit``. ``experiments/faultchild.py``, run as a script, puts
``tests/`` on ``sys.path`` itself.

A test that needs other values writes them as explicit overrides, ``{**TINY, "seed": [0, 1]}``.
"""

from __future__ import annotations

#: One tiny configuration: a 1-layer d16 model with 2 heads, 4 random sequences of 8 tokens over
#: a vocabulary of 32, 20 bootstrap resamples (seed 0, the default).
TINY: dict[str, list] = {
    "n_layers": [1],
    "d_model": [16],
    "n_heads": [2],
    "d_vocab": [32],
    "seq_len": [8],
    "n_seqs": [4],
    "n_bootstrap": [20],
}
