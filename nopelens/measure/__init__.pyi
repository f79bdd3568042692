"""Measure the neighborhood pattern at every hook point."""

from .ablation import (
    ablation_hooks as ablation_hooks,
    check_ablation as check_ablation,
    parse_ablation as parse_ablation,
    prefix_permutation as prefix_permutation,
    remove_residual_hooks as remove_residual_hooks,
    shuffle_prefix_hooks as shuffle_prefix_hooks,
)
from .activations import (
    Activations as Activations,
    check_layers as check_layers,
    check_sites as check_sites,
    check_tokens as check_tokens,
    collect_activations as collect_activations,
    iter_activations as iter_activations,
)
from .chance import (
    chance_level as chance_level,
    permuted_scores as permuted_scores,
)
from .concordance import (
    CONCORDANCE_CHANCE as CONCORDANCE_CHANCE,
    concordance_by_position as concordance_by_position,
    concordance_counts as concordance_counts,
    concordance_triples as concordance_triples,
    neighborhood_concordance as neighborhood_concordance,
    neighborhood_counts as neighborhood_counts,
)
from .hooks import (
    SITES as SITES,
    hook_name as hook_name,
)
from .intervals import (
    CI_METHODS as CI_METHODS,
    mean_interval as mean_interval,
)
from .similarity import (
    adjacency_chance as adjacency_chance,
    adjacency_hits as adjacency_hits,
    adjacency_probability as adjacency_probability,
    distance_profile as distance_profile,
    nearest_neighbor as nearest_neighbor,
    self_similarity as self_similarity,
)
from .text import (
    iter_text_windows as iter_text_windows,
    stdlib_sources as stdlib_sources,
    text_windows as text_windows,
)
from .tokens import (
    random_tokens as random_tokens,
)
from .variance import (
    fit_inverse_law as fit_inverse_law,
    position_variance as position_variance,
)
