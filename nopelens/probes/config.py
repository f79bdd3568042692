"""The settings of a position-probe run: one validated, frozen :class:`ProbeConfig`.

:func:`~nopelens.probes.probe_positions` reads every setting from a :class:`ProbeConfig`; its
keyword arguments build one. Every field is checked on construction and all problems are reported
in one exception, naming the entry point the values were given to (``probe_positions`` when it
built the config from its keywords, ``ProbeConfig`` otherwise).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

from nopelens.probes.features import FEATURE_FAMILIES
from nopelens.probes.fitting import DEFAULT_PROBES, LAMBDAS, PROBES, RELATIVE_ALPHAS
from nopelens.probes.splits import SequenceSplit
from nopelens.validation import (
    InvalidParameterError,
    check_float,
    check_int,
    check_sequence_of_choices,
    raise_all,
)

#: The name that error messages give as the receiver of the values (see :func:`reported_as`).
_RECEIVER: contextvars.ContextVar[str] = contextvars.ContextVar(
    "probe_config_receiver", default="ProbeConfig"
)

#: The boolean switches, in field order.
_FLAGS: tuple[str, ...] = (
    "centered",
    "drop_first",
    "include_embed",
    "control_task",
    "shuffled_control",
    "random_init_baseline",
)


@contextlib.contextmanager
def reported_as(func: str) -> Iterator[None]:
    """Name ``func`` as the receiver in the messages of configs validated inside the block.

    :func:`~nopelens.probes.probe_positions` builds its config from its keyword arguments inside
    ``reported_as("probe_positions")``, so a bad keyword reads "The 'seeds' parameter of
    probe_positions ...", as the caller wrote it.

    Examples:
        >>> with reported_as("probe_positions"):
        ...     ProbeConfig(max_iter=0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        nopelens.validation.InvalidParameterError: The 'max_iter' parameter of probe_positions ...
    """
    token = _RECEIVER.set(func)
    try:
        yield
    finally:
        _RECEIVER.reset(token)


@dataclasses.dataclass(frozen=True, repr=False)
class ProbeConfig:
    """Settings of :func:`~nopelens.probes.probe_positions`. Every field is validated on creation.

    Sequence fields are stored as tuples (a single string or int is promoted to a 1-tuple,
    repeated families and probe kinds are dropped), so two configs with the same settings compare
    equal.

    Examples:
        >>> cfg = ProbeConfig(features="variance", probes="isotonic", seeds=(0, 1))
        >>> cfg
        ProbeConfig(features=('variance',), probes=('isotonic',), seeds=(0, 1))
        >>> cfg.replace(equal_dim=None).equal_dim is None
        True
        >>> ProbeConfig.from_dict(cfg.to_dict()) == cfg
        True
        >>> ProbeConfig(seeds=(0, 0), max_iter=0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        nopelens.validation.InvalidParameterError: ProbeConfig received 2 invalid arguments:
        - The 'seeds' parameter of ProbeConfig must be a non-empty sequence of distinct ints ...
        - The 'max_iter' parameter of ProbeConfig must be an int >= 1. Got 0 instead.
    """

    sites: Sequence[str] | str = ("resid_post",)
    """Hook sites to probe (residual-stream-shaped: ``[batch pos d_model]`` per layer)."""
    layers: Sequence[Any] | int | str | None = None
    """Block indices (model / ``Activations``) or mapping keys to probe; None means all.

    Checked against the model or activations when they are probed."""
    features: Sequence[str] | str = FEATURE_FAMILIES
    """Feature families among ``"hidden"``, ``"cosine"``, ``"variance"``."""
    probes: Sequence[str] | str = DEFAULT_PROBES
    """Probe kinds among ``"ridge"``, ``"logistic"``, ``"isotonic"``, ``"mlp"``.

    Isotonic regression applies to the scalar variance feature at full capacity only. The MLP
    (one hidden layer, ``mlp_hidden`` units, a classifier like ``"logistic"``) is not run unless
    named."""
    seeds: Sequence[int] | int = (0, 1, 2)
    """One probe run per seed: the split, the control-task labels, the label shuffle, the MLP init.

    The *split seeds*; intervals span them unless several models are probed (``init_seeds``)."""
    test_fraction: float = 0.25
    """Fraction of sequences held out for testing, in (0, 1)."""
    val_fraction: float = 0.2
    """Fraction of the training sequences used to choose the penalties, in (0, 1)."""
    splits: Sequence[Any] | SequenceSplit | None = None
    """Explicit :class:`SequenceSplit` per seed, or None to draw a random split per seed.

    Replaces the random splits (e.g. to test on a fresh shard); one entry per seed."""
    extrapolate_from: int | None = None
    """Also run the length-extrapolation split at position ``k``; None skips it.

    The regression probes (ridge, isotonic) are fitted (and their penalty chosen) on the tokens at
    positions ``< k`` of the training sequences and scored on the tokens at positions ``>= k`` of
    the test sequences (``split="length"`` rows, position and shuffled targets, each with its own
    chance). Needs ``drop_first + 2 <= k <= pos - 2``."""
    init_seeds: Sequence[int] | int | None = None
    """Model-initialisation seeds: probe the architecture rebuilt at each of these seeds.

    The model is rebuilt with :func:`~nopelens.models.build_model` from its
    :func:`~nopelens.models.model_spec` at every seed. A model at its own random init is replaced
    by these copies (``model="given"`` rows); for a trained model they are its random-init
    baselines (``model="random_init"`` rows). Rows that span several init seeds get a t interval
    over the init seeds (each the mean over the split seeds). None: the given model(s) only (and
    a trained model's twin at its own seed)."""
    equal_dim: int | None = 4
    """Dimension ``k`` of the capacity-matched rows; None skips them.

    Top-k principal components of the hidden / cosine features, k powers of the log-variance."""
    centered: bool = False
    """Cosine features from mean-centred hidden states."""
    drop_first: bool = False
    """Leave out position 0 from training, testing and the chance levels.

    Position 0 is trivially identifiable in a causal model: it attends only to itself."""
    include_embed: bool = True
    """Also probe the input embedding (``hook_embed``), the no-position control."""
    control_task: bool = True
    """Fit the Hewitt & Liang control task (each token type gets a random position).

    Needs the token ids (``tokens``) the hidden states came from."""
    shuffled_control: bool = True
    """Fit and score probes on position labels permuted across tokens."""
    random_init_baseline: bool = True
    """Also probe the random-init twin of a trained model (``model="random_init"`` rows)."""
    alphas: Sequence[float] = RELATIVE_ALPHAS
    """Ridge penalties, relative to the mean eigenvalue of the training Gram matrix."""
    lambdas: Sequence[float] = LAMBDAS
    """Logistic L2 penalties (per-token loss scale), tried from the first."""
    max_iter: int = 20
    """L-BFGS iterations per logistic penalty."""
    mlp_hidden: int = 64
    """Hidden units of the MLP probe (its capacity: ``(dim + 1) * h + (h + 1) * n_classes``)."""
    mlp_lr: float = 1e-2
    """Adam learning rate of the MLP probe."""
    mlp_weight_decay: float = 0.0
    """L2 penalty of the MLP probe's weights (Adam ``weight_decay``), ``>= 0``."""
    mlp_max_epochs: int = 100
    """Most training epochs of the MLP probe (mini-batches of 256 tokens)."""
    mlp_patience: int = 5
    """Early stopping: epochs without a lower validation loss before the MLP probe stops.

    Each target keeps the weights of its epoch with the lowest validation cross-entropy."""
    confidence: float = 0.95
    """Confidence level of the t intervals over seeds, in (0, 1)."""
    batch_size: int | None = None
    """Sequences per forward pass when collecting activations from a model; None: all at once."""

    @property
    def seed_list(self) -> tuple[int, ...]:
        """``seeds`` as validated (a tuple of ints)."""
        return cast(tuple[int, ...], self.seeds)

    @property
    def init_seed_list(self) -> tuple[int, ...] | None:
        """``init_seeds`` as validated (a tuple of ints, or None)."""
        return cast("tuple[int, ...] | None", self.init_seeds)

    @property
    def split_list(self) -> tuple[SequenceSplit, ...] | None:
        """``splits`` as validated (a tuple of :class:`SequenceSplit`, or None)."""
        return cast("tuple[SequenceSplit, ...] | None", self.splits)

    def __post_init__(self) -> None:
        func = _RECEIVER.get()
        problems: list[str] = []
        normalized: dict[str, Any] = {}
        for name, check in _CHECKS.items():
            try:
                normalized[name] = check(getattr(self, name), func)
            except InvalidParameterError as err:
                problems.append(str(err))
        if "seeds" in normalized and "splits" in normalized:
            problems.extend(_check_splits_per_seed(normalized["splits"], normalized["seeds"], func))
        if normalized.get("extrapolate_from") is not None and "probes" in normalized:
            if not {"ridge", "isotonic"} & set(normalized["probes"]):
                problems.append(
                    f"The 'extrapolate_from' parameter of {func} needs a regression probe "
                    f"('ridge' or 'isotonic') in probes: a classifier cannot predict positions it "
                    f"never saw. Got probes={normalized['probes']!r}."
                )
        raise_all(problems, func)
        for name, value in normalized.items():
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        """The fields that differ from their defaults (``ProbeConfig()`` for the defaults)."""
        changed = [
            f"{field.name}={getattr(self, field.name)!r}"
            for field in dataclasses.fields(self)
            if getattr(self, field.name) != getattr(_DEFAULT, field.name, field.default)
        ]
        return f"ProbeConfig({', '.join(changed)})"

    def replace(self, **changes: Any) -> ProbeConfig:
        """A copy with some fields changed (validated).

        Raises:
            InvalidParameterError: If a name is not a field, or a new value is invalid.
        """
        _check_field_names(changes, _RECEIVER.get())
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict; each split becomes a dict of its three parts.

        The inverse of :meth:`from_dict`.
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ProbeConfig:
        """The config of :meth:`to_dict`'s output (or of a JSON file holding it).

        Raises:
            InvalidParameterError: If a key is not a field (none is dropped), or a value is
                invalid.
        """
        _check_field_names(values, "ProbeConfig.from_dict")
        values = dict(values)
        if values.get("splits") is not None:
            values["splits"] = [
                SequenceSplit(**split) if isinstance(split, Mapping) else split
                for split in values["splits"]
            ]
        return cls(**values)


# --------------------------------------------------------------------------------------------
# Field checks: value, receiver -> normalised value, or InvalidParameterError
# --------------------------------------------------------------------------------------------


def _check_field_names(values: Mapping[str, Any], func: str) -> None:
    names = [field.name for field in dataclasses.fields(ProbeConfig)]
    unknown = [key for key in values if key not in names]
    if unknown:
        raise InvalidParameterError(
            f"{func} got unknown setting(s) {', '.join(map(repr, unknown))}; the settings of "
            f"ProbeConfig are {', '.join(names)}."
        )


def _check_sites(sites: Any, func: str) -> tuple[str, ...]:
    if isinstance(sites, str):
        sites = (sites,)
    try:
        sites = tuple(sites)
    except TypeError:
        sites = None
    if not sites or not all(isinstance(site, str) for site in sites):
        raise InvalidParameterError(
            f"The 'sites' parameter of {func} must be a hook-site name or a non-empty sequence "
            f"of them (e.g. 'resid_post'). Got {sites!r} instead."
        )
    return sites


def _check_layers(layers: Any, func: str) -> Any:
    """Layers are checked against the model or activations later; lists become tuples here."""
    if isinstance(layers, list):
        return tuple(layers)
    return layers


def _check_choices(allowed: Sequence[str], name: str) -> Callable[[Any, str], tuple[str, ...]]:
    def check(values: Any, func: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(check_sequence_of_choices(values, name, allowed, func)))

    return check


def _check_seeds(seeds: Any, func: str, name: str = "seeds") -> tuple[int, ...]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = (seeds,)
    try:
        seeds = tuple(seeds)
    except TypeError:
        seeds = (seeds,)
    if (
        not seeds
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise InvalidParameterError(
            f"The {name!r} parameter of {func} must be a non-empty sequence of distinct ints "
            f">= 0. Got {seeds!r} instead."
        )
    return seeds


def _check_init_seeds(seeds: Any, func: str) -> tuple[int, ...] | None:
    return None if seeds is None else _check_seeds(seeds, func, "init_seeds")


def _check_fraction(name: str) -> Callable[[Any, str], float]:
    """A float in (0, 1): the check reads (0, 1] and then refuses 1 with its own message."""

    def check(value: Any, func: str) -> float:
        value = check_float(value, name, func, min=0.0, max=1.0, min_inclusive=False)
        if value == 1.0:
            raise InvalidParameterError(
                f"The {name!r} parameter of {func} must be < 1. Got 1.0 instead."
            )
        return value

    return check


def _check_splits(splits: Any, func: str) -> tuple[SequenceSplit, ...] | None:
    if splits is None:
        return None
    if isinstance(splits, SequenceSplit):
        splits = (splits,)
    try:
        splits = tuple(splits)
    except TypeError:
        splits = (splits,)
    if not all(isinstance(s, SequenceSplit) for s in splits):
        raise InvalidParameterError(
            f"The 'splits' parameter of {func} must be None or a sequence of SequenceSplit "
            f"(sequence indices; splits are by sequence, never by token). Got "
            f"{[type(s).__name__ for s in splits]} instead."
        )
    return splits


def _check_splits_per_seed(
    splits: tuple[SequenceSplit, ...] | None, seeds: tuple[int, ...], func: str
) -> list[str]:
    if splits is None or len(splits) == len(seeds):
        return []
    return [
        f"The 'splits' parameter of {func} must have one SequenceSplit per seed "
        f"({len(seeds)}). Got {len(splits)} instead."
    ]


def _check_optional_int(name: str) -> Callable[[Any, str], int | None]:
    def check(value: Any, func: str) -> int | None:
        return None if value is None else check_int(value, name, func, min=1)

    return check


def _check_batch_size(value: Any, func: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidParameterError(
            f"The 'batch_size' parameter of {func} must be None or an int >= 1. "
            f"Got {value!r} instead."
        )
    return value


def _check_penalties(name: str) -> Callable[[Any, str], tuple[float, ...]]:
    def check(values: Any, func: str) -> tuple[float, ...]:
        try:
            values = tuple(values)
            ok = bool(values) and all(
                not isinstance(v, bool)
                and isinstance(v, (int, float))
                and v > 0
                and math.isfinite(v)
                for v in values
            )
        except TypeError:
            ok = False
        if not ok:
            raise InvalidParameterError(
                f"The {name!r} parameter of {func} must be a non-empty sequence of finite "
                f"floats > 0. Got {values!r} instead."
            )
        return tuple(float(v) for v in values)

    return check


def _check_flag(name: str) -> Callable[[Any, str], bool]:
    def check(value: Any, func: str) -> bool:
        if not isinstance(value, bool):
            raise InvalidParameterError(
                f"The {name!r} parameter of {func} must be a bool. Got {value!r} instead."
            )
        return value

    return check


#: One check per field, in the order problems are listed.
_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "sites": _check_sites,
    "layers": _check_layers,
    "features": _check_choices(FEATURE_FAMILIES, "features"),
    "probes": _check_choices(PROBES, "probes"),
    "seeds": _check_seeds,
    "test_fraction": _check_fraction("test_fraction"),
    "val_fraction": _check_fraction("val_fraction"),
    "splits": _check_splits,
    "extrapolate_from": _check_optional_int("extrapolate_from"),
    "init_seeds": _check_init_seeds,
    "equal_dim": _check_optional_int("equal_dim"),
    "alphas": _check_penalties("alphas"),
    "lambdas": _check_penalties("lambdas"),
    "max_iter": lambda value, func: check_int(value, "max_iter", func, min=1),
    "mlp_hidden": lambda value, func: check_int(value, "mlp_hidden", func, min=1),
    "mlp_lr": lambda value, func: check_float(
        value, "mlp_lr", func, min=0.0, max=1.0, min_inclusive=False
    ),
    "mlp_weight_decay": lambda value, func: check_float(value, "mlp_weight_decay", func, min=0.0),
    "mlp_max_epochs": lambda value, func: check_int(value, "mlp_max_epochs", func, min=1),
    "mlp_patience": lambda value, func: check_int(value, "mlp_patience", func, min=1),
    "confidence": _check_fraction("confidence"),
    **{name: _check_flag(name) for name in _FLAGS},
    "batch_size": _check_batch_size,
}

#: The defaults, normalised (what :meth:`ProbeConfig.__repr__` compares against).
_DEFAULT = ProbeConfig()
