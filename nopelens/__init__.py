"""nopelens: where do causal transformers without positional encodings keep position?

Build NoPE models on TransformerLens, read every layer through its hook points, and measure the
neighborhood pattern (nearby hidden states are more cosine-similar than distant ones), the
first-layer theory that predicts it, variance by position, and position probes.

Public names are imported lazily (``lazy_loader``), so ``import nopelens`` is fast and a command
that needs no model does not pay for importing TransformerLens; ``__init__.pyi`` lists every name
for type checkers and IDEs.

Examples:
    >>> import nopelens
    >>> model = nopelens.build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=10, n_ctx=8)
    >>> nopelens.is_nope(model)
    True
"""

import lazy_loader as _lazy

__version__ = "0.2.0"

__getattr__, __dir__, _names = _lazy.attach_stub(__name__, __file__)
__all__ = [*_names, "__version__"]
