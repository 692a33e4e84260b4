"""Tiny ImageNet from a small ``tiny-imagenet-200`` folder in the official layout."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from masc_fast.data import load_dataset
from masc_fast.data import tiny_imagenet as tiny_module

torchvision = pytest.importorskip("torchvision")
Image = pytest.importorskip("PIL.Image")
from torchvision import transforms  # noqa: E402
from torchvision.datasets import ImageFolder  # noqa: E402

# Deliberately not in sorted order on disk; class indices must follow sorted names.
WNIDS = ("n09999999", "n01443537", "n02124075")
TRAIN_PER_CLASS = 4
# (file name, wnid): file names out of class order, so sorting by class then name matters.
VAL_ROWS = (
    ("val_0.JPEG", "n02124075"),
    ("val_1.JPEG", "n01443537"),
    ("val_10.JPEG", "n09999999"),
    ("val_2.JPEG", "n02124075"),
    ("val_3.JPEG", "n01443537"),
    ("val_4.JPEG", "n01443537"),
)


def _save_jpeg(path: Path, rng) -> None:
    # Smooth gradients plus noise: JPEG-like content, so decoding is not trivially exact.
    base = np.linspace(0, 255, 64)[None, :, None] * rng.random(3)[None, None, :]
    pixels = np.clip(base + rng.normal(0, 25, size=(64, 64, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=95)


def _make_tiny_imagenet(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "tiny-imagenet-200"
    for wnid in WNIDS:
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        lines = []
        for i in (3, 0, 11, 2)[:TRAIN_PER_CLASS]:  # "_11" sorts before "_2" as a string
            name = f"{wnid}_{i}.JPEG"
            _save_jpeg(images / name, rng)
            lines.append(f"{name}\t1\t2\t60\t61")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("\n".join(lines) + "\n")
    val_images = folder / "val" / "images"
    val_images.mkdir(parents=True)
    for name, _ in VAL_ROWS:
        _save_jpeg(val_images / name, rng)
    (folder / "val" / "val_annotations.txt").write_text(
        "".join(f"{name}\t{wnid}\t0\t5\t50\t63\n" for name, wnid in VAL_ROWS)
    )
    (folder / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    return folder


def _pil_pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1)


@pytest.fixture
def tiny_root(tmp_path):
    _make_tiny_imagenet(tmp_path)
    return tmp_path


def test_train_order_and_classes_equal_imagefolder(tiny_root):
    train, _ = load_dataset("tiny-imagenet", root=tiny_root, progress=False)
    reference = ImageFolder(str(tiny_root / "tiny-imagenet-200" / "train"))
    assert reference.classes == sorted(WNIDS)
    assert len(train) == len(WNIDS) * TRAIN_PER_CLASS == len(reference.samples)
    np.testing.assert_array_equal(train.labels.numpy(), [label for _, label in reference.samples])
    # ImageFolder's order within a class: sorted file names (string order)
    names = [Path(path).name for path, _ in reference.samples[:TRAIN_PER_CLASS]]
    assert names == [
        "n01443537_0.JPEG",
        "n01443537_11.JPEG",
        "n01443537_2.JPEG",
        "n01443537_3.JPEG",
    ]
    for i, (path, _) in enumerate(reference.samples):
        np.testing.assert_array_equal(train.data[i].numpy(), _pil_pixels(path))


def test_inputs_equal_totensor_of_imagefolder_images_bitwise(tiny_root):
    train, _ = load_dataset("tiny-imagenet", root=tiny_root, progress=False)
    reference = ImageFolder(
        str(tiny_root / "tiny-imagenet-200" / "train"), transform=transforms.ToTensor()
    )
    expected = torch.stack([reference[i][0] for i in range(len(reference))])
    got = train.inputs(torch.arange(len(train)))
    assert got.dtype == torch.float32 and torch.equal(got, expected)
    assert 0 <= got.min() and got.max() <= 1 and got.std() > 0.05
    assert train.info.mean is None and train.info.strict_corruption


def test_val_order_is_by_class_then_file_name(tiny_root):
    _, test = load_dataset("tiny-imagenet", root=tiny_root, progress=False)
    class_index = {wnid: i for i, wnid in enumerate(sorted(WNIDS))}
    expected_rows = sorted(VAL_ROWS, key=lambda row: (row[1], row[0]))
    assert test.split == "test" and len(test) == len(VAL_ROWS)
    np.testing.assert_array_equal(test.labels.numpy(), [class_index[w] for _, w in expected_rows])
    images = tiny_root / "tiny-imagenet-200" / "val" / "images"
    for i, (name, _) in enumerate(expected_rows):
        np.testing.assert_array_equal(test.data[i].numpy(), _pil_pixels(images / name))


def test_refoldered_val_gives_the_same_split(tiny_root, tmp_path_factory):
    _, annotated = load_dataset("tiny-imagenet", root=tiny_root, progress=False)
    other = tmp_path_factory.mktemp("refoldered")
    shutil.copytree(tiny_root / "tiny-imagenet-200", other / "tiny-imagenet-200")
    val = other / "tiny-imagenet-200" / "val"
    shutil.rmtree(other / "tiny-imagenet-200" / "masc_fast_cache")
    for name, wnid in VAL_ROWS:  # the usual re-foldering: val/<wnid>/images/<file>
        (val / wnid / "images").mkdir(parents=True, exist_ok=True)
        os.replace(val / "images" / name, val / wnid / "images" / name)
    (val / "images").rmdir()
    (val / "val_annotations.txt").unlink()
    _, refoldered = load_dataset("tiny-imagenet", root=other, progress=False)
    assert torch.equal(refoldered.labels, annotated.labels)
    assert torch.equal(refoldered.data, annotated.data)
    # and it is what ImageFolder makes of the re-foldered val (all classes present here)
    reference = ImageFolder(str(val))
    np.testing.assert_array_equal(refoldered.labels.numpy(), reference.targets)


def test_second_load_reads_the_cache(tiny_root, monkeypatch):
    first_train, first_test = load_dataset("tiny-imagenet", root=tiny_root, progress=False)
    cache = tiny_root / "tiny-imagenet-200" / "masc_fast_cache"
    assert sorted(p.name for p in cache.iterdir()) == [
        "test_images.npy",
        "test_labels.npy",
        "train_images.npy",
        "train_labels.npy",
    ]

    def no_decoding(path):
        raise AssertionError(f"decoded {path} although the cache is fresh")

    monkeypatch.setattr(tiny_module, "_decode_image", no_decoding)
    train, test = load_dataset("tiny-imagenet", root=tiny_root, progress=False)
    assert torch.equal(train.data, first_train.data) and torch.equal(
        train.labels, first_train.labels
    )
    assert torch.equal(test.data, first_test.data) and torch.equal(test.labels, first_test.labels)


def test_cache_is_rebuilt_when_the_folder_changes(tiny_root, monkeypatch):
    load_dataset("tiny-imagenet", root=tiny_root, progress=False)
    images = tiny_root / "tiny-imagenet-200" / "train" / "n09999999" / "images"  # last class
    _save_jpeg(images / "n09999999_9.JPEG", np.random.default_rng(9))
    # Make the change unambiguously newer than the cache even on coarse-mtime filesystems.
    future = time.time_ns() + 5_000_000_000
    os.utime(images, ns=(future, future))
    decoded = []
    original = tiny_module._decode_image
    monkeypatch.setattr(
        tiny_module, "_decode_image", lambda path: decoded.append(path) or original(path)
    )
    train, _ = load_dataset("tiny-imagenet", root=tiny_root, progress=False)
    assert len(train) == len(WNIDS) * TRAIN_PER_CLASS + 1
    assert len(decoded) == len(train)  # train re-decoded; val cache still fresh
    np.testing.assert_array_equal(train.data[-1].numpy(), _pil_pixels(images / "n09999999_9.JPEG"))


def test_unwritable_cache_falls_back_with_a_log_message(tiny_root, monkeypatch, caplog):
    # Tests run as root, for whom chmod does not make a folder read-only; a cache path under a
    # regular file fails the same way (an OSError from mkdir).
    blocker = tiny_root / "tiny-imagenet-200" / "wnids.txt"
    monkeypatch.setattr(tiny_module, "CACHE_NAME", "wnids.txt/cache")
    with caplog.at_level(logging.WARNING, logger="masc_fast.data"):
        train, test = load_dataset("tiny-imagenet", root=tiny_root, progress=False)
    assert len(train) == len(WNIDS) * TRAIN_PER_CLASS and len(test) == len(VAL_ROWS)
    assert blocker.is_file()
    assert "continuing without it" in caplog.text and "wnids.txt" in caplog.text


def test_missing_folder_names_paths_url_and_download(tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        load_dataset("tiny-imagenet", root=tmp_path)
    message = str(caught.value)
    assert "'tiny-imagenet'" in message
    assert str(tmp_path / "tiny-imagenet-200" / "train") in message
    assert "http://cs231n.stanford.edu/tiny-imagenet-200.zip" in message
    assert "download=True" in message and "--data-root" in message


def test_missing_root_names_the_url():
    with pytest.raises(FileNotFoundError, match=r"needs a data root.*tiny-imagenet-200\.zip"):
        load_dataset("tiny-imagenet")


def test_wnids_file_disagreeing_with_train_is_an_error(tiny_root):
    (tiny_root / "tiny-imagenet-200" / "wnids.txt").write_text("n01443537\nn00000001\n")
    with pytest.raises(ValueError, match=r"wnids.txt and .*train disagree"):
        load_dataset("tiny-imagenet", root=tiny_root, progress=False)


def test_annotation_with_unknown_wnid_names_the_line(tiny_root):
    annotations = tiny_root / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text().replace("n09999999", "n00000001"))
    with pytest.raises(ValueError, match=r"val_annotations.txt, line 3"):
        load_dataset("tiny-imagenet", root=tiny_root, progress=False)


def test_unannotated_val_image_is_an_error(tiny_root):
    _save_jpeg(
        tiny_root / "tiny-imagenet-200" / "val" / "images" / "val_99.JPEG", np.random.default_rng(1)
    )
    with pytest.raises(ValueError, match=r"unannotated: \['val_99.JPEG'\]"):
        load_dataset("tiny-imagenet", root=tiny_root, progress=False)


def test_image_of_the_wrong_size_is_an_error(tiny_root):
    path = tiny_root / "tiny-imagenet-200" / "train" / "n01443537" / "images" / "n01443537_0.JPEG"
    Image.fromarray(np.zeros((32, 48, 3), dtype=np.uint8) + 7).save(path, format="JPEG")
    with pytest.raises(ValueError, match=r"n01443537_0.JPEG: expected a 64x64 image, got 48x32"):
        load_dataset("tiny-imagenet", root=tiny_root, progress=False)


def test_grayscale_jpeg_is_converted_to_rgb(tiny_root):
    path = tiny_root / "tiny-imagenet-200" / "train" / "n01443537" / "images" / "n01443537_0.JPEG"
    gray = np.random.default_rng(2).integers(0, 256, size=(64, 64), dtype=np.uint8)
    Image.fromarray(gray).save(path, format="JPEG", quality=95)  # some real ones are grayscale
    train, _ = load_dataset("tiny-imagenet", root=tiny_root, progress=False)
    pixels = train.data[0].numpy()
    np.testing.assert_array_equal(pixels, _pil_pixels(path))
    assert np.array_equal(pixels[0], pixels[1]) and np.array_equal(pixels[1], pixels[2])


def test_download_fetches_the_official_zip_into_root(tmp_path, monkeypatch):
    import torchvision.datasets.utils as utils

    calls = []

    def fake_download(url, download_root, **kwargs):  # no network in tests: unzip a fake
        calls.append((url, Path(download_root)))
        _make_tiny_imagenet(Path(download_root))

    monkeypatch.setattr(utils, "download_and_extract_archive", fake_download)
    train, test = load_dataset("tiny-imagenet", root=tmp_path, download=True, progress=False)
    assert calls == [("http://cs231n.stanford.edu/tiny-imagenet-200.zip", tmp_path)]
    assert len(train) == len(WNIDS) * TRAIN_PER_CLASS and len(test) == len(VAL_ROWS)
    load_dataset("tiny-imagenet", root=tmp_path, download=True, progress=False)
    assert len(calls) == 1  # present now: not fetched again
