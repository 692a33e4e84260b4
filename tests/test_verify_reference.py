"""verify-reference: target file, comparison rules, the skip path, and an end-to-end run on a
small fake MNIST in the real idx format, checked against scikit-learn's PCA (masc_fast.reference)."""

from __future__ import annotations

import argparse
import struct

import numpy as np
import pandas as pd
import pytest

from masc_fast import reference as ref
from masc_fast.cli.verify_reference import register
from masc_fast.data.corruption import corrupt_labels
from masc_fast.pipeline.experiments.verify_reference import (
    REPORT_COLUMNS,
    compare_to_targets,
    format_report,
    load_targets,
    summary_line,
    verify_reference,
)

N_TRAIN, N_TEST, SIDE = 200, 60, 28


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.run(args)


# ------------------------------------------------------------------ targets and comparison
def test_targets_are_the_spec_table():
    targets = load_targets()
    assert len(targets) == 75 and not targets.isna().any().any()
    assert set(targets["dataset"]) == {"mnist", "fashion-mnist", "cifar10"}
    assert sorted(targets["threshold"].unique()) == [0.25, 0.5, 0.75, 0.99, 1.0]
    row = targets.query("dataset == 'fashion-mnist' and p == 0.6 and threshold == 0.5").iloc[0]
    assert (row["accuracy"], row["components"], row["input_dim"]) == (0.5836, 12, 784)
    one_pc = targets[targets["threshold"] == 1.0]
    assert (one_pc["components"] == 10).all()  # "1 PC": exactly one component per class


def _measured(rows) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["dataset", "p", "threshold", "accuracy", "components"]
    ).assign(num_classes=10, backend="torch")


def test_compare_flags_accuracy_after_4_decimal_rounding():
    # Target MNIST, p = 0, t = 0.99: 0.8234 [1365].
    measured = _measured(
        [
            ("mnist", 0.0, 0.99, 0.82344, 1365),  # rounds to 0.8234: exact
            ("mnist", 0.0, 0.99, 0.82349, 1365),  # rounds to 0.8235: one step off, allowed
            ("mnist", 0.0, 0.99, 0.82331, 1365),  # rounds to 0.8233: one step off, allowed
            ("mnist", 0.0, 0.99, 0.82356, 1365),  # rounds to 0.8236: two steps off, fails
            ("mnist", 0.0, 0.99, 0.8321, 1365),  # the p = 0.2 value: fails
        ]
    )
    report = compare_to_targets(measured)
    assert list(report.columns) == [*REPORT_COLUMNS, "num_classes", "backend"]
    assert report["accuracy"].tolist() == [0.8234, 0.8235, 0.8233, 0.8236, 0.8321]
    assert report["target_accuracy"].tolist() == [0.8234] * 5
    assert report["accuracy_ok"].tolist() == [True, True, True, False, False]
    assert report["components_ok"].all()
    assert report["ok"].tolist() == [True, True, True, False, False]
    assert report["accuracy_diff"].iloc[3] == pytest.approx(2e-4)


def test_compare_one_rounding_step_survives_binary_floats():
    # Target CIFAR-10, p = 0, t = 0.25: 0.2010. 0.2010 - 0.2009 is 1.0000000000000167e-4 in
    # binary: still one rounding step, still allowed.
    report = compare_to_targets(_measured([("cifar10", 0.0, 0.25, 0.20094, 12)]))
    assert report["accuracy"].iloc[0] == 0.2009 and report["target_accuracy"].iloc[0] == 0.201
    assert report["accuracy_diff"].iloc[0] > 1e-4
    assert bool(report["accuracy_ok"].iloc[0])


