"""Tiny ImageNet (200 classes, 64x64) from the standard ``tiny-imagenet-200`` folder.

Layout (as unzipped from the official archive)::

    tiny-imagenet-200/
      wnids.txt                      the 200 WordNet ids, one per line
      train/<wnid>/images/*.JPEG     500 per class; train/<wnid>/<wnid>_boxes.txt is ignored
      val/images/*.JPEG              10,000 images
      val/val_annotations.txt        filename <TAB> wnid <TAB> four box coordinates

The authors read ``train/`` and a val folder re-foldered by class with ``ImageFolder``
(SPEC §2), so here the class index is the position of the wnid among the sorted folder names
of ``train/``, the training order is ``ImageFolder(train).samples`` (listed by torchvision's
own ``make_dataset``), and the validation order is the one a re-foldered ``val/`` gives:
by class, then by file name. An already re-foldered ``val/<wnid>/...`` is read as is.

Decoding 110,000 JPEGs takes a minute or more, so the decoded ``uint8`` arrays are cached as
``.npy`` files in ``tiny-imagenet-200/masc_fast_cache/`` and reused while they are newer than
the image folders.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from masc_fast._progress import progress_bar
from masc_fast.data._missing import missing_dataset
from masc_fast.data._npy_cache import newest_mtime_ns, read_cache, write_cache
from masc_fast.data.catalog import dataset_info
from masc_fast.data.splits import LabelledSplit

__all__ = ["TINY_IMAGENET_URL", "FOLDER_NAME", "list_train", "list_val", "load_tiny_imagenet"]

logger = logging.getLogger(__name__)

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
FOLDER_NAME = "tiny-imagenet-200"
CACHE_NAME = "masc_fast_cache"
IMAGE_SIZE = 64
# PIL releases the GIL while it decodes, so a few threads decode in parallel.
_DECODE_THREADS = min(8, os.cpu_count() or 1)


def list_train(folder: Path) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """``(samples, class_to_idx)`` of ``folder/train``, exactly as ``ImageFolder`` lists them."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    train_dir = Path(folder) / "train"
    _, class_to_idx = find_classes(train_dir)
    samples = make_dataset(str(train_dir), class_to_idx, extensions=IMG_EXTENSIONS)
    _check_wnids(Path(folder), class_to_idx)
    return samples, class_to_idx


def _check_wnids(folder: Path, class_to_idx: dict[str, int]) -> None:
    """A ``wnids.txt`` that disagrees with ``train/`` means a broken or partial copy."""
    path = folder / "wnids.txt"
    if not path.is_file():
        return
    listed = {line.strip() for line in path.read_text().splitlines() if line.strip()}
    if listed != set(class_to_idx):
        extra, absent = sorted(listed - set(class_to_idx)), sorted(set(class_to_idx) - listed)
        raise ValueError(
            f"{path} and {folder / 'train'} disagree: in wnids.txt only {extra[:5]}, in train/ "
            f"only {absent[:5]} ({len(extra)} and {len(absent)} in all)"
        )


