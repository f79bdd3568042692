"""The attention-pattern theory: closed forms, the Gram model, decompositions and sharpness."""

from .attention import (
    attention_entropy as attention_entropy,
)
from .attention import (
    head_outputs as head_outputs,
)
from .attention import max_attention as max_attention
from .attention import (
    sharpness_summary as sharpness_summary,
)
from .attention import uniform_entropy as uniform_entropy
from .attention import (
    uniform_pattern as uniform_pattern,
)
from .attention import (
    value_outputs as value_outputs,
)
from .first_layer import (
    DEFAULT_SCALES as DEFAULT_SCALES,
)
from .first_layer import (
    METRIC_COLUMNS as METRIC_COLUMNS,
)
from .first_layer import (
    FirstLayerTheory as FirstLayerTheory,
)
from .first_layer import (
    attention_sharpness_study as attention_sharpness_study,
)
from .first_layer import (
    decompose_first_layer as decompose_first_layer,
)
from .first_layer import (
    estimate_gram_parameters as estimate_gram_parameters,
)
from .first_layer import (
    first_layer_theory as first_layer_theory,
)
from .first_layer import (
    fit_metrics as fit_metrics,
)
from .first_layer import (
    gram_to_cosine as gram_to_cosine,
)
from .first_layer import predict_gram as predict_gram
from .first_layer import (
    query_scale_hooks as query_scale_hooks,
)
from .first_layer import (
    same_token_matrix as same_token_matrix,
)
from .first_layer import (
    uniform_attention_similarity as uniform_attention_similarity,
)
from .first_layer import (
    uniform_residual_similarity as uniform_residual_similarity,
)
from .first_layer import (
    uniform_variance as uniform_variance,
)
