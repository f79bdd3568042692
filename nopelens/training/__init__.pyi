"""Tasks that need position and the training loop that fits models to them."""

from .loop import (
    CHECKPOINT as CHECKPOINT,
)
from .loop import FINAL as FINAL
from .loop import HISTORY as HISTORY
from .loop import INITIAL as INITIAL
from .loop import (
    TrainConfig as TrainConfig,
)
from .loop import (
    TrainResult as TrainResult,
)
from .loop import (
    build_task_model as build_task_model,
)
from .loop import (
    default_config as default_config,
)
from .loop import (
    default_model_kwargs as default_model_kwargs,
)
from .loop import (
    load_checkpoint as load_checkpoint,
)
from .loop import (
    load_initial_and_final as load_initial_and_final,
)
from .loop import (
    lr_at as lr_at,
)
from .loop import (
    make_optimizer as make_optimizer,
)
from .loop import (
    train as train,
)
from .tasks import (
    CHAR_VOCAB as CHAR_VOCAB,
)
from .tasks import (
    SYNTHETIC_TASKS as SYNTHETIC_TASKS,
)
from .tasks import (
    TASKS as TASKS,
)
from .tasks import (
    UNK as UNK,
)
from .tasks import (
    Task as Task,
)
from .tasks import (
    answer_accuracy as answer_accuracy,
)
from .tasks import (
    encode_chars as encode_chars,
)
from .tasks import (
    get_task as get_task,
)
from .tasks import (
    stdlib_dir as stdlib_dir,
)
from .tasks import (
    task_from_spec as task_from_spec,
)
