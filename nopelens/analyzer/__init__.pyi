"""The analyzer: every layer's neighborhood pattern, with chance levels and intervals."""

from .analysis import (
    SCORE_COLUMNS as SCORE_COLUMNS,
    AnalysisReport as AnalysisReport,
    analyze as analyze,
)
from .theory_by_layer import (
    LayerTheory as LayerTheory,
    layer_theory as layer_theory,
)
from .theory_fit import (
    FIT_COLUMNS as FIT_COLUMNS,
)
from .theory_plan import (
    LAYER_PREDICTIONS as LAYER_PREDICTIONS,
    LAYER_THEORY_SITES as LAYER_THEORY_SITES,
)
from .theory_study import (
    STUDY_COLUMNS as STUDY_COLUMNS,
    STUDY_SCALES as STUDY_SCALES,
    layer_theory_sharpness as layer_theory_sharpness,
)
