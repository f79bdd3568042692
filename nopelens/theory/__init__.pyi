"""The attention-pattern theory: closed forms, the Gram model, decompositions and sharpness."""

from .attention import (
    attention_entropy as attention_entropy,
    head_outputs as head_outputs,
    max_attention as max_attention,
    sharpness_summary as sharpness_summary,
    uniform_entropy as uniform_entropy,
    uniform_pattern as uniform_pattern,
    value_outputs as value_outputs,
)
from .closed_forms import (
    gram_to_cosine as gram_to_cosine,
    uniform_attention_similarity as uniform_attention_similarity,
    uniform_residual_similarity as uniform_residual_similarity,
    uniform_variance as uniform_variance,
)
from .decomposition import (
    BlockDecomposition as BlockDecomposition,
    FirstLayerDecomposition as FirstLayerDecomposition,
    check_model as check_model,
    decompose_blocks as decompose_blocks,
    decompose_first_layer as decompose_first_layer,
)
from .first_layer import (
    PREDICTIONS as PREDICTIONS,
    THEORY_SITES as THEORY_SITES,
    FirstLayerTheory as FirstLayerTheory,
    SiteTheory as SiteTheory,
    first_layer_closed_form as first_layer_closed_form,
    first_layer_gram as first_layer_gram,
    first_layer_theory as first_layer_theory,
)
from .fit import (
    METRIC_COLUMNS as METRIC_COLUMNS,
    fit_metrics as fit_metrics,
    site_metric_rows as site_metric_rows,
)
from .gram import (
    GramParameters as GramParameters,
    center_hidden_dims as center_hidden_dims,
    estimate_gram_parameters as estimate_gram_parameters,
    predict_gram as predict_gram,
    same_token_matrix as same_token_matrix,
)
from .kim import (
    KIM_SITES as KIM_SITES,
    kim_closed_form as kim_closed_form,
    kim_input_gram as kim_input_gram,
    kim_layer as kim_layer,
    kim_model as kim_model,
    kim_output_scale as kim_output_scale,
    kim_recursion as kim_recursion,
)
from .mlp_kernel import (
    hermite_coefficients as hermite_coefficients,
    mlp_moments as mlp_moments,
)
from .propagation import (
    MLP_MODELS as MLP_MODELS,
    BlockPrediction as BlockPrediction,
    GramState as GramState,
    attention_step as attention_step,
    block_step as block_step,
    initial_state as initial_state,
    mlp_step as mlp_step,
    value_traces as value_traces,
)
from .sharpness import (
    DEFAULT_SCALES as DEFAULT_SCALES,
    attention_sharpness_study as attention_sharpness_study,
    query_scale_hooks as query_scale_hooks,
)
from .weights import (
    MODELLED_ACTIVATIONS as MODELLED_ACTIVATIONS,
    MODELLED_NORMS as MODELLED_NORMS,
    AttentionWeights as AttentionWeights,
    BlockWeights as BlockWeights,
    MLPWeights as MLPWeights,
    NormWeights as NormWeights,
    block_weights as block_weights,
    unmodelled_reason as unmodelled_reason,
)
