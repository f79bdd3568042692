"""Positional paths: remove them from any model, and read which blocks have none.

Position enters a TransformerLens ``HookedTransformer`` in one of three ways, and
:func:`strip_positional` removes each the way it enters:

* **learned absolute embedding** (GPT-2; ``positional_embedding_type`` ``"standard"`` or
  ``"shortformer"``): ``pos_embed`` adds a row of ``W_pos`` to the residual stream once, at the
  input. It is replaced by the parameter-free
  :class:`~nopelens.models.build.ZeroPosEmbed`, for the whole model (it is not a per-block
  encoding).
* **rotary** (RoPE; Llama, Mistral, Qwen, ...): every block's attention rotates its queries and
  keys by position. A block is made NoPE by letting its queries and keys pass unrotated
  (:func:`~nopelens.models.build.mark_nope_blocks`); any subset of blocks can be, which is how
  SmolLM3 (no RoPE in every fourth block) and Llama 4 (interleaved NoPE blocks) are built.
* **ALiBi**: not supported (a clear error).

What is left is the causal mask: a stripped causal model can still infer order from how many
tokens each position sees, and measuring how much of the neighborhood pattern survives is the
point. The permutation test in ``tests/models/test_positional.py`` checks that nothing else is
left: block 0's output at position t no longer depends on the order of the tokens before t.

A stripped model built by nopelens keeps a correct :class:`~nopelens.ModelSpec`
(``positional="none"``, or the rotary spec with ``nope_layers``), so
:func:`~nopelens.save_model` / :func:`~nopelens.load_model` restore it. The NoPE mark of a rotary
block is not part of the ``state_dict``: re-apply :func:`strip_positional` after loading a
foreign model's weights.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from nopelens.models.build import (
    ZeroPosEmbed,
    build_model,  # noqa: F401  (doctests)
    mark_nope_blocks,
    remove_positional_embedding,
)
from nopelens.models.protocol import HookedModel
from nopelens.spec import ModelSpec
from nopelens.validation import InvalidParameterError

_LEARNED = ("standard", "shortformer")


def _zero_pos_embed(model: Any) -> bool:
    pos_embed = getattr(model, "pos_embed", None)
    if isinstance(pos_embed, ZeroPosEmbed):
        return True
    w_pos = getattr(pos_embed, "W_pos", None)
    return bool(isinstance(w_pos, torch.Tensor) and not w_pos.requires_grad and not w_pos.any())


def nope_layers(model: HookedModel) -> tuple[int, ...]:
    """The blocks of ``model`` whose attention receives no positional encoding of its own.

    * NoPE models (a zero positional embedding): every block.
    * Rotary models: the blocks whose rotation was removed (``build_model(...,
      nope_layers=...)`` or :func:`strip_positional`); ``()`` for a plain RoPE model.
    * Learned-embedding and ALiBi models: ``()``: the learned embedding reaches every block
      through the residual stream, and ALiBi biases every block's scores.

    Examples:
        >>> model = build_model(n_layers=4, d_model=16, n_heads=2, d_vocab=10, n_ctx=8,
        ...                     positional="rotary", nope_layers=[1, 3])
        >>> nope_layers(model)
        (1, 3)
        >>> nope_layers(build_model(n_layers=2, d_model=16, n_heads=2, d_vocab=10, n_ctx=8))
        (0, 1)
    """
    cfg = model.cfg
    kind = getattr(cfg, "positional_embedding_type", None)
    if kind in _LEARNED:
        return tuple(range(cfg.n_layers)) if _zero_pos_embed(model) else ()
    if kind == "rotary":
        blocks = getattr(model, "blocks", ())
        return tuple(
            i for i, block in enumerate(blocks) if getattr(block.attn, "nopelens_nope", False)
        )
    return ()


def _check_layers(model: Any, layers: Any, func: str) -> tuple[int, ...]:
    n_layers = model.cfg.n_layers
    if layers is None:
        return tuple(range(n_layers))
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = (layers,)
    try:
        values = tuple(layers)
    except TypeError:
        values = (layers,)
    ok = all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < n_layers for v in values)
    if not ok or not values or len(set(values)) != len(values):
        raise InvalidParameterError(
            f"The 'layers' parameter of {func} must be None (every block) or distinct block "
            f"indices in [0, {n_layers - 1}] (n_layers={n_layers}). Got {layers!r} instead."
        )
    return tuple(sorted(values))


def strip_positional(
    model: HookedModel, *, layers: Sequence[int] | int | None = None, inplace: bool = False
) -> HookedModel:
    """Remove the positional encoding of ``model``, leaving the causal mask as its only order cue.

    Use it on a trained or pretrained model to measure how much of the neighborhood pattern the
    causal mask alone produces in that network (compare :func:`~nopelens.analyzer.analyze` on
    the model and on its stripped copy). The weights are untouched; only the positional path is
    cut (module docstring: how, for each encoding).

    Args:
        model: A ``HookedTransformer`` with a learned (``"standard"`` / ``"shortformer"``) or
            rotary positional encoding. An already NoPE model is returned unchanged (copied
            unless ``inplace``).
        layers: Rotary models only: the blocks to strip (a hybrid RoPE/NoPE stack); ``None``
            strips every block. A learned embedding enters once at the input, so it takes
            ``None`` only.
        inplace: Modify ``model`` itself. By default a deep copy is stripped (the tokenizer is
            shared, not copied); a copy needs as much memory as the model.

    Returns:
        The stripped model (``model`` itself when ``inplace``). :func:`~nopelens.is_nope` is
        True when every block was stripped; :func:`nope_layers` lists the stripped blocks.

    Raises:
        InvalidParameterError: For an ALiBi or unknown positional type, ``layers`` out of range,
            or ``layers`` with a learned embedding.

    Examples:
        >>> from nopelens import is_nope
        >>> gpt2_like = build_model(n_layers=2, d_model=16, n_heads=2, d_vocab=10, n_ctx=8,
        ...                         positional="learned")
        >>> stripped = strip_positional(gpt2_like)
        >>> is_nope(stripped), is_nope(gpt2_like)
        (True, False)
        >>> rope = build_model(n_layers=4, d_model=16, n_heads=2, d_vocab=10, n_ctx=8,
        ...                    positional="rotary")
        >>> nope_layers(strip_positional(rope, layers=[3]))
        (3,)
    """
    func = "strip_positional"
    if not isinstance(inplace, bool):
        raise InvalidParameterError(
            f"The 'inplace' parameter of {func} must be a bool. Got {inplace!r} instead."
        )
    kind = getattr(getattr(model, "cfg", None), "positional_embedding_type", None)
    if kind not in (*_LEARNED, "rotary"):
        raise InvalidParameterError(
            f"{func} removes learned ('standard', 'shortformer') and rotary positional "
            f"encodings. This model has positional_embedding_type={kind!r}."
        )
    if kind in _LEARNED and layers is not None:
        raise InvalidParameterError(
            f"The 'layers' parameter of {func} must be None for a learned positional embedding: "
            f"it is added once, at the input, not in each block. Got {layers!r} instead."
        )
    blocks = _check_layers(model, layers, func)
    out: Any = model
    if not inplace:
        tokenizer = getattr(model, "tokenizer", None)
        memo = {id(tokenizer): tokenizer} if tokenizer is not None else {}
        out = copy.deepcopy(model, memo)
    spec = getattr(out, "_nopelens_spec", None)
    if kind in _LEARNED:
        if not _zero_pos_embed(out):
            remove_positional_embedding(out)
        if isinstance(spec, ModelSpec) and spec.positional == "learned":
            out._nopelens_spec = dataclasses.replace(spec, positional="none")
    else:
        mark_nope_blocks(out, blocks)
        if isinstance(spec, ModelSpec):
            merged = tuple(sorted(set(spec.nope_layers) | set(blocks)))
            out._nopelens_spec = dataclasses.replace(spec, nope_layers=merged)
    return out
