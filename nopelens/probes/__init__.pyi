"""Position probes: features (hidden, cosine, variance), fitted probes, splits and reports."""

from .features import (
    RELATIVE_ALPHAS as RELATIVE_ALPHAS,
)
from .features import (
    chance_levels as chance_levels,
)
from .features import (
    cosine_features as cosine_features,
)
from .features import (
    logistic_predict as logistic_predict,
)
from .features import regression_metrics as regression_metrics
from .features import (
    ridge_predict as ridge_predict,
)
from .features import (
    standardize as standardize,
)
from .probe import (
    ProbeReport as ProbeReport,
)
from .probe import (
    SequenceSplit as SequenceSplit,
)
from .probe import (
    probe_positions as probe_positions,
)
from .probe import (
    split_sequences as split_sequences,
)
