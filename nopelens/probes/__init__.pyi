"""Position probes: features (hidden, cosine, variance), fitted probes, splits and reports."""

from .config import ProbeConfig as ProbeConfig
from .features import (
    FEATURE_FAMILIES as FEATURE_FAMILIES,
    cosine_features as cosine_features,
    family_features as family_features,
    hidden_features as hidden_features,
    pca_projection as pca_projection,
    polynomial_features as polynomial_features,
    standardize as standardize,
    variance_features as variance_features,
)
from .fitting import (
    DEFAULT_PROBES as DEFAULT_PROBES,
    LAMBDAS as LAMBDAS,
    PROBES as PROBES,
    RELATIVE_ALPHAS as RELATIVE_ALPHAS,
    isotonic_predict as isotonic_predict,
    logistic_predict as logistic_predict,
    ridge_predict as ridge_predict,
)
from .metrics import (
    chance_levels as chance_levels,
    classification_chance as classification_chance,
    classification_metrics as classification_metrics,
    regression_chance as regression_chance,
    regression_metrics as regression_metrics,
)
from .mlp import mlp_predict as mlp_predict
from .positions import probe_positions as probe_positions
from .report import ProbeReport as ProbeReport
from .splits import SequenceSplit as SequenceSplit, split_sequences as split_sequences
from .targets import TARGETS as TARGETS
