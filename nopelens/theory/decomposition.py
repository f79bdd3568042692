r"""Split an attention block into its additive parts: per-head terms, output bias and residual.

Setup (block ``L`` of a pre-norm TransformerLens model; positions are 1-indexed, ``i = pos + 1``):

* residual input ``x_i`` (``blocks.L.hook_resid_pre``); for block 0,
  ``x_i = W_E[t_i] + W_pos[i]`` (``hook_embed + hook_pos_embed``; ``W_pos = 0`` for NoPE);
* value-output vector of key ``j`` in head ``h``:
  ``u^h_j = LN1(x_j) W_V^h W_O^h + b_V^h W_O^h`` (``hook_v @ W_O``);
* ``attn_out_i = sum_h sum_j A^h_ij u^h_j + b_O`` with ``A^h`` the attention pattern;
* ``resid_mid_i = x_i + attn_out_i`` (in an attention-only model this is ``resid_post``).

:func:`decompose_first_layer` rebuilds ``hook_attn_out`` and ``hook_resid_mid`` of block 0 from
exactly these terms, head by head (an identity, to float tolerance). The identity holds for every
block, whatever its normalisation (the values ``hook_v`` are read after ``ln1``), its biases
(``b_V`` is inside ``hook_v``, ``b_O`` is added once) and its key/value heads (grouped-query
``hook_v`` is expanded to the query heads): :func:`decompose_blocks` splits any set of blocks from
one forward pass into :class:`BlockDecomposition` objects; only the embedding terms
(:func:`_embedding_parts`) are specific to block 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float, Int

from nopelens.models import HookedModel
from nopelens.theory.attention import head_outputs, value_outputs
from nopelens.validation import InvalidParameterError, check_int


class _SplitBlock:
    """What both decompositions share: the rebuilt outputs, their errors, head labels, repr."""

    heads: torch.Tensor
    bias: torch.Tensor
    residual: torch.Tensor
    attn_out: torch.Tensor
    resid_mid: torch.Tensor
    resid_post: torch.Tensor | None
    resid_mid_hook: str

    def _block_index(self) -> int:
        return int(getattr(self, "layer", 0))

    def _repr(self, leading: str = "", trailing: str = "") -> str:
        """Shapes, the hook read as ``resid_mid`` and the largest reconstruction error."""
        batch, n_heads, n, d_model = self.heads.shape
        error = max(self.reconstruction_error().values())
        return (
            f"{type(self).__name__}({leading}batch={batch}, pos={n}, head_index={n_heads}, "
            f"d_model={d_model}, resid_mid_hook={self.resid_mid_hook!r}, {trailing}"
            f"max_reconstruction_error={error:.2e})"
        )

    def attn_out_rebuilt(self) -> Float[torch.Tensor, "batch pos d_model"]:
        """``sum_h heads[:, h] + bias``: the attention output rebuilt from its parts."""
        return self.heads.sum(1) + self.bias

    def resid_mid_rebuilt(self) -> Float[torch.Tensor, "batch pos d_model"]:
        """``residual + attn_out_rebuilt()``."""
        return self.residual + self.attn_out_rebuilt()

    def reconstruction_error(self) -> dict[str, float]:
        """Max absolute differences between rebuilt and hooked tensors (float precision, ~1e-7)."""
        return {
            "attn_out": float((self.attn_out_rebuilt() - self.attn_out).abs().max()),
            "resid_mid": float((self.resid_mid_rebuilt() - self.resid_mid).abs().max()),
        }

    def head_labels(self) -> list[str]:
        """TransformerLens-style labels ``L{layer}H0, L{layer}H1, ...``."""
        return [f"L{self._block_index()}H{h}" for h in range(self.heads.shape[1])]


@dataclasses.dataclass(frozen=True, repr=False)
class FirstLayerDecomposition(_SplitBlock):
    """Block 0 split into its additive parts, from one forward pass (tensors on the model device).

    ``attn_out = heads.sum(head_index) + bias`` and ``resid_mid = residual + attn_out`` hold to
    float tolerance (:meth:`reconstruction_error`, which also checks ``residual = embed +
    pos_embed``).

    Attributes:
        tokens: The token ids ``[batch, pos]``.
        heads: Per-head contributions ``[batch, head_index, pos, d_model]``.
        bias: ``b_O`` of block 0 ``[d_model]``.
        residual: The residual input ``hook_resid_pre`` (``embed + pos_embed``).
        embed: ``hook_embed``.
        pos_embed: Positional embedding added to the residual ``[pos, d_model]`` (zeros if none).
        pattern: ``blocks.0.attn.hook_pattern`` ``[batch, head_index, query_pos, key_pos]``.
        values: Value-output vectors ``hook_v @ W_O`` ``[batch, pos, head_index, d_model]``.
        attn_out: Observed ``blocks.0.hook_attn_out``.
        resid_mid: Observed ``blocks.0.hook_resid_mid`` (``hook_resid_post`` for attention-only
            models, where the two are the same).
        resid_post: Observed ``blocks.0.hook_resid_post`` when an MLP follows, else ``None``.
        resid_mid_hook: The hook name ``resid_mid`` was read from.
    """

    tokens: Int[torch.Tensor, "batch pos"]
    heads: Float[torch.Tensor, "batch head_index pos d_model"]
    bias: Float[torch.Tensor, " d_model"]
    residual: Float[torch.Tensor, "batch pos d_model"]
    embed: Float[torch.Tensor, "batch pos d_model"]
    pos_embed: Float[torch.Tensor, "pos d_model"]
    pattern: Float[torch.Tensor, "batch head_index pos pos"]
    values: Float[torch.Tensor, "batch pos head_index d_model"]
    attn_out: Float[torch.Tensor, "batch pos d_model"]
    resid_mid: Float[torch.Tensor, "batch pos d_model"]
    resid_post: Float[torch.Tensor, "batch pos d_model"] | None
    resid_mid_hook: str

    def __repr__(self) -> str:
        """Shapes, the hook read as ``resid_mid``, the MLP and the largest reconstruction error."""
        return self._repr(trailing=f"mlp={self.resid_post is not None}, ")

    def reconstruction_error(self) -> dict[str, float]:
        """Max absolute differences between rebuilt and hooked tensors (should be ~1e-7)."""
        return {
            **super().reconstruction_error(),
            "resid_pre": float((self.embed + self.pos_embed - self.residual).abs().max()),
        }


@dataclasses.dataclass(frozen=True, repr=False)
class BlockDecomposition(_SplitBlock):
    """Block ``layer`` split into its additive parts, from one forward pass.

    ``attn_out = heads.sum(head_index) + bias`` and ``resid_mid = residual + attn_out`` hold to
    float tolerance at every block (:meth:`reconstruction_error`).

    Attributes:
        layer: The block index.
        tokens: The token ids ``[batch, pos]``.
        heads: Per-head contributions ``[batch, head_index, pos, d_model]``.
        bias: ``b_O`` of the block ``[d_model]``.
        residual: The block's input ``hook_resid_pre``.
        pattern: ``attn.hook_pattern`` ``[batch, head_index, query_pos, key_pos]``.
        values: Value-output vectors ``hook_v @ W_O`` ``[batch, pos, head_index, d_model]``.
        attn_out: Observed ``hook_attn_out``.
        resid_mid: Observed ``hook_resid_mid`` (``hook_resid_post`` for attention-only models).
        resid_post: Observed ``hook_resid_post`` when an MLP follows, else ``None``.
        resid_mid_hook: The hook name ``resid_mid`` was read from.
    """

    layer: int
    tokens: Int[torch.Tensor, "batch pos"]
    heads: Float[torch.Tensor, "batch head_index pos d_model"]
    bias: Float[torch.Tensor, " d_model"]
    residual: Float[torch.Tensor, "batch pos d_model"]
    pattern: Float[torch.Tensor, "batch head_index pos pos"]
    values: Float[torch.Tensor, "batch pos head_index d_model"]
    attn_out: Float[torch.Tensor, "batch pos d_model"]
    resid_mid: Float[torch.Tensor, "batch pos d_model"]
    resid_post: Float[torch.Tensor, "batch pos d_model"] | None
    resid_mid_hook: str

    def __repr__(self) -> str:
        """Block, shapes, the hook read as ``resid_mid`` and the largest reconstruction error."""
        return self._repr(leading=f"layer={self.layer}, ")


def check_model(model: Any, func: str) -> None:
    """Raise the sklearn-style error unless ``model`` has TransformerLens' hook interface.

    Raises:
        ValueError: If ``model`` has no ``cfg`` or no ``run_with_cache``.
    """
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(model, "run_with_cache"):
        raise InvalidParameterError(
            f"The 'model' parameter of {func} must be a TransformerLens HookedTransformer (e.g. "
            f"from nopelens.build_model). Got {type(model).__name__} instead."
        )


def _block_sites(cfg: Any, layer: int) -> tuple[list[str], str]:
    """The sites to cache for block ``layer`` and the site that holds ``resid_mid``."""
    attn_only = bool(getattr(cfg, "attn_only", False))
    mid_site = "resid_post" if attn_only else "resid_mid"
    sites = ["resid_pre", "v", "pattern", "attn_out", mid_site]
    if layer == 0:
        sites.insert(0, "embed")
        if getattr(cfg, "positional_embedding_type", "standard") == "standard":
            sites.append("pos_embed")
    if not attn_only:
        sites.append("resid_post")
    return sites, mid_site


def _head_parts(
    model: HookedModel,
    pattern: Float[torch.Tensor, "batch head_index pos pos"],
    v: Float[torch.Tensor, "batch pos kv_head_index d_head"],
    layer: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-head contributions, value-output vectors and ``b_O`` of block ``layer``."""
    n_heads = pattern.shape[1]
    if v.shape[2] != n_heads:  # grouped-query attention: expand key/value heads
        v = v.repeat_interleave(n_heads // v.shape[2], dim=2)
    with torch.no_grad():
        w_o = model.W_O[layer].to(v.device, v.dtype)
        b_o = model.b_O[layer].to(v.device, v.dtype)
        heads = head_outputs(pattern.to(v.dtype), v, w_o)
        values = value_outputs(v, w_o)
    return heads, values, b_o


def _embedding_parts(acts: Any, has_pos: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Block 0's residual input split into ``hook_embed`` and the positional embedding."""
    embed = acts["embed"][0]
    pos_embed = acts["pos_embed"][0][0] if has_pos else torch.zeros_like(embed[0])
    return embed, pos_embed


def _collect(
    model: Any,
    tokens: Any,
    batch_size: int | None,
    fwd_hooks: Sequence[Any],
    func: str,
    layers: Any,
    *,
    embedding: bool,
) -> tuple[torch.Tensor, tuple[int, ...], Any, str]:
    """Validate the inputs and run one forward pass caching what the blocks' parts need.

    Returns:
        The checked tokens, the layers, the cached activations and the site read as
        ``resid_mid``.
    """
    from nopelens.measure import check_layers, check_tokens, collect_activations

    check_model(model, func)
    if batch_size is not None:
        check_int(batch_size, "batch_size", func, min=1)
    tokens = check_tokens(model, tokens, func=func)
    layers = check_layers(model, layers, func=func)
    sites, mid_site = _block_sites(model.cfg, 0 if embedding else 1)
    acts = collect_activations(
        model, tokens, sites=tuple(sites), layers=layers, batch_size=batch_size, fwd_hooks=fwd_hooks
    )
    return tokens, layers, acts, mid_site


def _split(
    model: HookedModel, tokens: torch.Tensor, acts: Any, index: int, layer: int, mid_site: str
) -> dict[str, Any]:
    """The fields both decompositions share, for the block at ``index`` of the cache."""
    from nopelens.measure import hook_name

    pattern = acts["pattern"][index]
    heads, values, b_o = _head_parts(model, pattern, acts["v"][index], layer)
    return {
        "tokens": tokens,
        "heads": heads,
        "bias": b_o,
        "residual": acts["resid_pre"][index],
        "pattern": pattern,
        "values": values,
        "attn_out": acts["attn_out"][index],
        "resid_mid": acts[mid_site][index],
        "resid_post": None if mid_site == "resid_post" else acts["resid_post"][index],
        "resid_mid_hook": hook_name(mid_site, layer),
    }


def _collect_block(
    model: Any,
    tokens: Any,
    batch_size: int | None,
    fwd_hooks: Sequence[Any],
    func: str,
) -> FirstLayerDecomposition:
    """Validate the inputs, run one forward pass and split block 0 into its parts."""
    tokens, _, acts, mid_site = _collect(
        model, tokens, batch_size, fwd_hooks, func, (0,), embedding=True
    )
    embed, pos_embed = _embedding_parts(acts, has_pos="pos_embed" in _block_sites(model.cfg, 0)[0])
    return FirstLayerDecomposition(
        embed=embed, pos_embed=pos_embed, **_split(model, tokens, acts, 0, 0, mid_site)
    )


def decompose_first_layer(
    model: HookedModel,
    tokens: Int[torch.Tensor, "batch pos"],
    *,
    batch_size: int | None = None,
    fwd_hooks: Sequence[Any] = (),
) -> FirstLayerDecomposition:
    """Split block 0 into per-head contributions, the output bias and the residual input.

    One forward pass caches only ``hook_embed``, ``hook_pos_embed``, ``blocks.0.hook_resid_pre``,
    ``attn.hook_v``, ``attn.hook_pattern``, ``hook_attn_out`` and ``hook_resid_mid`` (or
    ``hook_resid_post``); head ``h`` contributes ``pattern[:, h] @ v[:, :, h] @ W_O[h]``.

    Args:
        model: A TransformerLens ``HookedTransformer`` (any positional type, LN type, causal or
            bidirectional, with or without MLP).
        tokens: Token ids ``[batch, pos]``.
        batch_size: Sequences per forward pass (``None``: all at once).
        fwd_hooks: TransformerLens ``(name, fn)`` hooks active during the forward pass.

    Returns:
        :class:`FirstLayerDecomposition`; ``heads.sum(1) + bias`` rebuilds ``hook_attn_out`` and
        adding ``residual`` rebuilds ``hook_resid_mid``.

    Raises:
        ValueError: For a non-TransformerLens model, bad tokens or a bad ``batch_size``.

    Examples:
        >>> from nopelens.models import build_model
        >>> model = build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=10, n_ctx=8)
        >>> parts = decompose_first_layer(model, torch.tensor([[1, 2, 3, 4]]))
        >>> parts.heads.shape
        torch.Size([1, 2, 4, 16])
        >>> max(parts.reconstruction_error().values()) < 1e-5
        True
    """
    return _collect_block(model, tokens, batch_size, fwd_hooks, "decompose_first_layer")


def decompose_blocks(
    model: HookedModel,
    tokens: Int[torch.Tensor, "batch pos"],
    *,
    layers: Sequence[int] | int | None = None,
    batch_size: int | None = None,
    fwd_hooks: Sequence[Any] = (),
) -> list[BlockDecomposition]:
    """Split blocks into per-head contributions, ``b_O`` and the residual, from one forward pass.

    Head ``h`` of block ``L`` contributes ``pattern[:, h] @ v[:, :, h] @ W_O[L, h]`` (``hook_v``
    holds ``ln1(resid_pre) W_V + b_V``; grouped-query values are expanded to every query head), so
    ``sum_h heads + b_O`` rebuilds ``blocks.L.hook_attn_out`` for any normalisation, any biases
    and any number of key/value heads.

    Args:
        model: A TransformerLens ``HookedTransformer``.
        tokens: Token ids ``[batch, pos]``.
        layers: Block indices (``None``: every block).
        batch_size: Sequences per forward pass (``None``: all at once).
        fwd_hooks: TransformerLens ``(name, fn)`` hooks active during the forward pass.

    Returns:
        One :class:`BlockDecomposition` per requested block, in order.

    Raises:
        ValueError: For a non-TransformerLens model, bad tokens, layers or ``batch_size``.

    Examples:
        >>> from nopelens.models import build_model
        >>> model = build_model(n_layers=2, d_model=16, n_heads=2, d_vocab=10, n_ctx=8)
        >>> blocks = decompose_blocks(model, torch.tensor([[1, 2, 3, 4]]))
        >>> [b.head_labels() for b in blocks]
        [['L0H0', 'L0H1'], ['L1H0', 'L1H1']]
        >>> max(max(b.reconstruction_error().values()) for b in blocks) < 1e-5
        True
    """
    tokens, layers, acts, mid_site = _collect(
        model, tokens, batch_size, fwd_hooks, "decompose_blocks", layers, embedding=False
    )
    return [
        BlockDecomposition(layer=int(layer), **_split(model, tokens, acts, index, layer, mid_site))
        for index, layer in enumerate(layers)
    ]
