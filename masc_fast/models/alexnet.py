"""The authors' AlexNet for CIFAR-100 (32 px) and Tiny ImageNet (64 px) (SPEC §3.3).

Five convolutions (64, 192, 384, 256, 256 channels, ReLU after each) with three 3×3/2
max-pools reduce either input to ``256 × 1 × 1``; then flatten (256), two 4096-wide ReLU layers
and a linear read-out. The authors also built a ``classifier`` Sequential with dropout that the
forward pass never calls; it is left out here, so ``parameters()`` counts only the weights that
shape the output (20,495,268 for CIFAR-100, 21,123,080 for Tiny ImageNet, against their
38,738,952 and 39,776,464 with the dead classifier).
"""

from __future__ import annotations

import torch
from torch import nn

from masc_fast.models.mlp import check_width

__all__ = ["ALEXNET_INPUT_SIZE", "AlexNet"]

#: Variant -> side length of the square RGB input it was built for.
ALEXNET_INPUT_SIZE = {"cifar100": 32, "tiny": 64}

_HIDDEN = 4096
_FLATTEN_WIDTH = 256


def _features(variant: str) -> nn.Sequential:
    # The variants differ only in the first two convolutions' kernel, stride and padding, which
    # bring 32 px and 64 px inputs to the same 7×7 and then 3×3 maps.
    if variant == "cifar100":
        conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1)
        conv2 = nn.Conv2d(64, 192, kernel_size=3, padding=1)
    else:
        conv1 = nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2)
        conv2 = nn.Conv2d(64, 192, kernel_size=5, padding=2)
    return nn.Sequential(
        conv1,
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        conv2,
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


class AlexNet(nn.Module):
    """The paper's AlexNet (SPEC §3.3), without the authors' unused dropout classifier.

    ``features -> flatten (256) -> fc1 -> relu1 -> fc2 -> relu2 -> out``, PyTorch default
    initialisation. The input layer is not probed for AlexNet in the paper, so ``masc_layers``
    starts at the flatten.

    Parameters
    ----------
    num_classes : int
        Number of output logits (100 for CIFAR-100, 200 for Tiny ImageNet).
    variant : {"cifar100", "tiny"}, default "cifar100"
        ``"cifar100"``: first conv 3×3 stride 2, second 3×3, for ``3 × 32 × 32`` input.
        ``"tiny"``: first conv 11×11 stride 4 padding 2, second 5×5 padding 2, for
        ``3 × 64 × 64`` input (no resize, as the authors).

    Attributes
    ----------
    features : torch.nn.Sequential
        Convolutions, ReLUs and max-pools; output ``(batch, 256, 1, 1)``.
    flatten : torch.nn.Flatten
        Output probed as ``"flatten"`` (256 wide, non-negative).
    fc1, fc2 : torch.nn.Linear
        ``256 -> 4096`` and ``4096 -> 4096``.
    relu1, relu2 : torch.nn.ReLU
        Probed as ``"fc1"`` and ``"fc2"``.
    out : torch.nn.Linear
        Logits, ``4096 -> num_classes`` (the authors' ``fc3``).
    input_size : int
        Side length of the input the variant expects (32 or 64).

    Raises
    ------
    ValueError
        If ``num_classes`` is below 1 or ``variant`` is unknown.
    TypeError
        If ``num_classes`` is not an integer.

    Examples
    --------
    >>> import torch
    >>> model = AlexNet(200, variant="tiny")
    >>> model(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 200])
    >>> list(model.masc_layers)
    ['flatten', 'fc1', 'fc2']
    """

    def __init__(self, num_classes: int, variant: str = "cifar100") -> None:
        super().__init__()
        num_classes = check_width("num_classes", num_classes)
        if variant not in ALEXNET_INPUT_SIZE:
            raise ValueError(
                f"AlexNet variant must be one of {sorted(ALEXNET_INPUT_SIZE)}, got {variant!r}"
            )
        self.features = _features(variant)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(_FLATTEN_WIDTH, _HIDDEN)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(_HIDDEN, _HIDDEN)
        self.relu2 = nn.ReLU()
        self.out = nn.Linear(_HIDDEN, num_classes)
        self.num_classes = num_classes
        self.variant = variant
        self.input_size = ALEXNET_INPUT_SIZE[variant]

    @property
    def masc_layers(self) -> dict[str, str]:
        """Paper display name -> module name: flatten, then fc1 and fc2 after their ReLU."""
        return {"flatten": "flatten", "fc1": "relu1", "fc2": "relu2"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` for images ``(batch, 3, size, size)``."""
        x = self.flatten(self.features(x))
        x = self.relu1(self.fc1(x))
        x = self.relu2(self.fc2(x))
        return self.out(x)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, variant={self.variant!r}"
