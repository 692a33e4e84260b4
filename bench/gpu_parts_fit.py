"""The fitting, streaming and end-to-end parts of ``bench/gpu_check.py`` (see ``gpu_parts``)."""

from __future__ import annotations

import time

import torch
from gpu_parts import Context, NoGPU, median_seconds, peak_extra_bytes

# ---------------------------------------------------------------- fitting

#: The shapes of masc_fast.backends.gram_forms' CPU table: (K, d, rows of one flush).
GRAM_SHAPES = ((10, 784, 10240), (200, 512, 25600), (10, 96, 2048), (50, 64, 3200))
SMOKE_GRAM_SHAPES = ((4, 24, 256), (6, 16, 192))


def fitting(context: Context) -> dict:
    """The three Gram-update forms on this device (the CUDA row of ``gram_forms``), and the
    batched eigensolver against ``torch.linalg.eigh`` of the whole stack."""
    from masc_fast.backends.gram_forms import GRAM_FORMS

    device = context.device
    forms = [
        _gram_forms(classes, dim, rows, device, GRAM_FORMS)
        for classes, dim, rows in (SMOKE_GRAM_SHAPES if context.smoke else GRAM_SHAPES)
    ]
    stacks = ((3, 48, 200), (5, 64, 20)) if context.smoke else ((10, 4096, 20000), (200, 500, 500))
    eigen = [_eigen_case(classes, dim, rows, device) for classes, dim, rows in stacks]
    return {"fitting": {"gram_forms": forms, "eigensolvers": eigen}}


def _gram_forms(classes: int, dim: int, rows: int, device, forms) -> dict:
    """Median seconds of each Gram-update form for one flush of float32 rows."""
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(rows, dim, device=device, generator=generator)
    y = torch.randint(0, classes, (rows,), device=device, generator=generator)
    gram = torch.zeros(classes, dim, dim, dtype=torch.float64, device=device)
    seconds = {
        form: median_seconds(lambda update=update: update(gram, x, y), device)
        for form, update in forms.items()
    }
    return {"shape": [classes, dim, rows], **seconds}


def _eigen_case(classes: int, dim: int, rows: int, device) -> dict:
    """(K, d, d) Grams with a power-law spectrum of rank min(rows, d): batched partial solver
    against one batched ``eigh``; component counts at t = 0.99 must agree."""
    from masc_fast.linalg import class_eigh_batched, components_for_variance

    generator = torch.Generator(device=device).manual_seed(1)
    rank = min(rows, dim)
    spectrum = torch.arange(1, rank + 1, device=device, dtype=torch.float64) ** -2.0
    grams = torch.empty(classes, dim, dim, dtype=torch.float64, device=device)
    for label in range(classes):
        basis = torch.linalg.qr(
            torch.randn(dim, rank, device=device, generator=generator, dtype=torch.float64)
        ).Q
        grams[label] = (basis * spectrum) @ basis.T
    counts = [rows] * classes
    batched = median_seconds(
        lambda: class_eigh_batched(grams, variance=0.99, counts=counts), device, repeats=1
    )
    exact = median_seconds(lambda: torch.linalg.eigh(grams), device, repeats=1)
    solved = class_eigh_batched(grams, variance=0.99, counts=counts)
    values = torch.linalg.eigh(grams)[0].flip(-1).clamp_min(0)
    agree = all(
        components_for_variance(eigen.values, eigen.total, 0.99, eigen.rank_cap)
        == components_for_variance(values[label], float(values[label].sum()), 0.99, rank)
        for label, eigen in enumerate(solved)
    )
    return {"classes": classes, "dim": dim, "rows": rows, "batched_seconds": batched,
            "eigh_seconds": exact, "counts_agree": agree}  # fmt: skip


# ---------------------------------------------------------------- streaming


