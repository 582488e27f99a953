"""Model builders, looked up by `model.builder`: a tokenizer (or None) and a model with the task's head."""

from __future__ import annotations

from models import fnn, hf

BUILDERS = {"fnn": fnn, "hf": hf}
