"""Damaged files are named, never read silently (issue 17, deliverable 5): truncated, foreign
or bit-flipped safetensors files and truncated JSON raise ``ValueError`` naming the path and
what is wrong; files masc_fast writes carry a CRC-32 of their tensors that loading verifies."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from masc_fast import GramAccumulator
from masc_fast._io import CHECKSUM_KEY, read_tensors, write_tensors
from masc_fast.probing.fit_checkpoint import FitCheckpoint
from masc_fast.subspace import ClassSubspaces


@pytest.fixture
def subspaces_file(tmp_path):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    accumulator = GramAccumulator(10, 64)
    accumulator.update(torch.tensor(x[:1000], dtype=torch.float32), torch.tensor(y[:1000]))
    path = tmp_path / "fc1.safetensors"
    accumulator.fit(0.99).save(path)
    return path


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # inside the last tensor's bytes
    path.write_bytes(bytes(data))


def test_a_saved_file_carries_a_checksum_and_loads(subspaces_file):
    _, metadata = read_tensors(subspaces_file)
    assert re.fullmatch(r"[0-9a-f]{8}", metadata[CHECKSUM_KEY])
    assert ClassSubspaces.load(subspaces_file).num_components.sum() > 0


def test_a_flipped_byte_is_caught_by_the_checksum(subspaces_file):
    _flip_last_byte(subspaces_file)
    with pytest.raises(
        ValueError,
        match=rf"{re.escape(str(subspaces_file))}: its tensors do "
        r"not match their checksum \(stored [0-9a-f]{8}, read [0-9a-f]{8}\)",
    ):
        ClassSubspaces.load(subspaces_file)


@pytest.mark.parametrize("damage", ["truncated", "foreign", "empty"])
def test_truncated_or_foreign_files_name_the_path(subspaces_file, damage):
    data = subspaces_file.read_bytes()
    replacement = {
        "truncated": data[: len(data) // 2],
        "foreign": b'{"not": "tensors"}',
        "empty": b"",
    }[damage]
    subspaces_file.write_bytes(replacement)
    with pytest.raises(
        ValueError,
        match=rf"{re.escape(str(subspaces_file))}: not a readable "
        "safetensors file .* may be truncated, corrupt or not written by",
    ):
        ClassSubspaces.load(subspaces_file)


def test_files_without_a_checksum_still_load_and_other_safetensors_are_named(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"a": torch.arange(4.0)}, str(path))  # written by someone else: no checksum
    tensors, metadata = read_tensors(path)
    assert torch.equal(tensors["a"], torch.arange(4.0)) and CHECKSUM_KEY not in metadata
    with pytest.raises(
        ValueError,
        match=rf"{re.escape(str(path))} is not a masc_fast "
        r"ClassSubspaces file \(no metadata\)",
    ):
        ClassSubspaces.load(path)


def test_training_checkpoints_are_checked(tmp_path):
    from masc_fast.pipeline.runs.checkpoints import (
        checkpoint_metadata,
        load_checkpoint,
        save_checkpoint,
    )

    model = nn.Linear(30, 20)
    path = save_checkpoint(tmp_path / "last.safetensors", model, epoch=2)
    _flip_last_byte(path)
    assert checkpoint_metadata(path)["epoch"] == 2  # the header is intact
    with pytest.raises(ValueError, match="last.safetensors: its tensors do not match"):
        load_checkpoint(path, nn.Linear(30, 20))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="last.safetensors: not a readable safetensors file"):
        checkpoint_metadata(path)


def test_probe_checkpoints_are_checked(tmp_path):
    checkpoint = FitCheckpoint(tmp_path)
    checkpoint.save({"batches": 3}, {"gram": torch.randn(4, 4)})
    manifest = json.loads(checkpoint.manifest_path.read_text())
    _flip_last_byte(tmp_path / manifest["tensors"])
    with pytest.raises(ValueError, match=r"state_000001.safetensors: its tensors do not match"):
        checkpoint.load()
    checkpoint.manifest_path.write_text('{"batches": 3, "tens')
    with pytest.raises(
        ValueError,
        match=r"checkpoint.json: not valid JSON \(.*\); it may be "
        "truncated",
    ):
        checkpoint.load()


def test_write_tensors_checksum_covers_names_shapes_and_dtypes(tmp_path):
    base = {"a": torch.arange(6.0)}
    variants = [
        {"b": torch.arange(6.0)},
        {"a": torch.arange(6.0).view(2, 3)},
        {"a": torch.arange(6.0).double()},
    ]
    sums = set()
    for index, tensors in enumerate([base, *variants]):
        _, metadata = read_tensors(write_tensors(tmp_path / f"{index}.safetensors", tensors, {}))
        sums.add(metadata[CHECKSUM_KEY])
    assert len(sums) == 4


def _disk_full(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_file_and_the_bytes(tmp_path, monkeypatch):
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", _disk_full)
    target = tmp_path / "state.safetensors"
    with pytest.raises(
        OSError,
        match=rf"no space left on the device of {re.escape(str(target))}"
        r": the write needed 4,000 bytes, [\d,]+ are free there",
    ) as caught:
        write_tensors(target, {"gram": torch.zeros(1000)}, {})
    assert caught.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_a_full_disk_while_storing_rows_names_the_shard(tmp_path, monkeypatch):
    from masc_fast.probing import activation_store

    store = activation_store.LayerShards(
        tmp_path, layer="fc1", num_classes=2, dim=16, label_sets=("corrupted",)
    )
    store.append(torch.randn(10, 16), {"corrupted": torch.tensor([0, 1] * 5)})
    monkeypatch.setattr(activation_store, "open", _disk_full, raising=False)
    with pytest.raises(OSError, match=r"rows_00000.bin: the write needed 320 bytes"):
        store.flush()


def test_a_truncated_run_config_names_its_path(tmp_path):
    from masc_fast.pipeline.runs.loading import load_config

    (tmp_path / "config.json").write_text('{"model": "mlp", "data')
    with pytest.raises(ValueError, match=r"config.json: not valid JSON \(.*\); it may be "):
        load_config(tmp_path)
