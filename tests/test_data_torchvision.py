"""MNIST, Fashion-MNIST, CIFAR-10/100 read from files in their real on-disk formats.

Each test writes a few random images in the format the official archives unpack to (idx files
for the MNIST family, Python 2 pickles for CIFAR) and loads them through ``load_dataset``, the
same code path as the real data: torchvision's dataset classes, then our conversion.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from masc_fast.data import dataset_info, load_dataset

torchvision = pytest.importorskip("torchvision")
from torchvision import transforms  # noqa: E402

MNIST_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# ---------------------------------------------------------------- MNIST family (idx files)


def _write_idx_images(path: Path, images: np.ndarray) -> None:
    """idx3-ubyte: magic 2051 (0x0803: uint8, 3 dims), then N, rows, cols, big-endian."""
    n, rows, cols = images.shape
    path.write_bytes(struct.pack(">iiii", 2051, n, rows, cols) + images.astype(np.uint8).tobytes())


def _write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """idx1-ubyte: magic 2049 (0x0801: uint8, 1 dim), then N, big-endian."""
    path.write_bytes(struct.pack(">ii", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def _write_mnist(root: Path, name: str, sizes=(7, 5), seed: int = 0) -> dict:
    """Random idx files under ``root/<Class>/raw``; returns the arrays written per split."""
    rng = np.random.default_rng(seed)
    raw = root / MNIST_FOLDERS[name] / "raw"
    raw.mkdir(parents=True)
    written = {}
    for split, n in zip(("train", "test"), sizes):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n)
        image_file, label_file = MNIST_FILES[split]
        _write_idx_images(raw / image_file, images)
        _write_idx_labels(raw / label_file, labels)
        written[split] = (images, labels)
    return written


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_mnist_family_round_trips_pixels_labels_and_order(tmp_path, name):
    written = _write_mnist(tmp_path, name, seed=len(name))
    train, test = load_dataset(name, root=tmp_path)
    for split, (images, labels) in zip((train, test), (written["train"], written["test"])):
        assert split.name == name and split.info == dataset_info(name)
        assert split.data.dtype == torch.uint8 and tuple(split.data.shape) == (
            len(labels),
            1,
            28,
            28,
        )
        np.testing.assert_array_equal(split.data[:, 0].numpy(), images)
        assert split.labels.dtype == torch.int64
        np.testing.assert_array_equal(split.labels.numpy(), labels)
    assert (train.split, test.split) == ("train", "test")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_mnist_family_inputs_equal_torchvision_transforms_bitwise(tmp_path, name):
    _write_mnist(tmp_path, name, seed=3)
    train, test = load_dataset(name, root=tmp_path)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    cls = getattr(torchvision.datasets, MNIST_FOLDERS[name])
    for split, is_train in ((train, True), (test, False)):
        # torchvision's own __getitem__: the PIL image it builds, then its transforms.
        reference = cls(str(tmp_path), train=is_train, transform=transform)
        expected = torch.stack([reference[i][0] for i in range(len(reference))])
        got = split.inputs(torch.arange(len(split)))
        assert got.dtype == torch.float32
        assert torch.equal(got, expected)
        # and the values are (v / 255 - 0.5) / 0.5 in [-1, 1], checked in float64
        float64 = (split.data.double() / 255 - 0.5) / 0.5
        torch.testing.assert_close(got.double(), float64, atol=1e-6, rtol=0)
        assert got.min() >= -1 and got.max() <= 1 and got.std() > 0.3


def test_mnist_inputs_with_a_shuffled_index_and_a_slice(tmp_path):
    _write_mnist(tmp_path, "mnist", sizes=(9, 3), seed=5)
    train, _ = load_dataset("mnist", root=tmp_path)
    order = torch.tensor([4, 0, 8, 4])
    assert torch.equal(train.inputs(order), train.inputs(slice(0, 9))[order])


def test_mnist_missing_file_is_named(tmp_path):
    _write_mnist(tmp_path, "mnist")
    gone = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    gone.unlink()
    with pytest.raises(FileNotFoundError) as caught:
        load_dataset("mnist", root=tmp_path)
    message = str(caught.value)
    assert str(gone) in message and "train-images-idx3-ubyte" not in message
    assert "download=True" in message and "--data-root" in message


# ---------------------------------------------------------------- CIFAR (Python 2 pickles)


class _Python2Pickler(pickle._Pickler):
    """Pickles ``bytes`` as Python 2 pickled its ``str`` (SHORT_BINSTRING / BINSTRING).

    The official CIFAR "python version" files were written by Python 2 with NumPy 1.x: keys
    and strings are Python 2 ``str`` (``b"data"``, ``b"labels"`` when read with
    ``encoding="bytes"``, ``"data"`` with torchvision's ``encoding="latin1"``) and arrays
    reference ``numpy.core.multiarray._reconstruct``. This pickler writes the same opcodes.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _write_py2_pickle(path: Path, obj: dict) -> None:
    stream = io.BytesIO()
    _Python2Pickler(stream, protocol=2).dump(obj)
    # NumPy 1.x (what wrote the real files) named the reconstructor's module numpy.core.
    data = stream.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"numpy._core" not in data
    path.write_bytes(data)


def _cifar_entry(rng, n: int, label_keys: dict) -> tuple[dict, np.ndarray, dict]:
    # Rows hold 1024 red, 1024 green, then 1024 blue values, each 32x32 row-major: CHW.
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = {key: rng.integers(0, high, size=n) for key, high in label_keys.items()}
    entry = {
        b"batch_label": b"testing batch 1 of 1",
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    entry.update({key.encode(): [int(v) for v in value] for key, value in labels.items()})
    return entry, data.reshape(n, 3, 32, 32), labels


@pytest.fixture
def skip_cifar_md5(monkeypatch):
    # torchvision compares each file's MD5 with that of the real 170 MB archive contents,
    # which small test files cannot match. Only the checksum is replaced (by an existence
    # check); reading, reshaping and label selection remain torchvision's code.
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def _write_cifar10(root: Path, rng, per_batch=(3, 2, 4, 1, 2), n_test=5):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images, labels = [], []
    for number, n in enumerate(per_batch, start=1):
        entry, chw, label = _cifar_entry(rng, n, {"labels": 10})
        _write_py2_pickle(folder / f"data_batch_{number}", entry)
        images.append(chw)
        labels.append(label["labels"])
    entry, test_chw, test_label = _cifar_entry(rng, n_test, {"labels": 10})
    _write_py2_pickle(folder / "test_batch", entry)
    names = [name.encode() for name in ("airplane", "automobile", "bird", "cat", "deer")]
    _write_py2_pickle(
        folder / "batches.meta",
        {b"num_cases_per_batch": 10000, b"label_names": names + [b"x"] * 5, b"num_vis": 3072},
    )
    return (np.concatenate(images), np.concatenate(labels)), (test_chw, test_label["labels"])


def _write_cifar100(root: Path, rng, n_train=6, n_test=4):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written = []
    for file, n in (("train", n_train), ("test", n_test)):
        entry, chw, labels = _cifar_entry(rng, n, {"fine_labels": 100, "coarse_labels": 20})
        _write_py2_pickle(folder / file, entry)
        written.append((chw, labels))
    _write_py2_pickle(
        folder / "meta",
        {b"fine_label_names": [b"apple"] * 100, b"coarse_label_names": [b"fruit"] * 20},
    )
    return written


def test_python2_pickle_reads_like_the_real_files(tmp_path):
    path = tmp_path / "batch"
    _write_py2_pickle(path, {b"data": np.arange(6, dtype=np.uint8), b"labels": [1, 2]})
    with open(path, "rb") as stream:
        as_bytes = pickle.load(stream, encoding="bytes")
    with open(path, "rb") as stream:
        as_latin1 = pickle.load(stream, encoding="latin1")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in path.read_bytes()
    assert set(as_bytes) == {b"data", b"labels"} and set(as_latin1) == {"data", "labels"}
    np.testing.assert_array_equal(as_latin1["data"], np.arange(6))


def test_cifar10_round_trips_batches_in_order(tmp_path, skip_cifar_md5):
    (train_x, train_y), (test_x, test_y) = _write_cifar10(tmp_path, np.random.default_rng(1))
    train, test = load_dataset("cifar10", root=tmp_path)
    assert tuple(train.data.shape) == (12, 3, 32, 32) and train.data.dtype == torch.uint8
    assert train.data.is_contiguous()
    np.testing.assert_array_equal(train.data.numpy(), train_x)
    np.testing.assert_array_equal(train.labels.numpy(), train_y)
    np.testing.assert_array_equal(test.data.numpy(), test_x)
    np.testing.assert_array_equal(test.labels.numpy(), test_y)
    assert train.info.num_classes == 10 and train.info.input_shape == (3, 32, 32)


def test_cifar10_inputs_equal_torchvision_transforms_bitwise(tmp_path, skip_cifar_md5):
    _write_cifar10(tmp_path, np.random.default_rng(2))
    train, _ = load_dataset("cifar10", root=tmp_path)
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]
    )
    reference = torchvision.datasets.CIFAR10(str(tmp_path), train=True, transform=transform)
    expected = torch.stack([reference[i][0] for i in range(len(reference))])
    assert torch.equal(train.inputs(slice(None)), expected)


