"""Tasks, looked up by `task.name`. One module per task family, one line here.

Each module has a `Config` dataclass and a `TASK` class (a `tasks.base.Task`).
"""

from tasks import dart, e2e, glue, squad, synthetic_fnn

TASKS = {
    "synthetic_fnn": synthetic_fnn,
    "glue": glue,
    "squad": squad,
    "e2e": e2e,
    "dart": dart,
}
