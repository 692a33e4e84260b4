"""Dataset catalogue, LabelledSplit (checks and preprocessing), offline sets, load_dataset errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masc_fast.data import DATASET_NAMES, DatasetInfo, LabelledSplit, dataset_info, load_dataset
from masc_fast.data.in_memory import load_digits_split, load_mnist1d

# SPEC §2, typed out by hand: classes, sizes, per-sample shape, Normalize constants.
EXPECTED = {
    "mnist": (10, 60_000, 10_000, (1, 28, 28), (0.5,)),
    "fashion-mnist": (10, 60_000, 10_000, (1, 28, 28), (0.5,)),
    "cifar10": (10, 50_000, 10_000, (3, 32, 32), (0.5, 0.5, 0.5)),
    "cifar100": (100, 50_000, 10_000, (3, 32, 32), (0.5, 0.5, 0.5)),
    "tiny-imagenet": (200, 100_000, 10_000, (3, 64, 64), None),
    "digits": (10, 1_347, 450, (64,), None),
    "mnist1d": (10, 4_000, 1_000, (40,), None),
}


def test_dataset_names_are_the_agreed_tuple():
    assert DATASET_NAMES == (
        "mnist",
        "fashion-mnist",
        "cifar10",
        "cifar100",
        "tiny-imagenet",
        "digits",
        "mnist1d",
    )


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_dataset_info_matches_spec(name):
    info = dataset_info(name)
    classes, train_size, test_size, shape, normalise = EXPECTED[name]
    assert isinstance(info, DatasetInfo) and info.name == name
    assert (info.num_classes, info.train_size, info.test_size) == (classes, train_size, test_size)
    assert info.input_shape == shape
    assert info.mean == normalise and info.std == normalise
    assert info.strict_corruption is (name == "tiny-imagenet")


def test_dataset_info_is_frozen():
    with pytest.raises(AttributeError):
        dataset_info("mnist").num_classes = 3


def test_dataset_info_rejects_unknown_names():
    with pytest.raises(
        ValueError, match=r"unknown dataset 'MNIST'; known datasets: mnist, fashion-mnist"
    ):
        dataset_info("MNIST")
    with pytest.raises(TypeError, match="dataset name must be a string, got int"):
        dataset_info(3)
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        load_dataset("svhn", root=".")


def _image_split(name="cifar10", n=6, seed=0) -> LabelledSplit:
    info = dataset_info(name)
    generator = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (n, *info.input_shape), generator=generator, dtype=torch.uint8)
    data[0] = 0
    data[1] = 255  # the ends of the range
    labels = torch.randint(0, info.num_classes, (n,), generator=generator)
    return LabelledSplit(name, "train", data, labels, info)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "tiny-imagenet"])
def test_inputs_match_float64_reference(name):
    split = _image_split(name)
    info = split.info
    pixels = split.data.numpy().astype(np.float64) / 255
    if info.mean is not None:
        mean = np.asarray(info.mean).reshape(-1, 1, 1)
        std = np.asarray(info.std).reshape(-1, 1, 1)
        pixels = (pixels - mean) / std
    got = split.inputs(slice(None))
    assert got.dtype == torch.float32 and got.shape == split.data.shape
    np.testing.assert_allclose(got.numpy(), pixels, atol=1e-6, rtol=0)
    low, high = (-1.0, 1.0) if info.mean is not None else (0.0, 1.0)
    assert got[0].unique().tolist() == [low] and got[1].unique().tolist() == [high]


@pytest.mark.parametrize("name", ["mnist", "cifar10", "tiny-imagenet"])
def test_inputs_bit_identical_to_totensor_normalize(name):
    transforms = pytest.importorskip("torchvision.transforms")
    image_module = pytest.importorskip("PIL.Image")
    split = _image_split(name, n=5, seed=1)
    steps = [transforms.ToTensor()]
    if split.info.mean is not None:
        steps.append(transforms.Normalize(split.info.mean, split.info.std))
    pipeline = transforms.Compose(steps)
    for i in range(len(split)):
        hwc = split.data[i].permute(1, 2, 0).numpy()
        image = image_module.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc)
        assert torch.equal(split.inputs(torch.tensor([i]))[0], pipeline(image))


def test_inputs_index_forms():
    split = _image_split(n=8)
    full = split.inputs(slice(None))
    assert torch.equal(split.inputs([3, 1]), full[[3, 1]])
    assert torch.equal(split.inputs(np.array([7, 0, 7])), full[[7, 0, 7]])
    mask = torch.zeros(8, dtype=torch.bool)
    mask[[2, 5]] = True
    assert torch.equal(split.inputs(mask), full[[2, 5]])
    assert split.inputs([]).shape == (0, 3, 32, 32)
    assert not full.data_ptr() == split.inputs(slice(None)).data_ptr()


@pytest.mark.parametrize(
    ("index", "error", "pattern"),
    [
        (3, TypeError, "got the scalar 3"),
        (torch.tensor(2), TypeError, "got the scalar"),
        (torch.tensor([0.5]), TypeError, "integers or booleans, got torch.float32"),
        (torch.zeros((2, 2), dtype=torch.int64), ValueError, r"1-D, got shape \(2, 2\)"),
    ],
)
def test_inputs_rejects_bad_index(index, error, pattern):
    with pytest.raises(error, match=pattern):
        _image_split().inputs(index)


def test_inputs_of_vector_sets_are_copies_of_the_stored_floats():
    info = dataset_info("digits")
    data = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    split = LabelledSplit("digits", "test", data.clone(), torch.arange(5), info)
    got = split.inputs(slice(1, 4))
    assert torch.equal(got, data[1:4])
    got.zero_()
    assert torch.equal(split.data, data)


@pytest.mark.parametrize(
    ("changes", "error", "pattern"),
    [
        ({"split": "val"}, ValueError, r"split must be one of \('train', 'test'\), got 'val'"),
        ({"name": "mnist"}, ValueError, "name 'mnist' does not match info.name 'cifar10'"),
        (
            {"data": np.zeros((2, 3, 32, 32), np.uint8)},
            TypeError,
            "data must be a torch.Tensor, got ndarray",
        ),
        (
            {"data": torch.zeros(2, 3, 32, 32)},
            TypeError,
            "cifar10 data must be torch.uint8, got torch.float32",
        ),
        (
            {"data": torch.zeros(2, 32, 32, 3, dtype=torch.uint8)},
            ValueError,
            r"shape \(N, 3, 32, 32\), got \(2, 32, 32, 3\)",
        ),
        (
            {"labels": torch.zeros(2, dtype=torch.int32)},
            TypeError,
            "labels must be a 1-D int64 tensor, got torch.int32",
        ),
        ({"labels": torch.zeros(3, dtype=torch.int64)}, ValueError, "2 samples but 3 labels"),
        (
            {"labels": torch.tensor([0, 10])},
            ValueError,
            r"labels must lie in \[0, 10\), got range \[0, 10\]",
        ),
    ],
)
def test_labelled_split_rejects_inconsistent_fields(changes, error, pattern):
    fields = {
        "name": "cifar10",
        "split": "train",
        "data": torch.zeros(2, 3, 32, 32, dtype=torch.uint8),
        "labels": torch.tensor([0, 9]),
        "info": dataset_info("cifar10"),
    }
    fields.update(changes)
    with pytest.raises(error, match=pattern):
        LabelledSplit(**fields)


def test_labelled_split_repr_is_short():
    text = repr(_image_split(n=4))
    assert (
        text == "LabelledSplit(name='cifar10', split='train', n=4, data=torch.uint8(4, 3, 32, 32))"
    )


def test_digits_wraps_load_digits_split():
    train, test = load_dataset("digits", root="/nonexistent/ignored")
    x_train, y_train, x_test, y_test = load_digits_split()
    for split, x, y, part in ((train, x_train, y_train, "train"), (test, x_test, y_test, "test")):
        assert (
            split.name == "digits" and split.split == part and split.info == dataset_info("digits")
        )
        assert torch.equal(split.data, x) and torch.equal(split.labels, y)
        assert torch.equal(split.inputs(slice(None)), x)
    assert (len(train), len(test)) == (train.info.train_size, train.info.test_size)


def test_mnist1d_wraps_load_mnist1d():
    pytest.importorskip("mnist1d")
    train, test = load_dataset("mnist1d")
    x_train, y_train, x_test, y_test = load_mnist1d()
    assert torch.equal(train.data, x_train) and torch.equal(train.labels, y_train)
    assert torch.equal(test.data, x_test) and torch.equal(test.labels, y_test)
    assert (len(train), len(test)) == (train.info.train_size, train.info.test_size)
    assert train.info.input_shape == tuple(train.data.shape[1:])


def test_root_of_wrong_type_is_rejected():
    with pytest.raises(TypeError, match="root must be a path, got int"):
        load_dataset("mnist", root=5)
