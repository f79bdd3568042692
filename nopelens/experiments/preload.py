"""What the fork server loads once for all the workers it forks (:data:`~.workers.PRELOAD`).

Importing this module imports TransformerLens (about 3 s of CPU, most of a worker's start-up:
the modules above it import TransformerLens only when they first build a model) and, where numba
is available, loads the compiled concordance kernels from numba's disk cache (1-2 s; compiled
there on the first run after an install). Every worker forked afterwards starts with both,
instead of paying for them during its first configurations. Results do not depend on it: the
compiled kernels and the NumPy path give the same exact counts.
"""

from __future__ import annotations

import logging
import warnings

from nopelens.measure import kernels

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # HookedTransformer is removed in 4.0
    import transformer_lens  # noqa: F401 - imported for the workers

try:
    kernels.warm()
except Exception as error:  # noqa: BLE001 - a fork server must start; workers meet it themselves
    logging.getLogger(__name__).warning("compiled kernels not loaded ahead: %s", error)
