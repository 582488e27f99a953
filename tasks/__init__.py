"""Tasks, looked up by `task.name`. One module per task family, one line in `TASKS` below.

Each module has a `Config` dataclass and a `TASK` class (a `tasks.base.Task`). `TASKS` maps a
task name to the module's import path; the module is imported when it is first looked up
(`TASKS["glue"]` is the module `tasks.glue`), so importing `tasks` (e.g. for `python -m
tasks.metrics`) imports no deep-learning library.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from types import ModuleType


class LazyModules(Mapping):
    """A read-only {name: module} mapping that imports each module on first access."""

    def __init__(self, paths: dict[str, str]):
        self.paths = dict(paths)

    def __getitem__(self, name: str) -> ModuleType:
        return importlib.import_module(self.paths[name])

    def __contains__(self, name: object) -> bool:
        return name in self.paths

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


TASKS = LazyModules(
    {
        "synthetic_fnn": "tasks.synthetic_fnn",
        "glue": "tasks.glue",
        "squad": "tasks.squad",
        "e2e": "tasks.e2e",
        "dart": "tasks.dart",
        "vision": "tasks.vision",  # cifar100, food101
    }
)
