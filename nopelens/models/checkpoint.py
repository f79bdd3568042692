"""Checkpoints: one file with the model spec and the weights, sealed by a checksum.

A checkpoint is a ``torch.save`` archive of plain data that loads with ``weights_only=True``
(nothing is unpickled into code), written atomically (temporary file, fsync, rename):

* ``spec_json``: the :class:`~nopelens.ModelSpec` (JSON). It is the only description of the model
  that is read back, and it is validated against the spec's allowlist: a checkpoint cannot name a
  tokenizer, remote code, a hub checkpoint or any other ``HookedTransformerConfig`` field that
  would make TransformerLens fetch or run something.
* ``state_dict``: the weights, loaded strictly into the model rebuilt from the spec.
* ``sha256``: a SHA-256 over everything else, verified before anything is built, so a flipped byte
  or an edited field is refused instead of loading wrong weights.

Format 1 (nopelens 0.1) files have no checksum; they still load (their spec goes through the same
validation; their full TransformerLens config is ignored) with a logged warning.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from nopelens.files import DIGEST_KEY, load_sealed, save_sealed
from nopelens.models.build import (
    build_model,  # noqa: F401  (doctests)
    device_problem,
    instantiate,
    model_spec_from_kwargs,
)
from nopelens.models.inspect import is_nope, spec_of
from nopelens.models.protocol import HookedModel
from nopelens.spec import ModelSpec
from nopelens.validation import InvalidParameterError

logger = logging.getLogger(__name__)

_FORMAT = "nopelens-model"
_FORMAT_VERSION = 2


def save_model(model: HookedModel, path: str | os.PathLike[str]) -> Path:
    """Save the spec and weights of ``model`` to one file, atomically, with a checksum.

    Args:
        model: A ``HookedTransformer`` built by :func:`~nopelens.build_model`, or any
            ``HookedTransformer`` whose config nopelens can describe as a
            :class:`~nopelens.ModelSpec` (else a ValueError names the fields it cannot store).
        path: Destination file, conventionally ``*.pt``; parent folders are created.

    Returns:
        The path written.

    Examples:
        >>> import tempfile, pathlib, torch
        >>> model = build_model(n_layers=1, d_model=8, n_heads=2, d_vocab=5, n_ctx=4)
        >>> path = save_model(model, pathlib.Path(tempfile.mkdtemp()) / "m.pt")
        >>> tokens = torch.tensor([[1, 2, 3]])
        >>> bool(torch.equal(load_model(path)(tokens), model(tokens)))
        True
    """
    spec = spec_of(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if spec.positional == "none":  # a zero, frozen W_pos (the TransformerLens NoPE recipe)
        state.pop("pos_embed.W_pos", None)
    payload = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "spec_json": json.dumps(spec.to_dict()),
        "nope": is_nope(model),
        "state_dict": state,
    }
    return save_sealed(payload, path)


def load_model(
    path: str | os.PathLike[str], device: str | torch.device | None = None
) -> HookedModel:
    """Load a model written by :func:`save_model`, with identical weights.

    The checksum is verified first; the model is then rebuilt from the validated spec (never from
    config fields in the file) and filled with plain ``load_state_dict`` (strict), never
    TransformerLens' folding loader, so the logits are bit-identical to the saved model's.

    Args:
        path: A file written by :func:`save_model`.
        device: Where to put the model; defaults to the CPU.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is truncated, corrupt, modified, not a nopelens checkpoint, or
            describes a model nopelens does not allow.
    """
    path = Path(path)
    if device is not None and (problem := device_problem(device, "load_model")) is not None:
        raise InvalidParameterError(problem)
    payload = load_sealed(path, what="nopelens checkpoint")
    if payload.get("format") != _FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a nopelens checkpoint (written by nopelens.save_model)."
        )
    version = payload.get("format_version")
    if version == 1:
        logger.warning("%s: format 1 checkpoint (nopelens 0.1) has no checksum", path)
        spec = _spec_v1(payload, path)
    elif version == _FORMAT_VERSION:
        if DIGEST_KEY not in payload:
            raise ValueError(f"{str(path)!r} has no checksum; refusing to load it.")
        spec = _spec_v2(payload, path)
    else:
        raise ValueError(
            f"{str(path)!r} has checkpoint format version {version!r}; this nopelens reads "
            f"versions 1 and {_FORMAT_VERSION}."
        )
    model: Any = instantiate(spec, init=False)
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} has no state_dict.")
    if spec.positional == "none":  # format 1 stored a zero W_pos for some NoPE models
        state = {k: v for k, v in state.items() if k != "pos_embed.W_pos"}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{str(path)!r} does not match its own spec: {err}") from None
    return model.to(torch.device(device or "cpu"), print_details=False).eval()


def _spec_v2(payload: dict[str, Any], path: Path) -> ModelSpec:
    try:
        data = json.loads(payload["spec_json"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{str(path)!r} has no readable spec: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} has a spec that is not a JSON object.")
    func = f"the checkpoint {str(path)!r}"
    spec = ModelSpec.from_dict(data, func=func)
    problems = spec.problems(func)
    if problems:
        raise ValueError("; ".join(problems))
    return spec


def _spec_v1(payload: dict[str, Any], path: Path) -> ModelSpec:
    """A format-1 file: rebuild from its ``build_model`` arguments, validated like new ones."""
    try:
        kwargs = json.loads(payload["spec_json"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{str(path)!r} has no readable spec: {err}") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"{str(path)!r} has a spec that is not a JSON object.")
    kwargs.pop("device", None)
    return model_spec_from_kwargs(kwargs)
