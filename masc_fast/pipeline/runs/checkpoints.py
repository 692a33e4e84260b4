"""Training checkpoints: model, optimizer, epoch and RNG states in one safetensors file.

Layout of a checkpoint file (written atomically: a temporary file beside the target, then
``os.replace``, so a crash leaves either the old file or the new one, never half of one):

* tensors ``model/<state_dict key>``: the model's ``state_dict()``;
* tensors ``optimizer/<param index>/<state key>``: every tensor of the optimizer's per-parameter
  state (SGD's ``momentum_buffer``; Adam's ``step``, ``exp_avg``, ``exp_avg_sq``);
* tensors ``rng/torch``, ``rng/cuda/<device>`` and ``rng/numpy``: torch's CPU and CUDA
  generator states and the key of NumPy's global Mersenne Twister;
* metadata ``masc_fast.checkpoint``: JSON with the format number, ``epoch``, the optimizer's
  class, ``param_groups`` and any non-tensor per-parameter state, the rest of the NumPy and
  Python ``random`` states, and the caller's ``metadata`` dict.

Model-only checkpoints (``optimizer=None``, ``rng=False``) hold just the weights and metadata.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from masc_fast._io import read_metadata, read_tensors, write_tensors

__all__ = [
    "Checkpoint",
    "checkpoint_metadata",
    "load_checkpoint",
    "load_model_weights",
    "save_checkpoint",
]

FORMAT = 1
_METADATA_KEY = "masc_fast.checkpoint"
_MODEL, _OPTIMIZER, _RNG = "model/", "optimizer/", "rng/"


@dataclass(frozen=True)
class Checkpoint:
    """What :func:`load_checkpoint` read.

    Attributes
    ----------
    path : pathlib.Path
    epoch : int
        The epoch the state was saved after (0: before training).
    metadata : dict
        The ``metadata`` dict given to :func:`save_checkpoint`.
    has_optimizer : bool
        Whether the file holds an optimizer state.
    has_rng : bool
        Whether the file holds RNG states.
    """

    path: Path
    epoch: int
    metadata: dict = field(default_factory=dict)
    has_optimizer: bool = False
    has_rng: bool = False


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, JSON parts) of torch's, CUDA's, NumPy's global and Python's RNG states."""
    tensors = {f"{_RNG}torch": torch.get_rng_state()}
    # Only when CUDA is already initialised: querying it would otherwise create a context.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{_RNG}cuda/{index}"] = state
    kind, key, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    tensors[f"{_RNG}numpy"] = torch.from_numpy(key.astype(np.int64))
    version, python_state, gauss_next = random.getstate()
    info = {
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached": cached},
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
    }
    return tensors, info


def _restore_rng(tensors: dict[str, torch.Tensor], info: dict) -> None:
    torch.set_rng_state(tensors[f"{_RNG}torch"])
    cuda = sorted(
        (int(key.rsplit("/", 1)[1]), value)
        for key, value in tensors.items()
        if key.startswith(f"{_RNG}cuda/")
    )
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() >= len(cuda):
        torch.cuda.set_rng_state_all([state for _, state in cuda])
    numpy_info = info["numpy"]
    key = tensors[f"{_RNG}numpy"].numpy().astype(np.uint32)
    np.random.set_state(  # noqa: NPY002
        (
            numpy_info["kind"],
            key,
            numpy_info["pos"],
            numpy_info["has_gauss"],
            numpy_info["cached"],
        )
    )
    python_info = info["python"]
    random.setstate(
        (python_info["version"], tuple(python_info["state"]), python_info["gauss_next"])
    )


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into flat tensors and a JSON-ready remainder."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    other: dict[str, dict] = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if "/" in name:
                raise ValueError(f"optimizer state key {name!r} contains '/'; cannot store it")
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPTIMIZER}{index}/{name}"] = value
            else:
                other.setdefault(str(index), {})[name] = value
    info = {
        "class": type(optimizer).__name__,
        "param_groups": state["param_groups"],
        "state": other,
        "indices": [int(index) for index in state["state"]],
    }
    return tensors, info


