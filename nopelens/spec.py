"""The nopelens vocabulary: every option list, the model spec, and one constraint table.

This module is the single source of the names and bounds that the library, checkpoints, sweep
grids, reproduce profiles and the command line share. It imports nothing heavy (no torch, no
TransformerLens), so the CLI can build its ``--help`` from it in milliseconds.

* Option lists: :data:`POSITIONAL`, :data:`ATTENTION`, :data:`NORMALIZATIONS`,
  :data:`INIT_MODES`, :data:`ACTIVATIONS`, :data:`SITES`, :data:`HIDDEN_SITES`, :data:`TASKS`,
  :data:`METRICS`, :data:`SCORE_COLUMNS`, :data:`DTYPES`.
* Constraints as data (scikit-learn's ``Interval``/``StrOptions`` idea): :class:`Interval`,
  :class:`Options`, :class:`Boolean`, :class:`SiteList`, :class:`LayerList`, collected in
  :data:`CONSTRAINTS`, one entry per setting name. :func:`check_value` turns one into the one
  error template, ``"The 'n_layers' parameter of build_model must be an int >= 1. Got 0
  instead."``
* :class:`ModelSpec`: the frozen dataclass that *is* a model description. ``build_model``,
  checkpoints and sweeps validate through :meth:`ModelSpec.problems`, which lists every problem at
  once (single-field constraints from the table plus the cross-field rules).

Examples:
    >>> ModelSpec(n_layers=2, d_model=64, n_heads=4, d_vocab=256, n_ctx=32).problems()
    []
    >>> print(check_value("positional", "sinusoidal", "build_model"))
    ... # doctest: +NORMALIZE_WHITESPACE
    The 'positional' parameter of build_model must be one of 'none', 'learned', 'rotary', 'alibi'.
    Got 'sinusoidal' instead.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any

# --- option lists ---------------------------------------------------------------------------

#: Positional-information types: no encoding (NoPE) and the three controls.
POSITIONAL: tuple[str, ...] = ("none", "learned", "rotary", "alibi")
#: Attention directions; bidirectional removes the causal mask.
ATTENTION: tuple[str, ...] = ("causal", "bidirectional")
#: Normalisations; ``"none"`` is TransformerLens' ``normalization_type=None``.
NORMALIZATIONS: tuple[str, ...] = ("LN", "LNPre", "RMS", "RMSPre", "none")
#: TransformerLens weight initialisations (an unknown one silently leaves weights uninitialised).
INIT_MODES: tuple[str, ...] = (
    "gpt2",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "muP",
)
#: TransformerLens 3.x ``SUPPORTED_ACTIVATIONS`` (a test keeps this copy in step).
ACTIVATIONS: tuple[str, ...] = (
    "solu",
    "solu_ln",
    "gelu_new",
    "gelu_fast",
    "silu",
    "relu",
    "gelu",
    "gelu_pytorch_tanh",
    "xielu",
    "relu2",
)
#: Sites outside the blocks (reported as layer ``"embed"`` / ``"pos_embed"``).
GLOBAL_SITES: tuple[str, ...] = ("embed", "pos_embed")
#: Block sites whose activation is one vector per position: the ones the analyzer scores.
HIDDEN_SITES: tuple[str, ...] = (
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "mlp_out",
    "ln1_normalized",
    "ln2_normalized",
    "mlp_post",
)
#: Every short site name (``measure.hook_name`` maps each to a TransformerLens hook).
SITES: tuple[str, ...] = (
    *GLOBAL_SITES,
    *HIDDEN_SITES,
    "pattern",
    "attn_scores",
    "q",
    "k",
    "v",
    "z",
    "result",
)
#: Sites that exist only in models with MLPs.
MLP_SITES: tuple[str, ...] = ("resid_mid", "mlp_out", "ln2_normalized", "mlp_post")
#: Training tasks (``nopelens.training.TASKS`` has one class per name).
TASKS: tuple[str, ...] = (
    "previous_token",
    "reverse",
    "addition",
    "modular",
    "parity",
    "index_counting",
    "stdlib_chars",
)
#: The neighborhood-pattern scores, one per similarity matrix.
METRICS: tuple[str, ...] = ("adjacency_probability", "neighborhood_concordance")
#: Columns of the scores table of ``nopelens.analyze`` (and of a sweep's rows, which add
#: ``elapsed_s``), in order. ``nope`` is True when the row's block has no positional encoding
#: of its own (``nopelens.models.nope_layers``); the ``"embed"`` row is True only when every
#: block is NoPE.
SCORE_COLUMNS: tuple[str, ...] = (
    "site",
    "layer",
    "nope",
    "metric",
    "value",
    "chance",
    "ci_low",
    "ci_high",
    "ci_method",
    "n_seqs",
    "seq_len",
)
#: Devices a user may name (``cuda:N`` is accepted too).
DEVICES: tuple[str, ...] = ("cpu", "cuda", "mps")
#: Floating-point types a model may run in (``--dtype``); whether a device runs one is checked
#: by ``nopelens.models.build.dtype_problem``.
DTYPES: tuple[str, ...] = ("float32", "float64", "float16", "bfloat16")

# --- constraints as data --------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Interval:
    """A number in a range: ``kind`` is ``int`` or ``float``; bounds are inclusive unless open.

    Examples:
        >>> Interval(int, 1).describe()
        'an int >= 1'
        >>> Interval(float, 0, low_open=True, optional=True).describe()
        'a float > 0 or None'
        >>> Interval(int, 1).accepts(True)  # bools are not ints here
        False
    """

    kind: type
    low: int | float | None = None
    high: int | float | None = None
    low_open: bool = False
    optional: bool = False

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` satisfies the constraint."""
        if value is None:
            return self.optional
        if self.kind is int:
            if not _is_int(value):
                return False
        elif not _is_real(value) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        """The requirement in words, for the error template."""
        name = "an int" if self.kind is int else "a float"
        if self.low is not None and self.high is not None:
            text = f"{name} in [{self.low}, {self.high}]"
        elif self.low is not None:
            text = f"{name} {'>' if self.low_open else '>='} {self.low}"
        elif self.high is not None:
            text = f"{name} <= {self.high}"
        else:
            text = f"a finite {'int' if self.kind is int else 'float'}"
        return text + (" or None" if self.optional else "")


