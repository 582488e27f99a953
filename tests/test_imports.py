"""The repo's own top-level packages win over same-named PyPI packages (PyPI has `adapters`)."""

import importlib

import pytest

from runners.config import ROOT


@pytest.mark.parametrize("name", ["adapters", "tasks", "runners", "models"])
def test_top_level_packages_come_from_this_repo(name):
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert importlib.util.find_spec(name).origin == str(ROOT / name / "__init__.py")


def test_adapters_registry_is_ours():
    from adapters import METHODS

    assert {"ft", "lora", "r_lora", "gm_lora", "rm_lora"} <= set(METHODS)
