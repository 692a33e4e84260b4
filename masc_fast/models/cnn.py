"""The authors' convolutional network ``NgnCnn`` (SPEC §3.2), as it was used for the paper.

Three blocks of two 3×3 convolutions (padding 1, ReLU after each) and a 2×2 max-pool, flattened
to 576 features (28 px input) or 1024 (32 px), then three 250-wide fully connected ReLU layers
and a bias-free linear read-out. The options of their constructor that were off for the paper
(neural noise, excitation masks, ablation, dropout) are not reproduced, and neither is the 1×1
average pool after the last max-pool, which is the identity and holds no parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from masc_fast.models.mlp import INPUT_LAYER, check_width

__all__ = ["CNN"]

#: Input side length -> flattened width after the three (floor) max-pools: 64 · ⌊⌊⌊s/2⌋/2⌋/2⌋².
FLATTEN_WIDTH = {28: 576, 32: 1024}

_HIDDEN = 250
_N_HIDDEN = 3


def _conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
    ]


class CNN(nn.Module):
    """The paper's CNN (the authors' ``NgnCnn``, SPEC §3.2).

    ``features`` (conv16-conv16-pool-conv32-conv32-pool-conv64-conv64-pool, ReLU after every
    convolution) ``-> flatten -> (fc_i -> relu_i) for i = 1..3 -> out``, PyTorch default
    initialisation, no dropout, no normalisation. The authors' constructor reseeded torch with
    a fixed seed; this one does not, so seed before constructing if you need their behaviour.
    Parameter counts: 344,042 (1 channel, 28 px, 10 classes) and 456,330 (3 channels, 32 px).

    Parameters
    ----------
    in_channels : int
        Image channels: 1 for MNIST / Fashion-MNIST, 3 for CIFAR-10.
    num_classes : int, default 10
        Number of output logits.
    image_size : {28, 32}, default 28
        Side length of the square input; sets the flatten width (576 or 1024).

    Attributes
    ----------
    features : torch.nn.Sequential
        The convolutional part; its output is ``(batch, 64, 3, 3)`` or ``(batch, 64, 4, 4)``.
    flatten : torch.nn.Flatten
        Output probed as ``"flatten"``; non-negative because the last block ends in ReLU+pool.
    fc1, fc2, fc3 : torch.nn.Linear
        Hidden layers, 250 wide.
    relu1, relu2, relu3 : torch.nn.ReLU
        One ReLU module per hidden layer, probed as ``"fc1"`` .. ``"fc3"``.
    out : torch.nn.Linear
        Logits, ``250 -> num_classes``, without bias as in the authors' model.

    Raises
    ------
    ValueError
        If ``in_channels`` or ``num_classes`` is below 1, or ``image_size`` is not 28 or 32.
    TypeError
        If ``in_channels``, ``num_classes`` or ``image_size`` is not an integer.

    Examples
    --------
    >>> import torch
    >>> model = CNN(1, 10, image_size=28)
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> model.masc_layers["flatten"], model.masc_layers["fc3"]
    ('flatten', 'relu3')
    """

    def __init__(self, in_channels: int, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        in_channels = check_width("in_channels", in_channels)
        num_classes = check_width("num_classes", num_classes)
        image_size = check_width("image_size", image_size)
        if image_size not in FLATTEN_WIDTH:
            raise ValueError(
                f"image_size must be one of {sorted(FLATTEN_WIDTH)} (the authors' 28 px and "
                f"32 px inputs), got {image_size}"
            )
        self.features = nn.Sequential(
            *_conv_block(in_channels, 16), *_conv_block(16, 32), *_conv_block(32, 64)
        )
        self.flatten = nn.Flatten()
        previous = FLATTEN_WIDTH[image_size]
        for index in range(1, _N_HIDDEN + 1):
            self.add_module(f"fc{index}", nn.Linear(previous, _HIDDEN))
            self.add_module(f"relu{index}", nn.ReLU())
            previous = _HIDDEN
        self.out = nn.Linear(previous, num_classes, bias=False)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.image_size = image_size

    @property
    def masc_layers(self) -> dict[str, str]:
        """Paper display name -> module name: input, flatten, then fc1..fc3 after their ReLU."""
        layers = {"input": INPUT_LAYER, "flatten": "flatten"}
        for index in range(1, _N_HIDDEN + 1):
            layers[f"fc{index}"] = f"relu{index}"
        return layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` for images ``(batch, in_channels, size, size)``."""
        x = self.flatten(self.features(x))
        for index in range(1, _N_HIDDEN + 1):
            x = getattr(self, f"relu{index}")(getattr(self, f"fc{index}")(x))
        return self.out(x)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, num_classes={self.num_classes}, "
            f"image_size={self.image_size}"
        )
