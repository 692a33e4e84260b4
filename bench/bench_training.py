"""Training throughput of the paper's models, for the run times the README quotes.

For each model and dataset of SPEC §4 the bench times ``STEPS`` optimiser steps (forward,
cross-entropy, backward, step) at the recipe's batch size and optimiser on inputs of the real
shape (``torch.randn``; the cost of a step does not depend on the pixel values), after two
warm-up steps. It records samples/s and the seconds one epoch over the real training set
takes at that rate (``train_size / rate``), plus the epochs the authors' runs needed at p = 0.2
(mean over their three runs, SPEC §9.1; ResNet-18: the checkpoint index + 1, SPEC §9.1 note),
so ``epoch_s × authors_epochs`` is the expected length of one run on this machine: an
extrapolation from measured throughput, not a timed full run. Data loading is not included
(the loaders index uint8 tensors in memory; see ``bench_loader`` for its rate).
"""

from __future__ import annotations

import os

import pytest
import torch

from masc_fast.data import BatchLoader, dataset_info
from masc_fast.models import build_model
from masc_fast.pipeline.runs.recipes import training_recipe
from masc_fast.pipeline.runs.training import make_optimizer

STEPS = int(os.environ.get("MASC_FAST_BENCH_STEPS", "5"))

# (model, dataset, authors' epochs at p = 0.2: mean of the three runs, SPEC §9.1)
SETTINGS = [
    ("mlp", "mnist", 168),
    ("mlp", "cifar10", 125),
    ("cnn", "mnist", 500),
    ("cnn", "fashion-mnist", 365),
    ("cnn", "cifar10", 500),
    ("alexnet", "cifar100", 169),
    ("alexnet", "tiny-imagenet", 189),
    ("resnet18", "cifar10", 30),
]
if os.environ.get("MASC_FAST_BENCH_QUICK") == "1":
    SETTINGS, STEPS = [("mlp", "mnist", 168), ("cnn", "mnist", 500)], 2


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize(("model_name", "dataset", "authors_epochs"), SETTINGS)
def bench_training_step(benchmark, model_name, dataset, authors_epochs, peak_memory, record):
    info = dataset_info(dataset)
    recipe = training_recipe(model_name, dataset)
    device = _device()
    torch.manual_seed(0)
    model = build_model(model_name, input_shape=info.input_shape, num_classes=info.num_classes)
    model.to(device).train()
    optimizer = make_optimizer(recipe.optimizer, model.parameters(), recipe.lr, recipe.momentum)
    generator = torch.Generator(device=device.type).manual_seed(1)
    x = torch.randn(recipe.batch_size, *info.input_shape, generator=generator, device=device)
    y = torch.randint(0, info.num_classes, (recipe.batch_size,), generator=generator, device=device)
    criterion = torch.nn.CrossEntropyLoss()

    def steps(count: int) -> None:
        for _ in range(count):
            optimizer.zero_grad(set_to_none=True)
            criterion(model(x), y).backward()
            optimizer.step()
        _sync(device)

    steps(2)  # warm-up: allocator, thread pools, cuDNN autotuning
    benchmark.group = "training-step"
    with peak_memory.measure():
        benchmark.pedantic(steps, args=(STEPS,), rounds=1, iterations=1, warmup_rounds=0)
    seconds_per_step = benchmark.stats.stats.median / STEPS
    rate = recipe.batch_size / seconds_per_step
    epoch_s = info.train_size / rate
    record(
        model=model_name,
        dataset=dataset,
        batch_size=recipe.batch_size,
        optimizer=recipe.optimizer,
        steps=STEPS,
        samples_per_s=round(rate, 1),
        epoch_s=round(epoch_s, 1),
        authors_epochs=authors_epochs,
        run_h=round(epoch_s * authors_epochs / 3600, 2),
        device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
    )


@pytest.mark.parametrize("dataset", ["cifar10"])
def bench_loader(benchmark, dataset, record):
    """Rate of the in-memory loader (uint8 → normalised float32 batches) on random images."""
    from masc_fast.data import LabelledSplit

    info = dataset_info(dataset)
    n = 10_000
    generator = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (n, *info.input_shape), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, info.num_classes, (n,), generator=generator)
    split = LabelledSplit(name=dataset, split="train", data=images, labels=labels, info=info)
    loader = BatchLoader(split, batch_size=128, shuffle=True)
    benchmark.group = "loader"
    benchmark.pedantic(lambda: sum(len(batch[1]) for batch in loader), rounds=3, iterations=1)
    record(dataset=dataset, samples_per_s=round(n / benchmark.stats.stats.median, 1))
