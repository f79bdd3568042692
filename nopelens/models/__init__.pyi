"""Build, inspect and store TransformerLens models with or without positional information."""

from .build import (
    build_model as build_model,
    instantiate as instantiate,
    model_spec_from_kwargs as model_spec_from_kwargs,
)
from .checkpoint import load_model as load_model, save_model as save_model
from .inspect import (
    describe_model as describe_model,
    is_nope as is_nope,
    model_spec as model_spec,
    positional_kind as positional_kind,
    spec_of as spec_of,
)
from .protocol import HookedModel as HookedModel
