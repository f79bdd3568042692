"""The analyzer: every layer's neighborhood pattern, with chance levels and intervals."""

from .analysis import (
    SCORE_COLUMNS as SCORE_COLUMNS,
    AnalysisReport as AnalysisReport,
    analyze as analyze,
)
