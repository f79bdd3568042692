"""The models that get probed: a model, its random-init twins, copies at other init seeds.

A probe score of one model at one initialisation says nothing about how much it moves from one
initialisation to the next. :func:`rebuild_at_seed` rebuilds a model's architecture (from
:func:`~nopelens.models.model_spec`) at any init seed, :func:`random_init_twin` the initialisation
a trained model started from, and :func:`models_across_seeds` lists the ``(label, init seed,
model)`` triples :func:`~nopelens.probes.probe_positions` probes for one or several given models
and the ``init_seeds`` setting.

TransformerLens is only imported inside these functions (through :mod:`nopelens.models`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nopelens.models import HookedModel

_FUNC = "probe_positions"


def model_description(model: HookedModel) -> dict[str, Any]:
    """``{"label": describe_model(model), **model_spec(model)}``, or the class name alone."""
    from nopelens.models import describe_model, model_spec

    try:
        return {"label": describe_model(model), **model_spec(model)}
    except Exception:  # a foreign model without the fields model_spec reads
        return {"label": type(model).__name__}


def init_seed_of(model: HookedModel) -> int | None:
    """The seed ``model`` was initialised with (``model_spec(model)["seed"]``), None if unknown."""
    from nopelens.models import model_spec

    try:
        seed = model_spec(model).get("seed")
    except Exception:  # a foreign model without the fields model_spec reads
        return None
    return seed if isinstance(seed, int) else None


def rebuild_at_seed(model: HookedModel, seed: int, setting: str) -> HookedModel:
    """``model``'s architecture at random init with init seed ``seed`` (on ``model``'s device).

    Args:
        model: A model :func:`~nopelens.models.build_model` can rebuild from its spec.
        seed: The initialisation seed.
        setting: The setting that asked for the rebuild (named in the error message).

    Raises:
        ValueError: If ``build_model`` cannot rebuild the model from its spec.
    """
    from nopelens.models import build_model, model_spec

    spec = model_spec(model)
    spec["seed"] = seed
    spec.pop("device", None)
    device = getattr(model.cfg, "device", "cpu")
    try:
        return build_model(**spec, device=device)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"The {setting!r} parameter of {_FUNC} needs a model that build_model can rebuild "
            f"from model_spec(model) ({err}). Pass {setting}="
            f"{'False' if setting == 'random_init_baseline' else 'None'}."
        ) from err


def _same_weights(a: HookedModel, b: HookedModel) -> bool:
    mine, theirs = a.state_dict(), b.state_dict()
    return mine.keys() == theirs.keys() and all(
        torch.equal(mine[k], theirs[k].to(mine[k].device)) for k in mine
    )


def random_init_twin(model: HookedModel) -> HookedModel | None:
    """The same architecture at random init, or None when ``model`` is at its own random init.

    The twin is built by :func:`~nopelens.models.build_model` from
    :func:`~nopelens.models.model_spec` with the model's seed (0 when it has none), i.e. the
    initialisation training started from when the model was built by ``build_model``.

    Raises:
        ValueError: If ``build_model`` cannot rebuild the model from its spec.
    """
    seed = init_seed_of(model)
    twin = rebuild_at_seed(model, 0 if seed is None else seed, "random_init_baseline")
    if seed is not None and _same_weights(model, twin):
        return None
    return twin


def models_across_seeds(
    models: Sequence[HookedModel],
    init_seeds: tuple[int, ...] | None,
    random_init_baseline: bool,
) -> tuple[list[tuple[str, int | None, HookedModel]], bool]:
    """The ``(label, init seed, model)`` triples to probe, and whether the given are random-init.

    - One model, no ``init_seeds``: the model (``"given"``) and, for a trained model with
      ``random_init_baseline``, its twin at its own seed (``"random_init"``).
    - Several models (of one architecture, distinct init seeds): each model and, for the trained
      ones, each one's twin.
    - One model and ``init_seeds``: a model at its own random init is replaced by its
      architecture rebuilt at every init seed (``"given"``); a trained model keeps its place and
      its random-init baselines are rebuilt at every init seed (``"random_init"``).

    Raises:
        ValueError: If several models are not one architecture with distinct known init seeds,
            ``init_seeds`` comes with several models, or ``init_seeds`` is given for a trained
            model without ``random_init_baseline``.
    """
    if len(models) > 1:
        _check_model_family(models, init_seeds)
    out: list[tuple[str, int | None, HookedModel]] = []
    random_flags = []
    for model in models:
        own_seed = init_seed_of(model)
        needs_twin = random_init_baseline or init_seeds is not None
        twin = random_init_twin(model) if needs_twin else None
        is_random = needs_twin and twin is None
        random_flags.append(is_random)
        if init_seeds is None:
            out.append(("given", own_seed, model))
            if random_init_baseline and twin is not None:
                out.append(("random_init", own_seed, twin))
            continue
        if not is_random and not random_init_baseline:
            raise ValueError(
                f"The 'init_seeds' parameter of {_FUNC} rebuilds a trained model's random-init "
                f"baselines at these seeds, which needs random_init_baseline=True. Got "
                f"random_init_baseline=False."
            )
        label = "given" if is_random else "random_init"
        if not is_random:
            out.append(("given", own_seed, model))
        for seed in init_seeds:
            same = is_random and seed == own_seed
            out.append((label, seed, model if same else rebuild_at_seed(model, seed, "init_seeds")))
    return out, all(random_flags)


def _check_model_family(models: Sequence[HookedModel], init_seeds: tuple[int, ...] | None) -> None:
    """Several models must share one architecture and have distinct, known init seeds."""
    from nopelens.models import model_spec

    where = f"The 'model_or_activations' parameter of {_FUNC}"
    if init_seeds is not None:
        raise ValueError(
            f"The 'init_seeds' parameter of {_FUNC} rebuilds one model at several seeds; with a "
            f"list of {len(models)} models (their init seeds are read from their specs) pass "
            f"init_seeds=None."
        )
    seeds = [init_seed_of(model) for model in models]
    if None in seeds or len(set(seeds)) != len(seeds):
        raise ValueError(
            f"{where} must list models with distinct init seeds (model_spec(model)['seed'], set "
            f"by build_model(seed=...)) so that intervals can span them. Got seeds {seeds}."
        )
    specs = []
    for model in models:
        spec = dict(model_spec(model))
        spec.pop("seed", None)
        spec.pop("device", None)
        specs.append(spec)
    if any(spec != specs[0] for spec in specs[1:]):
        differ = sorted(k for k in specs[0] if any(s.get(k) != specs[0][k] for s in specs[1:]))
        raise ValueError(
            f"{where} must list models of one architecture (they differ only in init seed and "
            f"training). Their specs differ in {differ}."
        )
