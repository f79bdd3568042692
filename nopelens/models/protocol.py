"""The model type that analyses accept: anything with TransformerLens' hook interface.

:func:`~nopelens.build_model` returns a ``transformer_lens.HookedTransformer``. Analyses accept
any object with the same hook interface (``cfg``, ``run_with_cache``, ``run_with_hooks``), such as
a ``HookedTransformer`` loaded with ``from_pretrained``; :class:`HookedModel` states that
interface as a structural type, so signatures are typed without importing TransformerLens (about
6 s) just to annotate them.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class HookedModel(Protocol):
    """A model with TransformerLens hook points (a ``HookedTransformer`` is one).

    Examples:
        >>> from nopelens import build_model
        >>> isinstance(build_model(n_layers=1, d_model=8, n_heads=2, d_vocab=5, n_ctx=4),
        ...            HookedModel)
        True
        >>> isinstance(object(), HookedModel)
        False
    """

    cfg: Any

    def run_with_cache(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model and return ``(output, ActivationCache)``."""
        ...

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model with forward hooks attached."""
        ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The forward pass (logits, or what ``return_type`` asks for)."""
        ...

    def __getattr__(self, name: str) -> Any:
        """Weights (``W_O``, ``b_O``, ...) and ``torch.nn.Module`` methods, as ``Any``."""
        ...
