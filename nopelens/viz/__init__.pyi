"""Figures (results in, plotly figure out) and the self-contained offline dashboard."""

from .attention import (
    ATTENTION_COLORSCALE as ATTENTION_COLORSCALE,
    attention_pattern_figure as attention_pattern_figure,
)
from .dashboard import (
    render_dashboard as render_dashboard,
    write_dashboard as write_dashboard,
)
from .display import (
    show as show,
    static_image as static_image,
)
from .layer_theory import (
    PREDICTION_LABELS as PREDICTION_LABELS,
    layer_fit_figure as layer_fit_figure,
    layer_sharpness_figure as layer_sharpness_figure,
    layer_theory_figure as layer_theory_figure,
)
from .markdown import (
    RawHtml as RawHtml,
    markdown_to_html as markdown_to_html,
)
from .probes import (
    probe_figure as probe_figure,
)
from .scores import (
    mark_nope_layers as mark_nope_layers,
    nope_layer_labels as nope_layer_labels,
    score_by_layer_figure as score_by_layer_figure,
)
from .sections import (
    report_sections as report_sections,
    report_summary as report_summary,
)
from .similarity import (
    distance_profile_figure as distance_profile_figure,
    similarity_heatmap_figure as similarity_heatmap_figure,
)
from .style import (
    DIFFERENCE_COLORSCALE as DIFFERENCE_COLORSCALE,
    METRIC_LABELS as METRIC_LABELS,
    SIMILARITY_COLORSCALE as SIMILARITY_COLORSCALE,
)
from .sweeps import (
    sweep_heatmap_figure as sweep_heatmap_figure,
    sweep_line_figure as sweep_line_figure,
)
from .theory import (
    theory_figure as theory_figure,
)
from .variance import (
    variance_figure as variance_figure,
)
