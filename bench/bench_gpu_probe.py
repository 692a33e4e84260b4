"""End-to-end GPU probe of a CIFAR-10-sized CNN (issue 3, deliverable 6; goal: under 2 s).

The paper's CNN (SPEC §3: conv16-conv16-pool-conv32-conv32-pool-conv64-conv64-pool, flatten
1024, three FC250, linear 10 without bias), at random initialisation (the probe's cost does not
depend on the weights), 50,000 training and 10,000 test images of 3×32×32 already on the GPU in
batches of 1000, labels shuffled at p = 0.4 so that corrupted and true subspaces are both fitted.
``probe`` runs every layer (input 3072, flatten 1024, fc1–fc3 250): forward passes, Gram
accumulation, eigensolves and scoring of train and test.

Needs a CUDA device; without one it skips (no estimate). ``MASC_FAST_BENCH_INTERPRET=1`` runs
a 256-image version on the CPU under Triton's interpreter to check the benchmark itself.
"""

from __future__ import annotations

import pytest
import torch
from _gpu import DEVICE, INTERPRET, SKIP_REASON
from torch import nn

if SKIP_REASON:
    pytest.skip(SKIP_REASON, allow_module_level=True)

N_TRAIN, N_TEST, BATCH = (256, 64, 64) if INTERPRET else (50000, 10000, 1000)


class CifarCNN(nn.Module):
    """SPEC §3 "NgnCnn" for 3×32×32 inputs, with the paper's probe points."""

    masc_layers = {
        "input": "input",
        "flatten": "flatten",
        "fc1": "relu_fc1",
        "fc2": "relu_fc2",
        "fc3": "relu_fc3",
    }

    def __init__(self):
        super().__init__()
        layers, channels = [], 3
        for width in (16, 32, 64):
            for _ in range(2):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.fc1, self.relu_fc1 = nn.Linear(1024, 250), nn.ReLU()
        self.fc2, self.relu_fc2 = nn.Linear(250, 250), nn.ReLU()
        self.fc3, self.relu_fc3 = nn.Linear(250, 250), nn.ReLU()
        self.out = nn.Linear(250, 10, bias=False)

    def forward(self, x):
        x = self.flatten(self.features(x))
        x = self.relu_fc1(self.fc1(x))
        x = self.relu_fc2(self.fc2(x))
        return self.out(self.relu_fc3(self.fc3(x)))


def _batches(n: int, seed: int, with_true: bool):
    generator = torch.Generator(device=DEVICE).manual_seed(seed)
    images = torch.randn(n, 3, 32, 32, device=DEVICE, generator=generator)
    labels = torch.randint(0, 10, (n,), device=DEVICE, generator=generator)
    shuffled = torch.rand(n, device=DEVICE, generator=generator) <= 0.4
    corrupted = torch.where(
        shuffled, torch.randint(0, 10, (n,), device=DEVICE, generator=generator), labels
    )
    batches = []
    for start in range(0, n, BATCH):
        part = slice(start, start + BATCH)
        if with_true:
            batches.append((images[part], corrupted[part], labels[part]))
        else:
            batches.append((images[part], labels[part]))
    return batches


def bench_probe_cifar_cnn(benchmark, peak_memory, record):
    from masc_fast import probe

    benchmark.group = "gpu_probe-cifar10-cnn"
    torch.manual_seed(0)
    model = CifarCNN().to(DEVICE)
    train, test = _batches(N_TRAIN, 1, with_true=True), _batches(N_TEST, 2, with_true=False)

    def run():
        result = probe(
            model, train, {"test": test}, device=DEVICE, backend="triton", progress=False
        )
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return result

    run()  # warm-up: kernel compilation, cuBLAS handles
    with peak_memory.measure():
        result = benchmark.pedantic(run, rounds=3, iterations=1)
    record(
        backend=result.backend,
        shape=f"{N_TRAIN} train + {N_TEST} test, 5 layers, corrupted + true subspaces",
        components=int(result.components["components"].sum()),
        goal_seconds=2.0,
    )
