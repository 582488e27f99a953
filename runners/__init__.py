"""The runner: config → model → method → task → loop → record. Names no method or task."""
