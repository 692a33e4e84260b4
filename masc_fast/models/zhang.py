"""The small networks of Zhang et al.'s randomization tests (ICLR 2017, appendix A).

* :class:`SmallAlexNet`: two blocks of 5×5 convolution (64 filters, ReLU), 3×3 max-pool with
  stride 2 and local response normalisation, then fully connected 384 and 192 (ReLU) and the
  read-out. It is the TensorFlow CIFAR-10 tutorial's network, which Zhang et al. call
  "a smaller version of AlexNet". 1,387,786 parameters on 28×28×3 inputs.
* :class:`SmallInception`: the "small Inception" of their Figure 3: a 3×3 convolution of 96,
  Inception modules (a 1×1 and a 3×3 convolution side by side) and downsample modules (a 3×3
  stride-2 convolution beside a 3×3 stride-2 max-pool), every convolution followed by batch
  normalisation and ReLU, a global mean pool and the read-out. 1,652,826 parameters on
  28×28×3 inputs.
* The MLPs 1×512 and 3×512 are :class:`~masc_fast.models.mlp.MLP` with those hidden widths.

Their paper's exact layer settings are marked unconfirmed in ``RANDOMIZATION.md``; these follow
the public reproductions (the parameter counts match the ≈1.38 M and ≈1.65 M they quote).
Choices made here: "same" padding for the AlexNet's convolutions and pools (the tutorial's),
torch's LRN with ``alpha = 0.001`` (TensorFlow's 0.001/9 per element, torch divides by the
window of 9), and a global mean pool for the Inception's 7×7 one: both are the same on the
7×7 maps of a 32-pixel input, and the global pool also fits 28 pixels (6×6 maps).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from masc_fast.models.mlp import INPUT_LAYER, check_width

__all__ = ["INCEPTION_MODULES", "SmallAlexNet", "SmallInception"]


class SmallAlexNet(nn.Module):
    """Zhang et al.'s small AlexNet (module docstring) for square images.

    Parameters
    ----------
    in_channels : int
        1 (grey) or 3 (colour).
    num_classes : int
    image_size : int
        Side of the square input (28 or 32 in the studies); the flattened width is
        64 · ⌈⌈s/2⌉/2⌉².

    Attributes
    ----------
    features : torch.nn.Sequential
        conv1, relu, pool1, norm1, conv2, relu, norm2, pool2.
    flatten, fc1, relu1, fc2, relu2, out
        Probed as ``"flatten"``, ``"fc1"`` (384, after ReLU) and ``"fc2"`` (192, after ReLU).
    """

    def __init__(self, in_channels: int, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        in_channels = check_width("in_channels", in_channels)
        num_classes = check_width("num_classes", num_classes)
        side = check_width("image_size", image_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            nn.LocalResponseNorm(9, alpha=0.001, beta=0.75, k=1.0),
            nn.Conv2d(64, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.LocalResponseNorm(9, alpha=0.001, beta=0.75, k=1.0),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        pooled = math.ceil(math.ceil(side / 2) / 2)  # two 3×3 stride-2 pools, padding 1
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64 * pooled * pooled, 384)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(384, 192)
        self.relu2 = nn.ReLU()
        self.out = nn.Linear(192, num_classes)
        self.image_size = side

    @property
    def masc_layers(self) -> dict[str, str]:
        """``{"input", "flatten", "fc1", "fc2"}`` -> module names (fc layers after ReLU)."""
        return {"input": INPUT_LAYER, "flatten": "flatten", "fc1": "relu1", "fc2": "relu2"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.features(x))
        return self.out(self.relu2(self.fc2(self.relu1(self.fc1(x)))))


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Convolution, batch normalisation, ReLU (Zhang's "Conv" module); "same" padding at
    stride 1, none at stride 2."""
    padding = kernel // 2 if stride == 1 else 0
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class _Inception(nn.Module):
    """A 1×1 and a 3×3 convolution module side by side, concatenated along channels."""

    def __init__(self, in_channels: int, ch1: int, ch3: int) -> None:
        super().__init__()
        self.branch1 = _conv(in_channels, ch1, 1)
        self.branch3 = _conv(in_channels, ch3, 3)
        self.out_channels = ch1 + ch3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x)], dim=1)


class _Downsample(nn.Module):
    """A 3×3 stride-2 convolution module beside a 3×3 stride-2 max-pool, concatenated."""

    def __init__(self, in_channels: int, ch3: int) -> None:
        super().__init__()
        self.conv = _conv(in_channels, ch3, 3, stride=2)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2)
        self.out_channels = in_channels + ch3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.pool(x)], dim=1)


#: Zhang et al.'s Figure 3 after the first convolution: ("inception", ch1, ch3) or
#: ("downsample", ch3).
INCEPTION_MODULES = (
    ("inception", 32, 32),
    ("inception", 32, 48),
    ("downsample", 80),
    ("inception", 112, 48),
    ("inception", 96, 64),
    ("inception", 80, 80),
    ("inception", 48, 96),
    ("downsample", 96),
    ("inception", 176, 160),
    ("inception", 176, 160),
)


class SmallInception(nn.Module):
    """Zhang et al.'s small Inception (module docstring) for square images.

    Parameters
    ----------
    in_channels : int
    num_classes : int
    image_size : int
        At least 15 (two unpadded stride-2 downsamples must leave a map).

    Attributes
    ----------
    stem : torch.nn.Sequential
        The 3×3 convolution module of 96.
    blocks : torch.nn.Sequential
        :data:`INCEPTION_MODULES` in order (their maps are 15-35 thousand values wide, too
        wide for class Grams on a CPU, so they are not probed by default).
    pool, flatten, out
        Global mean pool, probed as ``"pool"`` (336 wide), and the read-out.
    """

    def __init__(self, in_channels: int, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        in_channels = check_width("in_channels", in_channels)
        num_classes = check_width("num_classes", num_classes)
        if check_width("image_size", image_size) < 15:
            raise ValueError(
                f"the small Inception needs images of at least 15 px, got {image_size}"
            )
        self.stem = _conv(in_channels, 96, 3)
        modules, channels = [], 96
        for spec in INCEPTION_MODULES:
            module = (
                _Inception(channels, *spec[1:])
                if spec[0] == "inception"
                else _Downsample(channels, spec[1])
            )
            modules.append(module)
            channels = module.out_channels
        self.blocks = nn.Sequential(*modules)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.out = nn.Linear(channels, num_classes)
        self.image_size = image_size

    @property
    def masc_layers(self) -> dict[str, str]:
        """``{"input", "pool"}`` -> module names: the input and the pooled last stage."""
        return {"input": INPUT_LAYER, "pool": "flatten"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.flatten(self.pool(self.blocks(self.stem(x)))))