def test_compare_allows_one_component_per_class():
    # Target CIFAR-10, p = 0.4, t = 0.75: 0.2249 [193]; 1 PC at p = 0.8: 0.1850 [10].
    measured = _measured(
        [
            ("cifar10", 0.4, 0.75, 0.2249, 203),  # +10: one per class, allowed
            ("cifar10", 0.4, 0.75, 0.2249, 183),  # -10, allowed
            ("cifar10", 0.4, 0.75, 0.2249, 204),  # +11: fails
            ("cifar10", 0.4, 0.75, 0.2249, 182),  # -11: fails
            ("cifar10", 0.8, 1, 0.185, 10),
        ]
    )
    report = compare_to_targets(measured)
    assert report["components_diff"].tolist() == [10, 10, 11, 11, 0]
    assert report["components_ok"].tolist() == [True, True, False, False, True]
    assert report["ok"].tolist() == [True, True, False, False, True]
    assert report["target_components"].tolist() == [193, 193, 193, 193, 10]
    assert summary_line(report) == "3 of 5 settings agree"
    text = format_report(report)
    assert text.splitlines()[0].split() == [
        "dataset",
        "p",
        "threshold",
        "acc",
        "target",
        "k",
        "target",
        "k",
        "ok",
    ]
    assert "0.2249" in text and "NO" in text and "yes" in text


def test_compare_tolerance_scales_with_classes():
    measured = _measured([("cifar10", 0.4, 0.75, 0.2249, 198)]).assign(num_classes=4)
    assert not compare_to_targets(measured)["components_ok"].iloc[0]  # 5 > 4 per class


def test_compare_names_settings_without_a_target_and_missing_columns():
    with pytest.raises(ValueError, match=r"no target for setting.*mnist, 0\.0, 0\.9"):
        compare_to_targets(_measured([("mnist", 0.0, 0.9, 0.8, 100)]))
    with pytest.raises(ValueError, match=r"lack column\(s\) \['num_classes'\]"):
        compare_to_targets(_measured([("mnist", 0.0, 0.99, 0.8, 100)]).drop(columns="num_classes"))


def test_verify_rejects_settings_without_targets(tmp_path):
    with pytest.raises(ValueError, match="dataset.*'cifar100'"):
        verify_reference(tmp_path, datasets=["cifar100"], progress=False)
    with pytest.raises(ValueError, match=r"threshold\(s\) \[0\.9\]"):
        verify_reference(tmp_path, thresholds=[0.9], progress=False)
    with pytest.raises(ValueError, match=r"p = \[1\.0\]"):
        verify_reference(tmp_path, corruptions=[1.0], progress=False)