@dataclasses.dataclass(frozen=True)
class Options:
    """One value out of a fixed tuple.

    Examples:
        >>> Options(("causal", "bidirectional")).describe()
        "one of 'causal', 'bidirectional'"
    """

    values: tuple[Any, ...]
    optional: bool = False

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` satisfies the constraint."""
        if value is None:
            return self.optional
        try:
            return value in self.values
        except TypeError:
            return False

    def describe(self) -> str:
        """The requirement in words, for the error template."""
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclasses.dataclass(frozen=True)
class Boolean:
    """``True`` or ``False`` (not 0/1)."""

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` satisfies the constraint."""
        return isinstance(value, bool)

    def describe(self) -> str:
        """The requirement in words, for the error template."""
        return "a bool"


@dataclasses.dataclass(frozen=True)
class SiteList:
    """A non-empty list of site names out of ``allowed`` (a single name is accepted too)."""

    allowed: tuple[str, ...] = HIDDEN_SITES

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` satisfies the constraint."""
        if isinstance(value, str):
            value = [value]
        return (
            isinstance(value, (list, tuple))
            and len(value) > 0
            and all(isinstance(s, str) and s in self.allowed for s in value)
        )

    def describe(self) -> str:
        """The requirement in words, for the error template."""
        return "a non-empty list of sites from " + ", ".join(self.allowed)


