"""Real data: Fashion-MNIST as Debian packages it (gzipped idx files), and the authors' table.

``.ci/run`` installs Debian's ``dataset-fashion-mnist`` where it can (root and apt-get), so CI
reproduces the authors' input-layer numbers on the real data; elsewhere the real-data test
skips and says how to get the files. The layout itself is tested on small files written here.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _real_data import MISSING, real_fashion_root

from masc_fast.data import find_datasets, load_dataset
from masc_fast.data.idx_folder import read_idx


def test_verify_reference_reproduces_the_authors_fashion_mnist_table_exactly():
    from masc_fast.pipeline.experiments.verify_reference import verify_reference

    root = real_fashion_root()
    if root is None:
        pytest.skip(MISSING)
    report = verify_reference(root, datasets=["fashion-mnist"], progress=False)
    assert len(report) == 25  # 5 thresholds × 5 corruption degrees (SPEC §9.2)
    assert report["n_test"].eq(10_000).all()
    # Exactly the authors' values: accuracy to their 4 decimals, components to the one.
    assert (report["accuracy"].round(4) == report["target_accuracy"]).all(), report
    assert (report["components"] == report["target_components"]).all(), report


# ---------------------------------------------------------------- the layout, on small files


def _write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def _debian_folder(root: Path, name: str, *, compress: bool = True) -> tuple[np.ndarray, ...]:
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = (
        rng.integers(0, 256, (60, 28, 28)), rng.integers(0, 10, 60),
        rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 10, 20),
    )  # fmt: skip
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")  # fmt: skip
    for stem, array in zip(stems, arrays):
        _write_idx(folder / stem, array, compress=compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False], ids=["gzipped", "plain"])
def test_the_debian_layout_loads_without_unpacking(tmp_path, compress):
    train_x, train_y, test_x, test_y = _debian_folder(tmp_path, "fashion-mnist", compress=compress)
    train, test = load_dataset("fashion-mnist", root=tmp_path)
    assert torch.equal(train.data, torch.from_numpy(train_x.astype(np.uint8)).unsqueeze(1))
    assert torch.equal(train.labels, torch.from_numpy(train_y))
    assert torch.equal(test.labels, torch.from_numpy(test_y)) and len(test) == 20
    assert sorted(path.name for path in (tmp_path / "fashion-mnist").iterdir()) == sorted(
        f"{stem}{'.gz' if compress else ''}"
        for stem in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
    )  # fmt: skip  (nothing unpacked beside them)


def test_a_corrupt_idx_file_is_named(tmp_path):
    _debian_folder(tmp_path, "mnist")
    path = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(bytes([0, 0, 0x08, 1]) + np.asarray([20], dtype=">i4").tobytes() + b"\x01")
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz: the header says \(20,\)"):
        load_dataset("mnist", root=tmp_path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: cannot read it as an idx"):
        read_idx(path)


def test_a_missing_dataset_names_both_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"FashionMNIST/raw/ \(torchvision's layout\) or "
                       r"fashion-mnist/ \(the four idx files"):  # fmt: skip
        load_dataset("fashion-mnist", root=tmp_path)


def test_env_lists_the_datasets_it_finds_and_where(tmp_path):
    _debian_folder(tmp_path, "mnist")
    assert ("mnist", tmp_path / "mnist", "Debian's idx files") in find_datasets([tmp_path])
    done = subprocess.run(
        [sys.executable, "-m", "masc_fast.cli.main", "env", "--data-root", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"mnist          {tmp_path / 'mnist'} (Debian's idx files)" in done.stdout