def _optimizer_state(tensors: dict[str, torch.Tensor], info: dict, template: list[dict]) -> dict:
    """Rebuild a ``state_dict()`` for ``load_state_dict`` from the parts written by save."""
    state: dict[int, dict] = {index: {} for index in info["indices"]}
    for key, value in tensors.items():
        if key.startswith(_OPTIMIZER):
            index, name = key[len(_OPTIMIZER) :].split("/", 1)
            state.setdefault(int(index), {})[name] = value
    for index, entries in info["state"].items():
        state.setdefault(int(index), {}).update(entries)
    groups = []
    # JSON turns tuples (Adam's betas) into lists; give back the types the optimizer uses.
    for saved, current in zip(info["param_groups"], template):
        group = dict(saved)
        for name, value in group.items():
            if isinstance(current.get(name), tuple) and isinstance(value, list):
                group[name] = tuple(value)
        groups.append(group)
    return {"state": state, "param_groups": groups}


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous copies where needed; tensors sharing storage (tied weights) are cloned,
    since safetensors refuses shared memory."""
    seen: set[int] = set()
    out = {}
    for key, value in tensors.items():
        value = value.detach().cpu().contiguous()
        pointer = value.untyped_storage().data_ptr()
        if pointer in seen and value.numel():
            value = value.clone()
        seen.add(pointer)
        out[key] = value
    return out


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    epoch: int,
    metadata: dict | None = None,
    rng: bool = True,
) -> Path:
    """Write a model (and optimizer, epoch, RNG states) to one safetensors file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; parent directories are created.
    model : torch.nn.Module
        Its ``state_dict()`` is stored (any device; tensors are copied to the CPU).
    optimizer : torch.optim.Optimizer, optional
        Its full ``state_dict()``: tensors go into the file, ``param_groups`` and any
        non-tensor state into the JSON metadata. ``None`` stores no optimizer.
    epoch : int
        Epochs completed when the state was taken (0 = before training).
    metadata : dict, optional
        JSON-serialisable extras stored with the checkpoint and returned by
        :func:`load_checkpoint` / :func:`checkpoint_metadata`.
    rng : bool, default True
        Also store torch's CPU (and initialised CUDA) generator states, NumPy's global state
        and Python's ``random`` state, for a bit-identical continuation.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    TypeError
        If ``metadata`` or the optimizer's non-tensor state is not JSON-serialisable.

    Examples
    --------
    >>> import tempfile, torch
    >>> from torch import nn
    >>> model = nn.Linear(3, 2)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save_checkpoint(f"{folder}/last.safetensors", model, optimizer, epoch=3)
    ...     load_checkpoint(path, model, optimizer).epoch
    3
    """
    tensors = {f"{_MODEL}{key}": value for key, value in model.state_dict().items()}
    info: dict = {"format": FORMAT, "epoch": int(epoch), "metadata": dict(metadata or {})}
    if optimizer is not None:
        optimizer_tensors, info["optimizer"] = _optimizer_parts(optimizer)
        tensors.update(optimizer_tensors)
    if rng:
        rng_tensors, info["rng"] = _rng_state()
        tensors.update(rng_tensors)
    try:
        text = json.dumps(info)
    except TypeError as error:
        raise TypeError(
            f"checkpoint metadata for {path} is not JSON-serialisable: {error}"
        ) from None
    write_tensors(path, _unshared(tensors), {_METADATA_KEY: text})
    return Path(path)


def checkpoint_metadata(path: str | os.PathLike) -> dict:
    """The JSON header of a checkpoint (``format``, ``epoch``, ``metadata``, ...), without
    reading its tensors.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a masc_fast checkpoint or has another format number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    header = read_metadata(path).get(_METADATA_KEY)
    if header is None:
        raise ValueError(f"{path} is a safetensors file but not a masc_fast training checkpoint")
    info = json.loads(header)
    if info.get("format") != FORMAT:
        raise ValueError(
            f"{path}: checkpoint format {info.get('format')!r}; this version reads {FORMAT}"
        )
    return info


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    restore_rng: bool = False,
) -> Checkpoint:
    """Restore a model (and optimizer, RNG states) from :func:`save_checkpoint`'s file.

    Parameters
    ----------
    path : str or os.PathLike
    model : torch.nn.Module, optional
        Receives the weights with ``load_state_dict(strict=True)``, on whatever device its
        parameters are. ``None`` loads no weights (only the metadata is returned).
    optimizer : torch.optim.Optimizer, optional
        Built over ``model``'s parameters in the same order as when saved (same class); gets
        its state and ``param_groups`` back exactly, so the next step equals the step an
        uninterrupted run would take.
    restore_rng : bool, default False
        Also set torch's (and CUDA's, if the file has them and the devices exist), NumPy's
        global and Python's ``random`` generator states. Off by default, since loading a
        checkpoint for analysis should not reseed the caller.

    Returns
    -------
    Checkpoint
        Epoch, the stored metadata dict, and which parts the file had.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a masc_fast checkpoint; if its weights do not fit ``model``; if
        ``optimizer`` is given but the file holds none, or holds another optimizer class; if
        ``restore_rng`` is set but the file holds no RNG state.

    Examples
    --------
    See :func:`save_checkpoint`.
    """
    info = checkpoint_metadata(path)
    path = Path(path)
    wanted = model is not None or optimizer is not None or restore_rng
    tensors = read_tensors(path)[0] if wanted else {}
    if model is not None:
        weights = {
            key[len(_MODEL) :]: value for key, value in tensors.items() if key.startswith(_MODEL)
        }
        try:
            model.load_state_dict(weights, strict=True)
        except RuntimeError as error:
            raise ValueError(
                f"{path}: weights do not fit {type(model).__name__}: {error}"
            ) from None
    if optimizer is not None:
        saved = info.get("optimizer")
        if saved is None:
            raise ValueError(f"{path} holds no optimizer state (a model-only checkpoint)")
        if saved["class"] != type(optimizer).__name__:
            raise ValueError(
                f"{path} holds a {saved['class']} state; cannot load it into "
                f"{type(optimizer).__name__}"
            )
        optimizer.load_state_dict(
            _optimizer_state(tensors, saved, optimizer.state_dict()["param_groups"])
        )
    if restore_rng:
        if "rng" not in info:
            raise ValueError(f"{path} holds no RNG state (saved with rng=False)")
        _restore_rng(tensors, info["rng"])
    return Checkpoint(
        path=path,
        epoch=int(info["epoch"]),
        metadata=info.get("metadata", {}),
        has_optimizer="optimizer" in info,
        has_rng="rng" in info,
    )


def load_model_weights(path: str | os.PathLike, model: nn.Module) -> Checkpoint:
    """Load only the weights of any checkpoint into ``model``: ``load_checkpoint(path, model)``.

    Parameters
    ----------
    path : str or os.PathLike
        A checkpoint from :func:`save_checkpoint` (model-only or full).
    model : torch.nn.Module
        Built with the run's architecture; receives the weights on its own device.

    Returns
    -------
    Checkpoint
        Its ``epoch`` and ``metadata`` (a run's checkpoints carry that epoch's metrics row).

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`load_checkpoint`.

    Examples
    --------
    See :func:`save_checkpoint`.
    """
    return load_checkpoint(path, model)
