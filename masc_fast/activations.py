"""Which layers a probe reads, forward hooks that hand their activations over, a model's device.

Layer selection, in order of precedence: an explicit ``layers=`` (module names as in
``model.named_modules()``, or ``"input"``; a dict maps display names to module names), then a
model's own ``masc_layers`` attribute (the models in :mod:`masc_fast.models` declare the
paper's layers this way), then auto-detection: the input, every ``nn.Flatten`` output and every
``nn.ReLU`` that directly follows an ``nn.Linear`` in module order — the layers the paper probes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["INPUT", "ActivationTap", "model_device", "resolve_layers"]

INPUT = "input"


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _auto_layers(model: nn.Module) -> dict[str, str]:
    chosen = {INPUT: INPUT}
    previous: nn.Module | None = None
    for name, module in model.named_modules():
        if list(module.children()):
            continue
        if isinstance(module, nn.Flatten):
            chosen[name] = name
        elif isinstance(module, nn.ReLU) and isinstance(previous, nn.Linear):
            chosen[name] = name
        previous = module
    return chosen


def resolve_layers(
    model: nn.Module, layers: Sequence[str] | Mapping[str, str] | None
) -> dict[str, str]:
    """``{display name: module name or "input"}`` for the layers to probe, in probe order.

    A name in a list is a display name of ``model.masc_layers`` when the model has one (so
    ``["fc1"]`` probes the same activations as the default table's ``fc1``, the output after
    the ReLU, not the Linear module called ``fc1``), else a module name; a mapping
    ``{"fc1_linear": "fc1"}`` names a module explicitly.
    """
    displayed = getattr(model, "masc_layers", None)
    if layers is None:
        layers = displayed
    if layers is None:
        selected = _auto_layers(model)
    elif isinstance(layers, Mapping):
        selected = dict(layers)
    else:
        names = [layers] if isinstance(layers, str) else list(layers)
        selected = {name: (displayed or {}).get(name, name) for name in names}
    if not selected:
        raise ValueError("no layers selected to probe")
    known = dict(model.named_modules())
    for display, module_name in selected.items():
        if module_name != INPUT and (module_name not in known or module_name == ""):
            sample = ", ".join(name for name in list(known)[1:12])
            raise ValueError(
                f"layer {display!r}: the model has no module named {module_name!r} "
                f"(modules include: {sample}, …; use 'input' for the model input)"
            )
    return selected


class ActivationTap:
    """Forward hooks collecting each selected layer's output, flattened to (n, d), per forward.

    Outputs are detached and copied, so later in-place operations in the model cannot change
    them and no autograd graph is kept.
    """

    def __init__(self, model: nn.Module, layers: Mapping[str, str]):
        self.model = model
        self.layers = dict(layers)
        self._captured: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def _hook(self, display: str):
        def capture(module, inputs, output):
            if display in self._captured:
                raise RuntimeError(
                    f"layer {display!r}: module {self.layers[display]!r} ran more than once in "
                    f"one forward pass; MASC needs one output per layer (give each use its own "
                    f"module)"
                )
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"layer {display!r}: module output is {type(output).__name__}, not a tensor"
                )
            self._captured[display] = output.detach().flatten(1).clone()

        return capture

    @contextmanager
    def attached(self) -> Iterator[ActivationTap]:
        modules = dict(self.model.named_modules())
        try:
            for display, module_name in self.layers.items():
                if module_name != INPUT:
                    self._handles.append(
                        modules[module_name].register_forward_hook(self._hook(display))
                    )
            yield self
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run the model on ``x``; return its output and ``{display name: (n, d) activations}``."""
        self._captured = {}
        with torch.no_grad():
            output = self.model(x)
        captured = {}
        for display, module_name in self.layers.items():
            if module_name == INPUT:
                captured[display] = x.detach().flatten(1)
            elif display in self._captured:
                captured[display] = self._captured[display]
            else:
                raise RuntimeError(
                    f"layer {display!r}: module {module_name!r} did not run in the forward pass"
                )
        return output, captured
