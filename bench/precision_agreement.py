"""Prediction agreement of each scoring precision with the float64 reference (issue 3, item 3).

For every layer of two MLPs trained with label noise (digits p=0.4, MNIST-1D p=0.2) and for
structured synthetic data, class subspaces are fitted by the float64 reference
(``masc_fast.reference``: scikit-learn PCA on X_k ∪ −X_k) and the test rows are predicted

* by the reference itself (float64), and
* in each precision mode: on a GPU by the Triton kernel (``backend="triton"``); without one by
  an emulation of the mode's rounding on the CPU (inputs rounded as the mode rounds them,
  exact products, float32 sums), because Triton's interpreter ignores ``input_precision``.

Emulation: "tf32" truncates the 13 low mantissa bits of both operands (truncation errs twice
as far as rounding to nearest, the other conversion a TF32 path may apply, so the emulation
is the pessimistic one);
"tf32x3" splits each operand into a TF32 head and a TF32 tail and sums the three leading
products; "bf16" rounds to bfloat16 to nearest-even. The header of the printed table says
which was measured.

Usage: python bench/precision_agreement.py > precision.md
"""

from __future__ import annotations

import argparse
import platform
import sys

import numpy as np
import torch

from masc_fast.data.in_memory import load_digits_split, load_mnist1d
from masc_fast.reference import fit_subspaces_ref, predict_ref
from masc_fast.testing.noisy_mlp import noisy_mlp_activations
from masc_fast.testing.synthetic import structured_classes

PRECISIONS = ("fp32", "tf32", "tf32x3", "bf16")


def _truncate_tf32(x: torch.Tensor) -> torch.Tensor:
    bits = x.contiguous().view(torch.int32) & ~0x1FFF
    return bits.view(torch.float32)


def emulated_product(a: torch.Tensor, b: torch.Tensor, precision: str) -> torch.Tensor:
    """``a @ b`` for float32 operands with the input rounding of ``precision`` (float32 sums)."""
    if precision == "fp32":
        return a @ b
    if precision == "bf16":
        return a.bfloat16().float() @ b.bfloat16().float()
    a_head, b_head = _truncate_tf32(a), _truncate_tf32(b)
    if precision == "tf32":
        return a_head @ b_head
    a_tail, b_tail = _truncate_tf32(a - a_head), _truncate_tf32(b - b_head)
    return a_head @ b_head + (a_head @ b_tail + a_tail @ b_head)


def _emulated_predict(x: np.ndarray, bases, precision: str) -> np.ndarray:
    present = [k for k, basis in enumerate(bases) if basis is not None]
    basis = torch.from_numpy(np.concatenate([bases[k] for k in present], axis=1)).float()
    rows = torch.from_numpy(x).float()
    proj = emulated_product(rows, basis, precision).double()
    sq_norms = rows.double().square().sum(dim=1).clamp_min(1e-300)
    energies, start = [], 0
    for k in present:
        width = bases[k].shape[1]
        energies.append(proj[:, start : start + width].square().sum(dim=1) / sq_norms)
        start += width
    scores = torch.stack(energies, dim=1).clamp(max=1.0).float()
    return np.asarray(present)[scores.argmax(dim=1).numpy()]


def triton_predict(x: np.ndarray, bases, precision: str, device="cuda") -> np.ndarray:
    """Predictions of the Triton kernel at ``precision`` (on ``device``: CUDA, or the CPU
    under ``TRITON_INTERPRET=1``)."""
    from masc_fast.backends import triton_ops

    lengths = [0 if basis is None else basis.shape[1] for basis in bases]
    basis = np.concatenate([basis for basis in bases if basis is not None], axis=1)
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int64)
    _, pred = triton_ops.subspace_scores(
        torch.from_numpy(x).float().to(device),
        torch.from_numpy(basis).float().to(device),
        offsets,
        precision=precision,
    )
    return pred.cpu().numpy()


def _mlp_layers(data, p: float, hidden, epochs: int):
    noisy = noisy_mlp_activations(data, p, hidden, epochs=epochs)
    for layer in noisy.train:
        yield (
            layer,
            noisy.train[layer].double().numpy(),
            noisy.corrupted.numpy(),
            noisy.test[layer].double().numpy(),
            noisy.y_test.numpy(),
        )


def paper_sources():
    """(name, x_train, y_train, x_test, y_test) of the measured activations: every layer of two
    MLPs trained with label noise, and structured synthetic data."""
    for layer, *arrays in _mlp_layers(load_digits_split(), 0.4, (128, 512), epochs=15):
        yield f"digits MLP p=0.4 / {layer}", *arrays
    try:
        mnist1d = load_mnist1d()
    except ImportError as error:  # a GPU image without the mnist1d package
        print(f"skipping the MNIST-1D rows: {error}", file=sys.stderr)
    else:
        for layer, *arrays in _mlp_layers(mnist1d, 0.2, (256, 512), epochs=10):
            yield f"MNIST-1D MLP p=0.2 / {layer}", *arrays
    x, y = structured_classes(12000, 256, 10, seed=7, dtype=torch.float64)
    yield (
        "structured synthetic d=256",
        x[:10000].numpy(),
        y[:10000].numpy(),
        x[10000:].numpy(),
        (y[10000:].numpy()),
    )


def agreement_rows(sources, predict) -> list[dict]:
    """Per source: the float64 reference's test accuracy, and per precision the fraction of
    predictions equal to the reference's and the accuracy gap in points."""
    rows = []
    for name, x_train, y_train, x_test, y_test in sources:
        bases = fit_subspaces_ref(x_train, y_train, int(max(y_train.max(), y_test.max())) + 1)
        expected = predict_ref(x_test, bases)
        reference_accuracy = float(np.mean(expected == y_test))
        row = {"activations": name, "n_test": len(y_test), "reference_accuracy": reference_accuracy}
        for precision in PRECISIONS:
            pred = predict(x_test, bases, precision)
            row[precision] = float(np.mean(pred == expected))
            row[f"{precision}_gap_pt"] = 100 * (float(np.mean(pred == y_test)) - reference_accuracy)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulate", action="store_true", help="emulate even with a GPU")
    args = parser.parse_args()
    on_gpu = torch.cuda.is_available() and not args.emulate
    how = (
        f"Triton kernel on {torch.cuda.get_device_name(0)}"
        if on_gpu
        else f"CPU emulation of each mode's input rounding ({platform.processor() or 'cpu'})"
    )
    predict = triton_predict if on_gpu else _emulated_predict
    print(f"Measured by: {how}; torch {torch.__version__}.\n")
    print("| activations | n test | " + " | ".join(PRECISIONS) + " | reference acc. |")
    print("|---|---|" + "---|" * len(PRECISIONS) + "---|")
    for row in agreement_rows(paper_sources(), predict):
        cells = [f"{row[p]:.2%} ({row[p + '_gap_pt']:+.2f} pt)" for p in PRECISIONS]
        print(
            f"| {row['activations']} | {row['n_test']} | "
            + " | ".join(cells)
            + f" | {row['reference_accuracy']:.2%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
