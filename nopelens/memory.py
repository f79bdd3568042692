"""A memory guard: estimate what a call will allocate and refuse it before it runs out of memory.

A NoPE analysis is cheap until one size is a typo: ``seq_len=100000`` makes every attention
pattern ``pos^2`` floats per head and sequence (terabytes), ``n_layers=10**6`` makes the model
alone hundreds of gigabytes. Without a guard such a call grows for minutes, swaps the machine and
dies with an opaque ``MemoryError`` (or the kernel kills it). The functions here estimate the bytes
a call allocates from its sizes alone, before anything is allocated, and :func:`check_fits`
refuses with an :class:`~nopelens.validation.InvalidParameterError` that states the estimate and
the available memory.

The estimates count the tensors that dominate (float32 unless a dtype is given):

* :func:`model_bytes`: parameters and buffers of a ``HookedTransformer`` built from a
  :class:`~nopelens.spec.ModelSpec` (embedding, unembedding, ``W_pos``, per block
  ``W_Q, W_K, W_V, W_O`` with biases, the MLP, the norms);
* :func:`activation_bytes`: stored hook activations, ``batch x pos x width x tensors``, and
  :func:`collect_bytes`: the peak of collecting them batch by batch;
* :func:`forward_bytes`: the working memory of one forward pass (attention scores and patterns,
  ``batch x n_heads x pos^2`` each, plus the residual-stream temporaries);
* :func:`similarity_bytes`: ``batch x pos^2`` similarity matrices;
* :func:`analysis_bytes`: the peak of one sweep configuration (model, forward pass of one batch,
  its stored activations, the similarity matrices of one layer and the per-layer sums).

They are estimates of the *dominant* terms, not byte-exact accounts: on the CPU with
TransformerLens 3.9 the estimates of :func:`collect_bytes` and :func:`analysis_bytes` were 1.0 to
1.35 times the measured peak growth of the resident set (9 sizes, up to 2.3 GiB; the script is
``benchmarks/memory_guard.py``), and :func:`model_bytes` equals the bytes of the built model's
parameters and buffers. The available memory is
``MemAvailable`` of ``/proc/meminfo`` on Linux (what the kernel can hand out without swapping),
else the free physical pages from ``os.sysconf``; ``None`` when neither is known, in which case
nothing is refused. This module imports neither torch nor numpy.

Examples:
    >>> from nopelens.spec import ModelSpec
    >>> spec = ModelSpec(n_layers=2, d_model=64, n_heads=4, d_vocab=256, n_ctx=32)
    >>> model_bytes(spec)  # (2 blocks of 49,985 + W_pos 2,048 + embeddings 33,152) x 4 bytes
    540680
    >>> format_bytes(similarity_bytes(batch=8, pos=100_000))
    '298.0 GiB'
    >>> try:
    ...     check_fits(2**60, what="the attention patterns", func="analyze", available=2**33)
    ... except ValueError as err:
    ...     print(err)  # doctest: +NORMALIZE_WHITESPACE
    analyze would need about 1.0 EiB for the attention patterns, but only 8.0 GiB of memory is
    available. Use smaller sizes (fewer sequences, shorter sequences, fewer layers or a
    smaller batch_size).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from nopelens.validation import InvalidParameterError

__all__ = [
    "DTYPE_BYTES",
    "activation_bytes",
    "analysis_bytes",
    "available_bytes",
    "check_fits",
    "collect_bytes",
    "format_bytes",
    "forward_bytes",
    "model_bytes",
    "similarity_bytes",
]

#: Bytes per element of the model dtypes (:data:`nopelens.spec.DTYPES`).
DTYPE_BYTES: dict[str, int] = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}
#: Environment variable that overrides the available memory (bytes), for tests and for
#: containers whose limit ``/proc/meminfo`` does not show.
AVAILABLE_ENV = "NOPELENS_AVAILABLE_MEMORY"
#: TransformerLens' initial rotary cache length (``AbstractAttention.ROTARY_INITIAL_CACHE_SIZE``).
_ROTARY_CACHE = 4096


def _field(spec: Any, name: str, default: Any = None) -> Any:
    if isinstance(spec, Mapping):
        value = spec.get(name, default)
    else:
        value = getattr(spec, name, default)
    return default if value is None else value


def _extra(spec: Any, name: str, default: Any = None) -> Any:
    """A field of ``spec.config`` (the extra HookedTransformerConfig fields), or a top-level key."""
    config = _field(spec, "config", {}) or {}
    if isinstance(config, Mapping) and name in config:
        return config[name]
    return _field(spec, name, default)


def _dims(spec: Any) -> dict[str, int]:
    """The sizes that the estimates use, with nopelens' defaults filled in."""
    d_model = int(_field(spec, "d_model"))
    n_heads = int(_field(spec, "n_heads"))
    return {
        "n_layers": int(_field(spec, "n_layers")),
        "d_model": d_model,
        "n_heads": n_heads,
        "d_head": int(_field(spec, "d_head", max(d_model // max(n_heads, 1), 1))),
        "d_mlp": 0 if _field(spec, "attn_only", False) else int(_field(spec, "d_mlp", 4 * d_model)),
        "n_kv": int(_field(spec, "n_key_value_heads", n_heads)),
        "d_vocab": int(_field(spec, "d_vocab")),
        "d_vocab_out": int(_extra(spec, "d_vocab_out", _field(spec, "d_vocab"))),
        "n_ctx": int(_field(spec, "n_ctx", _field(spec, "seq_len", 1))),
        "itemsize": DTYPE_BYTES.get(
            str(_extra(spec, "dtype", "float32")).removeprefix("torch."), 4
        ),
    }


def model_bytes(spec: Any) -> int:
    """Bytes of the parameters and buffers of the model that ``spec`` describes.

    Counts, as TransformerLens 3.x builds them: ``W_E`` ``[d_vocab, d_model]``; ``W_pos``
    ``[n_ctx, d_model]`` (a parameter for learned positions and ALiBi, a zero buffer for NoPE;
    rotary has a sin/cos cache instead); per block ``W_Q`` and ``W_O``
    ``[n_heads, d_model, d_head]``, ``W_K`` and ``W_V`` ``[n_key_value_heads, d_model, d_head]``
    with their biases (and the ``IGNORE`` scalar), the MLP ``W_in``,
    ``W_out`` (and ``W_gate`` for gated MLPs) with biases, and the norms' weights and biases;
    ``W_U`` ``[d_model, d_vocab_out]`` with its bias, and the final norm. The causal mask is built
    per forward pass and counted in :func:`forward_bytes`.

    Args:
        spec: A :class:`~nopelens.spec.ModelSpec`, or a mapping with the same keys (the
            ``build_model`` arguments; missing optional sizes take their defaults).

    Returns:
        The bytes, at the spec's ``dtype`` (float32 by default).

    Examples:
        >>> model_bytes({"n_layers": 1, "d_model": 8, "n_heads": 2, "d_vocab": 5, "n_ctx": 4})
        4024
    """
    d = _dims(spec)
    dm, dh, h, kv = d["d_model"], d["d_head"], d["n_heads"], d["n_kv"]
    norm = _field(spec, "normalization_type", "LN")
    norm_params = {"LN": 2 * dm, "RMS": dm}.get(str(norm), 0)
    attention = 2 * h * dm * dh + 2 * kv * dm * dh + h * dh + 2 * kv * dh + dm + 1  # + IGNORE
    mlp = 0
    if d["d_mlp"]:
        gates = 3 if _extra(spec, "gated_mlp", False) else 2
        mlp = gates * dm * d["d_mlp"] + d["d_mlp"] + dm
    block = attention + mlp + (2 if d["d_mlp"] else 1) * norm_params
    positional = str(_field(spec, "positional", "none"))
    pos = d["n_ctx"] * dm if positional != "rotary" else 0
    if positional == "rotary":
        rotary_dim = int(_field(spec, "rotary_dim", dh))
        pos = 2 * min(d["n_ctx"], _ROTARY_CACHE) * rotary_dim * d["n_layers"]
    embed = d["d_vocab"] * dm + dm * d["d_vocab_out"] + d["d_vocab_out"] + norm_params
    return (d["n_layers"] * block + pos + embed) * d["itemsize"]


def activation_bytes(*, batch: int, pos: int, width: int, tensors: int, itemsize: int = 4) -> int:
    """Bytes of ``tensors`` stored activations of shape ``[batch, pos, width]``.

    Examples:
        >>> activation_bytes(batch=32, pos=128, width=64, tensors=3)  # 3 sites or layers
        3145728
    """
    return int(batch) * int(pos) * int(width) * int(tensors) * int(itemsize)


def similarity_bytes(*, batch: int, pos: int, itemsize: int = 4) -> int:
    """Bytes of ``batch`` similarity matrices ``[pos, pos]``.

    Examples:
        >>> similarity_bytes(batch=2, pos=10)
        800
    """
    return int(batch) * int(pos) ** 2 * int(itemsize)


def forward_bytes(spec: Any, *, batch: int, pos: int) -> int:
    """Working memory of one forward pass of ``batch`` sequences of ``pos`` tokens.

    Four ``batch x n_heads x pos^2`` float tensors of one block (the attention scores, their
    masked and scaled copies, the pattern: measured on TransformerLens 3.x) and the causal mask
    (``pos^2`` booleans), plus the residual-stream
    temporaries of a block (``batch x pos x (6 d_model + 2 d_mlp + 4 n_heads d_head)`` floats)
    and the logits when the unembedding runs (``batch x pos x d_vocab_out``). Activations kept
    by hooks are :func:`activation_bytes` on top.

    Examples:
        >>> forward_bytes({"n_layers": 2, "d_model": 64, "n_heads": 4, "d_vocab": 256},
        ...               batch=8, pos=100_000) > 2**40  # two 4-head patterns of 8 x 10^10 floats
        True
    """
    d = _dims(spec)
    b, p, size = int(batch), int(pos), d["itemsize"]
    patterns = 4 * b * d["n_heads"] * p * p * size + p * p
    stream = b * p * (6 * d["d_model"] + 2 * d["d_mlp"] + 4 * d["n_heads"] * d["d_head"]) * size
    logits = b * p * d["d_vocab_out"] * size
    return patterns + stream + logits


def _site_width(spec: Any, site: str, pos: int) -> int:
    """Numbers per position that a site's hook holds (its activation is ``[batch, pos, width]``)."""
    d = _dims(spec)
    if site in ("pattern", "attn_scores"):
        return d["n_heads"] * pos
    if site in ("q", "k", "v", "z"):
        return d["n_heads"] * d["d_head"]
    if site == "result":
        return d["n_heads"] * d["d_model"]
    if site in ("mlp_post", "mlp_pre"):
        return d["d_mlp"] or 4 * d["d_model"]
    return d["d_model"]


def collect_bytes(
    spec: Any,
    *,
    n_seqs: int,
    pos: int,
    sites: Sequence[str],
    n_layers: int,
    batch_size: int | None = None,
    keep_all: bool = True,
) -> int:
    """Peak bytes of collecting hook activations (``collect_activations``, ``iter_activations``).

    The working memory of one forward pass of a batch (:func:`forward_bytes`), the hook
    activations of that batch twice (the cache and the per-site stacked copy), and, with
    ``keep_all`` (collecting rather than iterating), every batch's activations twice (the
    parts and their concatenation). A site holds ``d_model`` numbers per position, except
    ``pattern``/``attn_scores`` (``n_heads x pos``), ``q, k, v, z`` (``n_heads x d_head``),
    ``result`` (``n_heads x d_model``) and ``mlp_post`` (``d_mlp``); ``embed`` and ``pos_embed``
    are one tensor, block sites one per collected layer.

    Args:
        spec: The model sizes: a :class:`~nopelens.spec.ModelSpec`, a mapping, or a
            TransformerLens config (``model.cfg``).
        n_seqs: Sequences in the token batch.
        pos: Tokens per sequence.
        sites: The site names collected.
        n_layers: Blocks collected per block site.
        batch_size: Sequences per forward pass (None: all at once).
        keep_all: Whether every batch is kept (True) or one at a time (False).

    Examples:
        >>> dims = {"n_layers": 2, "d_model": 64, "n_heads": 4, "d_vocab": 256}
        >>> format_bytes(collect_bytes(dims, n_seqs=8, pos=100_000, sites=["resid_post"],
        ...                            n_layers=2))  # dominated by 4 x 8 x 4 x pos^2 floats
        '4.7 TiB'
    """
    n, p = int(n_seqs), int(pos)
    chunk = min(int(batch_size or n), n)
    itemsize = _dims(spec)["itemsize"]
    global_sites = ("embed", "pos_embed")
    per_row = sum(
        _site_width(spec, site, p) * (1 if site in global_sites else int(n_layers))
        for site in sites
    )
    needed = forward_bytes(spec, batch=chunk, pos=p) + 2 * chunk * p * per_row * itemsize
    if keep_all and chunk < n:
        needed += 2 * n * p * per_row * itemsize
    return needed


def analysis_bytes(
    config: Mapping[str, Any], *, batch_size: int = 64, include_model: bool = True
) -> int:
    """Peak bytes of one :func:`nopelens.analyze` call (one sweep configuration).

    The model (:func:`model_bytes`), the forward pass of one batch of ``min(batch_size, n_seqs)``
    sequences (:func:`forward_bytes`), its stored activations (``embed`` plus every site at
    every block), four float32 ``[batch, pos, pos]`` tensors for the similarity and concordance
    of one layer of that batch, and the float64 sums of similarity matrices kept for every site
    and layer (``(1 + n_layers) x sites x pos^2``).

    Args:
        config: A complete sweep configuration (:func:`nopelens.experiments.grid.complete_config`)
            or any mapping with the model sizes, ``seq_len``, ``n_seqs`` and ``sites``.
        batch_size: Sequences per forward pass (:func:`nopelens.analyze`'s default is 64).
        include_model: Count the model's parameters (False when the model exists already).

    Examples:
        >>> config = {"n_layers": 2, "d_model": 64, "n_heads": 4, "d_vocab": 256,
        ...           "seq_len": 32, "n_seqs": 32, "sites": ["resid_post"]}
        >>> format_bytes(analysis_bytes(config))
        '10.0 MiB'
    """
    pos = int(config["seq_len"])
    n_layers = int(config["n_layers"])
    sites = list(config.get("sites") or ("resid_post",))
    n_seqs = int(config.get("n_seqs", batch_size))
    batch = max(1, min(int(batch_size), n_seqs))
    spec = {**config, "n_ctx": config.get("n_ctx") or pos}
    stream = collect_bytes(
        spec, n_seqs=n_seqs, pos=pos, sites=["embed", *sites], n_layers=n_layers,
        batch_size=batch, keep_all=False,
    )  # fmt: skip
    sums = (1 + n_layers) * len(sites) * similarity_bytes(batch=1, pos=pos, itemsize=8)
    model = model_bytes(spec) if include_model else 0
    return model + stream + 4 * similarity_bytes(batch=batch, pos=pos) + sums


def available_bytes() -> int | None:
    """Memory that can be allocated now without swapping, in bytes (None when unknown).

    ``$NOPELENS_AVAILABLE_MEMORY`` (bytes) if set, else ``MemAvailable`` of ``/proc/meminfo``
    (Linux), else free physical pages times the page size (``os.sysconf``), else None.

    Examples:
        >>> available = available_bytes()
        >>> available is None or available > 0
        True
    """
    override = os.environ.get(AVAILABLE_ENV)
    if override:
        try:
            return int(float(override))
        except ValueError:
            pass
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return int(pages) * int(page_size) if pages > 0 and page_size > 0 else None


def format_bytes(n: int | float) -> str:
    """Bytes in binary units with one decimal (``'1.5 GiB'``).

    Examples:
        >>> format_bytes(512), format_bytes(3 * 2**30 // 2)
        ('512 B', '1.5 GiB')
    """
    value = float(n)
    if value < 1024:
        return f"{int(value)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        value /= 1024
        if value < 1024 or unit == "EiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def check_fits(
    needed: int,
    *,
    what: str,
    func: str,
    available: int | None = None,
    hint: str = "Use smaller sizes (fewer sequences, shorter sequences, fewer layers or a "
    "smaller batch_size).",
) -> None:
    """Refuse an allocation of ``needed`` bytes that does not fit in the available memory.

    Args:
        needed: The estimated bytes.
        what: What would be allocated, for the message (``"the attention patterns"``).
        func: The public function (or command) that would allocate it.
        available: The available bytes; ``None`` asks :func:`available_bytes` (host memory).
            Pass the free device memory for a GPU.
        hint: The last sentence of the message: how to make it fit.

    Raises:
        InvalidParameterError: Stating the estimate and the available memory, when ``needed``
            exceeds the available memory. Nothing is raised when the available memory is unknown.

    Examples:
        >>> check_fits(1024, what="a small tensor", func="f", available=2**20)
    """
    if available is None:
        available = available_bytes()
    if available is None or needed <= available:
        return
    raise InvalidParameterError(
        f"{func} would need about {format_bytes(needed)} for {what}, but only "
        f"{format_bytes(available)} of memory is available. {hint}"
    )
