"""Padding collate for token-level tasks: lists of ints become padded tensors, the rest passes through."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch


def pad_collate(pad_values: Mapping[str, int], passthrough: tuple[str, ...] = ()) -> Callable:
    """A collate that right-pads the keys in `pad_values` (each with its own pad value) to the batch's
    longest row, stacks plain ints into a tensor, and keeps `passthrough` keys as Python lists."""

    def collate(items: list[dict]) -> dict:
        batch = {}
        for key in items[0]:
            values = [item[key] for item in items]
            if key in passthrough:
                batch[key] = values
            elif key in pad_values:
                width = max(len(v) for v in values)
                out = torch.full((len(values), width), pad_values[key], dtype=torch.long)
                for i, v in enumerate(values):
                    out[i, : len(v)] = torch.as_tensor(v, dtype=torch.long)
                batch[key] = out
            else:
                batch[key] = torch.as_tensor(values)
        return batch

    return collate


def encoder_pads(tokenizer) -> dict[str, int]:
    """Pad values of an encoder's token batches: the tokenizer's pad id, masks and segment ids 0."""
    return {"input_ids": tokenizer.pad_token_id or 0, "attention_mask": 0, "token_type_ids": 0}
