"""The distributed part of ``bench/gpu_check.py`` (see ``gpu_parts``): the probe's collectives
on the device.

The lent GPU machines hold one GPU, and NCCL runs one rank per GPU, so this part runs a
one-rank NCCL group (gloo on the CPU in the smoke run): every collective of the distributed
probe then runs on the device (all-reduced Grams and counts, bases gathered, the Gram-trick
rows sent to their owner), and the result must equal the local probe's. Two ranks were
checked against one process with gloo on the CPU (``tests/test_distributed_probe.py``).
"""

from __future__ import annotations

import datetime
import tempfile
import time

import torch
from gpu_parts import Context
from gpu_parts_fit import _image_batches


def distributed(context: Context) -> dict:
    """``probe(distributed=True)`` on a one-rank group against ``distributed=False``, for
    streamed Grams and stored rows: same components, accuracies within 1e-4, and the time."""
    import torch.distributed as dist
    from torch import nn

    from masc_fast import probe

    device = context.device
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    rows, width, classes = (400, 48, 4) if context.smoke else (40_000, 1024, 10)
    train = _image_batches(rows, (width,), classes, 1000, device, 5, train=True)
    test = _image_batches(rows // 4, (width,), classes, 1000, device, 6, train=False)
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group(
            backend,
            init_method=f"file://{folder}/store",
            rank=0,
            world_size=1,
            timeout=datetime.timedelta(seconds=60),
        )
        try:
            for strategy in ("gram", "stored"):
                options = {"layers": ["input"], "strategy": strategy, "progress": False}
                options |= {"device": device, "num_classes": classes}
                local = probe(nn.Flatten(), train, {"test": test}, distributed=False, **options)
                started = time.perf_counter()
                ranked = probe(nn.Flatten(), train, {"test": test}, distributed=True, **options)
                seconds = time.perf_counter() - started
                difference = (ranked.table["accuracy"] - local.table["accuracy"]).abs().max()
                same = ranked.components["components"].equals(local.components["components"])
                if not same or difference > 1e-4:
                    raise AssertionError(
                        f"{strategy}: the distributed probe differs from the local one "
                        f"(same components: {same}, accuracy difference {difference:.2e})"
                    )
                runs.append(
                    {
                        "strategy": strategy,
                        "seconds": seconds,
                        "max_accuracy_diff": float(difference),
                    }
                )
        finally:
            dist.destroy_process_group()
    return {"distributed": {"backend": backend, "rows": rows, "dim": width, "runs": runs}}