def test_cifar100_uses_fine_labels(tmp_path, skip_cifar_md5):
    (train_x, train_labels), (test_x, test_labels) = _write_cifar100(
        tmp_path, np.random.default_rng(3)
    )
    assert not np.array_equal(train_labels["fine_labels"], train_labels["coarse_labels"])
    train, test = load_dataset("cifar100", root=tmp_path)
    np.testing.assert_array_equal(train.data.numpy(), train_x)
    np.testing.assert_array_equal(train.labels.numpy(), train_labels["fine_labels"])
    np.testing.assert_array_equal(test.data.numpy(), test_x)
    np.testing.assert_array_equal(test.labels.numpy(), test_labels["fine_labels"])
    assert train.info.num_classes == 100


def test_cifar_checksum_failure_is_a_runtime_error_naming_the_folder(tmp_path):
    # Without the fixture torchvision's MD5 check runs and rejects the small files.
    _write_cifar10(tmp_path, np.random.default_rng(4))
    with pytest.raises(
        RuntimeError, match="could not read dataset 'cifar10' under .*cifar-10-batches-py"
    ):
        load_dataset("cifar10", root=tmp_path)


# ---------------------------------------------------------------- missing datasets

EXPECTED_LAYOUT = {
    "mnist": "MNIST/raw/train-images-idx3-ubyte",
    "fashion-mnist": "FashionMNIST/raw/train-images-idx3-ubyte",
    "cifar10": "cifar-10-batches-py/data_batch_1",
    "cifar100": "cifar-100-python/train",
}


@pytest.mark.parametrize("name", sorted(EXPECTED_LAYOUT))
def test_missing_dataset_names_path_and_download(tmp_path, name):
    with pytest.raises(FileNotFoundError) as caught:
        load_dataset(name, root=tmp_path)
    message = str(caught.value)
    assert repr(name) in message
    assert str(tmp_path / EXPECTED_LAYOUT[name]) in message
    assert "download=True" in message and "--download" in message and "--data-root" in message


@pytest.mark.parametrize("name", sorted(EXPECTED_LAYOUT))
def test_missing_root_names_dataset_and_remedy(name):
    with pytest.raises(
        FileNotFoundError, match=rf"dataset '{name}' needs a data root.*--data-root.*download=True"
    ):
        load_dataset(name)


def test_download_true_with_files_present_does_not_fetch(tmp_path, monkeypatch):
    # torchvision's download() returns early when its files check passes; make any actual
    # fetch fail loudly so the test would notice one.
    import torchvision.datasets.mnist as mnist

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(mnist, "download_and_extract_archive", no_network)
    written = _write_mnist(tmp_path, "mnist", seed=8)
    train, _ = load_dataset("mnist", root=tmp_path, download=True)
    np.testing.assert_array_equal(train.labels.numpy(), written["train"][1])
