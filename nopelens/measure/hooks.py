"""Hook names: the one place that maps nopelens site names to TransformerLens hook points.

A *site* is a short name (``"resid_post"``, ``"ln1_normalized"``, ``"pattern"``, ...; the list is
:data:`nopelens.spec.SITES`). :func:`hook_name` turns a site and a block index into the
TransformerLens hook name through ``transformer_lens.utilities.get_act_name`` (imported on first
use, so this module is cheap to import). Every other module asks here.
"""

from __future__ import annotations

from nopelens.validation import InvalidParameterError

#: Short site names -> ``(act_name, layer_type)`` for ``transformer_lens.utilities.get_act_name``.
BLOCK_SITES: dict[str, tuple[str, str | None]] = {
    "resid_pre": ("resid_pre", None),
    "resid_mid": ("resid_mid", None),
    "resid_post": ("resid_post", None),
    "attn_out": ("attn_out", None),
    "mlp_out": ("mlp_out", None),
    "ln1_normalized": ("normalized", "ln1"),
    "ln2_normalized": ("normalized", "ln2"),
    "pattern": ("pattern", None),
    "attn_scores": ("attn_scores", None),
    "q": ("q", None),
    "k": ("k", None),
    "v": ("v", None),
    "z": ("z", None),
    "result": ("result", None),
    "mlp_post": ("post", None),
}
#: Sites outside the blocks; their stacked tensors have a layer dimension of size 1.
GLOBAL_SITES: dict[str, str] = {"embed": "hook_embed", "pos_embed": "hook_pos_embed"}
SITES: tuple[str, ...] = (*GLOBAL_SITES, *BLOCK_SITES)


def hook_name(site: str, layer: int | None = None) -> str:
    """The TransformerLens hook name of ``site`` in block ``layer``.

    ``site`` is a short name from :data:`SITES` or a raw hook suffix inside a block
    (``"hook_resid_pre"``, ``"ln1.hook_normalized"``, ``"attn.hook_v"``).

    Examples:
        >>> hook_name("resid_post", 1)
        'blocks.1.hook_resid_post'
        >>> hook_name("ln1_normalized", 0)
        'blocks.0.ln1.hook_normalized'
        >>> hook_name("embed")
        'hook_embed'
        >>> hook_name("attn.hook_v", 2)
        'blocks.2.attn.hook_v'
    """
    if site in GLOBAL_SITES:
        return GLOBAL_SITES[site]
    if layer is None:
        raise InvalidParameterError(f"Site {site!r} is inside a block: pass a layer index.")
    if site in BLOCK_SITES:
        from transformer_lens.utilities import get_act_name

        act_name, layer_type = BLOCK_SITES[site]
        return get_act_name(act_name, layer, layer_type)
    return f"blocks.{layer}.{site}"
