"""Figures (results in, plotly figure out) and the self-contained offline dashboard."""

from .dashboard import (
    render_dashboard as render_dashboard,
)
from .dashboard import (
    write_dashboard as write_dashboard,
)
from .figures import (
    distance_profile_figure as distance_profile_figure,
)
from .figures import (
    probe_figure as probe_figure,
)
from .figures import (
    score_by_layer_figure as score_by_layer_figure,
)
from .figures import (
    similarity_heatmap_figure as similarity_heatmap_figure,
)
from .figures import (
    sweep_heatmap_figure as sweep_heatmap_figure,
)
from .figures import (
    sweep_line_figure as sweep_line_figure,
)
from .figures import (
    theory_figure as theory_figure,
)
from .figures import (
    variance_figure as variance_figure,
)
