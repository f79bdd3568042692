"""Position probes: can each token's absolute position be read off a layer, and from what?

:func:`probe_positions` fits, per hook site and layer, probes that predict the absolute position
(0-indexed) of every token from three feature families (:mod:`nopelens.probes.features`): the raw
hidden state, position-index-free summaries of the token's cosine-similarity row (the neighborhood
hypothesis, Zuo et al. 2025), and the log-variance of the hidden state (the variance hypothesis,
Chi et al. 2023). It reports what a reviewer needs to trust the comparison
(``shared/notes/probing.md``):

- **Probes.** Ridge regression (R^2, MAE, Spearman rho) and multinomial logistic regression over
  positions (accuracy and mean absolute distance, MAD, as Haviv et al. 2022); for the 1-D
  variance feature also an isotonic (monotone, nonparametric) regression.
- **Splits by sequence.** Whole sequences go to train, validation or test
  (:class:`SequenceSplit`); a token-level split cannot be expressed, and a split whose parts share
  a sequence is refused. Regularisation is chosen on the validation sequences, carved from the
  training sequences.
- **Controls.** Chance levels (predict-the-mean MAE ~ n/4, uniform-guess MAD ~ n/3); the input
  embedding layer (no position in a NoPE model); the same architecture at random init when a
  trained model is given; a Hewitt & Liang (2019) control task (every token type gets a fixed
  random "position") with selectivity = task score - control score; a shuffled-label control;
  several seeds with t confidence intervals.
- **Capacity-fair comparison.** Every family is also reported at equal dimension ``k``
  (``equal_dim``): top-k principal components of the hidden or cosine features versus k powers of
  the standardised log-variance.

The probes are implemented in torch (:mod:`nopelens.probes.features`): ridge in closed form (one
eigendecomposition of the training Gram matrix gives the whole regularisation path, for all
targets at once), logistic regression with full-batch L-BFGS, jointly for the position, control
and shuffled-label targets. Both run on the device of the activations (CPU or GPU). See the
README section "Position probes" for why.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int

from nopelens.probes.features import (
    FEATURE_FAMILIES,
    LAMBDAS,
    RELATIVE_ALPHAS,
    chance_levels,
    classification_metrics,
    family_features,
    isotonic_predict,
    logistic_predict,
    pca_projection,
    polynomial_features,
    regression_metrics,
    ridge_predict,
    standardize,
)
from nopelens.validation import (
    check_float,
    check_int,
    check_sequence_of_choices,
    raise_all,
)

logger = logging.getLogger(__name__)

_FUNC = "probe_positions"
#: Probe kinds: ridge regression, multinomial logistic regression, isotonic regression (1-D).
PROBES: tuple[str, ...] = ("ridge", "logistic", "isotonic")
#: Targets: the true positions, the Hewitt & Liang control task, labels permuted across tokens.
TARGETS: tuple[str, ...] = ("position", "control", "shuffled")
#: Metrics reported per probe kind.
PROBE_METRICS: dict[str, tuple[str, ...]] = {
    "ridge": ("r2", "mae", "spearman"),
    "logistic": ("accuracy", "mad"),
    "isotonic": ("r2", "mae", "spearman"),
}
#: The score whose task-minus-control difference is the selectivity of each probe kind.
SELECTIVITY_METRIC: dict[str, str] = {"ridge": "r2", "logistic": "accuracy", "isotonic": "r2"}
#: Metrics where lower is better.
LOWER_IS_BETTER: frozenset[str] = frozenset({"mae", "mad"})

_KEYS = [
    "model",
    "site",
    "layer",
    "layer_index",
    "feature",
    "capacity",
    "dim",
    "probe",
    "target",
    "metric",
]


# --------------------------------------------------------------------------------------------
# Splits by sequence
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SequenceSplit:
    """Disjoint sets of *sequence* indices for training, validation and testing.

    A probe never sees a token whose sequence is on another side of the split: tokens of one
    sequence share their context (and, in a causal model, their prefix), so a token-level split
    leaks. Only 1-D sequence indices are accepted; there is no way to name single tokens.

    Each part is given as 1-D integer sequence indices (list, array or tensor) and stored as a
    tuple of ints.

    Attributes:
        train: Sequences the probes are fitted on.
        val: Sequences used to choose the regularisation (carved from the training sequences;
            ridge is refitted on ``train`` and ``val`` together once the penalty is chosen).
        test: Held-out sequences all reported metrics are computed on.

    Raises:
        ValueError: If a part is empty, is not 1-D integer indices, repeats an index, or shares a
            sequence with another part.

    Examples:
        >>> SequenceSplit(train=[0, 1], val=[2], test=[3]).test
        (3,)
        >>> SequenceSplit(train=[0, 1], val=[2], test=[1])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: ... Sequence 1 is in both train and test.
    """

    train: Sequence[int] | np.ndarray | torch.Tensor
    val: Sequence[int] | np.ndarray | torch.Tensor
    test: Sequence[int] | np.ndarray | torch.Tensor

    def __post_init__(self) -> None:
        where = f"The 'split' parameter of {_FUNC}"
        seen: dict[int, str] = {}
        for part in ("train", "val", "test"):
            values = _sequence_indices(getattr(self, part), f"{where} ({part})")
            object.__setattr__(self, part, values)
            if not values:
                raise ValueError(f"{where} must have at least one {part} sequence. Got none.")
            if len(set(values)) != len(values):
                raise ValueError(f"{where} repeats a sequence index in {part}: {list(values)}.")
            for index in values:
                if index in seen:
                    raise ValueError(
                        f"{where} must put every sequence on one side only (splits are by "
                        f"sequence). Sequence {index} is in both {seen[index]} and {part}."
                    )
                seen[index] = part

    def check(self, n_sequences: int) -> SequenceSplit:
        """Check that every index is a valid sequence index for ``n_sequences`` sequences."""
        high = max(max(self.train), max(self.val), max(self.test))
        low = min(min(self.train), min(self.val), min(self.test))
        if low < 0 or high >= n_sequences:
            raise ValueError(
                f"The 'split' parameter of {_FUNC} must index sequences in [0, {n_sequences}). "
                f"Got indices from {low} to {high} instead."
            )
        return self


def _sequence_indices(values: Any, where: str) -> tuple[int, ...]:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype == bool or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(
            f"{where} must be 1-D integer sequence indices (splits are by sequence, not token). "
            f"Got dtype {array.dtype} instead."
        )
    if array.ndim != 1:
        raise ValueError(
            f"{where} must be 1-D sequence indices (splits are by sequence, not token). "
            f"Got an array of shape {array.shape} instead."
        )
    return tuple(int(v) for v in array)


def split_sequences(
    n_sequences: int,
    *,
    test_fraction: float = 0.25,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> SequenceSplit:
    """Randomly split ``n_sequences`` sequences into train, validation and test sequences.

    ``round(test_fraction * n_sequences)`` sequences (at least 1) are held out for testing, then
    ``round(val_fraction * rest)`` (at least 1) of the rest for validation.

    Args:
        n_sequences: Number of sequences (``>= 3``).
        test_fraction: Fraction of sequences held out for testing, in (0, 1).
        val_fraction: Fraction of the training sequences used for validation, in (0, 1).
        seed: Seed of a private ``numpy`` generator.

    Returns:
        A :class:`SequenceSplit`.

    Raises:
        ValueError: If the sizes leave a part empty.

    Examples:
        >>> s = split_sequences(10, seed=0)
        >>> len(s.train), len(s.val), len(s.test)
        (6, 2, 2)
        >>> sorted(s.train + s.val + s.test) == list(range(10))
        True
    """
    func = "split_sequences"
    check_int(n_sequences, "n_sequences", func, min=3)
    check_float(test_fraction, "test_fraction", func, min=0.0, max=1.0, min_inclusive=False)
    check_float(val_fraction, "val_fraction", func, min=0.0, max=1.0, min_inclusive=False)
    n_test = max(1, round(test_fraction * n_sequences))
    n_val = max(1, round(val_fraction * (n_sequences - n_test)))
    if n_sequences - n_test - n_val < 1:
        raise ValueError(
            f"The 'test_fraction' and 'val_fraction' parameters of {func} leave no training "
            f"sequence out of {n_sequences} ({n_test} test, {n_val} validation). Use more "
            f"sequences or smaller fractions."
        )
    order = np.random.default_rng(seed).permutation(n_sequences)
    test = np.sort(order[:n_test])
    val = np.sort(order[n_test : n_test + n_val])
    train = np.sort(order[n_test + n_val :])
    return SequenceSplit(train=train, val=val, test=test)


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProbeReport:
    """Position-probe results: one tidy row per (model, site, layer, feature, probe, metric).

    Attributes:
        results: Aggregated over seeds. Columns: ``model`` (``"given"``, or ``"random_init"`` for
            the random-init baseline of a trained model), ``site`` (hook site; ``"embed"`` for the
            input embedding), ``layer`` (``"embed"``, ``"0"``, ... or the key of a precomputed
            mapping), ``layer_index`` (-1 for the embedding, the block index otherwise; the
            x-axis order), ``feature`` (``hidden`` / ``cosine`` / ``variance``), ``capacity``
            (``"full"``: the family's own dimension; ``"matched"``: ``equal_dim`` dimensions),
            ``dim`` (features the probe saw), ``probe`` (``ridge`` / ``logistic`` /
            ``isotonic``), ``target`` (``"position"``; ``"control"``: the Hewitt & Liang control
            task; ``"shuffled"``: position labels permuted across the tokens of the training
            sequences and, independently, of the test sequences, so labels carry no information:
            the noise floor of each metric at these sample sizes),
            ``metric`` (``r2``, ``mae``, ``spearman``, ``accuracy``, ``mad``, and
            ``selectivity`` on ``target == "position"`` rows: position score minus control score,
            R^2 for regressions and accuracy for the logistic probe), ``value`` (mean over seeds),
            ``ci_low``/``ci_high`` (t interval over seeds; NaN with one seed), ``std``,
            ``n_seeds``, ``chance`` (the metric's chance level for uniform positions).
        per_seed: The same rows before aggregation, with ``seed``, the chosen penalty ``reg``
            (ridge: relative alpha; logistic: lambda) and ``n_train``/``n_test`` token counts.
        config: The settings and sizes of the run (JSON-able).
    """

    results: pd.DataFrame
    per_seed: pd.DataFrame
    config: dict[str, Any]

    def to_frame(self) -> pd.DataFrame:
        """A copy of :attr:`results`."""
        return self.results.copy()

    def compare(
        self,
        metric: str = "spearman",
        *,
        probe: str | None = None,
        capacity: str = "full",
        model: str = "given",
    ) -> pd.DataFrame:
        """Which feature family decodes position best at each site and layer, and by how much.

        For every (site, layer), the families are ranked by their mean ``metric`` on the
        position target (lower is better for ``mae``/``mad``). ``margin`` is the winner's
        advantage over the runner-up (positive), with a paired t interval over seeds (both
        families are scored on the same splits).

        Args:
            metric: Metric to rank by.
            probe: Probe kind; ``None`` takes each family's best probe reporting ``metric``
                (e.g. isotonic for variance).
            capacity: ``"full"`` or ``"matched"``.
            model: ``"given"`` or ``"random_init"``.

        Returns:
            One row per (site, layer): ``winner``, ``winner_probe``, ``value``, ``runner_up``,
            ``runner_up_value``, ``margin``, ``margin_ci_low``, ``margin_ci_high``, ``chance``.
        """
        frame = self.per_seed
        frame = frame[
            (frame["metric"] == metric)
            & (frame["target"] == "position")
            & (frame["capacity"] == capacity)
            & (frame["model"] == model)
        ]
        if probe is not None:
            frame = frame[frame["probe"] == probe]
        if frame.empty:
            raise ValueError(
                f"The report has no rows for metric={metric!r}, probe={probe!r}, "
                f"capacity={capacity!r}, model={model!r}."
            )
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        confidence = float(self.config.get("confidence", 0.95))
        rows = []
        for (site, layer), group in frame.groupby(["site", "layer"], sort=False):
            means = group.groupby(["feature", "probe"])["value"].mean() * sign
            best = means.groupby(level="feature").idxmax().map(lambda key: key[1])
            ranked = sorted(best.index, key=lambda f: -means[(f, best[f])])
            winner = ranked[0]
            row = {
                "site": site,
                "layer": layer,
                "layer_index": int(group["layer_index"].iloc[0]),
                "metric": metric,
                "winner": winner,
                "winner_probe": best[winner],
                "value": sign * means[(winner, best[winner])],
                "chance": float(group["chance"].iloc[0]),
            }
            if len(ranked) > 1:
                other = ranked[1]
                a = group[(group["feature"] == winner) & (group["probe"] == best[winner])]
                b = group[(group["feature"] == other) & (group["probe"] == best[other])]
                diff = sign * (a.set_index("seed")["value"] - b.set_index("seed")["value"])
                low, high = _t_interval(diff.dropna().to_numpy(), confidence)
                row.update(
                    runner_up=other,
                    runner_up_value=sign * means[(other, best[other])],
                    margin=float(diff.mean()),
                    margin_ci_low=low,
                    margin_ci_high=high,
                )
            rows.append(row)
        return pd.DataFrame(rows).sort_values("layer_index", kind="stable").reset_index(drop=True)


def _t_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    from scipy.stats import t

    half = (
        t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    )
    mean = float(values.mean())
    return mean - float(half), mean + float(half)


def _aggregate(per_seed: pd.DataFrame, confidence: float) -> pd.DataFrame:
    rows = []
    for key, group in per_seed.groupby(_KEYS, sort=False, dropna=False):
        values = group["value"].to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        low, high = _t_interval(finite, confidence)
        rows.append(
            {
                **dict(zip(_KEYS, key, strict=True)),
                "value": float(finite.mean()) if len(finite) else float("nan"),
                "ci_low": low,
                "ci_high": high,
                "std": float(finite.std(ddof=1)) if len(finite) > 1 else float("nan"),
                "n_seeds": int(len(finite)),
                "chance": float(group["chance"].iloc[0]),
            }
        )
    return pd.DataFrame(
        rows, columns=[*_KEYS, "value", "ci_low", "ci_high", "std", "n_seeds", "chance"]
    )


# --------------------------------------------------------------------------------------------
# Inputs: a model, an Activations object, or a mapping of per-layer hidden states
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Block:
    site: str
    layer: str
    layer_index: int
    hidden: torch.Tensor  # [batch, pos, d_model]


def _is_model(obj: Any) -> bool:
    return hasattr(obj, "run_with_cache") and hasattr(obj, "cfg")


def _check_hidden(tensor: Any, label: str) -> torch.Tensor:
    where = f"The 'model_or_activations' parameter of {_FUNC}"
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise ValueError(
            f"{where} must map layer labels to float tensors [batch pos d_model]. Entry "
            f"{label!r} is {type(tensor).__name__}"
            f"{'' if not isinstance(tensor, torch.Tensor) else f' of dtype {tensor.dtype}'}."
        )
    if tensor.ndim != 3:
        hint = (
            (
                " Token-level features [tokens d_model] cannot be probed: splits are by "
                "sequence, so pass [batch pos d_model]."
            )
            if tensor.ndim == 2
            else ""
        )
        raise ValueError(
            f"{where} must hold tensors of shape [batch pos d_model]. Entry {label!r} has shape "
            f"{tuple(tensor.shape)} instead.{hint}"
        )
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{where} entry {label!r} holds NaN or infinite values.")
    return tensor.detach()


def _blocks_from_activations(
    acts: Any, sites: tuple[str, ...], layers: Any, include_embed: bool
) -> list[_Block]:
    blocks = []
    if include_embed and "embed" in acts.tensors and "embed" not in sites:
        blocks.append(_Block("embed", "embed", -1, _check_hidden(acts["embed"][0], "embed")))
    wanted = acts.layers if layers is None else _layer_tuple(layers)
    missing = [layer for layer in wanted if layer not in acts.layers]
    if missing:
        raise ValueError(
            f"The 'layers' parameter of {_FUNC} must name collected layers "
            f"{list(acts.layers)}. Got {list(wanted)!r} instead."
        )
    for site in sites:
        if site not in acts.tensors:
            raise ValueError(
                f"The 'sites' parameter of {_FUNC} must name collected sites "
                f"({', '.join(acts.tensors)}). Got {site!r} instead."
            )
        stacked = acts[site]
        if site == "embed":
            blocks.append(_Block("embed", "embed", -1, _check_hidden(stacked[0], "embed")))
            continue
        for layer in wanted:
            index = acts.layers.index(layer)
            blocks.append(
                _Block(site, str(layer), layer, _check_hidden(stacked[index], f"{site}/{layer}"))
            )
    return blocks


def _layer_tuple(layers: Any) -> tuple[Any, ...]:
    if isinstance(layers, (str, int)):
        return (layers,)
    return tuple(layers)


def _blocks_from_mapping(mapping: Mapping[Any, Any], layers: Any) -> list[_Block]:
    if not mapping:
        raise ValueError(
            f"The 'model_or_activations' parameter of {_FUNC} must not be an empty mapping."
        )
    keys = list(mapping)
    if layers is not None:
        wanted = [str(layer) for layer in _layer_tuple(layers)]
        by_label = {str(key): key for key in keys}
        unknown = [layer for layer in wanted if layer not in by_label]
        if unknown:
            raise ValueError(
                f"The 'layers' parameter of {_FUNC} must name keys of the activations mapping "
                f"({', '.join(map(str, keys))}). Got {unknown!r} instead."
            )
        keys = [by_label[layer] for layer in wanted]
    blocks = []
    for index, key in enumerate(keys):
        label = str(key)
        layer_index = -1 if label == "embed" else index
        blocks.append(_Block("given", label, layer_index, _check_hidden(mapping[key], label)))
    return blocks


# --------------------------------------------------------------------------------------------
# The public entry point
# --------------------------------------------------------------------------------------------


def probe_positions(
    model_or_activations: Any,
    tokens: Int[torch.Tensor, "batch pos"] | None = None,
    *,
    sites: Sequence[str] | str = ("resid_post",),
    layers: Sequence[Any] | int | str | None = None,
    features: Sequence[str] | str = ("hidden", "cosine", "variance"),
    probes: Sequence[str] | str = PROBES,
    seeds: Sequence[int] | int = (0, 1, 2),
    test_fraction: float = 0.25,
    val_fraction: float = 0.2,
    splits: Sequence[Any] | None = None,
    equal_dim: int | None = 4,
    centered: bool = False,
    drop_first: bool = False,
    include_embed: bool = True,
    control_task: bool = True,
    shuffled_control: bool = True,
    random_init_baseline: bool = True,
    alphas: Sequence[float] = RELATIVE_ALPHAS,
    lambdas: Sequence[float] = LAMBDAS,
    max_iter: int = 20,
    confidence: float = 0.95,
    batch_size: int | None = None,
) -> ProbeReport:
    """Probe every site and layer for the absolute position of each token.

    For each (site, layer), each feature family and each seed, the sequences are split into
    train / validation / test *by sequence*; every feature matrix is standardised with the
    training statistics; ridge and logistic probes are fitted with their penalty chosen on the
    validation sequences; metrics are computed on the test sequences and averaged over seeds with
    a t confidence interval. The same probes are fitted on the Hewitt & Liang control task
    (each token type is mapped, per seed, to a fixed random position drawn uniformly) and on
    permuted labels (training and test labels each shuffled across tokens: the score of a probe
    when labels carry no information); ``selectivity`` rows give position score minus control
    score.

    Accepted inputs:

    - a model (TransformerLens ``HookedTransformer``) and ``tokens``: activations are collected
      at ``sites`` and ``layers`` with :func:`~nopelens.collect_activations`, plus
      ``hook_embed`` (site and layer ``"embed"``) when ``include_embed``. When the model is not
      at its own random initialisation (its weights differ from ``build_model`` with its
      :func:`~nopelens.model_spec`) and ``random_init_baseline``, the same architecture at
      random init (same seed, i.e. the initialisation training started from when the model was
      built by :func:`~nopelens.models.build.build_model`) is probed too, as ``model="random_init"``
      rows;
    - an :class:`~nopelens.Activations` from ``collect_activations``: its ``sites``
      (and ``embed`` when collected and ``include_embed``) at ``layers`` are probed;
    - a mapping ``layer label -> Float[Tensor, "batch pos d_model"]`` (e.g. ``{"embed": e, "0":
      h0}``): every entry (or those named in ``layers``) is probed with ``site="given"``.

    With precomputed activations ``tokens`` (the ids the activations were computed from) are
    needed only for the control task; there is no random-init baseline.

    Args:
        model_or_activations: A model, an ``Activations`` or a mapping (see above).
        tokens: Token ids ``[batch, pos]``.
        sites: Hook sites (residual-stream-shaped: ``[batch pos d_model]`` per layer).
        layers: Block indices (model / ``Activations``) or mapping keys; ``None`` means all.
        features: Feature families among ``"hidden"``, ``"cosine"``, ``"variance"``.
        probes: Probe kinds among ``"ridge"``, ``"logistic"``, ``"isotonic"`` (isotonic applies
            to the scalar variance only).
        seeds: One probe run per seed: the split, the control-task labels and the label shuffle.
        test_fraction: Fraction of sequences held out for testing.
        val_fraction: Fraction of the training sequences used to choose penalties.
        splits: Optional explicit :class:`SequenceSplit` per seed (replaces the random splits,
            e.g. to test on a fresh shard); must have one entry per seed.
        equal_dim: Dimension ``k`` of the capacity-matched rows (top-k PCA of hidden / cosine
            features, k powers of the log-variance); ``None`` skips them.
        centered: Cosine features from mean-centred hidden states.
        drop_first: Leave out position 0 (trivially identifiable in a causal model: it attends
            only to itself) from training, testing and the chance levels.
        include_embed: Also probe the input embedding (``hook_embed``), the no-position control.
        control_task: Fit the Hewitt & Liang control task (needs ``tokens``).
        shuffled_control: Fit and score probes on labels permuted across tokens.
        random_init_baseline: Probe the random-init twin of a trained model.
        alphas: Ridge penalties, relative to the mean eigenvalue of the training Gram matrix.
        lambdas: Logistic L2 penalties (per-token loss scale), tried from the first.
        max_iter: L-BFGS iterations per logistic penalty.
        confidence: Confidence level of the intervals over seeds.
        batch_size: Sequences per forward pass when collecting activations.

    Returns:
        A :class:`ProbeReport`.

    Raises:
        ValueError: For any invalid argument (all listed at once), before any work.

    Examples:
        >>> from nopelens.models import build_model
        >>> from nopelens.measure import random_tokens
        >>> model = build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> report = probe_positions(model, random_tokens(12, 8, 20), seeds=(0, 1),
        ...                          features="variance", probes="isotonic", equal_dim=None)
        >>> df = report.to_frame()
        >>> sorted(df["layer"].unique()), sorted(df["target"].unique())
        (['0', 'embed'], ['control', 'position', 'shuffled'])
    """
    settings = _validate(
        features=features,
        probes=probes,
        seeds=seeds,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        splits=splits,
        equal_dim=equal_dim,
        alphas=alphas,
        lambdas=lambdas,
        max_iter=max_iter,
        confidence=confidence,
        flags={
            "centered": centered,
            "drop_first": drop_first,
            "include_embed": include_embed,
            "control_task": control_task,
            "shuffled_control": shuffled_control,
            "random_init_baseline": random_init_baseline,
        },
    )
    if isinstance(sites, str):
        sites = (sites,)
    sites = tuple(sites)

    models: list[tuple[str, list[_Block], torch.Tensor | None]] = []
    config: dict[str, Any] = {}
    obj = model_or_activations
    if _is_model(obj):
        from nopelens.measure import check_tokens

        if tokens is None:
            raise ValueError(
                f"The 'tokens' parameter of {_FUNC} is required when a model is given. Got None."
            )
        tokens = check_tokens(obj, tokens, func=_FUNC)
        _check_split_sizes(settings, tokens.shape[0], tokens.shape[1], drop_first)
        models.append(
            ("given", _model_blocks(obj, tokens, sites, layers, include_embed, batch_size), tokens)
        )
        config["model"] = _model_description(obj)
        twin = _random_init_twin(obj) if random_init_baseline else None
        config["given_is_random_init"] = random_init_baseline and twin is None
        if twin is not None:
            models.append(
                (
                    "random_init",
                    _model_blocks(twin, tokens, sites, layers, include_embed, batch_size),
                    tokens,
                )
            )
    else:
        from nopelens.measure import Activations

        if isinstance(obj, Activations):
            blocks = _blocks_from_activations(obj, sites, layers, include_embed)
        elif isinstance(obj, Mapping):
            blocks = _blocks_from_mapping(obj, layers)
        else:
            raise ValueError(
                f"The 'model_or_activations' parameter of {_FUNC} must be a TransformerLens "
                f"model, a nopelens Activations, or a mapping of layer labels to tensors "
                f"[batch pos d_model]. Got {type(obj).__name__} instead."
            )
        if not blocks:
            raise ValueError(
                f"The 'model_or_activations' parameter of {_FUNC} has no layer to probe."
            )
        shape = tuple(blocks[0].hidden.shape[:2])
        for block in blocks:
            if tuple(block.hidden.shape[:2]) != shape:
                raise ValueError(
                    f"The 'model_or_activations' parameter of {_FUNC} must hold tensors of one "
                    f"[batch pos] shape. Got {shape} for {blocks[0].layer!r} and "
                    f"{tuple(block.hidden.shape[:2])} for {block.layer!r}."
                )
        if tokens is not None:
            tokens = _check_tokens_shape(tokens, shape)
        elif control_task:
            raise ValueError(
                f"The 'tokens' parameter of {_FUNC} is needed for the control task (each token "
                f"type gets a random label): pass the token ids [batch pos] the activations came "
                f"from, or control_task=False."
            )
        _check_split_sizes(settings, shape[0], shape[1], drop_first)
        models.append(("given", blocks, tokens))

    per_seed = []
    for model_label, blocks, model_tokens in models:
        for block in blocks:
            logger.info("probing %s %s/%s", model_label, block.site, block.layer)
            per_seed.extend(_probe_block(model_label, block, model_tokens, settings))
    per_seed_frame = pd.DataFrame(per_seed)
    results = _aggregate(per_seed_frame, settings["confidence"])
    first = models[0][1][0].hidden
    config.update(
        {
            "n_sequences": int(first.shape[0]),
            "n_positions": int(first.shape[1]),
            "sites": list(sites),
            **{k: v for k, v in settings.items() if k != "splits"},
            "splits": (
                None
                if settings["splits"] is None
                else [dataclasses.asdict(s) for s in settings["splits"]]
            ),
            "models": [label for label, _, _ in models],
        }
    )
    return ProbeReport(results=results, per_seed=per_seed_frame, config=config)


def _validate(
    *,
    features,
    probes,
    seeds,
    test_fraction,
    val_fraction,
    splits,
    equal_dim,
    alphas,
    lambdas,
    max_iter,
    confidence,
    flags,
) -> dict[str, Any]:
    problems: list[str] = []

    def attempt(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError as err:
            problems.append(str(err))
            return None

    features = attempt(check_sequence_of_choices, features, "features", FEATURE_FAMILIES, _FUNC)
    probes = attempt(check_sequence_of_choices, probes, "probes", PROBES, _FUNC)
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
        problems.append(
            f"The 'seeds' parameter of {_FUNC} must be a non-empty sequence of distinct ints "
            f">= 0. Got {seeds!r} instead."
        )
    attempt(
        check_float, test_fraction, "test_fraction", _FUNC, min=0.0, max=1.0, min_inclusive=False
    )
    attempt(check_float, val_fraction, "val_fraction", _FUNC, min=0.0, max=1.0, min_inclusive=False)
    if test_fraction == 1.0:
        problems.append(f"The 'test_fraction' parameter of {_FUNC} must be < 1. Got 1.0 instead.")
    if val_fraction == 1.0:
        problems.append(f"The 'val_fraction' parameter of {_FUNC} must be < 1. Got 1.0 instead.")
    if splits is not None:
        if isinstance(splits, SequenceSplit):
            splits = (splits,)
        splits = tuple(splits)
        if not all(isinstance(s, SequenceSplit) for s in splits):
            problems.append(
                f"The 'splits' parameter of {_FUNC} must be None or a sequence of SequenceSplit "
                f"(sequence indices; splits are by sequence, never by token). Got "
                f"{[type(s).__name__ for s in splits]} instead."
            )
        elif len(splits) != len(seeds):
            problems.append(
                f"The 'splits' parameter of {_FUNC} must have one SequenceSplit per seed "
                f"({len(seeds)}). Got {len(splits)} instead."
            )
    if equal_dim is not None:
        attempt(check_int, equal_dim, "equal_dim", _FUNC, min=1)
    for name, values in (("alphas", alphas), ("lambdas", lambdas)):
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
            problems.append(
                f"The {name!r} parameter of {_FUNC} must be a non-empty sequence of finite "
                f"floats > 0. Got {values!r} instead."
            )
    attempt(check_int, max_iter, "max_iter", _FUNC, min=1)
    attempt(check_float, confidence, "confidence", _FUNC, min=0.0, max=1.0, min_inclusive=False)
    if confidence == 1.0:
        problems.append(f"The 'confidence' parameter of {_FUNC} must be < 1. Got 1.0 instead.")
    for name, value in flags.items():
        if not isinstance(value, bool):
            problems.append(
                f"The {name!r} parameter of {_FUNC} must be a bool. Got {value!r} instead."
            )
    raise_all(problems, _FUNC)
    return {
        "features": tuple(dict.fromkeys(features)),
        "probes": tuple(dict.fromkeys(probes)),
        "seeds": seeds,
        "test_fraction": float(test_fraction),
        "val_fraction": float(val_fraction),
        "splits": splits,
        "equal_dim": equal_dim,
        "alphas": tuple(float(a) for a in alphas),
        "lambdas": tuple(float(v) for v in lambdas),
        "max_iter": max_iter,
        "confidence": float(confidence),
        **flags,
    }


def _check_split_sizes(
    settings: dict[str, Any], n_sequences: int, pos: int, drop_first: bool
) -> None:
    if pos - int(drop_first) < 2:
        raise ValueError(
            f"The 'tokens' parameter of {_FUNC} must have at least {2 + int(drop_first)} "
            f"positions per sequence{' with drop_first=True' if drop_first else ''}. Got pos={pos} "
            f"instead."
        )
    if settings["splits"] is not None:
        for split in settings["splits"]:
            split.check(n_sequences)
        return
    if n_sequences < 3:
        raise ValueError(
            f"The 'tokens' parameter of {_FUNC} must hold at least 3 sequences (train, "
            f"validation and test are split by sequence). Got {n_sequences} instead."
        )
    split_sequences(
        n_sequences,
        test_fraction=settings["test_fraction"],
        val_fraction=settings["val_fraction"],
        seed=0,
    )


def _check_tokens_shape(tokens: Any, shape: tuple[int, ...]) -> torch.Tensor:
    if (
        not isinstance(tokens, torch.Tensor)
        or tokens.is_floating_point()
        or tokens.dtype == torch.bool
        or tuple(tokens.shape) != shape
        or tokens.min() < 0
    ):
        got = (
            f"shape {tuple(tokens.shape)} dtype {tokens.dtype}"
            if isinstance(tokens, torch.Tensor)
            else type(tokens).__name__
        )
        raise ValueError(
            f"The 'tokens' parameter of {_FUNC} must be non-negative integer ids of the "
            f"activations' shape {shape} [batch pos]. Got {got} instead."
        )
    return tokens.long()


def _model_description(model: Any) -> dict[str, Any]:
    from nopelens.models import describe_model, model_spec

    try:
        return {"label": describe_model(model), **model_spec(model)}
    except Exception:  # a foreign model without the fields model_spec reads
        return {"label": type(model).__name__}


def _model_blocks(
    model: Any,
    tokens: torch.Tensor,
    sites: tuple[str, ...],
    layers: Any,
    include_embed: bool,
    batch_size: int | None,
) -> list[_Block]:
    from nopelens.measure import check_layers, check_sites, collect_activations

    block_layers = check_layers(model, layers, func=_FUNC)
    sites = check_sites(model, sites, block_layers, func=_FUNC)
    wanted = (("embed",) if include_embed and "embed" not in sites else ()) + sites
    acts = collect_activations(
        model, tokens, sites=wanted, layers=block_layers, batch_size=batch_size
    )
    for site in sites:
        if acts[site].ndim != 4:
            raise ValueError(
                f"The 'sites' parameter of {_FUNC} must name residual-stream-shaped sites "
                f"([batch pos d_model] per layer, e.g. resid_post, attn_out). Site {site!r} has "
                f"shape {tuple(acts[site].shape)} [layer ...]."
            )
    return _blocks_from_activations(acts, sites, None, include_embed)


def _random_init_twin(model: Any) -> Any | None:
    """The same architecture at random init, or None when ``model`` is at its own random init."""
    from nopelens.models import build_model, model_spec

    spec = model_spec(model)
    seed = spec.get("seed")
    spec["seed"] = 0 if seed is None else seed
    spec.pop("device", None)
    device = getattr(model.cfg, "device", "cpu")
    try:
        twin = build_model(**spec, device=device)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"The 'random_init_baseline' parameter of {_FUNC} needs a model that build_model can "
            f"rebuild from model_spec(model) ({err}). Pass random_init_baseline=False."
        ) from err
    if seed is not None:
        mine, theirs = model.state_dict(), twin.state_dict()
        if mine.keys() == theirs.keys() and all(
            torch.equal(mine[k], theirs[k].to(mine[k].device)) for k in mine
        ):
            return None
    return twin


def _probe_block(
    model_label: str, block: _Block, tokens: torch.Tensor | None, settings: dict[str, Any]
) -> list[dict[str, Any]]:
    hidden = block.hidden
    n_seq, pos = hidden.shape[:2]
    device = hidden.device
    offset = int(settings["drop_first"])
    positions = np.arange(offset, pos)
    n_classes = len(positions)
    chance = chance_levels(positions)
    feats = {
        family: family_features(hidden, family, centered=settings["centered"])[:, offset:]
        for family in settings["features"]
    }
    position_labels = torch.arange(n_classes, device=device).expand(n_seq, n_classes)
    rows: list[dict[str, Any]] = []
    for index, seed in enumerate(settings["seeds"]):
        split = (
            settings["splits"][index]
            if settings["splits"] is not None
            else split_sequences(
                n_seq,
                test_fraction=settings["test_fraction"],
                val_fraction=settings["val_fraction"],
                seed=seed,
            )
        )
        parts = {
            name: torch.as_tensor(getattr(split, name), device=device)
            for name in ("train", "val", "test")
        }
        labels = _targets(position_labels, tokens, parts, seed, n_classes, settings)
        base = {
            "model": model_label,
            "site": block.site,
            "layer": block.layer,
            "layer_index": block.layer_index,
            "seed": seed,
        }
        for family, feat in feats.items():
            fit, val, test = (
                feat[parts[p]].reshape(-1, feat.shape[-1]) for p in ("train", "val", "test")
            )
            for capacity, (xf, xv, xt) in _variants(family, fit, val, test, settings):
                for probe in settings["probes"]:
                    if probe == "isotonic" and (family != "variance" or capacity != "full"):
                        continue
                    preds, regs = _fit_probe(probe, xf, xv, xt, labels, n_classes, settings, seed)
                    common = {
                        **base,
                        "feature": family,
                        "capacity": capacity,
                        "dim": int(xf.shape[1]),
                        "probe": probe,
                        "n_train": int(xf.shape[0] + xv.shape[0]),
                        "n_test": int(xt.shape[0]),
                    }
                    scores = {}
                    for target, pred in preds.items():
                        truth = labels["test"][target]
                        scores[target] = (
                            classification_metrics(pred, truth)
                            if probe == "logistic"
                            else regression_metrics(pred, truth)
                        )
                        rows.extend(
                            {
                                **common,
                                "target": target,
                                "metric": metric,
                                "value": value,
                                "chance": chance[metric],
                                "reg": regs[target],
                            }
                            for metric, value in scores[target].items()
                        )
                    if "control" in scores:
                        score = SELECTIVITY_METRIC[probe]
                        rows.append(
                            {
                                **common,
                                "target": "position",
                                "metric": "selectivity",
                                "value": scores["position"][score] - scores["control"][score],
                                "chance": 0.0,
                                "reg": float("nan"),
                            }
                        )
    return rows


def _targets(
    position_labels: torch.Tensor,
    tokens: torch.Tensor | None,
    parts: dict[str, torch.Tensor],
    seed: int,
    n_classes: int,
    settings: dict[str, Any],
) -> dict[str, dict[str, np.ndarray | torch.Tensor]]:
    """Class labels (0 .. n_classes-1) per part and target; test labels as numpy arrays."""
    offset = int(settings["drop_first"])
    device = position_labels.device
    per_target = {"position": position_labels}
    if settings["control_task"]:
        generator = torch.Generator().manual_seed(seed)
        vocab = int(tokens.max()) + 1
        mapping = torch.randint(0, n_classes, (vocab,), generator=generator).to(device)
        per_target["control"] = mapping[tokens[:, offset:].to(device)]
    out: dict[str, dict[str, Any]] = {"train": {}, "val": {}, "test": {}}
    for target, labels in per_target.items():
        for part, index in parts.items():
            out[part][target] = labels[index].reshape(-1)
    if settings["shuffled_control"]:
        rng = np.random.default_rng([seed, 1])
        n_fit = out["train"]["position"].shape[0]
        joint = torch.cat([out["train"]["position"], out["val"]["position"]])
        shuffled = joint[torch.as_tensor(rng.permutation(joint.shape[0]), device=device)]
        out["train"]["shuffled"], out["val"]["shuffled"] = shuffled[:n_fit], shuffled[n_fit:]
        test = out["test"]["position"]
        out["test"]["shuffled"] = test[
            torch.as_tensor(rng.permutation(test.shape[0]), device=device)
        ]
    out["test"] = {k: v.cpu().numpy() + offset for k, v in out["test"].items()}
    return out


def _variants(
    family: str, fit: torch.Tensor, val: torch.Tensor, test: torch.Tensor, settings: dict[str, Any]
):
    """(capacity, standardised fit/val/test features) for the full and matched capacities."""
    fit, val, test = standardize(fit.float(), val.float(), test.float())
    yield "full", (fit, val, test)
    k = settings["equal_dim"]
    if k is None:
        return
    if family == "variance":
        fit, val, test = (polynomial_features(x, k) for x in (fit, val, test))
    else:
        basis = pca_projection(fit, min(k, fit.shape[1]))
        fit, val, test = (x @ basis for x in (fit, val, test))
    yield "matched", standardize(fit, val, test)


def _fit_probe(
    probe: str,
    xf: torch.Tensor,
    xv: torch.Tensor,
    xt: torch.Tensor,
    labels: dict[str, dict[str, Any]],
    n_classes: int,
    settings: dict[str, Any],
    seed: int,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Fit one probe kind for every target; return test predictions (positions) and penalties."""
    offset = int(settings["drop_first"])
    targets = list(labels["train"])
    y_fit = torch.stack([labels["train"][t] for t in targets], dim=1)
    y_val = torch.stack([labels["val"][t] for t in targets], dim=1)
    if probe == "ridge":
        pred, regs = ridge_predict(
            xf, y_fit.float(), xv, y_val.float(), xt, alphas=settings["alphas"]
        )
        pred = pred.cpu().numpy() + offset
    elif probe == "logistic":
        pred, regs = logistic_predict(
            xf,
            y_fit,
            xv,
            y_val,
            xt,
            n_classes,
            lambdas=settings["lambdas"],
            max_iter=settings["max_iter"],
        )
        pred = pred.cpu().numpy() + offset
    else:
        x_train = torch.cat([xf, xv])[:, 0].cpu().double().numpy()
        x_test = xt[:, 0].cpu().double().numpy()
        y_train = torch.cat([y_fit, y_val]).cpu().double().numpy()
        pred = (
            np.stack(
                [isotonic_predict(x_train, y_train[:, i], x_test) for i in range(len(targets))],
                axis=1,
            )
            + offset
        )
        regs = [float("nan")] * len(targets)
    return ({t: pred[:, i] for i, t in enumerate(targets)}, dict(zip(targets, regs, strict=True)))
