"""Measure the neighborhood pattern at every hook point."""

from .ablation import (
    ablation_hooks as ablation_hooks,
)
from .ablation import (
    check_ablation as check_ablation,
)
from .ablation import (
    parse_ablation as parse_ablation,
)
from .ablation import (
    prefix_permutation as prefix_permutation,
)
from .ablation import (
    remove_residual_hooks as remove_residual_hooks,
)
from .ablation import (
    shuffle_prefix_hooks as shuffle_prefix_hooks,
)
from .activations import (
    Activations as Activations,
)
from .activations import (
    check_layers as check_layers,
)
from .activations import (
    check_sites as check_sites,
)
from .activations import (
    check_tokens as check_tokens,
)
from .activations import (
    collect_activations as collect_activations,
)
from .activations import (
    hook_name as hook_name,
)
from .activations import (
    iter_activations as iter_activations,
)
from .analysis import (
    SCORE_COLUMNS as SCORE_COLUMNS,
)
from .analysis import (
    AnalysisReport as AnalysisReport,
)
from .analysis import (
    analyze as analyze,
)
from .similarity import (
    CONCORDANCE_CHANCE as CONCORDANCE_CHANCE,
)
from .similarity import (
    adjacency_chance as adjacency_chance,
)
from .similarity import (
    adjacency_hits as adjacency_hits,
)
from .similarity import (
    adjacency_probability as adjacency_probability,
)
from .similarity import concordance_by_position as concordance_by_position
from .similarity import (
    concordance_triples as concordance_triples,
)
from .similarity import (
    distance_profile as distance_profile,
)
from .similarity import nearest_neighbor as nearest_neighbor
from .similarity import (
    neighborhood_concordance as neighborhood_concordance,
)
from .similarity import (
    self_similarity as self_similarity,
)
from .tokens import (
    random_tokens as random_tokens,
)
from .variance import (
    fit_inverse_law as fit_inverse_law,
)
from .variance import (
    position_variance as position_variance,
)
