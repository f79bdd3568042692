"""Collecting hidden states from TransformerLens hook points (names from ``measure.hooks``).

Everything here works on any model that exposes ``run_with_cache`` and TransformerLens hook names
(``HookedTransformer``, and TransformerLens 4 ``TransformerBridge`` aliases). Only the requested
hooks are cached (``names_filter``), the forward pass stops after the last block needed
(``stop_at_layer``, so the unembedding is skipped), and large token sets are processed in batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Int

from nopelens.measure.hooks import GLOBAL_SITES, SITES, hook_name
from nopelens.memory import check_fits, collect_bytes
from nopelens.validation import InvalidParameterError


def _is_site(site: Any) -> bool:
    return isinstance(site, str) and (site in SITES or site.startswith("hook_") or ".hook_" in site)


def check_tokens(model: Any, tokens: Any, *, name: str = "tokens", func: str = "nopelens") -> Any:
    """Validate a token batch against ``model`` and move it to the model's device.

    Args:
        model: The model the tokens are for (its ``cfg.d_vocab`` and ``cfg.n_ctx`` are used).
        tokens: Integer tensor ``[batch, pos]`` (a 1-D tensor is one sequence).
        name: Argument name used in error messages.
        func: Function name used in error messages.

    Returns:
        ``Int[Tensor, "batch pos"]`` on the model's device.

    Raises:
        InvalidParameterError: (a ValueError and a TypeError) If ``tokens`` is not an integer
            tensor, is empty, is longer than ``n_ctx``, or
            holds ids outside ``[0, d_vocab)``.
    """
    where = f"The {name!r} parameter of {func}"
    if not isinstance(tokens, torch.Tensor):
        raise InvalidParameterError(
            f"{where} must be an integer torch.Tensor [batch, pos]. Got {type(tokens).__name__} "
            f"instead."
        )
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise InvalidParameterError(
            f"{where} must hold integer token ids (torch.long). Got dtype {tokens.dtype} instead."
        )
    if tokens.ndim == 1:
        tokens = tokens.unsqueeze(0)
    if tokens.ndim != 2:
        raise InvalidParameterError(
            f"{where} must have shape [batch, pos]. Got shape {tuple(tokens.shape)} instead."
        )
    batch, pos = tokens.shape
    if batch == 0 or pos == 0:
        raise InvalidParameterError(
            f"{where} must hold at least one sequence of at least one token. Got shape "
            f"{tuple(tokens.shape)} [batch pos] instead."
        )
    cfg = getattr(model, "cfg", None)
    n_ctx = getattr(cfg, "n_ctx", None)
    if n_ctx is not None and pos > n_ctx:
        raise InvalidParameterError(
            f"{where} has sequences of {pos} tokens but the model's n_ctx is {n_ctx}. "
            f"Use at most {n_ctx} positions or build the model with a larger n_ctx."
        )
    d_vocab = getattr(cfg, "d_vocab", None)
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or (d_vocab is not None and high >= d_vocab):
        raise InvalidParameterError(
            f"{where} must hold ids in [0, {d_vocab}) (d_vocab={d_vocab}). Got ids from {low} to "
            f"{high} instead."
        )
    device = getattr(cfg, "device", None)
    return tokens.long().to(device) if device is not None else tokens.long()


def check_layers(model: Any, layers: Any, *, func: str = "nopelens") -> tuple[int, ...]:
    """Validate block indices (``None`` means every block).

    Examples:
        >>> from nopelens.models import build_model
        >>> m = build_model(n_layers=3, d_model=8, n_heads=2, d_vocab=5, n_ctx=4)
        >>> check_layers(m, None), check_layers(m, 1)
        ((0, 1, 2), (1,))
    """
    n_layers = model.cfg.n_layers
    if layers is None:
        return tuple(range(n_layers))
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = (layers,)
    try:
        layers = tuple(layers)
    except TypeError:
        layers = (layers,)
    bad = [
        layer
        for layer in layers
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers
    ]
    if bad or not layers:
        raise InvalidParameterError(
            f"The 'layers' parameter of {func} must be None or block indices in "
            f"[0, {n_layers - 1}] "
            f"(the model has n_layers={n_layers}). Got {layers!r} instead."
        )
    return tuple(dict.fromkeys(layers))


_MLP_SITES = ("resid_mid", "mlp_out", "ln2_normalized", "mlp_post")


def _site_exists(model: Any, site: str, layer: int | None) -> bool:
    cfg = model.cfg
    if getattr(cfg, "attn_only", False) and site in _MLP_SITES:
        return False  # TransformerLens 3.x registers hook_mlp_out but it never fires
    if site == "result" and not getattr(cfg, "use_attn_result", False):
        return False
    hook_dict = getattr(model, "hook_dict", None)
    return hook_dict is None or hook_name(site, layer) in hook_dict


def available_sites(model: Any, layer: int = 0) -> list[str]:
    """The short site names whose hooks exist and fire in ``model`` (at block ``layer``).

    Examples:
        >>> from nopelens.models import build_model
        >>> m = build_model(n_layers=1, d_model=8, n_heads=2, d_vocab=5, n_ctx=4, attn_only=True)
        >>> "resid_mid" in available_sites(m), "attn_out" in available_sites(m)
        (False, True)
    """
    return [s for s in SITES if _site_exists(model, s, layer)]


def check_sites(
    model: Any, sites: Any, layers: Sequence[int], *, func: str = "nopelens"
) -> tuple[str, ...]:
    """Validate site names and check that every requested hook exists in ``model``.

    Raises:
        ValueError: Naming the unknown or missing site, why it is missing, and the available sites.
    """
    if isinstance(sites, str):
        sites = (sites,)
    try:
        sites = tuple(sites)
    except TypeError:
        sites = (sites,)
    if not sites:
        raise InvalidParameterError(f"The 'sites' parameter of {func} must name at least one site.")
    for site in sites:
        if not _is_site(site):
            raise InvalidParameterError(
                f"The 'sites' parameter of {func} must contain site names from "
                f"{', '.join(SITES)} or raw TransformerLens hook suffixes such as "
                f"'hook_resid_pre'. Got {site!r} instead."
            )
    cfg = model.cfg
    for site in sites:
        checked = [None] if site in GLOBAL_SITES else list(layers)
        missing = [layer for layer in checked if not _site_exists(model, site, layer)]
        if missing:
            reason = ""
            if site in _MLP_SITES and getattr(cfg, "attn_only", False):
                reason = " (attention-only models have no MLP and no hook_resid_mid)"
            elif "normalized" in site and getattr(cfg, "normalization_type", "") is None:
                reason = " (the model has normalization_type=None)"
            elif site == "result":
                reason = " (call model.set_use_attn_result(True) first)"
            where = hook_name(site, missing[0])
            raise InvalidParameterError(
                f"Site {site!r} does not exist in this model: no hook {where!r}{reason}. "
                f"Available sites: {', '.join(available_sites(model, layers[0] if layers else 0))}."
            )
    return tuple(dict.fromkeys(sites))


@dataclasses.dataclass(frozen=True)
class Activations:
    """Hidden states collected at several sites, stacked over blocks.

    Attributes:
        tensors: Site name -> tensor ``[layer, batch, ...]`` (``[layer, batch, pos, d_model]`` for
            residual-stream sites, ``[layer, batch, head_index, query_pos, key_pos]`` for
            ``pattern``). Global sites such as ``embed`` have a layer dimension of size 1.
        layers: The block indices along the layer dimension of block sites.
    """

    tensors: dict[str, torch.Tensor]
    layers: tuple[int, ...]

    def __getitem__(self, site: str) -> torch.Tensor:
        """The stacked tensor of ``site``."""
        if site not in self.tensors:
            collected = ", ".join(self.tensors)
            raise KeyError(f"Site {site!r} was not collected; collected: {collected}.")
        return self.tensors[site]

    @property
    def sites(self) -> tuple[str, ...]:
        """The collected site names."""
        return tuple(self.tensors)


def _prepare(
    model: Any, tokens: Any, sites: Any, layers: Any, batch_size: Any, func: str
) -> tuple[torch.Tensor, tuple[str, ...], tuple[int, ...]]:
    tokens = check_tokens(model, tokens, func=func)
    layers = check_layers(model, layers, func=func)
    sites = check_sites(model, sites, layers, func=func)
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise InvalidParameterError(
            f"The 'batch_size' parameter of {func} must be None or an int >= 1. "
            f"Got {batch_size!r} instead."
        )
    _check_memory(model, tokens, sites, layers, batch_size, func)
    return tokens, sites, layers


def _available_on(device: Any) -> int | None:
    """Free memory of a CUDA device; None for the host (then ``available_bytes`` decides)."""
    if getattr(device, "type", str(device).split(":")[0]) != "cuda":
        return None
    try:
        return int(torch.cuda.mem_get_info(device)[0])
    except (RuntimeError, AssertionError, ValueError):  # no CUDA here: nothing to compare with
        return None


def _check_memory(
    model: Any, tokens: torch.Tensor, sites: Any, layers: Any, batch_size: Any, func: str
) -> None:
    """Refuse, before the forward pass, activations that would not fit (:mod:`nopelens.memory`)."""
    cfg = getattr(model, "cfg", None)
    if not all(hasattr(cfg, k) for k in ("n_layers", "d_model", "n_heads", "d_vocab")):
        return  # a model that does not state its sizes is not checked
    n, pos = tokens.shape
    chunk = min(batch_size or n, n)
    needed = collect_bytes(
        cfg, n_seqs=n, pos=pos, sites=sites, n_layers=len(layers), batch_size=chunk,
        keep_all=func != "iter_activations",
    )  # fmt: skip
    check_fits(
        needed,
        what=f"the activations of {n} sequences x {pos} positions at {len(sites)} site(s) and "
        f"{len(layers)} layer(s), in batches of {chunk}",
        func=func,
        available=_available_on(getattr(cfg, "device", None)),
        hint="Use fewer or shorter sequences, fewer sites or layers, or a smaller batch_size.",
    )


def _names(sites: Sequence[str], layers: Sequence[int]) -> dict[str, list[str]]:
    return {
        site: [hook_name(site)] if site in GLOBAL_SITES else [hook_name(site, l) for l in layers]
        for site in sites
    }


def _run(
    model: Any,
    tokens: torch.Tensor,
    names: dict[str, list[str]],
    layers: Sequence[int],
    fwd_hooks: Sequence[Any],
) -> dict[str, torch.Tensor]:
    wanted = {n for ns in names.values() for n in ns}
    kwargs: dict[str, Any] = {"names_filter": lambda name: name in wanted}
    block_sites = any(s not in GLOBAL_SITES for s in names)
    n_layers = model.cfg.n_layers
    stop = (max(layers) + 1) if (block_sites and layers) else 0 if not block_sites else None
    if stop is not None and stop < n_layers:
        kwargs["stop_at_layer"] = stop
    elif stop is None or stop >= n_layers:
        kwargs["return_type"] = None
    hooks_ctx = model.hooks(fwd_hooks=list(fwd_hooks)) if fwd_hooks else contextlib.nullcontext()
    with torch.no_grad(), hooks_ctx:
        _, cache = model.run_with_cache(tokens, **kwargs)
    out = {}
    for site, site_names in names.items():
        missing = [n for n in site_names if n not in cache]
        if missing:
            raise InvalidParameterError(
                f"Hook {missing[0]!r} did not fire during the forward pass."
            )
        out[site] = torch.stack([cache[n] for n in site_names])
    return out


def iter_activations(
    model: Any,
    tokens: Int[torch.Tensor, "*batch pos"],
    *,
    sites: Sequence[str] | str = ("resid_post",),
    layers: Sequence[int] | int | None = None,
    batch_size: int | None = 64,
    fwd_hooks: Sequence[Any] = (),
) -> Iterator[Activations]:
    """Yield :class:`Activations` for consecutive batches of ``tokens`` (for streaming analyses).

    Arguments are validated before the first forward pass. See :func:`collect_activations`.
    """
    tokens, sites, layers = _prepare(model, tokens, sites, layers, batch_size, "iter_activations")
    return _iterate(model, tokens, sites, layers, batch_size, fwd_hooks)


def _iterate(model, tokens, sites, layers, batch_size, fwd_hooks) -> Iterator[Activations]:
    names = _names(sites, layers)
    step = batch_size or tokens.shape[0]
    for start in range(0, tokens.shape[0], step):
        yield Activations(
            _run(model, tokens[start : start + step], names, layers, fwd_hooks), layers
        )


def collect_activations(
    model: Any,
    tokens: Int[torch.Tensor, "*batch pos"],
    *,
    sites: Sequence[str] | str = ("resid_post",),
    layers: Sequence[int] | int | None = None,
    batch_size: int | None = None,
    fwd_hooks: Sequence[Any] = (),
) -> Activations:
    """Run ``model`` on ``tokens`` and collect only the requested hook points, stacked per block.

    Args:
        model: Any model with ``run_with_cache`` and TransformerLens hook names.
        tokens: Token ids ``[batch, pos]``.
        sites: Short site names (see :data:`SITES`) or raw hook suffixes.
        layers: Block indices; ``None`` means every block. Global sites (``embed``) ignore it.
        batch_size: Sequences per forward pass; ``None`` runs all at once.
        fwd_hooks: TransformerLens ``(name_or_filter, fn)`` hooks active during the forward pass
            (e.g. ablations from :mod:`nopelens.measure.ablation`).

    Returns:
        :class:`Activations` with one ``[layer, batch, ...]`` tensor per site, on the model device.

    Raises:
        ValueError: For invalid tokens, layers, sites, or a site the model does not have.

    Examples:
        >>> from nopelens.models import build_model
        >>> model = build_model(n_layers=2, d_model=16, n_heads=2, d_vocab=10, n_ctx=8)
        >>> tokens = torch.tensor([[1, 2, 3]])
        >>> acts = collect_activations(model, tokens, sites=("embed", "resid_post"))
        >>> acts["resid_post"].shape, acts["embed"].shape
        (torch.Size([2, 1, 3, 16]), torch.Size([1, 1, 3, 16]))
    """
    func = "collect_activations"
    tokens, sites, layers = _prepare(model, tokens, sites, layers, batch_size, func)
    parts = list(_iterate(model, tokens, sites, layers, batch_size, fwd_hooks))
    if len(parts) == 1:
        return parts[0]
    return Activations(
        {site: torch.cat([p.tensors[site] for p in parts], dim=1) for site in sites}, layers
    )
