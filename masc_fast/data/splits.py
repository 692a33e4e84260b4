"""One split of a dataset held compactly in memory, and its SPEC preprocessing (§2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from masc_fast.data.catalog import DatasetInfo

__all__ = ["LabelledSplit"]

SPLIT_NAMES = ("train", "test")


@dataclass(frozen=True, eq=False)
class LabelledSplit:
    """A dataset split: compact inputs, true labels, and how to turn them into model inputs.

    Image sets keep their pixels as ``uint8`` (a quarter of the float32 size: CIFAR-10's
    training set is 154 MB instead of 614 MB) and convert batch by batch in :meth:`inputs`.

    Attributes
    ----------
    name : str
        Dataset name (one of :data:`masc_fast.data.DATASET_NAMES`).
    split : {"train", "test"}
    data : torch.Tensor, CPU
        ``uint8`` of shape ``(N, C, H, W)`` (channel-first, like ``ToTensor``) for image sets;
        ``float32`` of shape ``(N, d)``, already preprocessed, for digits and MNIST-1D.
    labels : torch.Tensor, int64, shape (N,), CPU
        True labels in dataset order (SPEC §2.1: the order the authors' corruption walks).
    info : DatasetInfo
        Facts about the dataset (classes, normalisation, ...).

    Raises
    ------
    ValueError, TypeError
        On construction, if the fields are inconsistent (shape, dtype, length, label range,
        split name); the message names the field.

    Examples
    --------
    >>> import torch
    >>> from masc_fast.data import dataset_info
    >>> split = LabelledSplit(
    ...     "mnist", "test", torch.full((2, 1, 28, 28), 255, dtype=torch.uint8),
    ...     torch.tensor([3, 7]), dataset_info("mnist"))
    >>> split.inputs(slice(0, 1)).unique().tolist()
    [1.0]
    """

    name: str
    split: str
    data: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo

    def __post_init__(self) -> None:
        if self.split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES}, got {self.split!r}")
        if self.name != self.info.name:
            raise ValueError(f"name {self.name!r} does not match info.name {self.info.name!r}")
        for field in ("data", "labels"):
            value = getattr(self, field)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{field} must be a torch.Tensor, got {type(value).__name__}")
            if value.device.type != "cpu":
                raise ValueError(f"{field} must be on the CPU, got device {value.device}")
        # Images are stored as pixels (C, H, W); vector sets as their preprocessed floats.
        expected = torch.uint8 if len(self.info.input_shape) == 3 else torch.float32
        if self.data.dtype != expected:
            raise TypeError(f"{self.name} data must be {expected}, got {self.data.dtype}")
        if tuple(self.data.shape[1:]) != self.info.input_shape:
            raise ValueError(
                f"{self.name} data must have shape (N, {', '.join(map(str, self.info.input_shape))}), "
                f"got {tuple(self.data.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise TypeError(
                f"labels must be a 1-D int64 tensor, got {self.labels.dtype} of shape "
                f"{tuple(self.labels.shape)}"
            )
        if self.labels.shape[0] != self.data.shape[0]:
            raise ValueError(
                f"{self.name} {self.split}: {self.data.shape[0]} samples but "
                f"{self.labels.shape[0]} labels"
            )
        if self.labels.numel():
            low, high = int(self.labels.min()), int(self.labels.max())
            if low < 0 or high >= self.info.num_classes:
                raise ValueError(
                    f"{self.name} {self.split}: labels must lie in [0, {self.info.num_classes}), "
                    f"got range [{low}, {high}]"
                )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (
            f"LabelledSplit(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"data={self.data.dtype}{tuple(self.data.shape)})"
        )

    def head(self, n: int) -> LabelledSplit:
        """The first ``n`` samples (dataset order) as a split of their own: a smaller training
        set that is the same for every seed (``RunConfig.train_examples``)."""
        from dataclasses import replace

        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(self):
            raise ValueError(
                f"{self.name} {self.split}: head needs 1 <= n <= {len(self)}, got {n!r}"
            )
        return replace(self, data=self.data[:n], labels=self.labels[:n])

    def inputs(self, index: torch.Tensor | slice) -> torch.Tensor:
        """Model inputs for the samples at ``index``, preprocessed as the authors did.

        For image sets this is ``torchvision``'s ``ToTensor()`` followed by
        ``Normalize(mean, std)`` (or ``ToTensor`` alone when ``info.mean`` is ``None``), with
        the same float32 operations in the same order, so the result is bit-identical to the
        authors' CPU pipeline: ``x = uint8 / 255``, then ``(x - mean) / std`` per channel.
        Vector sets are returned as stored.

        Parameters
        ----------
        index : slice or 1-D integer (or boolean) tensor / array / list
            Which samples, in the order wanted.

        Returns
        -------
        torch.Tensor, float32, shape (len(index), *info.input_shape), CPU
            A new tensor (never a view of :attr:`data`).

        Raises
        ------
        TypeError
            If ``index`` is a plain integer or not an integer/boolean index.
        ValueError
            If ``index`` is not 1-D.
        IndexError
            If an index is out of range.
        """
        raw = self.data[_check_index(index)]
        if raw.dtype == torch.uint8:
            # The exact op sequence of ToTensor (to float, div 255) and Normalize (sub, div
            # by float32 tensors broadcast over channels): same IEEE operations, same bits.
            x = raw.to(dtype=torch.float32).div(255)
            if self.info.mean is not None:
                mean = torch.as_tensor(self.info.mean, dtype=torch.float32).view(-1, 1, 1)
                std = torch.as_tensor(self.info.std, dtype=torch.float32).view(-1, 1, 1)
                x.sub_(mean).div_(std)
            return x
        return raw.clone() if isinstance(index, slice) else raw


def _check_index(index):
    """``index`` as a slice or a 1-D integer/boolean CPU tensor."""
    if isinstance(index, slice):
        return index
    if isinstance(index, (bool, int)) or (isinstance(index, torch.Tensor) and index.ndim == 0):
        raise TypeError(
            f"index must be a slice or a 1-D index tensor, got the scalar {index!r} "
            "(use [i] or slice(i, i + 1) for one sample)"
        )
    tensor = index if isinstance(index, torch.Tensor) else torch.as_tensor(index)
    if tensor.numel() == 0:
        tensor = tensor.to(torch.int64)  # torch.as_tensor([]) is float32
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        raise TypeError(f"index must hold integers or booleans, got {tensor.dtype}")
    if tensor.ndim != 1:
        raise ValueError(f"index must be 1-D, got shape {tuple(tensor.shape)}")
    return tensor.cpu()
