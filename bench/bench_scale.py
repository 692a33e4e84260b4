"""The paper's largest probes at full size on synthetic activations: strategy, time, memory.

Issue 5, deliverable 4. A stand-in model emits, per probed layer, rows with the real shapes and
a power-law spectrum per class (``_SpectrumLayer``): class k's rows are ``(z ⊙ s) C_k W + ε``
with ``s_i = i^{-1}`` over ``RANK`` directions, a class-specific mixing ``C_k`` (RANK × 512),
a shared map ``W`` (512 × d) and isotropic noise ``ε`` (0.5 % of the energy), so every class
has full rank ``min(n_k, d)`` and a few hundred components at t = 0.99. Training labels are
corrupted at p = 0.2 (true labels ride along), rows arrive shuffled in batches of 500, and
``probe`` fits corrupted and true subspaces and scores train and test:

* ``tiny-imagenet-alexnet``: 100k train + 10k test rows, K = 200, layers flatten (256),
  fc1 (4096), fc2 (4096), as SPEC §3 gives AlexNet-Tiny-ImageNet.
* ``resnet18-cifar10``: 50k + 10k rows, K = 10, the nine tap points of SPEC §3.4 (five of
  width 16,384). ``MASC_FAST_BENCH_SCALE`` (default 1) multiplies the row counts (a CPU cannot
  finish the full ResNet-18 probe in a bench session; the scale used is recorded).

The reference path cannot finish at these sizes: ``bench_scale_reference`` runs it (scikit-learn
PCA per class on X_k ∪ −X_k, float64; scoring with NumPy) on 1/20 of the classes of one fc
layer with all their rows, and the engine on the same subset with the strategy it chose for
that layer at full size (``stored``: class shards on disk, Gram trick per class), and reports
the ratio measured in the same run. ``extrapolated_full_s`` is the subset time × 20 (the
per-class fits are independent and dominate both sides on the subset): an extrapolation of
one layer's fit, not a measurement; scoring at full size grows with rows × components and is
measured by ``bench_scale_probe`` alone.

Recorded per run: wall time, peak RSS above the start, peak GPU memory, the strategy per layer,
phase times, components.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

import masc_fast

BATCH = 500
RANK = 400
MIX = 512
SCALE = float(os.environ.get("MASC_FAST_BENCH_SCALE", "1"))
QUICK = os.environ.get("MASC_FAST_BENCH_QUICK") == "1"

RESNET_TAPS = {
    "l0": 16384, "l0_1": 16384, "l0_2": 16384, "l0_3": 16384, "l1": 16384,
    "l2": 8192, "l3": 4096, "l4": 2048, "bf_last": 512,
}  # fmt: skip
SETTINGS = {
    "tiny-imagenet-alexnet": {
        "train": 100_000, "test": 10_000, "classes": 200,
        "layers": {"flatten": 256, "fc1": 4096, "fc2": 4096},
    },
    "resnet18-cifar10": {"train": 50_000, "test": 10_000, "classes": 10, "layers": RESNET_TAPS},
}  # fmt: skip
if QUICK:
    SETTINGS = {
        "quick": {"train": 2000, "test": 500, "classes": 10, "layers": {"a": 64, "b": 512}},
    }


class _SpectrumLayer(nn.Module):
    """Rows of one layer for (row id, class) inputs: per-class power-law spectrum, full rank."""

    def __init__(self, dim: int, classes: int, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        rank = min(RANK, dim)
        self.register_buffer("mixing", torch.randn(classes, rank, MIX, generator=generator))
        self.register_buffer("shared", torch.randn(MIX, dim, generator=generator) / MIX**0.5)
        self.register_buffer("spectrum", torch.arange(1, rank + 1, dtype=torch.float32) ** -1.0)
        self.dim, self.seed = dim, seed
        signal = float((self.spectrum**2).sum())
        self.noise = (0.005 * signal / dim) ** 0.5

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows, labels = ids[:, 0], ids[:, 1]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(rows[0]))
        z = torch.randn(len(ids), len(self.spectrum), generator=generator) * self.spectrum
        mixed = torch.empty(len(ids), MIX)
        for label in torch.unique(labels).tolist():
            where = labels == label
            mixed[where] = z[where] @ self.mixing[label]
        noise = torch.randn(len(ids), self.dim, generator=generator) * self.noise
        return torch.relu(mixed @ self.shared + noise) if self.dim > 0 else mixed


class SyntheticTaps(nn.Module):
    """A stand-in model whose probed layers emit synthetic activations of the real widths."""

    def __init__(self, layers: dict[str, int], classes: int):
        super().__init__()
        self.taps = nn.ModuleDict(
            {
                name: _SpectrumLayer(dim, classes, seed)
                for seed, (name, dim) in enumerate(layers.items())
            }
        )
        self.masc_layers = {name: f"taps.{name}" for name in layers}
        self.classes = classes

    def forward(self, ids):
        for tap in self.taps.values():
            tap(ids)
        return nn.functional.one_hot(ids[:, 1], self.classes).float()


def _batches(rows: int, classes: int, *, offset: int, noise: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(rows) % classes
    order = torch.randperm(rows, generator=generator)
    labels = labels[order]
    ids = torch.stack([torch.arange(rows) + offset, labels], 1)
    noisy = labels.clone()
    flip = torch.rand(rows, generator=generator) < noise
    noisy[flip] = torch.randint(0, classes, (int(flip.sum()),), generator=generator)
    return [
        (ids[i : i + BATCH], noisy[i : i + BATCH], labels[i : i + BATCH])
        for i in range(0, rows, BATCH)
    ]


def _setting(name: str):
    config = SETTINGS[name]
    train_rows = max(BATCH, int(config["train"] * SCALE))
    test_rows = max(BATCH, int(config["test"] * SCALE))
    model = SyntheticTaps(config["layers"], config["classes"])
    train = _batches(train_rows, config["classes"], offset=0, noise=0.2, seed=1)
    test = [
        (ids, true)
        for ids, _, true in _batches(test_rows, config["classes"], offset=10**8, noise=0.0, seed=2)
    ]
    return model, train, test, config


@pytest.mark.parametrize("name", list(SETTINGS))
def bench_scale_probe(benchmark, name, peak_memory, record, tmp_path):
    model, train, test, config = _setting(name)
    benchmark.group = f"scale-{name}"
    results = {}

    def run():
        results["result"] = masc_fast.probe(
            model, train, {"test": test}, activation_dir=tmp_path / "store", progress=True
        )

    with peak_memory.measure():
        benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    result = results["result"]
    table = result.table
    test_rows = table[(table.split == "test") & (table.subspaces == "corrupted")]
    record(
        backend=result.backend,
        scale=SCALE,
        train_rows=sum(len(batch[1]) for batch in train),
        classes=config["classes"],
        strategies=result.strategies,
        methods=result.components.groupby("layer")["method"]
        .agg(lambda m: sorted(set(m)))
        .to_dict(),
        components=dict(zip(test_rows.layer, test_rows.components.astype(int))),
        test_accuracy=dict(zip(test_rows.layer, test_rows.accuracy.round(4))),
        min_captured=float(result.components["captured"].min()),
        phases=result.phases.round(2).to_dict(orient="records"),
        gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    )


def _reference_subset(x, y, classes):
    """The authors' way on a subset: PCA(0.99, full) per class on X_k ∪ −X_k, NumPy scoring."""
    from sklearn.decomposition import PCA

    bases = []
    for label in classes:
        rows = x[y == label].astype(np.float64)
        pca = PCA(0.99, svd_solver="full").fit(np.concatenate([rows, -rows]))
        bases.append(pca.components_.T)
    norms = (x.astype(np.float64) ** 2).sum(1)
    scores = np.stack([((x @ basis) ** 2).sum(1) / norms for basis in bases], 1)
    return [basis.shape[1] for basis in bases], scores.argmax(1)