def list_val(folder: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """``(path, class)`` of the validation images, ordered by class, then file name.

    Reads ``val/val_annotations.txt`` with ``val/images/`` when present, otherwise a
    re-foldered ``val/<wnid>/...`` (listed like ``ImageFolder``), with the class indices of
    ``train/`` in both cases.
    """
    val_dir = Path(folder) / "val"
    annotations = val_dir / "val_annotations.txt"
    if annotations.is_file() and (val_dir / "images").is_dir():
        return _list_val_annotated(val_dir, annotations, class_to_idx)
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    val_classes, _ = find_classes(val_dir)
    unknown = [name for name in val_classes if name not in class_to_idx]
    if unknown:
        raise ValueError(
            f"{val_dir} has class folders that train/ lacks: {unknown[:5]} "
            f"({len(unknown)} in all); expected val/images/ with val/val_annotations.txt or "
            "one folder per training wnid"
        )
    return make_dataset(
        str(val_dir), {name: class_to_idx[name] for name in val_classes}, extensions=IMG_EXTENSIONS
    )


def _list_val_annotated(val_dir: Path, annotations: Path, class_to_idx) -> list[tuple[str, int]]:
    images = val_dir / "images"
    rows = []
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in class_to_idx:
            raise ValueError(
                f"{annotations}, line {number}: expected 'file<TAB>wnid<TAB>...' with a wnid "
                f"of train/, got {line!r}"
            )
        rows.append((class_to_idx[fields[1]], fields[0]))
    from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

    on_disk = {
        entry.name
        for entry in os.scandir(images)
        if entry.is_file() and has_file_allowed_extension(entry.name, IMG_EXTENSIONS)
    }
    named = {name for _, name in rows}
    if named != on_disk or len(named) != len(rows):
        raise ValueError(
            f"{annotations} does not match {images}: {len(rows)} rows ({len(named)} distinct "
            f"files), {len(on_disk)} files; unannotated: {sorted(on_disk - named)[:3]}, "
            f"missing: {sorted(named - on_disk)[:3]}"
        )
    # A re-foldered val/ would list class by class (sorted wnids = class order), then files
    # in sorted order: sort the same way.
    return [(str(images / name), label) for label, name in sorted(rows)]


def _decode_image(path: str) -> np.ndarray:
    """One image as ``uint8`` of shape (3, 64, 64): PIL, ``convert("RGB")``, channel-first."""
    from PIL import Image

    with open(path, "rb") as stream:
        image = Image.open(stream).convert("RGB")
    pixels = np.asarray(image)
    if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(
            f"{path}: expected a {IMAGE_SIZE}x{IMAGE_SIZE} image, got {image.width}x"
            f"{image.height} (Tiny ImageNet is used at its native size, without resizing)"
        )
    return pixels.transpose(2, 0, 1)


def _decode_all(paths: list[str], *, progress: bool, description: str) -> np.ndarray:
    out = np.empty((len(paths), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)

    def decode_into(index: int) -> None:
        out[index] = _decode_image(paths[index])

    pool = ThreadPoolExecutor(max_workers=_DECODE_THREADS)
    try:
        done = pool.map(decode_into, range(len(paths)))
        for _ in progress_bar(
            done, total=len(paths), desc=description, unit="img", disable=not progress
        ):
            pass
    finally:
        # After a failed image, drop the queued ones instead of decoding them all first.
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def _load_split(folder: Path, split: str, samples, *, progress: bool) -> LabelledSplit:
    """Decode (or read from the cache) one split's images."""
    paths = [path for path, _ in samples]
    labels = np.fromiter((label for _, label in samples), dtype=np.int64, count=len(samples))
    source = "train" if split == "train" else "val"
    # Adding, removing or renaming an image changes its folder's time; the annotation file
    # decides the val labels.
    watched = {os.path.dirname(path) for path in paths} | {str(folder / source)}
    annotations = folder / "val" / "val_annotations.txt"
    if split == "test" and annotations.is_file():
        watched.add(str(annotations))
    cache_dir = folder / CACHE_NAME
    files = {
        "images": cache_dir / f"{split}_images.npy",
        "labels": cache_dir / f"{split}_labels.npy",
    }
    cached = read_cache(files, newest_mtime_ns(watched))
    expected_shape = (len(paths), 3, IMAGE_SIZE, IMAGE_SIZE)
    if (
        cached is not None
        and cached["images"].shape == expected_shape
        and cached["images"].dtype == np.uint8
        and np.array_equal(cached["labels"], labels)
    ):
        logger.debug("read Tiny ImageNet %s from %s", split, cache_dir)
        images = cached["images"]
    else:
        images = _decode_all(
            paths, progress=progress, description=f"decoding tiny-imagenet {split}"
        )
        write_cache(files, {"images": images, "labels": labels})
    info = dataset_info("tiny-imagenet")
    return LabelledSplit(
        "tiny-imagenet", split, torch.from_numpy(images), torch.from_numpy(labels), info
    )


def load_tiny_imagenet(root: Path, *, download: bool = False, progress: bool = True):
    """Train and validation ("test") splits of Tiny ImageNet under ``root/tiny-imagenet-200``.

    Parameters
    ----------
    root : pathlib.Path
        The folder that holds ``tiny-imagenet-200/``.
    download : bool, default False
        Fetch and unzip :data:`TINY_IMAGENET_URL` into ``root`` first if the folder is missing
        (about 240 MB).
    progress : bool, default True
        Show a progress bar while decoding.

    Returns
    -------
    (LabelledSplit, LabelledSplit)
        uint8 ``(N, 3, 64, 64)`` pixels and int64 labels: train in ``ImageFolder`` order
        (100,000 images, class by class), val in re-foldered order (10,000).

    Raises
    ------
    FileNotFoundError
        If ``train/`` or ``val/`` is missing and ``download`` is false (the message names the
        paths and the URL), or a class folder has no image.
    ValueError
        If ``wnids.txt``, the val annotations or the val folders disagree with ``train/``, or
        an image is not 64x64.

    Notes
    -----
    The first load decodes every JPEG (threads, progress bar) and writes about 1.35 GB of
    ``.npy`` cache next to the data; later loads read the cache. If the folder is read-only
    the cache is skipped with a logged warning.
    """
    root = Path(root)
    folder = root / FOLDER_NAME
    needed = [folder / "train", folder / "val"]
    if download and not all(path.is_dir() for path in needed):
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(TINY_IMAGENET_URL, download_root=str(root))
    missing = [path for path in needed if not path.is_dir()]
    if missing:
        raise missing_dataset(
            "tiny-imagenet", root, f"{FOLDER_NAME}/", missing, url=TINY_IMAGENET_URL
        )
    train_samples, class_to_idx = list_train(folder)
    val_samples = list_val(folder, class_to_idx)
    return (
        _load_split(folder, "train", train_samples, progress=progress),
        _load_split(folder, "test", val_samples, progress=progress),
    )