@dataclasses.dataclass(frozen=True)
class LayerList:
    """A list of distinct block indices ``>= 0`` (possibly empty); the upper bound is n_layers.

    Examples:
        >>> LayerList().accepts([3, 7]), LayerList().accepts([1, 1]), LayerList().accepts([True])
        (True, False, False)
    """

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` satisfies the constraint."""
        return (
            isinstance(value, (list, tuple))
            and all(_is_int(v) and v >= 0 for v in value)
            and len(set(value)) == len(value)
        )

    def describe(self) -> str:
        """The requirement in words, for the error template."""
        return "a list of distinct block indices >= 0"


Constraint = Interval | Options | Boolean | SiteList | LayerList

#: Every named setting and what it must be. Model fields are ``build_model`` arguments; the rest
#: choose the tokens and the analysis (sweep grids and the CLI use the same names).
CONSTRAINTS: dict[str, Constraint] = {
    # model
    "n_layers": Interval(int, 1),
    "d_model": Interval(int, 1),
    "n_heads": Interval(int, 1),
    "d_head": Interval(int, 1, optional=True),
    "d_mlp": Interval(int, 1, optional=True),
    "d_vocab": Interval(int, 2),
    "n_ctx": Interval(int, 1),
    "n_key_value_heads": Interval(int, 1, optional=True),
    "rotary_dim": Interval(int, 2, optional=True),
    "positional": Options(POSITIONAL),
    "attention": Options(ATTENTION),
    "normalization_type": Options(NORMALIZATIONS, optional=True),
    "act_fn": Options(ACTIVATIONS),
    "init_mode": Options(INIT_MODES),
    "initializer_range": Interval(float, 0, low_open=True, optional=True),
    "attn_only": Boolean(),
    "seed": Interval(int, 0),
    "nope_layers": LayerList(),
    # tokens and analysis
    "seq_len": Interval(int, 3),
    "n_seqs": Interval(int, 2),
    "data_seed": Interval(int, 0),
    "sites": SiteList(),
    "centered": Boolean(),
    "exclude_first": Boolean(),
    "n_bootstrap": Interval(int, 1),
}

#: Other ``HookedTransformerConfig`` fields a model spec may set. Everything else (tokenizer
#: names, remote code, hub checkpoints, devices) is refused: a spec is data, never a pointer to
#: something to fetch or run.
EXTRA_CONFIG: dict[str, Constraint] = {
    "d_vocab_out": Interval(int, 1),
    "eps": Interval(float, 0, low_open=True),
    "use_attn_scale": Boolean(),
    "attn_scale": Interval(float, 0, low_open=True),
    "use_attn_result": Boolean(),
    "use_split_qkv_input": Boolean(),
    "use_hook_mlp_in": Boolean(),
    "use_attn_in": Boolean(),
    "gated_mlp": Boolean(),
    "final_rms": Boolean(),
    "parallel_attn_mlp": Boolean(),
    "post_embedding_ln": Boolean(),
    "scale_attn_by_inverse_layer_idx": Boolean(),
    "rotary_base": Interval(float, 0, low_open=True),
    "rotary_adjacent_pairs": Boolean(),
    "default_prepend_bos": Boolean(),
    "use_hook_tokens": Boolean(),
    "dtype": Options(DTYPES),
}


def check_value(name: str, value: Any, func: str) -> str | None:
    """The error message for ``value`` of setting ``name`` (None when it is valid).

    Args:
        name: A key of :data:`CONSTRAINTS` or :data:`EXTRA_CONFIG`.
        value: The value received.
        func: The public function (or CLI command) named in the message.

    Returns:
        ``None``, or one sentence in the error template.

    Examples:
        >>> check_value("d_model", 64, "build_model") is None
        True
        >>> print(check_value("initializer_range", float("inf"), "build_model"))
        ... # doctest: +NORMALIZE_WHITESPACE
        The 'initializer_range' parameter of build_model must be a float > 0 or None.
        Got inf instead.
    """
    constraint = CONSTRAINTS.get(name) or EXTRA_CONFIG.get(name)
    if constraint is None:
        raise KeyError(f"no constraint for {name!r}")
    if constraint.accepts(value):
        return None
    return (
        f"The {name!r} parameter of {func} must be {constraint.describe()}. Got {value!r} instead."
    )


# --- the model spec -------------------------------------------------------------------------

_CORE = ("n_layers", "d_model", "n_heads", "d_vocab", "n_ctx")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything that defines a model built by nopelens; the weights follow from ``seed``.

    ``build_model(**spec.to_kwargs())`` rebuilds the model; checkpoints store ``to_dict()``;
    sweep grids and the CLI flags use the same field names.

    Examples:
        >>> spec = ModelSpec(n_layers=1, d_model=8, n_heads=2, d_vocab=5, n_ctx=4, seed=3)
        >>> ModelSpec.from_dict(spec.to_dict()) == spec
        True
        >>> bad = ModelSpec(n_layers=0, d_model=8, n_heads=3, d_vocab=5, n_ctx=4)
        >>> for problem in bad.problems():
        ...     print(problem)
        The 'n_layers' parameter of build_model must be an int >= 1. Got 0 instead.
    """

    n_layers: int
    """Number of transformer blocks."""
    d_model: int
    """Residual stream width."""
    n_heads: int
    """Attention heads per block."""
    d_vocab: int
    """Vocabulary size (models are tokenizer-free)."""
    n_ctx: int
    """Maximum sequence length."""
    positional: str = "none"
    """Positional information: none (NoPE), learned, rotary or alibi."""
    attention: str = "causal"
    """Attention direction: causal or bidirectional."""
    seed: int = 0
    """Seed of the weight initialisation."""
    normalization_type: str | None = "LN"
    """LN, LNPre, RMS, RMSPre or none."""
    act_fn: str = "gelu"
    """MLP activation."""
    d_head: int | None = None
    """Head width; None means d_model // n_heads."""
    d_mlp: int | None = None
    """MLP width; None means 4 * d_model."""
    attn_only: bool = False
    """Blocks without MLPs."""
    init_mode: str = "gpt2"
    """TransformerLens weight initialisation."""
    initializer_range: float | None = None
    """Std of the initial weights; None is TransformerLens' default (0.8/sqrt(d_model))."""
    n_key_value_heads: int | None = None
    """Grouped-query attention: key/value heads (must divide n_heads); None is n_heads."""
    rotary_dim: int | None = None
    """Rotary dimensions (even, <= d_head); None is d_head. Only with positional='rotary'."""
    nope_layers: Sequence[int] = ()
    """Blocks without positional encoding in a rotary model (SmolLM3 / Llama 4 hybrids); a list
    is stored as a tuple."""
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Other allowed HookedTransformerConfig fields (see EXTRA_CONFIG)."""

    def __post_init__(self) -> None:
        # JSON gives lists; keep the field hashable and comparable (validation is problems()).
        if isinstance(self.nope_layers, list):
            object.__setattr__(self, "nope_layers", tuple(self.nope_layers))

    def problems(self, func: str = "build_model") -> list[str]:
        """Every problem with this spec, one sentence each (empty when it is valid)."""
        return spec_problems(self.to_dict(), func)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: every field, ``config`` as a plain dict, ``nope_layers`` a list."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["config"] = dict(self.config) if isinstance(self.config, Mapping) else self.config
        out["nope_layers"] = _json_list(self.nope_layers)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, func: str = "ModelSpec") -> ModelSpec:
        """Build a spec from :meth:`to_dict` output; unknown keys are refused, never dropped.

        Raises:
            InvalidParameterError: Naming every unknown key.
        """
        from nopelens.validation import raise_all

        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        missing = [k for k in _CORE if k not in data]
        raise_all(
            [f"{func} got an unknown field {k!r}." for k in unknown]
            + [f"{func} is missing the field {k!r}." for k in missing],
            func,
        )
        return cls(**dict(data))

    def to_kwargs(self) -> dict[str, Any]:
        """The ``build_model`` keyword arguments (defaults left out, config fields flattened)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "config":
                out.update(value)
            elif f.name in _CORE or value != f.default:
                out[f.name] = _json_list(value) if f.name == "nope_layers" else value
        return out


def _json_list(value: Any) -> Any:
    """Tuples as lists, so a dict compares equal to its own JSON round trip."""
    return list(value) if isinstance(value, tuple) else value


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(ModelSpec)) - {"config"}
_FIELD_ORDER = {f.name: i for i, f in enumerate(dataclasses.fields(ModelSpec))}


def spec_problems(values: Mapping[str, Any], func: str = "build_model") -> list[str]:
    """Every problem with the :class:`ModelSpec` fields in ``values`` (empty when valid).

    Works on a plain mapping, so that bad values are reported before a spec is constructed.
    Single-field rules come from :data:`CONSTRAINTS`; then ``config`` keys are checked against
    :data:`EXTRA_CONFIG`; then the rules that involve several fields.

    Examples:
        >>> spec_problems({"n_layers": 1, "d_model": 8, "n_heads": 2, "d_vocab": 5, "n_ctx": 4,
        ...                "config": {"attn_onyl": True}})[0][:53]
        "build_model got an unknown parameter 'attn_onyl'. Did"
    """
    defaults = {f.name: f.default for f in dataclasses.fields(ModelSpec) if f.name in _FIELD_NAMES}
    full = {**defaults, **{k: v for k, v in values.items() if k in _FIELD_NAMES}}
    missing = [k for k in _CORE if full.get(k, dataclasses.MISSING) is dataclasses.MISSING]
    out = [f"{func} is missing the required argument {k!r}." for k in missing]
    out += [
        msg
        for name in _FIELD_NAMES
        if name not in missing and (msg := check_value(name, full[name], func))
    ]
    out.sort(key=lambda m: _FIELD_ORDER.get(m.split("'")[1], 99))
    out += _config_problems(values.get("config", {}), func)
    if not out:
        out += _cross_field_problems(full, func)
    return out


def _config_problems(config: Any, func: str) -> list[str]:
    if not isinstance(config, Mapping):
        return [f"The 'config' parameter of {func} must be a mapping of field -> value."]
    out = []
    for key, value in config.items():
        if key in EXTRA_CONFIG:
            if msg := check_value(key, value, func):
                out.append(msg)
            continue
        allowed = sorted(_FIELD_NAMES | set(EXTRA_CONFIG))
        close = difflib.get_close_matches(str(key), allowed, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        out.append(
            f"{func} got an unknown parameter {key!r}.{hint} Model specs may set only "
            f"{', '.join(allowed)}."
        )
    return out


def _cross_field_problems(spec: Mapping[str, Any], func: str) -> list[str]:
    out = []
    d_model, n_heads = spec["d_model"], spec["n_heads"]
    d_head = spec["d_head"]
    if d_head is None:
        if d_model % n_heads:
            out.append(
                f"The 'n_heads' parameter of {func} must divide d_model={d_model} "
                f"(or pass d_head). Got n_heads={n_heads} instead."
            )
        d_head = d_model // n_heads
    kv = spec["n_key_value_heads"]
    if kv is not None and n_heads % kv:
        out.append(
            f"The 'n_key_value_heads' parameter of {func} must divide n_heads={n_heads}. "
            f"Got {kv} instead."
        )
    positional, rotary_dim = spec["positional"], spec["rotary_dim"]
    if rotary_dim is not None and positional != "rotary":
        out.append(
            f"The 'rotary_dim' parameter of {func} is only used with positional='rotary'. "
            f"Got positional={positional!r}."
        )
    rotary = rotary_dim if rotary_dim is not None else d_head
    if positional == "rotary" and (rotary % 2 or rotary > d_head):
        out.append(
            f"The 'rotary_dim' parameter of {func} must be even and <= d_head={d_head} "
            f"with positional='rotary'. Got {rotary!r} instead."
        )
    return out + _nope_layer_problems(spec, func)


def _nope_layer_problems(spec: Mapping[str, Any], func: str) -> list[str]:
    """``nope_layers`` must name blocks of the model, in a rotary model."""
    layers, positional, n_layers = list(spec["nope_layers"]), spec["positional"], spec["n_layers"]
    if not layers:
        return []
    out = []
    if positional == "none":
        out.append(
            f"The 'nope_layers' parameter of {func} cannot be used with positional='none': every "
            f"block of a NoPE model already has no positional encoding. Use positional='rotary' "
            f"for a hybrid stack. Got nope_layers={layers!r}."
        )
    elif positional != "rotary":
        out.append(
            f"The 'nope_layers' parameter of {func} needs positional='rotary' (hybrid RoPE/NoPE "
            f"stacks as in SmolLM3 and Llama 4; a {positional} encoding is not applied per "
            f"block). Got positional={positional!r}."
        )
    bad = [layer for layer in layers if layer >= n_layers]
    if bad:
        out.append(
            f"The 'nope_layers' parameter of {func} must hold block indices in "
            f"[0, {n_layers - 1}] (n_layers={n_layers}). Got {layers!r} instead."
        )
    return out


def split_model_kwargs(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword arguments into :class:`ModelSpec` fields and extra config fields.

    Examples:
        >>> split_model_kwargs({"n_layers": 1, "use_attn_result": True})
        ({'n_layers': 1}, {'use_attn_result': True})
    """
    fields = {k: v for k, v in kwargs.items() if k in _FIELD_NAMES}
    extra = {k: v for k, v in kwargs.items() if k not in _FIELD_NAMES}
    return fields, extra


def sites_for(attn_only: bool, sites: Sequence[str] = HIDDEN_SITES) -> tuple[str, ...]:
    """The sites of ``sites`` that exist in a model with (or without) MLPs."""
    return tuple(s for s in sites if not (attn_only and s in MLP_SITES))