@pytest.mark.parametrize("backend", ["reference", "engine"])
def bench_scale_reference(benchmark, backend, peak_memory, record):
    name = next(iter(SETTINGS))
    model, train, _, config = _setting(name)
    layer = list(config["layers"])[-1]
    classes = list(range(max(1, config["classes"] // 20)))  # 1/20 of the classes, all rows
    benchmark.group = f"scale-reference-subset-{name}-{layer}"
    chunks, labels = [], []
    tap = model.taps[layer]
    for ids, _, true in train:
        keep = torch.isin(true, torch.tensor(classes))
        if keep.any():
            chunks.append(tap(ids[keep]))
            labels.append(true[keep])
    x, y = torch.cat(chunks), torch.cat(labels)
    if backend == "reference":
        run = lambda: _reference_subset(x.numpy(), y.numpy(), classes)  # noqa: E731
    else:

        def run():
            accumulator_free = masc_fast.probe(
                nn.Identity(), [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)],
                layers=["input"], num_classes=len(classes), progress=False,
                strategy="stored",  # what auto chose for this layer at full size
            )  # fmt: skip
            return accumulator_free

    with peak_memory.measure():
        out = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    components = sum(out[0]) if backend == "reference" else int(out.components["components"].sum())
    record(
        backend=backend,
        rows=len(x),
        dim=x.shape[1],
        classes=len(classes),
        components=components,
        extrapolated_full_s=benchmark.stats.stats.median * 20,
    )
