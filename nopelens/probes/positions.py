"""Position probes: can each token's absolute position be read off a layer, and from what?

:func:`probe_positions` fits, per hook site and layer, probes that predict the absolute position
(0-indexed) of every token from three feature families (:mod:`nopelens.probes.features`): the raw
hidden state, position-index-free summaries of the token's cosine-similarity row (the neighborhood
hypothesis, Zuo et al. 2025), and the log-variance of the hidden state (the variance hypothesis,
Chi et al. 2023). It reports what a reviewer needs to trust the comparison
(``shared/notes/probing.md``):

- **Probes** (:mod:`~nopelens.probes.fitting`, :mod:`~nopelens.probes.mlp`). Ridge regression
  (R^2, MAE, Spearman rho) and multinomial logistic regression over positions (accuracy and mean
  absolute distance, MAD, as Haviv et al. 2022); for the 1-D variance feature also an isotonic
  (monotone, nonparametric) regression; on request a one-hidden-layer MLP classifier (the
  linear-versus-MLP comparison of Hewitt & Liang 2019).
- **Splits by sequence** (:mod:`~nopelens.probes.splits`). Whole sequences go to train,
  validation or test; a token-level split cannot be expressed, and a split whose parts share a
  sequence is refused. Regularisation is chosen on the validation sequences, carved from the
  training sequences. With ``extrapolate_from=k`` a *length split* too: the regression probes
  are fitted on positions ``< k`` and tested on positions ``>= k`` (``split="length"`` rows).
- **Controls** (:mod:`~nopelens.probes.targets`, :mod:`~nopelens.probes.metrics`). Each score's
  chance level is its expectation under the null that the features carry no information about
  the labels, computed from the labels actually used (uniform positions: R^2 0, MAE ~ n/4,
  accuracy 1/n; the control task's and the length split's labels get their own); the input
  embedding layer (no position in a NoPE model); the same architecture at random init when a
  trained model is given; a Hewitt & Liang (2019) control task (token types dealt out evenly to
  random "positions") with selectivity = task score - control score; a shuffled-label control.
- **Intervals** (:mod:`~nopelens.probes.report`). A t interval over the split seeds, or, when
  several models are probed (a list of models, or ``init_seeds``), over the model-init seeds
  (each the mean over the split seeds); the columns ``interval``, ``init_seeds`` and
  ``split_seeds`` say which.
- **Capacity-fair comparison.** Every family is also reported at equal dimension ``k``
  (``equal_dim``): top-k principal components of the hidden or cosine features versus k powers of
  the standardised log-variance.

The steps: settings (:class:`~nopelens.probes.ProbeConfig`), the layers to probe
(:mod:`~nopelens.probes.inputs`), one layer at a time (:mod:`~nopelens.probes.layer`), then the
aggregation over seeds. The probes are implemented in torch: ridge in closed form (one
eigendecomposition of the training Gram matrix gives the whole regularisation path, for all
targets at once), logistic regression with full-batch L-BFGS and a closed-form gradient, one
target at a time (a target's probe does not depend on the others fitted beside it), the MLP with
Adam. All run on the device of the activations (CPU or GPU). On the CPU the independent fits
of a layer run ``torch.get_num_threads()`` at a time, each on one thread
(:mod:`~nopelens.probes.layer`), so results do not depend on the number of threads. See the
README section "Position probes" for why.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pandas as pd
import torch
from jaxtyping import Int

from nopelens.probes.config import ProbeConfig, reported_as
from nopelens.probes.inputs import Subject, gather_subjects
from nopelens.probes.layer import probe_layer
from nopelens.probes.report import ProbeReport, aggregate_seeds
from nopelens.validation import InvalidParameterError

logger = logging.getLogger(__name__)

_FUNC = "probe_positions"
#: The settings recorded in ``ProbeReport.config`` besides sites and splits, in record order.
_REPORTED: tuple[str, ...] = (
    "features",
    "probes",
    "seeds",
    "test_fraction",
    "val_fraction",
    "equal_dim",
    "extrapolate_from",
    "init_seeds",
    "alphas",
    "lambdas",
    "max_iter",
    "mlp_hidden",
    "mlp_lr",
    "mlp_weight_decay",
    "mlp_max_epochs",
    "mlp_patience",
    "confidence",
    "centered",
    "drop_first",
    "include_embed",
    "control_task",
    "shuffled_control",
    "random_init_baseline",
)


def probe_positions(
    # Any, not HookedModel | Activations | Mapping: naming Activations would import
    # TransformerLens, and a wrong type gets probe_positions' own actionable ValueError.
    model_or_activations: Any,
    tokens: Int[torch.Tensor, "batch pos"] | None = None,
    *,
    config: ProbeConfig | None = None,
    **overrides: Any,
) -> ProbeReport:
    """Probe every site and layer for the absolute position of each token.

    For each (site, layer), each feature family and each seed, the sequences are split into
    train / validation / test *by sequence*; every feature matrix is standardised with the
    training statistics; ridge and logistic probes (and the MLP, when named) are fitted with their
    penalty (or stopping epoch) chosen on the validation sequences; metrics are computed on the
    test sequences, each beside its chance level, and averaged over seeds with a t confidence
    interval. The same probes are fitted on the Hewitt & Liang control task (the token types are
    dealt out evenly, per seed, to random positions) and on permuted labels (training and test
    labels each shuffled across tokens: the score of a probe when labels carry no information);
    ``selectivity`` rows give position score minus control score. With ``extrapolate_from`` the
    regression probes are also trained on short positions and tested on longer ones.

    Accepted inputs:

    - a model (TransformerLens ``HookedTransformer``, any
      :class:`~nopelens.models.HookedModel`) and ``tokens``: activations are collected at
      ``sites`` and ``layers`` with :func:`~nopelens.collect_activations`, plus ``hook_embed``
      (site and layer ``"embed"``) when ``include_embed``. When the model is not at its own
      random initialisation (its weights differ from ``build_model`` with its
      :func:`~nopelens.model_spec`) and ``random_init_baseline``, the same architecture at
      random init (same seed, i.e. the initialisation training started from when the model was
      built by :func:`~nopelens.models.build_model`) is probed too, as ``model="random_init"``
      rows. With ``init_seeds`` the architecture is rebuilt at every init seed (see
      :class:`~nopelens.probes.ProbeConfig`);
    - a list of models of one architecture with distinct init seeds (e.g. one configuration
      trained from several initialisations) and ``tokens``: each is probed (with its random-init
      twin when trained), and intervals span the models' init seeds;
    - an :class:`~nopelens.Activations` from ``collect_activations``: its ``sites``
      (and ``embed`` when collected and ``include_embed``) at ``layers`` are probed;
    - a mapping ``layer label -> Float[Tensor, "batch pos d_model"]`` (e.g. ``{"embed": e, "0":
      h0}``): every entry (or those named in ``layers``) is probed with ``site="given"``.

    With precomputed activations ``tokens`` (the ids the activations were computed from) are
    needed only for the control task; there is no random-init baseline.

    Args:
        model_or_activations: A model, a list of models, an ``Activations`` or a mapping (see
            above).
        tokens: Token ids ``[batch, pos]``.
        config: The settings (:class:`~nopelens.probes.ProbeConfig`: sites, layers, feature
            families, probe kinds, seeds, splits, controls, penalties, ...); None uses the
            defaults.
        **overrides: Any :class:`~nopelens.probes.ProbeConfig` field by name (``sites``,
            ``layers``, ``features``, ``probes``, ``seeds``, ``test_fraction``,
            ``val_fraction``, ``splits``, ``extrapolate_from``, ``init_seeds``, ``equal_dim``,
            ``centered``, ``drop_first``, ``include_embed``, ``control_task``,
            ``shuffled_control``, ``random_init_baseline``, ``alphas``, ``lambdas``,
            ``max_iter``, ``mlp_hidden``, ``mlp_lr``, ``mlp_weight_decay``, ``mlp_max_epochs``,
            ``mlp_patience``, ``confidence``, ``batch_size``), applied on top of ``config``.

    Returns:
        A :class:`~nopelens.probes.ProbeReport`.

    Raises:
        ValueError: For any invalid setting (all listed at once) or input, before any probe is
            fitted.

    Examples:
        >>> from nopelens.models import build_model
        >>> from nopelens.measure import random_tokens
        >>> model = build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> report = probe_positions(model, random_tokens(12, 8, 20), seeds=(0, 1),
        ...                          features="variance", probes="isotonic", equal_dim=None)
        >>> df = report.to_frame()
        >>> sorted(df["layer"].unique()), sorted(df["target"].unique())
        (['0', 'embed'], ['control', 'position', 'shuffled'])
        >>> cfg = ProbeConfig(features="variance", probes="isotonic", equal_dim=None)
        >>> again = probe_positions(model, random_tokens(12, 8, 20), config=cfg, seeds=(0, 1))
        >>> again.results["value"].equals(report.results["value"])
        True
    """
    config = _resolve_config(config, overrides)
    subjects, description = gather_subjects(model_or_activations, tokens, config)
    per_seed = pd.DataFrame(_probe_subjects(subjects, config))
    per_seed["init_seed"] = per_seed["init_seed"].astype("Int64")
    return ProbeReport(
        results=aggregate_seeds(per_seed, config.confidence),
        per_seed=per_seed,
        config=_report_config(description, subjects, config),
    )


def _resolve_config(config: ProbeConfig | None, overrides: dict[str, Any]) -> ProbeConfig:
    """``config`` (or the defaults) with the keyword overrides applied, validated."""
    if config is not None and not isinstance(config, ProbeConfig):
        raise InvalidParameterError(
            f"The 'config' parameter of {_FUNC} must be a ProbeConfig or None. "
            f"Got {type(config).__name__} instead."
        )
    with reported_as(_FUNC):
        return (config or ProbeConfig()).replace(**overrides)


def _probe_subjects(subjects: list[Subject], config: ProbeConfig) -> list[dict[str, Any]]:
    """The per-seed rows of every layer of every subject, in report order."""
    rows: list[dict[str, Any]] = []
    n_layers = sum(len(subject.layers) for subject in subjects)
    logger.info("%d layers to probe", n_layers, extra={"progress_total": n_layers})
    for subject in subjects:
        for layer in subject.layers:
            logger.info(
                "probing %s (init seed %s) %s/%s",
                subject.label,
                subject.init_seed,
                layer.site,
                layer.layer,
            )
            rows.extend(
                probe_layer(subject.label, subject.init_seed, layer, subject.tokens, config)
            )
    return rows


def _report_config(
    description: dict[str, Any], subjects: list[Subject], config: ProbeConfig
) -> dict[str, Any]:
    """The report's JSON-able record of the model, the sizes and the settings of the run."""
    first = subjects[0].layers[0].hidden
    return {
        **description,
        "n_sequences": int(first.shape[0]),
        "n_positions": int(first.shape[1]),
        "sites": list(config.sites),
        **{name: getattr(config, name) for name in _REPORTED},
        "splits": (
            None
            if config.split_list is None
            else [dataclasses.asdict(s) for s in config.split_list]
        ),
        "models": [subject.label for subject in subjects],
    }