# ------------------------------------------------------------------ skip path
def test_no_datasets_is_a_skip_not_a_failure(tmp_path, capsys, caplog):
    report = verify_reference(tmp_path, progress=False)
    assert report.empty and list(report.columns) == list(REPORT_COLUMNS)
    assert set(report.attrs["skipped"]) == {"mnist", "fashion-mnist", "cifar10"}
    assert str(tmp_path) in report.attrs["skipped"]["mnist"]
    assert "skipping cifar10" in caplog.text
    assert _cli(["verify-reference", "--data-root", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"skipped: no datasets found under {tmp_path}, nothing verified" in out
    assert str(tmp_path / "MNIST" / "raw") in caplog.text  # where it looked


# ------------------------------------------------------------------ end to end on fake MNIST
def _write_idx(path, array: np.ndarray) -> None:
    """The idx format torchvision reads: magic (0, 0, 0x08 = ubyte, ndim), big-endian sizes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory):
    """A small MNIST-shaped set: per-class low-rank templates plus noise, in idx files."""
    rng = np.random.default_rng(7)
    # Zero-mean templates with signed, unequal weights: no single direction dominates the
    # uncentred second moment, so the thresholds keep different numbers of components.
    templates = rng.uniform(-1, 1, size=(10, 3, SIDE * SIDE))
    scales = np.array([1.0, 0.7, 0.5])

    def images(labels):
        weights = rng.normal(size=(len(labels), 3)) * scales
        mix = np.einsum("nj,njd->nd", weights, templates[labels]) / 2
        noisy = np.clip(mix + rng.normal(0, 0.1, size=mix.shape), -1, 1)
        return ((noisy + 1) / 2 * 255).round().astype(np.uint8).reshape(-1, SIDE, SIDE)

    y_train = rng.permutation(np.arange(N_TRAIN) % 10)
    y_test = rng.permutation(np.arange(N_TEST) % 10)
    x_train, x_test = images(y_train), images(y_test)
    root = tmp_path_factory.mktemp("data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw / "train-images-idx3-ubyte", x_train)
    _write_idx(raw / "train-labels-idx1-ubyte", y_train)
    _write_idx(raw / "t10k-images-idx3-ubyte", x_test)
    _write_idx(raw / "t10k-labels-idx1-ubyte", y_test)
    return root, x_train, y_train, x_test, y_test


def _preprocess(images: np.ndarray) -> np.ndarray:
    """ToTensor + Normalize(0.5, 0.5) (SPEC §2), in float32 like torchvision, then float64."""
    x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255)
    return ((x - np.float32(0.5)) / np.float32(0.5)).astype(np.float64)


def _independent(fake, p: float, threshold: float) -> tuple[float, int]:
    """Test accuracy and total components from scikit-learn's PCA on X_c and -X_c."""
    _, x_train, y_train, x_test, y_test = fake
    corrupted = corrupt_labels(y_train, p, 10, seed=42)
    bases = ref.fit_subspaces_ref(_preprocess(x_train), corrupted, 10, threshold)
    pred = ref.predict_ref(_preprocess(x_test), bases)
    return float((pred == y_test).mean()), sum(b.shape[1] for b in bases if b is not None)


def test_end_to_end_matches_scikit_learn_on_fake_mnist(fake_mnist, device):
    root = fake_mnist[0]
    report = verify_reference(
        root, thresholds=(0.75, 0.5, 1), corruptions=(0.0, 0.4), device=device, progress=False
    )
    assert list(report.columns[: len(REPORT_COLUMNS)]) == list(REPORT_COLUMNS)
    assert report[["dataset", "p", "threshold"]].values.tolist() == [
        ["mnist", p, t] for p in (0.0, 0.4) for t in (0.75, 0.5, 1.0)
    ]
    assert set(report.attrs["skipped"]) == {"fashion-mnist", "cifar10"}
    assert (report["n_test"] == N_TEST).all() and (report["num_classes"] == 10).all()
    targets = load_targets().query("dataset == 'mnist'")
    for row in report.itertuples():
        accuracy, components = _independent(fake_mnist, row.p, row.threshold)
        assert row.components == components, (row.p, row.threshold)
        assert row.accuracy == round(accuracy, 4), (row.p, row.threshold)
        target = targets[(targets["p"] == row.p) & (targets["threshold"] == row.threshold)]
        assert row.target_accuracy == target["accuracy"].iloc[0]
        assert row.target_components == target["components"].iloc[0]
    ks = report.set_index(["p", "threshold"])["components"]
    assert ks[(0.0, 1.0)] == 10 and ks[(0.0, 0.75)] > ks[(0.0, 0.5)] > 10  # non-trivial ranks
    # Fake pixels are not MNIST: the accuracies cannot match the paper's.
    assert not report["accuracy_ok"].any() and not report["ok"].any()


def test_cli_exits_1_on_mismatch_and_writes_the_report(fake_mnist, tmp_path, capsys):
    out = tmp_path / "report.csv"
    argv = [
        "verify-reference",
        "--data-root",
        str(fake_mnist[0]),
        "--datasets",
        "mnist",
        "--thresholds",
        "1",
        "--corruptions",
        "0.2",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert _cli(argv) == 1
    printed = capsys.readouterr().out
    assert "0 of 1 settings agree" in printed and "NO" in printed
    assert "skipped" not in printed  # only mnist was asked for
    written = pd.read_csv(out)
    accuracy, components = _independent(fake_mnist, 0.2, 1)
    assert written["components"].tolist() == [components] == [10]
    assert written["accuracy"].tolist() == [round(accuracy, 4)]
    assert written["target_accuracy"].tolist() == [0.8135]


def test_cli_names_skipped_datasets_next_to_the_verified_ones(fake_mnist, capsys):
    argv = [
        "verify-reference",
        "--data-root",
        str(fake_mnist[0]),
        "--thresholds",
        "1",
        "--corruptions",
        "0",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert _cli(argv) == 1
    printed = capsys.readouterr().out
    assert f"skipped fashion-mnist, cifar10: not found under {fake_mnist[0]}" in printed
    assert "0 of 1 settings agree" in printed
