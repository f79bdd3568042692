"""Ablations through TransformerLens hooks: no model surgery, the weights are never touched.

Each factory returns a list of TransformerLens ``(hook_name, fn)`` pairs. Pass it as ``fwd_hooks``
to :func:`nopelens.analyze`, :func:`nopelens.collect_activations`, ``model.run_with_hooks`` or
``with model.hooks(fwd_hooks=...)``; sweeps name ablations in the grid with the short specs of
:func:`ablation_hooks` (``"remove_residual:0"``, ``"shuffle_prefix:8"``, ...).

* :func:`remove_residual_hooks` removes the skip connections of chosen blocks, optionally at the
  first ``N`` positions only. TransformerLens' ``TransformerBlock.forward`` computes
  ``resid_mid = hook_resid_mid(resid_pre + attn_out)`` and
  ``resid_post = hook_resid_post(resid_mid + mlp_out)`` (``resid_pre + attn_out`` for attention-only
  blocks). The hooks remember ``hook_attn_out`` / ``hook_mlp_out`` of the same forward pass and
  write them over ``hook_resid_mid`` / ``hook_resid_post``, so the ablated block computes
  ``resid_mid = attn_out`` and ``resid_post = mlp_out`` exactly (no floating-point subtraction),
  and every later block reads the ablated stream.
* :func:`shuffle_prefix_hooks` permutes the token embeddings (``hook_embed``) of the first ``n``
  positions, which is the same as permuting the first ``n`` tokens while positional embeddings,
  rotary phases and ALiBi biases stay in place. In a causal NoPE model the layer-0 outputs at
  positions ``>= n`` are unchanged by it (a causal attention layer without positions sees its
  prefix as a set); deeper layers and models with positional information are not invariant.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from nopelens.measure.hooks import hook_name
from nopelens.validation import check_choice, check_int

#: A TransformerLens forward hook: ``fn(activation, hook) -> activation | None``.
Hook = tuple[str, Callable[..., Any]]

CONNECTIONS: tuple[str, ...] = ("attn", "mlp", "both")
#: Ablation spec kinds accepted by :func:`ablation_hooks` -> the skip connection they remove.
_RESIDUAL_KINDS = {
    "remove_residual": "both",
    "remove_attn_residual": "attn",
    "remove_mlp_residual": "mlp",
}
_SPEC_HELP = (
    "'none', 'remove_residual:LAYERS[@N]', 'remove_attn_residual:LAYERS[@N]', "
    "'remove_mlp_residual:LAYERS[@N]' or 'shuffle_prefix:N' (LAYERS is 'all' or comma-separated "
    "block indices, @N restricts to the first N positions; join several with '+')"
)


def _check_positions(positions: Any, func: str) -> int | tuple[int, ...] | None:
    if positions is None:
        return None
    if isinstance(positions, int) and not isinstance(positions, bool):
        return check_int(positions, "positions", func, min=1)
    try:
        items = tuple(positions)
    except TypeError:
        items = ()
    if not items or any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in items):
        raise ValueError(
            f"The 'positions' parameter of {func} must be None, an int N >= 1 (the first N "
            f"positions) or a non-empty sequence of position indices >= 0. Got {positions!r} "
            f"instead."
        )
    return tuple(sorted(set(items)))


def _select(positions: int | tuple[int, ...] | None, n_pos: int) -> slice | list[int] | None:
    """The position index for ``[:, index]`` (None: every position)."""
    if positions is None:
        return None
    if isinstance(positions, int):
        return None if positions >= n_pos else slice(0, positions)
    if positions[-1] >= n_pos:
        raise ValueError(
            f"remove_residual_hooks got positions {list(positions)} but the sequence has only "
            f"{n_pos} positions."
        )
    return list(positions)


def _overwrite(
    resid: torch.Tensor, replacement: torch.Tensor, positions: int | tuple[int, ...] | None
) -> torch.Tensor:
    index = _select(positions, resid.shape[1])
    if index is None:
        return replacement.clone()
    out = resid.clone()
    out[:, index] = replacement[:, index]
    return out


def remove_residual_hooks(
    model: Any,
    layers: int | Sequence[int] | None,
    *,
    positions: int | Sequence[int] | None = None,
    connection: str = "both",
) -> list[Hook]:
    """Hooks that remove the residual (skip) connections of chosen blocks.

    With ``connection="attn"`` block ``L`` computes ``resid_mid = attn_out`` instead of
    ``resid_pre + attn_out``; with ``"mlp"`` it computes ``resid_post = mlp_out`` instead of
    ``resid_mid + mlp_out``; ``"both"`` does both, so the block's output is its MLP applied to its
    attention output and nothing of ``resid_pre`` flows around the block. In attention-only models
    the attention skip is the block's only one (``resid_post = attn_out``). The replaced values are
    the block's own ``hook_attn_out`` / ``hook_mlp_out`` of the same forward pass, copied exactly.

    Args:
        model: The ``HookedTransformer`` the hooks are for (its config decides the hook names).
        layers: Block index or indices; ``None`` means every block.
        positions: ``None`` (every position), an int ``N`` (the first ``N`` positions only; every
            position if the sequence is shorter) or a sequence of position indices.
        connection: ``"attn"``, ``"mlp"`` or ``"both"``.

    Returns:
        TransformerLens ``fwd_hooks``: a list of ``(hook_name, fn)`` pairs.

    Raises:
        ValueError: For block indices out of range, bad positions, an unknown ``connection``,
            ``connection="mlp"`` on an attention-only model, or a parallel attention/MLP model.

    Examples:
        >>> from nopelens import build_model, collect_activations, random_tokens
        >>> model = build_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> hooks = remove_residual_hooks(model, 0)
        >>> acts = collect_activations(model, random_tokens(2, 6, 20), layers=0,
        ...                            sites=("attn_out", "resid_mid"), fwd_hooks=hooks)
        >>> bool(torch.equal(acts["resid_mid"], acts["attn_out"]))
        True
    """
    from nopelens.measure.activations import check_layers

    func = "remove_residual_hooks"
    check_choice(connection, "connection", CONNECTIONS, func)
    layers = check_layers(model, layers, func=func)
    where = _check_positions(positions, func)
    cfg = model.cfg
    if getattr(cfg, "parallel_attn_mlp", False):
        raise ValueError(
            f"{func} does not support parallel attention/MLP blocks (parallel_attn_mlp=True): "
            f"they have no hook_resid_mid."
        )
    attn_only = bool(getattr(cfg, "attn_only", False))
    if attn_only and connection == "mlp":
        raise ValueError(
            f"The 'connection' parameter of {func} cannot be 'mlp' for an attention-only model "
            f"(attn_only=True): its blocks have no MLP. Use 'attn' or 'both'."
        )

    hooks: list[Hook] = []
    for layer in layers:
        if attn_only:
            hooks += _replace_pair(
                hook_name("attn_out", layer), hook_name("resid_post", layer), where
            )
            continue
        if connection in ("attn", "both"):
            hooks += _replace_pair(
                hook_name("attn_out", layer), hook_name("resid_mid", layer), where
            )
        if connection in ("mlp", "both"):
            hooks += _replace_pair(
                hook_name("mlp_out", layer), hook_name("resid_post", layer), where
            )
    return hooks


def _replace_pair(source: str, target: str, positions: int | tuple[int, ...] | None) -> list[Hook]:
    """Two hooks: remember ``source``'s output, then write it over ``target``'s."""
    store: dict[str, torch.Tensor] = {}

    def remember(activation: torch.Tensor, hook: Any) -> None:
        store["value"] = activation

    def replace(activation: torch.Tensor, hook: Any) -> torch.Tensor:
        if "value" not in store:
            raise RuntimeError(f"{target} fired before {source} in the same forward pass.")
        return _overwrite(activation, store.pop("value"), positions)

    return [(source, remember), (target, replace)]


def prefix_permutation(n_prefix: int, *, seed: int = 0) -> list[int]:
    """The permutation of ``range(n_prefix)`` used by :func:`shuffle_prefix_hooks`.

    Drawn from ``numpy.random.default_rng(seed)`` and never the identity (for ``n_prefix >= 2``),
    so the ablation always changes something.

    Examples:
        >>> sorted(prefix_permutation(5, seed=3)) == list(range(5))
        True
        >>> prefix_permutation(5, seed=3) != list(range(5))
        True
    """
    func = "prefix_permutation"
    check_int(n_prefix, "n_prefix", func, min=1)
    check_int(seed, "seed", func, min=0)
    rng = np.random.default_rng(seed)
    identity = list(range(n_prefix))
    perm = identity
    while n_prefix >= 2 and perm == identity:
        perm = rng.permutation(n_prefix).tolist()
    return perm


def shuffle_prefix_hooks(n_prefix: int, *, seed: int = 0) -> list[Hook]:
    """Hooks that permute the token embeddings of the first ``n_prefix`` positions.

    The same seeded permutation (:func:`prefix_permutation`) is applied to every sequence of the
    batch, at ``hook_embed``: position ``i < n_prefix`` receives the embedding of the token at
    position ``perm[i]``. Positional embeddings are not moved, so this is exactly a permutation
    of the first ``n_prefix`` tokens.

    Args:
        n_prefix: Number of leading positions to shuffle (``>= 2`` to change anything).
        seed: Seed of the permutation.

    Returns:
        TransformerLens ``fwd_hooks`` (one hook on ``hook_embed``). The hook raises ``ValueError``
        on sequences shorter than ``n_prefix``.

    Raises:
        ValueError: If ``n_prefix`` or ``seed`` is not a valid int.

    Examples:
        >>> from nopelens import build_model, collect_activations
        >>> model = build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> tokens = torch.tensor([[1, 2, 3, 4, 5, 6]])
        >>> shuffled = collect_activations(model, tokens, sites="resid_post",
        ...                                fwd_hooks=shuffle_prefix_hooks(3, seed=0))
        >>> plain = collect_activations(model, tokens, sites="resid_post")
        >>> bool(torch.allclose(shuffled["resid_post"][..., 3:, :], plain["resid_post"][..., 3:, :],
        ...                     atol=1e-6))
        True
    """
    func = "shuffle_prefix_hooks"
    check_int(n_prefix, "n_prefix", func, min=1)
    check_int(seed, "seed", func, min=0)
    perm = prefix_permutation(n_prefix, seed=seed)

    def shuffle(embed: torch.Tensor, hook: Any) -> torch.Tensor:
        if embed.shape[1] < n_prefix:
            raise ValueError(
                f"shuffle_prefix_hooks(n_prefix={n_prefix}) got sequences of {embed.shape[1]} "
                f"positions; they must have at least n_prefix positions."
            )
        out = embed.clone()
        out[:, :n_prefix] = embed[:, perm]
        return out

    return [(hook_name("embed"), shuffle)]


_SPEC = re.compile(r"^(?P<kind>[a-z_]+)(?::(?P<arg>[^@]+)(?:@(?P<pos>\d+))?)?$")


def parse_ablation(spec: str) -> list[dict[str, Any]]:
    """Parse a grid ablation spec into a list of ablation descriptions.

    Grammar: ``"none"``; ``"remove_residual:LAYERS"`` (also ``remove_attn_residual`` and
    ``remove_mlp_residual``), where LAYERS is ``all`` or comma-separated block indices, optionally
    followed by ``@N`` to restrict to the first ``N`` positions; ``"shuffle_prefix:N"``. Several
    ablations are joined with ``+``.

    Raises:
        ValueError: If the spec does not follow the grammar.

    Examples:
        >>> parse_ablation("remove_residual:0,1@4")
        [{'kind': 'remove_residual', 'connection': 'both', 'layers': [0, 1], 'positions': 4}]
        >>> [part["kind"] for part in parse_ablation("remove_mlp_residual:all+shuffle_prefix:8")]
        ['remove_residual', 'shuffle_prefix']
        >>> parse_ablation("none")
        []
    """
    bad = ValueError(f"The 'ablation' setting must be {_SPEC_HELP}. Got {spec!r} instead.")
    if not isinstance(spec, str) or not spec.strip():
        raise bad
    if spec.strip() == "none":
        return []
    out: list[dict[str, Any]] = []
    for part in spec.replace(" ", "").split("+"):
        match = _SPEC.match(part)
        if match is None:
            raise bad
        kind, arg, pos = match["kind"], match["arg"], match["pos"]
        if kind in _RESIDUAL_KINDS and arg is not None:
            if arg == "all":
                layers: list[int] | None = None
            elif re.fullmatch(r"\d+(,\d+)*", arg):
                layers = [int(x) for x in arg.split(",")]
            else:
                raise bad
            if pos is not None and int(pos) < 1:
                raise bad
            out.append(
                {
                    "kind": "remove_residual",
                    "connection": _RESIDUAL_KINDS[kind],
                    "layers": layers,
                    "positions": None if pos is None else int(pos),
                }
            )
        elif kind == "shuffle_prefix" and arg is not None and arg.isdigit() and pos is None:
            out.append({"kind": "shuffle_prefix", "n_prefix": int(arg)})
        else:
            raise bad
    return out


def check_ablation(spec: str, *, n_layers: int, seq_len: int, attn_only: bool = False) -> list[str]:
    """Every problem with an ablation spec for a model and sequence length (empty when valid).

    Examples:
        >>> check_ablation("remove_residual:2", n_layers=2, seq_len=16)
        ["ablation 'remove_residual:2' names block 2 but the model has n_layers=2 (blocks 0..1)."]
    """
    try:
        parts = parse_ablation(spec)
    except ValueError as err:
        return [str(err)]
    problems = []
    for part in parts:
        if part["kind"] == "remove_residual":
            bad = [layer for layer in part["layers"] or [] if layer >= n_layers]
            if bad:
                problems.append(
                    f"ablation {spec!r} names block {bad[0]} but the model has "
                    f"n_layers={n_layers} (blocks 0..{n_layers - 1})."
                )
            if attn_only and part["connection"] == "mlp":
                problems.append(
                    f"ablation {spec!r} removes the MLP skip connection but the model is "
                    f"attention-only (attn_only=True)."
                )
        elif part["n_prefix"] > seq_len:
            problems.append(
                f"ablation {spec!r} shuffles {part['n_prefix']} positions but seq_len={seq_len}."
            )
        elif part["n_prefix"] < 2:
            problems.append(f"ablation {spec!r} must shuffle at least 2 positions.")
    return problems


def ablation_hooks(model: Any, spec: str, *, seed: int = 0) -> list[Hook]:
    """The ``fwd_hooks`` of a grid ablation spec (see :func:`parse_ablation`) for ``model``.

    Args:
        model: The model the hooks are for.
        spec: An ablation spec such as ``"remove_residual:0@4"`` or ``"shuffle_prefix:8"``.
        seed: Seed of the prefix permutation.

    Returns:
        The concatenated hooks of every ablation in ``spec`` (empty for ``"none"``).

    Raises:
        ValueError: If the spec is malformed or does not fit the model.

    Examples:
        >>> from nopelens import build_model
        >>> model = build_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> [name for name, _ in ablation_hooks(model, "remove_mlp_residual:1+shuffle_prefix:4")]
        ['blocks.1.hook_mlp_out', 'blocks.1.hook_resid_post', 'hook_embed']
    """
    hooks: list[Hook] = []
    for part in parse_ablation(spec):
        if part["kind"] == "remove_residual":
            hooks += remove_residual_hooks(
                model, part["layers"], positions=part["positions"], connection=part["connection"]
            )
        else:
            hooks += shuffle_prefix_hooks(part["n_prefix"], seed=seed)
    return hooks
