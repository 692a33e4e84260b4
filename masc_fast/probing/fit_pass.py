"""The probe's fit pass: stream the training data once, then fit every layer's subspaces.

Each layer gets a strategy (:mod:`masc_fast.probing.strategy`): ``gram`` layers feed one
:class:`~masc_fast.GramAccumulator` per label set, ``stored`` layers (and ``gram_trick`` /
``randomized``) one :class:`~masc_fast.probing.stored_layer.StoredLayer` that writes class-grouped
shards. With a checkpoint directory the pass saves its state every ``checkpoint_seconds`` (and
when it ends), and ``resume=True`` continues from it: batches already folded in are read from
the loader but not run through the model, after checking their labels against the fingerprints
saved with them.

Each layer's share of the fit (its Gram updates or shard writes in the pass, and its eigensolve
or stored fit) is timed into :attr:`FitOutcome.build_seconds` by a :class:`LayerTimer`.
"""

from __future__ import annotations

import errno
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from masc_fast._progress import progress_bar
from masc_fast._validation import BatchChecks, as_tensor
from masc_fast.accumulator import GramAccumulator
from masc_fast.probing.batches import CORRUPTED, TRUE, Counter, labels_of, unpack
from masc_fast.probing.distributed import share_eigens
from masc_fast.probing.fit_checkpoint import FitCheckpoint, label_fingerprint
from masc_fast.probing.phases import LayerTimer, PhaseClock
from masc_fast.probing.stored_layer import StoredLayer
from masc_fast.probing.strategy import plan_strategies, planned_disk_bytes

__all__ = ["FitOptions", "FitPass", "FitOutcome"]


@dataclass(frozen=True)
class FitOptions:
    num_classes: int | None
    variance: float
    thresholds: tuple[float, ...]  # also scored: their counts must be certain too
    device: torch.device
    backend: str | None
    progress: bool
    accumulate_dtype: torch.dtype
    eigensolver: str
    strategy: object  # str or mapping layer -> str
    memory_budget: int
    store_dir: Path
    store_dtype: torch.dtype
    checkpoint: FitCheckpoint | None
    resume: bool
    checkpoint_seconds: float
    total_rows: int | None = None  # rows the training loader announces, if it does
    group: object = None  # a probing.distributed.RankGroup: this rank's rows of many


@dataclass
class FitOutcome:
    subspaces: dict  # (layer, label set) -> ClassSubspaces
    model_counter: Counter
    dims: dict
    strategies: dict  # layer -> strategy
    backends: set
    stored: dict  # layer -> StoredLayer (their shards, for cleanup)
    # (layer, label set) -> seconds of its Gram updates / shard writes and its fit, this process
    build_seconds: dict = field(default_factory=dict)


