"""`train.length_chunks=k` (issue 28, goal 4): each batch sorted by length and run as k micro-batches,
each padded to its own longest row, trains like the whole padded batch (float tolerance) with fewer
padded tokens."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from core import ConfigError
from tasks.batching import pad_collate, row_lengths, split_by_length
from tests.test_host_loop import tiny_run

PADS = {"input_ids": 0, "attention_mask": 0, "token_type_ids": 0}


def items(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(1, 50, (n,), generator=g).tolist(),
            "attention_mask": [1] * n,
            "token_type_ids": [0] * (n // 2) + [1] * (n - n // 2),
            "labels": i % 3,
        }
        for i, n in enumerate(lengths)
    ]


def test_split_keeps_every_row_and_pads_each_chunk_to_its_own_longest():
    lengths = [5, 17, 3, 9, 17, 2, 11, 6]
    batch = pad_collate(PADS)(items(lengths))
    chunks = split_by_length(batch, PADS, 3)
    assert [c["input_ids"].shape for c in chunks] == [
        (3, 5),
        (3, 11),
        (2, 17),
    ]  # sorted: 2 3 5 | 6 9 11 | 17 17
    assert sum(c["input_ids"].numel() for c in chunks) == 3 * 5 + 3 * 11 + 2 * 17 < batch["input_ids"].numel()
    # each row of the batch is in exactly one chunk, its real tokens and label unchanged
    got = sorted(
        (tuple(ids[: int(n)].tolist()), int(y), tuple(tt[: int(n)].tolist()))
        for c in chunks
        for ids, y, tt, n in zip(c["input_ids"], c["labels"], c["token_type_ids"], row_lengths(c, PADS))
    )
    want = sorted(
        (tuple(ids[:n].tolist()), int(y), tuple(tt[:n].tolist()))
        for ids, y, tt, n in zip(batch["input_ids"], batch["labels"], batch["token_type_ids"], lengths)
    )
    assert got == want
    for c in chunks:  # no chunk keeps a column that is padding in all its rows
        assert c["attention_mask"][:, -1].any()


def test_split_rounds_each_chunk_up_to_the_pad_multiple_and_never_makes_empty_chunks():
    batch = pad_collate(PADS)(items([5, 17, 3]))
    chunks = split_by_length(batch, PADS, 8, multiple=8)
    assert [c["input_ids"].shape for c in chunks] == [(1, 8), (1, 8), (1, 24)]  # 3 rows: 3 chunks
    assert chunks[2]["attention_mask"][0, 17:].sum() == 0  # padded past the batch's own width with 0


def test_lengths_come_from_the_pad_value_without_an_attention_mask():
    batch = {"input_ids": torch.tensor([[4, 5, 0, 0], [4, 0, 4, 0], [7, 7, 7, 7]])}
    assert row_lengths(batch, {"input_ids": 0}).tolist() == [2, 3, 4]  # up to the last real token


def _weights(record):
    return load_file(record["weights"])


@pytest.mark.parametrize("k", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_chunked_run_trains_like_the_whole_batch(tmp_path, monkeypatch, glue_dir, k):
    """tiny DeBERTa (no dropout), RTE (long, uneven pairs), rm_lora (regularizer + mask): the per-step
    losses, epoch sums and trained weights of k micro-batches equal the whole batch's."""
    data = f"task.data_dir={glue_dir}"
    whole = tiny_run(tmp_path / "whole", monkeypatch, data)
    chunked = tiny_run(tmp_path / "chunked", monkeypatch, data, f"train.length_chunks={k}")
    losses, _, history, _, record = chunked
    assert record["run_id"] == whole[4]["run_id"]  # how fast, not what: not part of run_id
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(whole[0]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(history), torch.tensor(whole[2]), rtol=1e-5, atol=1e-6)
    final = record["metrics"]["final"]["validation"]
    assert final == pytest.approx(whole[4]["metrics"]["final"]["validation"], rel=1e-5)
    w_whole, w_chunked = _weights(whole[4]), _weights(record)
    assert w_whole.keys() == w_chunked.keys()
    for name, w in w_chunked.items():  # Adam normalises tiny gradient differences: a looser atol
        torch.testing.assert_close(w, w_whole[name], rtol=1e-4, atol=2e-5)


def test_chunks_cut_the_padded_tokens_of_real_batches(glue_dir):
    """RTE, batch 32, real text through a WordPiece vocabulary: 4 chunks hold far fewer padded tokens."""
    from tasks.glue import Config, Glue

    task = Glue(Config(subset="rte", data_dir=str(glue_dir), max_train_samples=256))
    from models.hf import build_tokenizer  # noqa: PLC0415  (the tiny models' trained WordPiece)
    from tests.conftest import make_cfg

    cfg = make_cfg("model=tiny_deberta", "task=glue/rte")
    data = task.build(None, build_tokenizer(cfg.model, task.texts()))
    collate = data.collate
    whole = chunked = real = 0
    for i in range(0, 256, 32):
        batch = collate(data.train[i : i + 32])
        whole += batch["input_ids"].numel()
        real += int(batch["attention_mask"].sum())
        chunked += sum(c["input_ids"].numel() for c in split_by_length(batch, data.pad_values, 4))
    assert real < chunked < whole
    assert (chunked - real) < 0.5 * (whole - real)  # most of the padding is gone


@pytest.mark.parametrize(
    "over, match",
    [
        (("train.length_chunks=0",), "integer >= 1"),
        (("model=fnn", "task=synthetic/fnn", "train.length_chunks=2"), "sequence-classification"),
    ],
)
def test_bad_length_chunks_fail_in_one_line_before_the_model(tmp_path, over, match, monkeypatch):
    import models.fnn
    import models.hf
    from runners.train import run
    from tests.conftest import make_cfg

    def no_model(*a, **k):
        raise AssertionError("a model was built")

    monkeypatch.setattr(models.hf, "build_model", no_model)
    monkeypatch.setattr(models.fnn, "build_model", no_model)
    cfg = make_cfg("model=tiny_deberta", "task=glue/rte", *over, results_dir=tmp_path)
    with pytest.raises(ConfigError, match=match):
        run(cfg)
