"""Experiments built from the layers below: hyperparameter sweeps and the reproduction."""

from .distributed import ray_runtime as ray_runtime, run_on_ray as run_on_ray
from .grid import (
    ALIASES as ALIASES,
    DEFAULTS as DEFAULTS,
    MODEL_KEYS as MODEL_KEYS,
    config_id as config_id,
    data_seed_of as data_seed_of,
    expand_grid as expand_grid,
    load_grid as load_grid,
    override_grid as override_grid,
)
from .pipeline import Part as Part, PartResult as PartResult, part_config as part_config
from .presets import PRESETS as PRESETS, preset as preset
from .profiles import PROFILES as PROFILES, Profile as Profile
from .records import (
    RESULTS_FILE as RESULTS_FILE,
    read_records as read_records,
    read_results as read_results,
)
from .reproduction import (
    PARTS as PARTS,
    load_results as load_results,
    part_sections as part_sections,
    reproduce as reproduce,
)
from .runner import (
    check_sweep_memory as check_sweep_memory,
    config_tokens as config_tokens,
    run_config as run_config,
    run_configs as run_configs,
    sweep as sweep,
)
from .sources import (
    DEFAULT_SEQ_LEN as DEFAULT_SEQ_LEN,
    STDLIB as STDLIB,
    TEXT_SUFFIXES as TEXT_SUFFIXES,
    Inputs as Inputs,
    canonical_source as canonical_source,
    config_model_inputs as config_model_inputs,
    is_training_run as is_training_run,
    load_source as load_source,
    model_inputs as model_inputs,
    source_config_problems as source_config_problems,
    source_fingerprint as source_fingerprint,
    source_task as source_task,
    source_value_problem as source_value_problem,
    stale_problems as stale_problems,
    text_documents as text_documents,
    tokenizer_for as tokenizer_for,
)
from .summary import failure_ranges as failure_ranges, summarize as summarize
from .verdicts import (
    HEADLINE_COLUMNS as HEADLINE_COLUMNS,
    claim_verdict as claim_verdict,
    headline_verdicts as headline_verdicts,
)
from .workers import (
    SequentialExecutor as SequentialExecutor,
    init_pool_worker as init_pool_worker,
    init_worker as init_worker,
    shutdown_local_pool as shutdown_local_pool,
)
