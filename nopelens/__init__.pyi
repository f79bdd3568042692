"""nopelens: where do causal transformers without positional encodings keep position?"""

from . import (
    analyzer as analyzer,
    experiments as experiments,
    measure as measure,
    models as models,
    probes as probes,
    spec as spec,
    theory as theory,
    training as training,
    viz as viz,
)
from .experiments import (
    PRESETS as PRESETS,
    load_grid as load_grid,
    reproduce as reproduce,
    summarize as summarize,
    sweep as sweep,
)
from .measure import (
    CONCORDANCE_CHANCE as CONCORDANCE_CHANCE,
    Activations as Activations,
    adjacency_chance as adjacency_chance,
    adjacency_probability as adjacency_probability,
    collect_activations as collect_activations,
    distance_profile as distance_profile,
    neighborhood_concordance as neighborhood_concordance,
    position_variance as position_variance,
    random_tokens as random_tokens,
    remove_residual_hooks as remove_residual_hooks,
    self_similarity as self_similarity,
    shuffle_prefix_hooks as shuffle_prefix_hooks,
    stdlib_sources as stdlib_sources,
    text_windows as text_windows,
)
from .models import (
    build_model as build_model,
    is_nope as is_nope,
    load_model as load_model,
    load_pretrained as load_pretrained,
    model_spec as model_spec,
    nope_layers as nope_layers,
    save_model as save_model,
    strip_positional as strip_positional,
)
from .probes import (
    ProbeConfig as ProbeConfig,
    ProbeReport as ProbeReport,
    SequenceSplit as SequenceSplit,
    probe_positions as probe_positions,
)
from .theory import (
    BlockDecomposition as BlockDecomposition,
    FirstLayerTheory as FirstLayerTheory,
    attention_sharpness_study as attention_sharpness_study,
    decompose_blocks as decompose_blocks,
    decompose_first_layer as decompose_first_layer,
    first_layer_theory as first_layer_theory,
    uniform_attention_similarity as uniform_attention_similarity,
    uniform_residual_similarity as uniform_residual_similarity,
)
from .training import (
    TASKS as TASKS,
    TrainConfig as TrainConfig,
    TrainResult as TrainResult,
    build_task_model as build_task_model,
    get_task as get_task,
    load_initial_and_final as load_initial_and_final,
    train as train,
)
from .viz import (
    write_dashboard as write_dashboard,
)

__version__: str
from .analyzer import (
    AnalysisReport as AnalysisReport,
    LayerTheory as LayerTheory,
    analyze as analyze,
    layer_theory as layer_theory,
)
from .spec import ModelSpec as ModelSpec
