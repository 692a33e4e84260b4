"""The paper's fully connected ReLU network (SPEC §3.1) and helpers shared by the models.

Each model exposes ``masc_layers``: an ordered mapping from the paper's display name of a probed
layer to the name of the module (in ``model.named_modules()``) whose output is that layer's
activation. The special module name ``"input"`` means the model's input itself. The probe reads
this mapping to place its hooks.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["INPUT_LAYER", "MLP", "PAPER_HIDDEN", "SMALL_HIDDEN"]

#: Module name that stands for the model input in ``masc_layers``.
INPUT_LAYER = "input"

#: Hidden widths of the paper's MLP (``"mlp"``, SPEC §3.1).
PAPER_HIDDEN = (128, 512, 2048, 2048)

#: Hidden widths of ``"mlp-small"``, the one-minute demo's model: 301,066 parameters on digits
#: instead of 5,341,834, so an epoch costs about a seventeenth of the paper shape's. Two wide
#: layers memorised shuffled digits labels fastest of the small shapes tried (64-1024 wide, two
#: to four layers; Adam, lr 2e-3, batch 32, seed 0): 96.5-98.2 % running train accuracy on the
#: corrupted labels after 30 epochs at every p, as the paper shape reaches with lr 1e-3.
SMALL_HIDDEN = (512, 512)


def check_width(name: str, value) -> int:
    """``value`` as an ``int``; ``TypeError`` unless an integer, ``ValueError`` if below 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


class MLP(nn.Module):
    """Fully connected ReLU network of the paper (SPEC §3.1).

    ``flatten -> (fc_i -> relu_i) for i = 1..N -> out``, PyTorch default initialisation, no
    dropout, no normalisation. With the default widths and ``in_features=784``,
    ``num_classes=10`` it has exactly 5,433,994 parameters, as the authors' MNIST MLP.

    Parameters
    ----------
    in_features : int
        Number of input features after flattening (784 for MNIST, 3072 for CIFAR-10, 64 for
        scikit-learn digits, 40 for MNIST-1D).
    num_classes : int
        Number of output logits.
    hidden : sequence of int, default (128, 512, 2048, 2048)
        Widths of the hidden layers ``fc1 .. fcN``; may be empty (a linear model).
    dropout : float, default 0
        Dropout after each hidden ReLU (modules ``drop_i``; Arpit et al.'s regulariser, off
        in the paper). MASC probes the ReLU outputs, which dropout does not touch in eval mode.

    Attributes
    ----------
    flatten : torch.nn.Flatten
    fc1 .. fcN : torch.nn.Linear
    relu1 .. reluN : torch.nn.ReLU
        One ReLU module per hidden layer, so each post-activation output can be hooked.
    out : torch.nn.Linear
        Logits layer, ``hidden[-1] -> num_classes``.

    Raises
    ------
    ValueError
        If a width or ``num_classes`` is smaller than 1.
    TypeError
        If a width is not an integer.

    Examples
    --------
    >>> import torch
    >>> model = MLP(64, 10)
    >>> model(torch.zeros(5, 8, 8)).shape
    torch.Size([5, 10])
    >>> model.masc_layers["fc1"]
    'relu1'
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = PAPER_HIDDEN,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        in_features = check_width("in_features", in_features)
        num_classes = check_width("num_classes", num_classes)
        widths = [check_width(f"hidden[{i}]", w) for i, w in enumerate(hidden)]

        self.flatten = nn.Flatten()
        previous = in_features
        for index, width in enumerate(widths, start=1):
            self.add_module(f"fc{index}", nn.Linear(previous, width))
            self.add_module(f"relu{index}", nn.ReLU())
            if dropout:  # after the probed ReLU: the identity in eval mode, where MASC reads
                self.add_module(f"drop{index}", nn.Dropout(dropout))
            previous = width
        self.out = nn.Linear(previous, num_classes)
        self.in_features = in_features
        self.num_classes = num_classes
        self.hidden = tuple(widths)
        self.dropout = float(dropout)

    @property
    def masc_layers(self) -> dict[str, str]:
        """Paper display name -> module name: ``{"input": "input", "fc1": "relu1", ...}``.

        Hidden layers are probed after their ReLU, as the authors did.
        """
        layers = {"input": INPUT_LAYER}
        for index in range(1, len(self.hidden) + 1):
            layers[f"fc{index}"] = f"relu{index}"
        return layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, num_classes)`` for ``x`` of shape ``(batch, ...)``."""
        x = self.flatten(x)
        for index in range(1, len(self.hidden) + 1):
            x = getattr(self, f"relu{index}")(getattr(self, f"fc{index}")(x))
            if self.dropout:
                x = getattr(self, f"drop{index}")(x)
        return self.out(x)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}"
