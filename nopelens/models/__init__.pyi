"""Build, inspect and store TransformerLens models with or without positional information."""

from .build import (
    build_model as build_model,
    device_problem as device_problem,
    dtype_problem as dtype_problem,
    fixed_parameters as fixed_parameters,
    instantiate as instantiate,
    model_spec_from_kwargs as model_spec_from_kwargs,
    redraw_weights as redraw_weights,
)
from .checkpoint import load_model as load_model, save_model as save_model
from .inspect import (
    describe_model as describe_model,
    is_nope as is_nope,
    model_spec as model_spec,
    positional_kind as positional_kind,
    spec_of as spec_of,
)
from .positional import nope_layers as nope_layers, strip_positional as strip_positional
from .pretrained import (
    gemma_tl_config as gemma_tl_config,
    hub_offline as hub_offline,
    known_model_names as known_model_names,
    load_pretrained as load_pretrained,
)
from .protocol import HookedModel as HookedModel
from .tiny_hf import write_tiny_hf_model as write_tiny_hf_model