class FitPass:
    """One fit pass over ``loader`` through ``tap``, timed into ``clock``."""

    def __init__(self, tap, options: FitOptions, clock: PhaseClock):
        self.tap, self.options, self.clock = tap, options, clock
        self.num_classes = options.num_classes
        self.label_sets: tuple[str, ...] | None = None
        self.dims: dict[str, int] = {}
        self.strategies: dict[str, str] = {}
        self.accumulators: dict[tuple[str, str], GramAccumulator] = {}
        self.stored: dict[str, StoredLayer] = {}
        self.model_counter = Counter()
        self.fingerprints: list[int] = []
        self.complete = False
        self._last_save = time.monotonic()
        self.timer = LayerTimer(options.device)
        self.checks = BatchChecks()  # each batch of each layer checked once, for every label set

    # ---- layer objects
    def _build(self) -> None:
        opts = self.options
        self.strategies = plan_strategies(
            self.dims,
            num_classes=self.num_classes,
            label_sets=len(self.label_sets),
            memory_budget=opts.memory_budget,
            requested=opts.strategy,
        )
        for layer, dim in self.dims.items():
            if self.strategies[layer] == "gram":
                for name in self.label_sets:
                    accumulator = GramAccumulator(
                        self.num_classes,
                        dim,
                        device=opts.device,
                        dtype=opts.accumulate_dtype,
                        backend=opts.backend,
                        layer=layer,
                    )
                    accumulator.before_flush = self.checks.raise_pending
                    self.accumulators[(layer, name)] = accumulator
            else:
                self.stored[layer] = StoredLayer(
                    opts.store_dir,
                    layer=layer,
                    num_classes=self.num_classes,
                    dim=dim,
                    label_sets=self.label_sets,
                    method=self.strategies[layer],
                    memory_budget=opts.memory_budget,
                    dtype=opts.store_dtype,
                )

    def _check_disk(self) -> None:
        """Before anything is written: the disk the stored layers' rows and the checkpoints
        will take, for the rows the loader announces (``len(loader.dataset)`` or a list of
        batches), against the space free at the store; ``OSError`` (ENOSPC) naming both when
        it is short. Skipped when the loader does not tell its rows."""
        rows, opts = self.options.total_rows, self.options
        if rows is None or not (self.stored or opts.checkpoint is not None):
            return
        need = planned_disk_bytes(
            self.dims,
            self.strategies,
            rows=rows,
            num_classes=self.num_classes,
            label_sets=len(self.label_sets),
            checkpoint=opts.checkpoint is not None,
            store_itemsize=torch.empty((), dtype=opts.store_dtype).element_size(),
        )
        opts.store_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(opts.store_dir).free
        if need > free:
            raise OSError(
                errno.ENOSPC,
                f"the probe needs about {need:,} bytes in {opts.store_dir} ({rows:,} rows of "
                f"the stored layers {sorted(self.stored)} and checkpoints) and {free:,} are "
                "free; free space, pass activation_dir= on a larger disk, or a larger "
                "memory_budget so more layers stream Grams instead",
                str(opts.store_dir),
            )

    # ---- checkpoints
    def _save(self) -> None:
        checkpoint = self.options.checkpoint
        if checkpoint is None or self.label_sets is None:
            return
        self.checks.raise_pending()  # a checkpoint holds checked batches only
        tensors, layers = {}, {}
        for (layer, name), accumulator in self.accumulators.items():
            for key, value in accumulator.state().items():
                tensors[f"gram/{layer}/{name}/{key}"] = value
        for layer, stored in self.stored.items():
            meta, state = stored.state()
            layers[layer] = meta
            tensors.update({f"stored/{layer}/{key}": value for key, value in state.items()})
        manifest = {
            "batches": len(self.fingerprints),
            "fingerprints": self.fingerprints,
            "complete": self.complete,
            "num_classes": self.num_classes,
            "label_sets": list(self.label_sets),
            "dims": self.dims,
            "strategies": self.strategies,
            "stored": layers,
            "model_counter": self.model_counter.to_json(),
        }
        started = time.monotonic()
        checkpoint.save(manifest, tensors)
        self._last_save = time.monotonic()
        if self.options.checkpoint_seconds > 0:  # saving may not take more than a tenth
            self._last_save += 9 * (self._last_save - started)

    def _restore(self) -> None:
        manifest, tensors = self.options.checkpoint.load()
        self.num_classes = manifest["num_classes"]
        self.label_sets = tuple(manifest["label_sets"])
        self.dims = dict(manifest["dims"])
        self._build()
        if self.strategies != manifest["strategies"]:
            raise ValueError(
                f"resume: the checkpoint fitted layers as {manifest['strategies']}, this call "
                f"plans {self.strategies}; pass the same layers, strategy and memory_budget"
            )
        for (layer, name), accumulator in self.accumulators.items():
            prefix = f"gram/{layer}/{name}/"
            accumulator.restore(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            )
        for layer, stored in self.stored.items():
            prefix = f"stored/{layer}/"
            state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            stored.restore(manifest["stored"][layer], state)
        self.fingerprints = list(manifest["fingerprints"])
        self.model_counter = Counter.from_json(manifest["model_counter"])
        self.complete = bool(manifest["complete"])

    # ---- the pass
    def run(self, loader) -> FitOutcome:
        opts = self.options
        if opts.resume and opts.checkpoint is not None and opts.checkpoint.exists():
            self._restore()
        if not self.complete:
            self._stream(loader)
            self.complete = True
            self._save()
        if opts.group is not None:  # checkpoints keep this rank's own rows, never the sums
            self._reduce()
        return self._fit()

    def _reduce(self) -> None:
        """Sum the fit state over the ranks of a distributed probe (each streamed its own
        shard): a rank without batches takes the others' layers; the layers, classes, label
        sets and strategies must agree."""
        group = self.options.group
        mine = None
        if self.label_sets is not None:
            mine = (self.num_classes, list(self.label_sets), self.dims, self.strategies)
        seen = group.gather(mine, "the layers each rank saw")
        known = [(rank, what) for rank, what in enumerate(seen) if what is not None]
        if not known:
            raise ValueError("the training loaders of every rank yielded no batches")
        first_rank, first = known[0]
        for rank, what in known[1:]:
            if what != first:
                raise ValueError(
                    f"rank {rank} saw (classes, label sets, layer widths, strategies) {what}, "
                    f"rank {first_rank} saw {first}; every rank must probe the same model with "
                    f"batches of the same fields"
                )
        if mine is None:
            self.num_classes, self.label_sets = first[0], tuple(first[1])
            self.dims = dict(first[2])
            self._build()
        for key in sorted(self.accumulators):
            self.accumulators[key].reduce_across(group)
        for layer in sorted(self.stored):
            self.stored[layer].reduce_across(group)

    def _stream(self, loader) -> None:
        opts = self.options
        done = len(self.fingerprints)
        bar = progress_bar(
            desc="probe: fit pass", unit="rows", unit_scale=True, disable=not opts.progress
        )
        index = -1
        for index, batch in enumerate(loader):
            x, y, y_true = unpack(batch, index, train=True)
            if index < done:
                if label_fingerprint(y, y_true) != self.fingerprints[index]:
                    raise ValueError(
                        f"resume: batch {index} has other labels than when it was checkpointed; "
                        f"the loader must replay the same batches in the same order "
                        f"(shuffle=False or a seeded sampler)"
                    )
                bar.update(len(y))
                continue
            with self.clock.phase("forward"):
                output, activations = self.tap.forward(as_tensor(x, "x", device=opts.device))
            n = self._add_batch(index, output, activations, y, y_true)
            self.fingerprints.append(label_fingerprint(y, y_true))
            if index == done:
                plan = " ".join(f"{layer}={how}" for layer, how in self.strategies.items())
                bar.set_postfix_str(plan, refresh=False)
            bar.update(n)
            if opts.checkpoint is not None:
                if time.monotonic() - self._last_save >= opts.checkpoint_seconds:
                    self._save()
        bar.close()
        self.checks.raise_pending()
        if index < 0 and done == 0 and opts.group is None:  # a rank may have none
            raise ValueError("the training loader yielded no batches")
        if index + 1 < done:
            raise ValueError(
                f"resume: the loader yielded {index + 1} batches, the checkpoint already has "
                f"{done}; it must replay the same batches"
            )

    def _add_batch(self, index, output, activations, y, y_true) -> int:
        opts = self.options
        if self.num_classes is None:
            if output.ndim != 2:
                raise ValueError(f"model output has shape {tuple(output.shape)}; pass num_classes=")
            self.num_classes = output.shape[1]
        n = output.shape[0]
        checks, device = self.checks, opts.device
        label_sets = {CORRUPTED: labels_of(checks, y, self.num_classes, n, index, "labels", device)}
        if y_true is not None:
            label_sets[TRUE] = labels_of(
                checks, y_true, self.num_classes, n, index, "true labels", device
            )
        if self.label_sets is None:
            self.label_sets = tuple(label_sets)
        elif tuple(label_sets) != self.label_sets:
            missing = set(label_sets) ^ set(self.label_sets)
            raise ValueError(
                f"batch {index}: label sets {sorted(label_sets)} differ from the first "
                f"batch's {list(self.label_sets)} ({sorted(missing)}); give every batch the "
                f"same fields"
            )
        if output.ndim == 2 and output.shape[1] == self.num_classes:
            predicted = output.argmax(dim=1)
            for name, labels in label_sets.items():
                self.model_counter.add(("train", name), predicted, labels)
        for layer, act in activations.items():
            self.dims.setdefault(layer, act.shape[1])
            checks.activations(act, layer=layer, batch=index, dim=self.dims[layer])
        if not self.strategies:
            self._build()
            self._check_disk()
        if self.stored:
            checks.raise_pending()  # shard writes index with the labels (on the host, anyway)
        with self.clock.phase("gram"):
            for layer, act in activations.items():
                if layer in self.stored:
                    # one shard write serves every label set; split among them in _fit
                    with self.timer.time(layer):
                        self.stored[layer].update(act, label_sets)
                    continue
                for name, labels in label_sets.items():
                    with self.timer.time((layer, name)):
                        self.accumulators[(layer, name)].add_checked(act, labels)
        return n

    def _fit_gram(self, accumulator: GramAccumulator, key):
        """One streamed-Gram layer's subspaces; a distributed probe solves each class on its
        owner rank and shares the bases."""
        opts, group = self.options, self.options.group
        fit = {"method": opts.eigensolver, "thresholds": opts.thresholds}
        if group is None:
            return accumulator.fit(opts.variance, **fit)
        owned = [label for label in range(self.num_classes) if group.owner(label) == group.rank]
        eigens = accumulator.fit_eigens(opts.variance, labels=owned, **fit)
        what = f"layer {key[0]!r} ({key[1]} labels): sharing the bases"
        shared = share_eigens(group, eigens, owned, opts.device, what)
        return accumulator.subspaces(shared, opts.variance)

    def _fit(self) -> FitOutcome:
        opts = self.options
        subspaces = {}
        backends = {accumulator.backend for accumulator in self.accumulators.values()}
        if self.stored:
            backends.add("torch")  # the stored fits run plain torch products
        timer = self.timer
        with self.clock.phase("eigensolve"):
            for key in list(self.accumulators):
                with timer.time(key):
                    subspaces[key] = self._fit_gram(self.accumulators.pop(key), key)
            for layer, stored in self.stored.items():
                streamed = timer.seconds.pop(layer, 0.0)
                for name in stored.label_sets:
                    timer.add((layer, name), streamed / len(stored.label_sets))
                    with timer.time((layer, name)):
                        subspaces[(layer, name)] = stored.fit(
                            name,
                            opts.variance,
                            progress=opts.progress,
                            device=opts.device,
                            group=opts.group,
                        )
        order = {layer: i for i, layer in enumerate(self.dims)}
        ordered = dict(sorted(subspaces.items(), key=lambda item: order[item[0][0]]))
        return FitOutcome(
            subspaces=ordered,
            model_counter=self.model_counter,
            dims=self.dims,
            strategies=self.strategies,
            backends=backends,
            stored=self.stored,
            build_seconds={key: timer.seconds.get(key, 0.0) for key in ordered},
        )
