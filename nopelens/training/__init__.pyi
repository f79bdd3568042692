"""Tasks that need position and the training loop that fits models to them."""

from .checkpoint import (
    CHECKPOINT as CHECKPOINT,
    FINAL as FINAL,
    HISTORY as HISTORY,
    INITIAL as INITIAL,
    load_checkpoint as load_checkpoint,
    load_initial_and_final as load_initial_and_final,
)
from .config import (
    TrainConfig as TrainConfig,
    batch_generator as batch_generator,
    derived_seed as derived_seed,
    lr_at as lr_at,
    make_optimizer as make_optimizer,
)
from .loop import evaluate as evaluate, train as train
from .recipes import (
    RECOMMENDED as RECOMMENDED,
    build_task_model as build_task_model,
    default_config as default_config,
    default_model_kwargs as default_model_kwargs,
)
from .registry import (
    SYNTHETIC_TASKS as SYNTHETIC_TASKS,
    TASKS as TASKS,
    get_task as get_task,
    task_from_spec as task_from_spec,
)
from .result import TrainResult as TrainResult
from .synthetic import (
    Addition as Addition,
    IndexCounting as IndexCounting,
    Modular as Modular,
    Parity as Parity,
    PreviousToken as PreviousToken,
    Reverse as Reverse,
)
from .task import (
    BOS as BOS,
    Batch as Batch,
    Task as Task,
    answer_accuracy as answer_accuracy,
    answer_loss as answer_loss,
    example_hash as example_hash,
)
from .text import (
    CHAR_VOCAB as CHAR_VOCAB,
    UNK as UNK,
    StdlibChars as StdlibChars,
    encode_chars as encode_chars,
    stdlib_dir as stdlib_dir,
)
