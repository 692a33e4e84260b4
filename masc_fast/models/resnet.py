"""The authors' CIFAR-10 ResNet-18 ("Modern_backbones", SPEC §3.4).

A CIFAR stem (3×3 convolution, stride 1, no bias; BatchNorm; ReLU) followed by a 3×3/2
max-pool, four stages of two BasicBlocks (64/128/256/512 channels, first strides 1/2/2/2),
adaptive average pooling and a 512 -> 10 linear layer: 11,173,962 parameters.

Module names follow torchvision's ResNet, so the probed modules carry the node names the
authors' ``create_feature_extractor`` used. Their BasicBlock called one in-place ReLU module
twice; here each block owns two, ``relu`` and ``relu_1`` (torchvision's names for the two
calls), because a probe hook must fire exactly once per forward pass. ReLU holds no
parameters, so the parameter count is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from masc_fast.models.mlp import check_width

__all__ = ["BasicBlock", "ResNet18"]

_WIDTHS = (64, 128, 256, 512)
_FIRST_STRIDES = (1, 2, 2, 2)
_BLOCKS_PER_STAGE = 2


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """ResNet BasicBlock: ``relu_1(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out.
    stride : int, default 1
        Stride of ``conv1`` and of the projection shortcut.

    Attributes
    ----------
    conv1, conv2 : torch.nn.Conv2d
        3×3, no bias.
    bn1, bn2 : torch.nn.BatchNorm2d
    relu, relu_1 : torch.nn.ReLU
        After ``bn1``, and after the residual addition (the block output).
    shortcut : torch.nn.Module
        ``nn.Identity`` when the shape is kept, else a 1×1 stride-``stride`` convolution (no
        bias) followed by BatchNorm.

    Examples
    --------
    >>> import torch
    >>> BasicBlock(64, 128, stride=2)(torch.zeros(2, 64, 16, 16)).shape
    torch.Size([2, 128, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        in_channels = check_width("in_channels", in_channels)
        out_channels = check_width("out_channels", out_channels)
        stride = check_width("stride", stride)
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        self.relu_1 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output ``(batch, out_channels, h / stride, w / stride)``."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu_1(out + self.shortcut(x))


class ResNet18(nn.Module):
    """The paper's CIFAR-10 ResNet-18 (SPEC §3.4), for ``3 × 32 × 32`` input.

    ``conv1 -> bn1 -> relu -> maxpool -> layer1..layer4 -> avgpool -> flatten -> fc``, PyTorch
    default initialisation, BatchNorm defaults (momentum 0.1, eps 1e-5). The authors extracted
    activations without calling ``eval()`` (batch size 1, BatchNorm in training mode, SPEC
    §11.2); :func:`masc_fast.models.batchnorm_per_sample` reproduces that.

    Parameters
    ----------
    num_classes : int, default 10
        Number of output logits.

    Attributes
    ----------
    conv1 : torch.nn.Conv2d
        3×3, stride 1, no bias, 3 -> 64.
    bn1 : torch.nn.BatchNorm2d
    relu : torch.nn.ReLU
    maxpool : torch.nn.MaxPool2d
        3×3, stride 2, padding 1 (32 -> 16 px); probed as ``"l0"``.
    layer1 .. layer4 : torch.nn.Sequential
        Two :class:`BasicBlock` each.
    avgpool : torch.nn.AdaptiveAvgPool2d
    flatten : torch.nn.Flatten
        The 512-wide pooled features, probed as ``"bf_last"`` (the authors' ``view`` node).
    fc : torch.nn.Linear
        Logits, ``512 -> num_classes``.

    Raises
    ------
    ValueError
        If ``num_classes`` is below 1.
    TypeError
        If ``num_classes`` is not an integer.

    Examples
    --------
    >>> import torch
    >>> model = ResNet18(10)
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    >>> model.masc_layers["l1"]
    'layer1.1.relu_1'
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        num_classes = check_width("num_classes", num_classes)
        self.conv1 = _conv3x3(3, _WIDTHS[0])
        self.bn1 = nn.BatchNorm2d(_WIDTHS[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        previous = _WIDTHS[0]
        for stage, (width, stride) in enumerate(zip(_WIDTHS, _FIRST_STRIDES), start=1):
            blocks = [BasicBlock(previous, width, stride)]
            blocks += [BasicBlock(width, width) for _ in range(_BLOCKS_PER_STAGE - 1)]
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
            previous = width
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(previous, num_classes)
        self.num_classes = num_classes

    @property
    def masc_layers(self) -> dict[str, str]:
        """Paper display name -> module name, the authors' nine tap points (SPEC §3.4)."""
        return {
            "l0": "maxpool",
            "l0_1": "layer1.0.relu",
            "l0_2": "layer1.0.relu_1",
            "l0_3": "layer1.1.relu",
            "l1": "layer1.1.relu_1",
            "l2": "layer2.1.relu_1",
            "l3": "layer3.1.relu_1",
            "l4": "layer4.1.relu_1",
            "bf_last": "flatten",
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` for images ``(batch, 3, 32, 32)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"
