"""Tasks, looked up by `task.name`. One module per task family, one line here.

Each module has a `Config` dataclass and a `TASK` class (a `tasks.base.Task`).
"""

from tasks import glue, synthetic_fnn, vision

TASKS = {
    "synthetic_fnn": synthetic_fnn,
    "glue": glue,
    "vision": vision,  # cifar100, food101
}
