"""Position probes: features (hidden, cosine, variance), fitted probes, splits and reports.

Names are loaded on first use (``lazy_loader``); ``__init__.pyi`` lists them for type checkers.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
