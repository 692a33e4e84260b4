"""Batches over a :class:`~masc_fast.data.LabelledSplit`, with reproducible per-epoch shuffling."""

from __future__ import annotations

import numbers

import numpy as np
import torch

from masc_fast.data.splits import LabelledSplit

__all__ = ["BatchLoader", "epoch_order", "epoch_seed"]


def epoch_seed(seed: int, epoch: int) -> int:
    """The 63-bit generator seed of epoch ``epoch`` under run seed ``seed``.

    ``np.random.SeedSequence([seed, epoch])`` mixes the pair (so neighbouring seeds and epochs
    give unrelated orders); its first two 32-bit words form the seed, top bit cleared.

    Examples
    --------
    >>> epoch_seed(0, 0) == epoch_seed(0, 0) != epoch_seed(0, 1)
    True
    """
    low, high = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    return int(low) | (int(high) & 0x7FFF_FFFF) << 32


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of a shuffled epoch: ``torch.randperm(n)`` from a fresh generator.

    Parameters
    ----------
    n : int
        Number of samples.
    seed, epoch : int
        Non-negative; the generator is ``torch.Generator().manual_seed(epoch_seed(seed, epoch))``.

    Returns
    -------
    torch.Tensor, int64, shape (n,), CPU
        A permutation of ``range(n)``; the same for the same ``(n, seed, epoch)`` in any process.
    """
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(n, generator=generator)


def _non_negative_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    return int(value)


def _label_tensor(values, name: str, split: LabelledSplit) -> torch.Tensor:
    """``values`` as a checked int64 CPU tensor of one label per sample of ``split``."""
    if isinstance(values, torch.Tensor):
        tensor = values.detach().cpu()
    else:
        try:
            tensor = torch.as_tensor(np.asarray(values))
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"{name} must be an array or a tensor of integers, got {type(values).__name__}"
            ) from error
    if tensor.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(tensor.shape)}")
    if tensor.dtype == torch.bool or tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        raise TypeError(f"{name} must have an integer dtype, got {tensor.dtype}")
    if tensor.shape[0] != len(split):
        raise ValueError(
            f"{name} has {tensor.shape[0]} entries but split {split.name} {split.split} has "
            f"{len(split)} samples"
        )
    tensor = tensor.to(torch.int64).contiguous()
    if tensor.numel():
        bad = torch.nonzero((tensor < 0) | (tensor >= split.info.num_classes)).flatten()
        if bad.numel():
            first = int(bad[0])
            raise ValueError(
                f"{name} must lie in [0, {split.info.num_classes}) for {split.name}; got "
                f"{int(tensor[first])} at index {first} ({bad.numel()} out of range)"
            )
    return tensor


class BatchLoader:
    """Iterate a :class:`~masc_fast.data.LabelledSplit` in batches of model inputs and labels.

    Each batch is ``(x, y)``, or ``(x, y, y_true)`` when ``true_labels`` is given, with
    ``x = split.inputs(index)`` (float32, SPEC preprocessing) and the labels at the same
    indices, all moved to ``device``. This is the batch format :func:`masc_fast.probe` and
    :func:`masc_fast.pipeline.runs.training.train_until` read.

    Unshuffled, batches follow dataset order (the authors' ``shuffle=False``, SPEC §2.1).
    Shuffled, epoch ``e`` visits the samples in the order
    ``torch.randperm(N, generator=torch.Generator().manual_seed(epoch_seed(seed, e)))``
    (:func:`epoch_order`), so a training run resumed at epoch ``e`` sees exactly the batches
    it would have seen. Like ``DistributedSampler``, the epoch is whatever :meth:`set_epoch`
    last set (0 by default): iterating twice without it repeats the same order.

    Parameters
    ----------
    split : LabelledSplit
        The data.
    labels : array_like or torch.Tensor of int, shape (len(split),), optional
        Labels to yield as ``y`` (for example noisy ones from
        :func:`masc_fast.data.corruption.noisy_labels`); defaults to ``split.labels``.
    true_labels : array_like or torch.Tensor of int, shape (len(split),), optional
        When given, batches carry them as a third element ``y_true``.
    batch_size : int
        Samples per batch, at least 1.
    shuffle : bool, default False
        Shuffle per epoch as described above.
    seed : int, default 0
        Non-negative run seed of the shuffle.
    device : torch.device or str, optional
        Where batches are moved; ``None`` leaves them on the CPU.
    drop_last : bool, default False
        Drop the last batch when it is smaller than ``batch_size``.
    rank, world_size : int, default 0 and 1
        Yield only rank ``rank``'s part of each batch: the batches stay those of one process
        (same order, same ``batch_size``), each split into ``world_size`` contiguous parts
        whose sizes differ by at most one (``torch.tensor_split``); an empty part (a last
        batch of fewer rows than ranks) is skipped. So the ranks' shards are disjoint, cover
        the split, and a distributed step sees one process's batch
        (:meth:`global_rows` gives its size). ``batch_size`` must be at least ``world_size``.

    Raises
    ------
    TypeError
        If ``split`` is not a :class:`LabelledSplit`, a label array is not integer, or an
        integer argument has the wrong type.
    ValueError
        If a label array is not 1-D, its length differs from ``len(split)``, a label lies
        outside ``[0, num_classes)``, ``batch_size < 1`` or ``seed < 0``.

    Notes
    -----
    Preprocessing runs on the CPU, batch by batch, in the calling thread: no worker processes,
    and no float copy of the whole split. Memory per batch: ``batch_size`` float32 inputs.

    Examples
    --------
    >>> from masc_fast.data import load_dataset
    >>> train, _ = load_dataset("digits")
    >>> loader = BatchLoader(train, batch_size=512, shuffle=True, seed=1)
    >>> len(loader), [tuple(x.shape) for x, y in loader][-1]
    (3, (323, 64))
    """

    def __init__(
        self,
        split: LabelledSplit,
        labels=None,
        true_labels=None,
        *,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        device: torch.device | str | None = None,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not isinstance(split, LabelledSplit):
            raise TypeError(f"split must be a LabelledSplit, got {type(split).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            raise TypeError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        self.split = split
        self.labels = split.labels if labels is None else _label_tensor(labels, "labels", split)
        self.true_labels = (
            None if true_labels is None else _label_tensor(true_labels, "true_labels", split)
        )
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = _non_negative_int(seed, "seed")
        self.device = None if device is None else torch.device(device)
        self.drop_last = bool(drop_last)
        self.world_size = _non_negative_int(world_size, "world_size")
        self.rank = _non_negative_int(rank, "rank")
        if self.world_size < 1 or self.rank >= self.world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
        if self.batch_size < self.world_size:
            raise ValueError(
                f"batch_size {self.batch_size} is smaller than world_size {self.world_size}: "
                "every rank needs a part of every batch"
            )
        self._epoch = 0

    @property
    def epoch(self) -> int:
        """The epoch whose order the next iteration uses."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffled order of ``epoch`` (a non-negative integer) from now on."""
        self._epoch = _non_negative_int(epoch, "epoch")

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def global_rows(self) -> list[int]:
        """Rows of each batch over all ranks, in order (one process's batch sizes)."""
        n = len(self.split)
        return [
            min(start + self.batch_size, n) - start
            for start in range(0, len(self) * self.batch_size, self.batch_size)
        ]

    def _part(self, start: int, stop: int) -> tuple[int, int]:
        """This rank's rows ``[start, stop)`` of the batch ``[start, stop)``."""
        rows, ranks = stop - start, self.world_size
        size, extra = divmod(rows, ranks)
        first = start + self.rank * size + min(self.rank, extra)
        return first, first + size + (self.rank < extra)

    def __iter__(self):
        n = len(self.split)
        order = epoch_order(n, self.seed, self._epoch) if self.shuffle else None
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            stop = min(start + self.batch_size, n)
            if self.world_size > 1:
                start, stop = self._part(start, stop)
                if start == stop:
                    continue
            index = slice(start, stop) if order is None else order[start:stop]
            x = self.split.inputs(index)
            # Labels at a slice are views: clone so a consumer cannot edit the loader's copy.
            batch = [x, self.labels[index].clone()]
            if self.true_labels is not None:
                batch.append(self.true_labels[index].clone())
            if self.device is not None:
                batch = [tensor.to(self.device) for tensor in batch]
            yield tuple(batch)

    def __repr__(self) -> str:
        return (
            f"BatchLoader({self.split!r}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"seed={self.seed}, epoch={self._epoch}, device={self.device}, "
            f"drop_last={self.drop_last}, true_labels={self.true_labels is not None}, "
            f"rank={self.rank}, world_size={self.world_size})"
        )
