"""Build, inspect and store TransformerLens models with or without positional information."""

from .build import (
    ATTENTION as ATTENTION,
)
from .build import (
    INIT_MODES as INIT_MODES,
)
from .build import (
    POSITIONAL as POSITIONAL,
)
from .build import (
    build_model as build_model,
)
from .build import (
    describe_model as describe_model,
)
from .build import (
    is_nope as is_nope,
)
from .build import (
    load_model as load_model,
)
from .build import (
    model_spec as model_spec,
)
from .build import (
    positional_kind as positional_kind,
)
from .build import (
    save_model as save_model,
)
from .build import (
    validate_model_config as validate_model_config,
)
