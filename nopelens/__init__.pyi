"""nopelens: where do causal transformers without positional encodings keep position?"""

from . import experiments as experiments
from . import measure as measure
from . import models as models
from . import probes as probes
from . import theory as theory
from . import training as training
from . import viz as viz
from .experiments import (
    PRESETS as PRESETS,
)
from .experiments import (
    load_grid as load_grid,
)
from .experiments import (
    reproduce as reproduce,
)
from .experiments import (
    summarize as summarize,
)
from .experiments import (
    sweep as sweep,
)
from .measure import (
    CONCORDANCE_CHANCE as CONCORDANCE_CHANCE,
)
from .measure import (
    Activations as Activations,
)
from .measure import (
    AnalysisReport as AnalysisReport,
)
from .measure import (
    adjacency_chance as adjacency_chance,
)
from .measure import (
    adjacency_probability as adjacency_probability,
)
from .measure import (
    analyze as analyze,
)
from .measure import (
    collect_activations as collect_activations,
)
from .measure import (
    distance_profile as distance_profile,
)
from .measure import (
    neighborhood_concordance as neighborhood_concordance,
)
from .measure import (
    position_variance as position_variance,
)
from .measure import (
    random_tokens as random_tokens,
)
from .measure import (
    remove_residual_hooks as remove_residual_hooks,
)
from .measure import (
    self_similarity as self_similarity,
)
from .measure import (
    shuffle_prefix_hooks as shuffle_prefix_hooks,
)
from .models import (
    build_model as build_model,
)
from .models import (
    is_nope as is_nope,
)
from .models import (
    load_model as load_model,
)
from .models import (
    model_spec as model_spec,
)
from .models import (
    save_model as save_model,
)
from .probes import (
    ProbeReport as ProbeReport,
)
from .probes import (
    SequenceSplit as SequenceSplit,
)
from .probes import (
    probe_positions as probe_positions,
)
from .theory import (
    FirstLayerTheory as FirstLayerTheory,
)
from .theory import (
    attention_sharpness_study as attention_sharpness_study,
)
from .theory import (
    decompose_first_layer as decompose_first_layer,
)
from .theory import (
    first_layer_theory as first_layer_theory,
)
from .theory import (
    uniform_attention_similarity as uniform_attention_similarity,
)
from .theory import (
    uniform_residual_similarity as uniform_residual_similarity,
)
from .training import (
    TASKS as TASKS,
)
from .training import (
    TrainConfig as TrainConfig,
)
from .training import (
    TrainResult as TrainResult,
)
from .training import (
    build_task_model as build_task_model,
)
from .training import (
    get_task as get_task,
)
from .training import (
    load_initial_and_final as load_initial_and_final,
)
from .training import (
    train as train,
)
from .viz import (
    write_dashboard as write_dashboard,
)

__version__: str
