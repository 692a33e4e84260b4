"""Tests of the class-grouped activation shards: round trips, other label sets, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masc_fast.probing.activation_store import LayerShards


def _fill(root, x, primary, other, *, dtype=torch.float32, batch=37, stage_bytes=2000):
    shards = LayerShards(
        root,
        layer="block.1/relu",
        num_classes=5,
        dim=x.shape[1],
        label_sets=("corrupted", "true"),
        dtype=dtype,
        stage_bytes=stage_bytes,
    )
    for start in range(0, len(x), batch):
        part = slice(start, start + batch)
        shards.append(x[part], {"corrupted": primary[part], "true": other[part]})
    return shards


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(400, 13, generator=generator)
    primary = torch.randint(0, 5, (400,), generator=generator)
    primary[primary == 4] = 3  # class 4 absent from the primary labels
    other = torch.randint(0, 5, (400,), generator=generator)
    return x, primary, other


def test_rows_come_back_grouped_by_class_in_arrival_order(tmp_path, data):
    x, primary, other = data
    shards = _fill(tmp_path, x, primary, other)
    shards.flush()
    for name, labels in (("corrupted", primary), ("true", other)):
        for label in range(5):
            expected = x[labels == label]
            got = shards.read(name, label)
            assert shards.count(name, label) == len(expected)
            if name == "corrupted":
                assert torch.equal(got, expected)  # same order as they arrived
            else:  # gathered across the primary files: same rows, another order
                assert torch.equal(
                    got[np.lexsort(got.T.numpy()[::-1])],
                    expected[np.lexsort(expected.T.numpy()[::-1])],
                )
    assert shards.read("corrupted", 4).shape == (0, 13)


def test_column_slices_and_chunks_match_the_whole(tmp_path, data):
    x, primary, other = data
    shards = _fill(tmp_path, x, primary, other)
    whole = shards.read("true", 2)
    assert torch.equal(shards.read("true", 2, columns=slice(3, 9)), whole[:, 3:9])
    chunks = list(shards.chunks("true", 2, chunk_rows=7))
    assert max(len(chunk) for chunk in chunks) <= 7
    assert torch.equal(torch.cat(chunks), whole)


def test_float16_storage_rounds_to_half(tmp_path, data):
    x, primary, other = data
    shards = _fill(tmp_path, x, primary, other, dtype=torch.float16)
    got = shards.read("corrupted", 1)
    assert got.dtype == torch.float32
    assert torch.equal(got, x[primary == 1].half().float())
    assert shards.row_bytes == 2 * 13


def test_restore_cuts_files_back_to_the_checkpoint(tmp_path, data):
    x, primary, other = data
    shards = _fill(tmp_path, x[:200], primary[:200], other[:200])
    committed = shards.commit()
    shards.append(x[200:], {"corrupted": primary[200:], "true": other[200:]})
    shards.flush()  # rows past the checkpoint reach the disk, then the process "dies"
    again = LayerShards(
        tmp_path,
        layer="block.1/relu",
        num_classes=5,
        dim=13,
        label_sets=("corrupted", "true"),
    )
    again.restore(committed)
    for label in range(5):
        assert torch.equal(again.read("corrupted", label), x[:200][primary[:200] == label])
        assert torch.equal(
            torch.sort(again.read("true", label), dim=0).values,
            torch.sort(x[:200][other[:200] == label], dim=0).values,
        )


def test_restore_refuses_a_store_shorter_than_its_checkpoint(tmp_path, data):
    x, primary, other = data
    shards = _fill(tmp_path, x, primary, other)
    committed = shards.commit()
    committed[0] += 5
    with pytest.raises(ValueError, match=r"rows_00000.bin holds \d+ rows, the checkpoint needs"):
        shards.restore(committed)
    with pytest.raises(ValueError, match="checkpoint has 4 classes, store has 5"):
        shards.restore(committed[:4])


def test_bad_dtype_and_unknown_label_set(tmp_path, data):
    x, primary, other = data
    with pytest.raises(TypeError, match="float32 or float16"):
        LayerShards(tmp_path, layer="a", num_classes=2, dim=3, label_sets=("c",), dtype=torch.int8)
    shards = _fill(tmp_path, x, primary, other)
    with pytest.raises(KeyError, match="no label set 'noisy'"):
        shards.read("noisy", 0)


def test_remove_deletes_the_layer_files(tmp_path, data):
    x, primary, other = data
    shards = _fill(tmp_path, x, primary, other)
    shards.commit()
    assert shards.disk_bytes == 400 * (13 * 4 + 4)
    shards.remove()
    assert not shards.directory.exists()
