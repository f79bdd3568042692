"""The analyzer: every layer's neighborhood pattern, with chance levels and intervals.

It composes the layers below it: activations and scores from :mod:`nopelens.measure`, and (for
``analyze(..., theory=...)``) predictions from :mod:`nopelens.theory`.

Names are loaded on first use (``lazy_loader``); ``__init__.pyi`` lists them for type checkers.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
