"""The repo's own top-level packages win over same-named PyPI packages (PyPI has `adapters`)."""

import importlib

import pytest

from runners.config import ROOT


@pytest.mark.parametrize("name", ["adapters", "tasks", "runners", "models"])
def test_top_level_packages_come_from_this_repo(name):
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert importlib.util.find_spec(name).origin == str(ROOT / name / "__init__.py")


def test_the_ground_floor_comes_from_this_repo():
    import adapters.base
    import core

    assert importlib.util.find_spec("core").origin == str(ROOT / "core.py")
    assert adapters.base.ConfigError is core.ConfigError  # the old import path: the very same class


def test_adapters_registry_is_ours():
    from adapters import METHODS

    assert {"ft", "lora", "r_lora", "gm_lora", "rm_lora"} <= set(METHODS)


# --- the house drawn from imports: no loop, no upward arrow ------------------------------------------

PACKAGES = ("adapters", "models", "tasks", "runners")
GROUND = "core"  # the ground floor: imports nothing of the project
ROOMS_BELOW_RUNNERS = ("adapters", "models", "tasks")  # the runner uses them, never the reverse


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: project modules it imports}, read with ast from every file of the packages and the
    top-level modules. Imports inside functions count (a late import still ties the two files)."""
    import ast

    files = [p for p in ROOT.glob("*.py")] + [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    paths = {_module_name(p): p for p in files}

    def resolve(name: str) -> str | None:  # the longest prefix of a dotted name that is a project module
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, path in paths.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {resolve(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, `level - 1` steps up
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # `from pkg import sub` imports the module pkg.sub when there is one
                targets |= {resolve(f"{base}.{a.name}") if f"{base}.{a.name}" in paths else resolve(base)
                            for a in node.names}  # fmt: skip
        graph[mod] = targets - {None, mod}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports that run up the house: adapters/models/tasks into runners, the ground floor into anything."""
    room = lambda m: m.split(".")[0]  # noqa: E731
    return sorted(
        f"{a} -> {b}"
        for a, targets in graph.items()
        for b in targets
        if (room(a) in ROOMS_BELOW_RUNNERS and room(b) == "runners") or room(a) == GROUND
    )


def test_the_house_has_no_import_loop_and_no_upward_import():
    graph = import_graph()
    assert {"run", "runners.train", "tasks.metrics._io"} <= set(graph)  # the walk saw the whole house
    cycles, upward = import_cycles(graph), upward_imports(graph)
    assert not cycles, "import loops: " + "; ".join(" <-> ".join(c) for c in cycles)
    assert not upward, "upward imports: " + "; ".join(upward)
