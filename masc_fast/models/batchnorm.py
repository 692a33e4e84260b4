"""Reproduce the authors' BatchNorm-in-training-mode, batch-of-one activation extraction.

The authors dumped ResNet-18 activations one image at a time without calling ``eval()``
(SPEC §11.2). In training mode with a batch of one, every BatchNorm layer normalises each
channel of that image over its own spatial positions, with the biased variance and the layer's
``eps``, then applies the layer's affine weight and bias; that is instance normalisation with
BatchNorm's affine parameters. :func:`batchnorm_per_sample` makes every BatchNorm module compute
exactly that for any batch size, so the same activations come out of batched extraction.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["batchnorm_per_sample"]

_BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

# Sentinel for "the module had no instance-level forward before we patched it".
_NO_OVERRIDE = object()


def _per_sample_forward(module: nn.modules.batchnorm._BatchNorm, name: str, x: torch.Tensor):
    """BatchNorm ``module`` applied to each sample of ``x`` alone, statistics untouched."""
    module._check_input_dim(x)
    positions = math.prod(x.shape[2:])
    if positions < 2:
        # Training-mode BatchNorm on a batch of one refuses this too: one value per channel
        # has no variance, and the output would be the bias alone.
        raise ValueError(
            f"BatchNorm module {name!r}: per-sample normalisation needs more than one value per "
            f"channel and sample, got input of shape {tuple(x.shape)}"
        )
    # running_mean/var=None with use_input_stats=True: statistics of the input only, and no
    # running-statistics update (instance_norm would otherwise write its batch mean into them).
    return F.instance_norm(
        x,
        running_mean=None,
        running_var=None,
        weight=module.weight,
        bias=module.bias,
        use_input_stats=True,
        eps=module.eps,
    )


@contextmanager
def batchnorm_per_sample(model: nn.Module) -> Iterator[nn.Module]:
    """Make every BatchNorm layer of ``model`` normalise each sample alone, as with batch size 1.

    While active, each ``BatchNorm1d/2d/3d`` module maps its input ``x`` of shape
    ``(batch, channels, *positions)`` to

    ``weight[c] · (x[n, c] - mean[n, c]) / sqrt(var[n, c] + eps) + bias[c]``,

    where ``mean[n, c]`` and the biased ``var[n, c]`` are taken over the positions of sample
    ``n`` and channel ``c`` alone. That is what the authors' extraction computed (training mode,
    batch size 1, SPEC §11.2), now for any batch size and regardless of ``model.training``.
    Running statistics and ``num_batches_tracked`` are not updated (the authors' run updated
    them, which changed none of their outputs). On exit every module's original ``forward`` is
    restored, also when the body raises. Contexts may be nested.

    Parameters
    ----------
    model : torch.nn.Module
        Any model; modules other than BatchNorm are untouched. A model without BatchNorm is
        returned unchanged.

    Yields
    ------
    torch.nn.Module
        ``model`` itself.

    Raises
    ------
    TypeError
        If ``model`` is not a ``torch.nn.Module``.
    ValueError
        At forward time, from a BatchNorm module whose input has a single position per channel
        (e.g. ``BatchNorm1d`` on ``(batch, channels)``), naming the module and the shape; the
        authors' batch-of-one training-mode pass fails there as well.

    Notes
    -----
    Costs one instance-norm per BatchNorm call, the same order as BatchNorm itself.

    Examples
    --------
    >>> import torch
    >>> from masc_fast.models import ResNet18
    >>> model = ResNet18(10).eval()
    >>> x = torch.randn(4, 3, 32, 32)
    >>> with batchnorm_per_sample(model):
    ...     batched = model(x)
    >>> single = model.train()(x[:1])  # the authors' way, one sample at a time
    >>> torch.allclose(batched[:1], single, atol=1e-4)
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    patched: list[tuple[nn.Module, object]] = []
    try:
        for name, module in model.named_modules():
            if isinstance(module, _BATCHNORM_TYPES):
                patched.append((module, module.__dict__.get("forward", _NO_OVERRIDE)))
                module.forward = functools.partial(_per_sample_forward, module, name)
        yield model
    finally:
        for module, previous in reversed(patched):
            if previous is _NO_OVERRIDE:
                del module.forward
            else:
                module.forward = previous
