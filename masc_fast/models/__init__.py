"""The authors' networks, with the layer names MASC probes (SPEC §3).

Each model exposes ``masc_layers``: an ordered mapping from the paper's display name of a probed
layer to the name of the module (in ``model.named_modules()``) whose output is that layer's
activation. The special module name ``"input"`` means the model's input itself. The probe reads
this mapping to place its hooks. :func:`build_model` builds any of them by name for an input
shape; :func:`batchnorm_per_sample` reproduces the authors' BatchNorm-train-mode extraction.
"""

from masc_fast.models.alexnet import AlexNet
from masc_fast.models.batchnorm import batchnorm_per_sample
from masc_fast.models.cnn import CNN
from masc_fast.models.mlp import INPUT_LAYER, MLP
from masc_fast.models.registry import MODEL_NAMES, build_model
from masc_fast.models.resnet import BasicBlock, ResNet18

__all__ = [
    "INPUT_LAYER",
    "MODEL_NAMES",
    "MLP",
    "AlexNet",
    "BasicBlock",
    "CNN",
    "ResNet18",
    "batchnorm_per_sample",
    "build_model",
]
