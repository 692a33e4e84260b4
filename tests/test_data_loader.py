"""BatchLoader: coverage, per-epoch shuffling, label triples, devices and argument checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masc_fast.data import BatchLoader, LabelledSplit, dataset_info
from masc_fast.data.loader import epoch_order, epoch_seed


def _split(n: int = 103, name: str = "cifar10", seed: int = 0) -> LabelledSplit:
    info = dataset_info(name)
    generator = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (n, *info.input_shape), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, info.num_classes, (n,), generator=generator)
    return LabelledSplit(name, "train", data, labels, info)


def _order(loader) -> torch.Tensor:
    """Sample indices in the order the loader visits them, read back from the pixels."""
    split = loader.split
    flat = split.inputs(slice(None)).flatten(1)
    rows = {tuple(row.tolist()): i for i, row in enumerate(flat)}
    assert len(rows) == len(split)  # random images are distinct
    return torch.tensor([rows[tuple(row.tolist())] for x, *_ in loader for row in x.flatten(1)])


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("batch_size", [1, 10, 103, 500])
def test_every_sample_exactly_once_per_epoch(shuffle, batch_size):
    split = _split()
    loader = BatchLoader(split, batch_size=batch_size, shuffle=shuffle, seed=3)
    order = _order(loader)
    assert sorted(order.tolist()) == list(range(len(split)))
    batches = list(loader)
    assert len(batches) == len(loader) == -(-len(split) // batch_size)
    assert all(len(x) == batch_size for x, _ in batches[:-1])
    for x, y in batches:  # labels travel with their inputs
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and len(x) == len(y)
    assert torch.equal(torch.cat([y for _, y in batches]), split.labels[order])


def test_unshuffled_order_is_dataset_order():
    split = _split(37)
    loader = BatchLoader(split, batch_size=8)
    assert torch.equal(_order(loader), torch.arange(37))
    assert torch.equal(torch.cat([x for x, _ in loader]), split.inputs(slice(None)))


def test_shuffle_differs_between_epochs_and_repeats_within_one():
    loader = BatchLoader(_split(), batch_size=16, shuffle=True, seed=5)
    epoch0, again = _order(loader), _order(loader)
    assert torch.equal(epoch0, again)  # no set_epoch: same epoch, same order
    loader.set_epoch(1)
    epoch1 = _order(loader)
    assert loader.epoch == 1
    assert not torch.equal(epoch0, epoch1) and not torch.equal(epoch0, torch.arange(len(epoch0)))


def test_same_seed_and_epoch_give_the_same_order_across_instances():
    split = _split()
    first = BatchLoader(split, batch_size=7, shuffle=True, seed=11)
    first.set_epoch(4)
    resumed = BatchLoader(split, batch_size=32, shuffle=True, seed=11)
    resumed.set_epoch(4)
    assert torch.equal(_order(first), _order(resumed))
    other_seed = BatchLoader(split, batch_size=7, shuffle=True, seed=12)
    other_seed.set_epoch(4)
    assert not torch.equal(_order(first), _order(other_seed))


def test_shuffled_order_is_the_documented_randperm():
    split = _split()
    loader = BatchLoader(split, batch_size=16, shuffle=True, seed=9)
    loader.set_epoch(2)
    generator = torch.Generator().manual_seed(epoch_seed(9, 2))
    expected = torch.randperm(len(split), generator=generator)
    assert torch.equal(_order(loader), expected)
    assert torch.equal(epoch_order(len(split), 9, 2), expected)
    # the global generator is not consumed
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    list(loader)
    assert torch.equal(torch.rand(3), before)


def test_epoch_seed_mixes_seed_and_epoch():
    seeds = {epoch_seed(s, e) for s in range(20) for e in range(20)}
    assert len(seeds) == 400 and all(0 <= s < 2**63 for s in seeds)
    assert epoch_seed(0, 1) != epoch_seed(1, 0)


def test_triples_carry_labels_and_true_labels():
    split = _split(50)
    true = split.labels
    noisy = (true + 1) % split.info.num_classes
    loader = BatchLoader(
        split, noisy.numpy(), true_labels=true, batch_size=12, shuffle=True, seed=2
    )
    order = _order(loader)
    batches = list(loader)
    assert all(len(batch) == 3 for batch in batches)
    assert torch.equal(torch.cat([b[1] for b in batches]), noisy[order])
    assert torch.equal(torch.cat([b[2] for b in batches]), true[order])
    assert all(isinstance(batch, tuple) for batch in batches)


def test_labels_accept_lists_and_other_integer_dtypes():
    split = _split(20)
    as_list = BatchLoader(split, split.labels.tolist(), batch_size=20)
    as_int32 = BatchLoader(split, split.labels.numpy().astype(np.int32), batch_size=20)
    (_, y_list), (_, y_int32) = next(iter(as_list)), next(iter(as_int32))
    assert y_list.dtype == y_int32.dtype == torch.int64
    assert torch.equal(y_list, split.labels) and torch.equal(y_int32, split.labels)


def test_yielded_labels_are_copies():
    split = _split(20)
    loader = BatchLoader(split, batch_size=5)
    _, y = next(iter(loader))
    y += 1
    assert torch.equal(next(iter(loader))[1], split.labels[:5])


def test_drop_last():
    loader = BatchLoader(_split(103), batch_size=10, drop_last=True, shuffle=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 10 and all(len(x) == 10 for x, _ in batches)
    assert len(BatchLoader(_split(100), batch_size=10, drop_last=True)) == 10


def test_device_argument_moves_every_tensor():
    split = _split(20)
    devices = ["cpu", torch.device("meta")] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        loader = BatchLoader(split, true_labels=split.labels, batch_size=8, device=device)
        assert loader.device == torch.device(device)
        for batch in loader:
            assert all(t.device.type == torch.device(device).type for t in batch)
    if torch.cuda.is_available():
        cpu, gpu = (BatchLoader(split, batch_size=8, device=d) for d in ("cpu", "cuda"))
        for (x_cpu, _), (x_gpu, _) in zip(cpu, gpu):
            assert torch.equal(x_gpu.cpu(), x_cpu)  # same bits: preprocessing runs on the CPU


def test_vector_split_batches():
    info = dataset_info("mnist1d")
    data = torch.randn(30, 40, generator=torch.Generator().manual_seed(0))
    split = LabelledSplit("mnist1d", "test", data, torch.arange(30) % 10, info)
    batches = list(BatchLoader(split, batch_size=16))
    assert torch.equal(torch.cat([x for x, _ in batches]), data)
    batches[0][0].zero_()  # a view into the split would change its data
    assert torch.equal(split.data, data) and split.data.abs().sum() > 0


@pytest.mark.parametrize(
    ("labels", "error", "pattern"),
    [
        (
            torch.zeros(102, dtype=torch.int64),
            ValueError,
            r"labels has 102 entries but split cifar10 train has 103",
        ),
        (
            torch.zeros((103, 1), dtype=torch.int64),
            ValueError,
            r"labels must be 1-D, got shape \(103, 1\)",
        ),
        (torch.zeros(103), TypeError, r"labels must have an integer dtype, got torch.float32"),
        (torch.zeros(103, dtype=torch.bool), TypeError, r"integer dtype, got torch.bool"),
        (
            torch.full((103,), 10),
            ValueError,
            r"labels must lie in \[0, 10\) for cifar10; got 10 at index 0",
        ),
        ("abc", TypeError, r"labels must be an array or a tensor of integers, got str"),
    ],
)
def test_bad_labels_are_rejected_by_name(labels, error, pattern):
    with pytest.raises(error, match=pattern):
        BatchLoader(_split(), labels, batch_size=4)


def test_bad_true_labels_are_named():
    with pytest.raises(ValueError, match="true_labels has 3 entries"):
        BatchLoader(_split(), true_labels=[0, 1, 2], batch_size=4)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer, got 0"),
        ({"batch_size": 2.5}, TypeError, "batch_size must be a positive integer, got 2.5"),
        ({"batch_size": True}, TypeError, "batch_size must be a positive integer, got True"),
        ({"batch_size": 4, "seed": -1}, ValueError, "seed must be non-negative, got -1"),
        ({"batch_size": 4, "seed": "1"}, TypeError, "seed must be an integer"),
    ],
)
def test_bad_arguments_are_rejected_by_name(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        BatchLoader(_split(), **kwargs)


def test_bad_split_and_epoch_are_rejected():
    with pytest.raises(TypeError, match="split must be a LabelledSplit, got Tensor"):
        BatchLoader(torch.zeros(3), batch_size=1)
    loader = BatchLoader(_split(), batch_size=4)
    with pytest.raises(ValueError, match="epoch must be non-negative, got -2"):
        loader.set_epoch(-2)
    with pytest.raises(TypeError, match="epoch must be an integer"):
        loader.set_epoch(1.0)


@pytest.mark.parametrize("shuffle", [True, False])  # the shuffled and the paper's fixed order
def test_rank_parts_split_every_batch_and_cover_the_split_once(shuffle):
    """Ranks get contiguous parts of one process's batches (sizes differing by at most one),
    disjoint, covering every sample once; an empty part of a short last batch is skipped."""
    from masc_fast.data import load_dataset

    train, _ = load_dataset("digits", progress=False)  # 1 347 samples: last batch of 3 rows
    whole = BatchLoader(train, batch_size=32, shuffle=shuffle, seed=5)
    whole.set_epoch(2)
    expected = torch.cat([x for x, _ in whole])
    parts = []
    for rank in range(4):
        loader = BatchLoader(train, batch_size=32, shuffle=shuffle, seed=5, rank=rank, world_size=4)
        loader.set_epoch(2)
        assert loader.global_rows() == whole.global_rows() == [32] * 42 + [3]
        batches = [x for x, _ in loader]
        assert [len(x) for x in batches[:42]] == [8] * 42
        assert len(batches) == (43 if rank < 3 else 42)  # rank 3 has no row of the last batch
        parts.append(batches)
    rebuilt = torch.cat(
        [torch.cat([part[i] for part in parts if i < len(part)]) for i in range(43)]
    )
    assert torch.equal(rebuilt, expected)
    with pytest.raises(ValueError, match="rank 2 of 2"):
        BatchLoader(train, batch_size=32, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size 2 is smaller than world_size 4"):
        BatchLoader(train, batch_size=2, rank=0, world_size=4)
