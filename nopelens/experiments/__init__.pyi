"""Experiments built from the layers below: hyperparameter sweeps and the reproduction."""

from .reproduction import (
    PROFILES as PROFILES,
)
from .reproduction import (
    load_results as load_results,
)
from .reproduction import (
    part_sections as part_sections,
)
from .reproduction import (
    reproduce as reproduce,
)
from .sweeps import (
    PRESETS as PRESETS,
)
from .sweeps import (
    RESULTS_FILE as RESULTS_FILE,
)
from .sweeps import config_id as config_id
from .sweeps import (
    expand_grid as expand_grid,
)
from .sweeps import (
    failure_ranges as failure_ranges,
)
from .sweeps import (
    init_worker as init_worker,
)
from .sweeps import (
    load_grid as load_grid,
)
from .sweeps import (
    override_grid as override_grid,
)
from .sweeps import preset as preset
from .sweeps import read_records as read_records
from .sweeps import (
    run_config as run_config,
)
from .sweeps import (
    summarize as summarize,
)
from .sweeps import (
    sweep as sweep,
)