def streaming(context: Context) -> dict:
    """``score_streamed`` from pinned host memory under a budget below the data size: the
    device's peak stays under it, and its throughput against scoring the rows on the device."""
    from masc_fast import GramAccumulator
    from masc_fast.probing.streamed_scoring import score_streamed
    from masc_fast.testing.synthetic import structured_classes

    device = context.device
    n, dim, classes = (4000, 32, 4) if context.smoke else (200_000, 1024, 10)
    x, y = structured_classes(n, dim, classes, seed=3)
    accumulator = GramAccumulator(classes, dim, device=device)
    accumulator.update(x[: n // 4].to(device), y[: n // 4].to(device))
    subspaces = accumulator.fit(0.99)
    host = x.pin_memory() if device.type == "cuda" else x
    data_bytes = host.numel() * host.element_size()
    budget = data_bytes // 4
    resident, expected = _resident(subspaces, x, device)
    rows = []
    for mapped in (False, True):
        reason = _mapped_unavailable(device) if mapped else None
        if reason is not None:
            rows.append({"mapped": True, "status": "skip", "reason": reason})
            continue

        def run(mapped=mapped):
            return score_streamed(
                subspaces, host, device=device, memory_budget=budget, mapped=mapped
            )

        seconds = median_seconds(run, device)
        peak = peak_extra_bytes(run, device)
        result = run()
        rows.append({
            "mapped": mapped, "status": "ok", "seconds": seconds, "budget_bytes": budget,
            "peak_extra_bytes": peak, "under_budget": peak is None or peak <= budget,
            "throughput_vs_resident": resident / seconds, "chunks": result.num_chunks,
            "agreement": float((torch.as_tensor(result.pred) == expected).double().mean()),
        })  # fmt: skip
    return {"streaming": {"rows": n, "dim": dim, "data_bytes": data_bytes, "runs": rows}}


def _resident(subspaces, x, device) -> tuple[float, torch.Tensor]:
    """Seconds to score ``x`` already on the device (no transfer), and the predictions."""
    on_device = x.to(device)
    seconds = median_seconds(lambda: subspaces.score(on_device), device)
    return seconds, subspaces.score(on_device).pred.cpu()


def _mapped_unavailable(device) -> str | None:
    """Why CuPy mapped host memory cannot be read here, or None."""
    if device.type != "cuda":
        return "mapped memory needs CUDA"
    try:
        import cupy  # noqa: F401
    except ImportError as error:
        return f"cupy is not importable ({error})"
    return None


# ---------------------------------------------------------------- end to end


def _image_batches(n: int, shape, classes: int, batch: int, device, seed: int, train: bool):
    """Synthetic images and labels on ``device``; training batches carry corrupted (p = 0.4)
    and true labels, so both subspace sets are fitted."""
    generator = torch.Generator(device=device).manual_seed(seed)
    batches = []
    for start in range(0, n, batch):
        size = min(batch, n - start)
        images = torch.randn(size, *shape, device=device, generator=generator)
        labels = torch.randint(0, classes, (size,), device=device, generator=generator)
        if not train:
            batches.append((images, labels))
            continue
        noise = torch.randint(0, classes, (size,), device=device, generator=generator)
        shuffled = torch.rand(size, device=device, generator=generator) < 0.4
        batches.append((images, torch.where(shuffled, noise, labels), labels))
    return batches


def _probe_workload(context: Context, name: str, model_name: str, shape, classes: int,
                    sizes: tuple[int, int], batch: int) -> dict:  # fmt: skip
    from masc_fast import probe
    from masc_fast.models import build_model

    device = context.device
    torch.manual_seed(0)
    model = build_model(model_name, input_shape=shape, num_classes=classes).to(device)
    train = _image_batches(sizes[0], shape, classes, batch, device, 1, train=True)
    test = _image_batches(sizes[1], shape, classes, batch, device, 2, train=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    result = probe(model, train, {"test": test}, device=device, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    phases = {row.phase: row.seconds for row in result.phases.itertuples()}
    return {"probe": [{
        "workload": name, "seconds": seconds, "phases": phases, "peak_gpu_bytes": peak,
        "backend": result.backend, "strategies": result.strategies,
        "components": int(result.components["components"].sum()),
    }]}  # fmt: skip


def probe_cnn(context: Context) -> dict:
    """The paper's CNN at CIFAR-10 size: 50k + 10k 3×32×32 images, 5 layers, both label sets."""
    sizes = (256, 64) if context.smoke else (50_000, 10_000)
    return _probe_workload(context, "cifar10-cnn", "cnn", (3, 32, 32), 10, sizes, 1000)


def probe_alexnet(context: Context) -> dict:
    """AlexNet at Tiny-ImageNet size: 100k + 10k 3×64×64 images, K = 200, flatten/fc1/fc2."""
    if context.smoke:
        return _probe_workload(context, "tiny-imagenet-alexnet", "alexnet", (3, 64, 64), 200,
                               (600, 200), 200)  # fmt: skip
    if context.device.type != "cuda":
        raise NoGPU("the full-size AlexNet probe runs on a GPU only")
    return _probe_workload(
        context, "tiny-imagenet-alexnet", "alexnet", (3, 64, 64), 200, (100_000, 10_000), 1000
    )
