r"""Batches for the training loop from any data: :class:`BatchSource` and its :class:`BatchStream`.

The loop asks "the batch of step ``s``" and gets uint8 ``(B, C, H, W)`` images and int64 labels on
its device. What it reads from:

* an :class:`ImageData` (in memory): indexed directly, as the loop always did (bit-identical);
* a map-style :class:`~torch.utils.data.Dataset` of ``(image, label)`` items (see
  :mod:`~hybridflow.data.items`; e.g. :class:`~hybridflow.data.streaming.NpyImages`, an image folder
  read lazily, any torchvision dataset with ``PILToTensor``): a :class:`~torch.utils.data.DataLoader`
  (workers, pinned memory on CUDA) driven by :class:`StepBatchSampler`, which yields the loop's own
  per-step indices (``EpochBatches``: a seeded permutation per epoch, dealt out across ranks as
  ``DistributedSampler`` does). Step ``s`` therefore reads the same examples whatever the
  workers, and a resumed run continues bit-exactly;
* an :class:`~torch.utils.data.IterableDataset`: streamed in its own order, items dealt
  round-robin across ranks, ``batch_size`` consecutive items a batch, restarted when it ends.
  Resuming at step ``s`` skips the first ``s * batch_size * world_size`` items by counting: exact
  only for a dataset that yields the same items in the same order every pass (with
  ``num_workers > 1`` the dataset must split its items between workers itself, PyTorch's rule).

Semi-supervised runs can fix each batch's labelled share: the loop then passes a
:class:`~hybridflow.data.labelled_batches.LabelledBatches` plan (``k`` labelled images, the rest
unlabelled, both streams seeded by the step) built from :meth:`BatchSource.labels`; the stream
reads it as it reads any plan (in memory or through the DataLoader), so resume stays bit-exact.

Optional augmentation: ``flip=True`` mirrors each image left-right with probability 1/2 (Glow's
CIFAR-10 recipe), drawn from a generator seeded by ``(seed, rank, step)`` so resume stays exact.

Example:
    >>> from hybridflow.data import load_digits_data
    >>> source = BatchSource(load_digits_data().to_dataset())
    >>> source.image_shape, source.num_examples
    ((1, 8, 8), 1347)
    >>> class Plan:  # the loop passes its EpochBatches
    ...     batch_size = 4
    ...     def indices(self, step): return torch.arange(4) + 4 * step
    >>> x, y = source.stream(Plan(), seed=0).batch(1)
    >>> x.shape, x.dtype, y.tolist() == load_digits_data().labels[4:8].tolist()
    (torch.Size([4, 1, 8, 8]), torch.uint8, True)
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from .arrays import ImageData
from .items import ItemCollate, check_first_item, dataset_labels

__all__ = ["StepPlan", "StepBatchSampler", "BatchSource", "BatchStream", "as_batch_source", "flip_batch"]

_FLIP_STREAM = 0x666C6970  # "flip": keeps the flips' draws apart from the dequantisation noise's


class StepPlan(Protocol):
    """What the loop's ``EpochBatches`` offers: the per-rank batch size and each step's indices."""

    batch_size: int

    def indices(self, step: int) -> Tensor: ...


class StepBatchSampler(Sampler[list[int]]):
    """A ``batch_sampler`` yielding ``plan.indices(step)`` for ``step`` = ``start``, ``start + 1``...
    up to ``stop`` (``None``: without end). ``start`` may be changed between passes (resume).

    Example:
        >>> class Plan:
        ...     batch_size = 2
        ...     def indices(self, step): return torch.tensor([2 * step, 2 * step + 1])
        >>> list(StepBatchSampler(Plan(), start=3, stop=5))
        [[6, 7], [8, 9]]
    """

    def __init__(self, plan: StepPlan, start: int = 0, stop: int | None = None) -> None:
        self.plan, self.start, self.stop = plan, int(start), stop

    def __iter__(self) -> Iterator[list[int]]:
        steps = itertools.count(self.start) if self.stop is None else range(self.start, self.stop)
        for step in steps:
            yield self.plan.indices(step).tolist()

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("StepBatchSampler without stop has no length")
        return max(0, self.stop - self.start)


def flip_batch(images: Tensor, seed: int, rank: int, step: int) -> Tensor:
    """``images`` with each one mirrored left-right with probability 1/2, a function of
    ``(seed, rank, step)`` only (never the global RNG).

    Example:
        >>> x = torch.arange(8, dtype=torch.uint8).reshape(2, 1, 2, 2)
        >>> torch.equal(flip_batch(x, 0, 0, 5), flip_batch(x, 0, 0, 5))
        True
    """
    state = np.random.SeedSequence([int(seed), int(rank), int(step), _FLIP_STREAM]).generate_state(1, np.uint64)
    generator = torch.Generator().manual_seed(int(state[0] >> 1))
    mirror = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(mirror.view(-1, 1, 1, 1), images.flip(-1), images)


class _RankShard(IterableDataset):
    """Items ``rank::world_size`` of an iterable dataset, after skipping ``skip`` of them."""

    def __init__(self, dataset: Any, rank: int, world_size: int, skip: int = 0) -> None:
        self.dataset, self.rank, self.world_size, self.skip = dataset, rank, world_size, skip

    def __iter__(self) -> Iterator[Any]:
        info = torch.utils.data.get_worker_info()
        skip = self.skip // (info.num_workers if info is not None else 1)  # each worker skips its share
        return itertools.islice(iter(self.dataset), skip + self.rank, None, self.world_size)


class BatchSource:
    """What the training loop reads: an :class:`ImageData` or a ``Dataset`` of ``(image, label)``
    items, with how to load it.

    Args:
        data: an :class:`ImageData`, or a map-style or iterable ``Dataset`` (first item validated here).
        num_workers: DataLoader worker processes (0: load in the training process).
        pin_memory: pin host batches for faster copies to the GPU (``None``: when the device is CUDA).
        persistent_workers: keep workers alive between passes (``None``: when ``num_workers > 0``).
        prefetch_factor: batches each worker loads ahead (``None``: PyTorch's default, 2).
        flip: mirror each image left-right with probability 1/2 (see :func:`flip_batch`).

    Attributes:
        image_shape: ``(C, H, W)``; num_examples: the dataset's length (``None`` for an iterable
        without ``__len__``); classes: class names when the data says (``.classes``), else ``[]``;
        iterable: whether the data is streamed in its own order.
    """

    def __init__(self, data: ImageData | Dataset, *, num_workers: int = 0, pin_memory: bool | None = None,
                 persistent_workers: bool | None = None, prefetch_factor: int | None = None,
                 flip: bool = False) -> None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        if prefetch_factor is not None and (not isinstance(prefetch_factor, int) or prefetch_factor < 1):
            raise ValueError(f"prefetch_factor must be a positive integer or None, got {prefetch_factor!r}")
        self.data, self.num_workers, self.flip = data, num_workers, bool(flip)
        self.pin_memory, self.persistent_workers, self.prefetch_factor = pin_memory, persistent_workers, prefetch_factor
        self.iterable = isinstance(data, IterableDataset)
        self.classes = [str(c) for c in getattr(data, "classes", None) or []]
        if isinstance(data, ImageData):
            if len(data) == 0:
                raise ValueError("the data is empty (no images)")
            self.image_shape, self.num_examples = data.image_shape, len(data)
            return
        if isinstance(data, (np.ndarray, Tensor)):
            raise TypeError(f"data must be an ImageData or a torch.utils.data.Dataset of (image, label) pairs, got "
                            f"a bare {type(data).__name__}: wrap arrays with hybridflow.data.load_arrays(x, y)")
        if not isinstance(data, Dataset) and not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            raise TypeError(f"data must be an ImageData or a torch.utils.data.Dataset of (image, label) pairs, "
                            f"got {type(data).__name__}")
        self.num_examples = _length(data)
        if self.num_examples == 0:
            raise ValueError(f"the dataset ({type(data).__name__}) is empty")
        if self.iterable:
            first = next(iter(data), None)
            if first is None:
                raise ValueError(f"the iterable dataset ({type(data).__name__}) yielded no items")
        else:
            if self.num_examples is None:
                raise TypeError(f"map-style dataset {type(data).__name__} has no __len__: the loop needs its size "
                                "to draw batches (or make it an IterableDataset)")
            first = data[0]
        self.image_shape = check_first_item(first, f"dataset {type(data).__name__}")

    def __repr__(self) -> str:
        kind = "ImageData" if isinstance(self.data, ImageData) else type(self.data).__name__
        return (f"BatchSource({kind}, n={self.num_examples}, image_shape={self.image_shape}, "
                f"num_workers={self.num_workers}, flip={self.flip})")

    def labels(self) -> Tensor:
        """Every training label, int64 ``(N,)`` with ``-1`` = unlabelled (what
        :class:`~hybridflow.data.labelled_batches.LabelledBatches` draws from). A ``Dataset`` gives
        them through ``labels`` / ``targets`` when it has one, else item by item (:func:`dataset_labels`).

        Example:
            >>> from hybridflow.data import load_digits_data
            >>> data = load_digits_data()
            >>> torch.equal(BatchSource(data.to_dataset()).labels(), data.labels)
            True
        """
        if isinstance(self.data, ImageData):
            return self.data.labels
        if self.iterable:
            raise ValueError(f"the iterable dataset {type(self.data).__name__} is streamed in its own order: "
                             "batches cannot be drawn by label (labelled_per_batch needs a map-style dataset "
                             "or an ImageData)")
        return dataset_labels(self.data)

    def check_model(self, input_shape: Sequence[int], num_classes: int, what: str = "train_data") -> None:
        """Raise ValueError when the data cannot train a model of ``input_shape`` and ``num_classes``
        (labels found later beyond ``num_classes`` are refused by the stream, naming the step)."""
        if tuple(self.image_shape) != tuple(input_shape):
            raise ValueError(f"{what} holds images of shape {tuple(self.image_shape)}, the model expects "
                             f"{tuple(input_shape)}")
        if isinstance(self.data, ImageData):
            top = int(self.data.labels.max())
            if top >= num_classes:
                raise ValueError(f"{what} has label {top} but the model has only {num_classes} classes")
        elif len(self.classes) > num_classes:
            raise ValueError(f"{what} has {len(self.classes)} classes ({self.classes[:3]}...) but the model has "
                             f"only {num_classes}")

    def stream(self, plan: StepPlan, *, seed: int, rank: int = 0, world_size: int = 1,
               device: torch.device | str = "cpu", num_classes: int | None = None, start: int = 0,
               stop: int | None = None) -> BatchStream:
        """The batches of ``plan`` (the loop's ``EpochBatches``; for an iterable dataset only its
        ``batch_size`` counts) from step ``start`` on, on ``device``; ``num_classes``: refuse larger labels."""
        return BatchStream(self, plan, seed=seed, rank=rank, world_size=world_size, device=torch.device(device),
                           num_classes=num_classes, start=start, stop=stop)


def _length(data: Any) -> int | None:
    try:
        return len(data)
    except TypeError:
        return None


def as_batch_source(data: ImageData | Dataset | BatchSource, **options: Any) -> BatchSource:
    """``data`` itself when it is a :class:`BatchSource`, else a new one with ``options``.

    Example:
        >>> from hybridflow.data import load_digits_data
        >>> as_batch_source(load_digits_data()).num_examples
        1347
    """
    return data if isinstance(data, BatchSource) else BatchSource(data, **options)


class BatchStream:
    """One run's batches: ``batch(step)`` returns step ``step``'s ``(images, labels)`` on the device.

    Consecutive steps come from one DataLoader pass (prefetched by the workers); asking for the
    previous step again (the ActNorm initialisation, then the first update) returns the held batch,
    and any other jump starts a new pass at that step.
    """

    def __init__(self, source: BatchSource, plan: StepPlan, *, seed: int, rank: int, world_size: int,
                 device: torch.device, num_classes: int | None, start: int, stop: int | None) -> None:
        self.source, self.plan, self.seed, self.rank, self.world_size = source, plan, seed, rank, world_size
        self.device, self.num_classes, self.stop = device, num_classes, stop
        self.direct = isinstance(source.data, ImageData) and source.num_workers == 0
        self._held: tuple[int, Tensor, Tensor] | None = None
        self._next_step, self._iterator, self._loader = start, None, None

    def _make_loader(self, start: int) -> DataLoader:
        source = self.source
        workers = source.num_workers
        pin = source.pin_memory if source.pin_memory is not None else self.device.type == "cuda"
        persistent = source.persistent_workers if source.persistent_workers is not None else workers > 0
        options: dict[str, Any] = dict(num_workers=workers, collate_fn=ItemCollate(source.image_shape),
                                       pin_memory=pin, persistent_workers=persistent and workers > 0,
                                       # DataLoader draws its workers' seeds from this, never the global RNG.
                                       generator=torch.Generator().manual_seed(int(self.seed)))
        if workers > 0 and source.prefetch_factor is not None:
            options["prefetch_factor"] = source.prefetch_factor
        data = source.data.to_dataset() if isinstance(source.data, ImageData) else source.data
        if source.iterable:
            skip = start * self.plan.batch_size * self.world_size
            shard = _RankShard(data, self.rank, self.world_size, skip)
            return DataLoader(shard, batch_size=self.plan.batch_size, drop_last=True, **options)
        return DataLoader(data, batch_sampler=StepBatchSampler(self.plan, start, self.stop), **options)

    def _restart(self, step: int) -> None:
        if self._loader is not None and not self.source.iterable and self.source.persistent_workers is not False:
            self._loader.batch_sampler.start = step  # same loader: persistent workers are kept
        else:
            self._loader = self._make_loader(step)
        self._iterator, self._next_step = iter(self._loader), step

    def _fetch(self, step: int) -> tuple[Tensor, Tensor]:
        if self.direct:
            idx = self.plan.indices(step)
            return self.source.data.images[idx], self.source.data.labels[idx]
        if self._iterator is None or step != self._next_step:
            self._restart(step)
        try:
            batch = next(self._iterator)
        except StopIteration:
            if not self.source.iterable:
                raise IndexError(f"step {step} is past the stream's stop ({self.stop})") from None
            # The iterable ran out: a new pass over it (the next epoch), with no items skipped.
            self._loader = self._make_loader(0)
            self._iterator = iter(self._loader)
            batch = next(self._iterator, None)
            if batch is None:
                raise ValueError(f"the iterable dataset holds fewer than batch_size * world_size = "
                                 f"{self.plan.batch_size * self.world_size} items: no full batch") from None
        self._next_step = step + 1
        return batch

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """Step ``step``'s uint8 ``(B, C, H, W)`` images and int64 ``(B,)`` labels on the device."""
        if self._held is not None and self._held[0] == step:
            return self._held[1], self._held[2]
        x, y = self._fetch(step)
        if self.num_classes is not None and len(y) and int(y.max()) >= self.num_classes:
            raise ValueError(f"the batch of step {step} holds label {int(y.max())} but the model has only "
                             f"{self.num_classes} classes")
        if self.source.flip:
            x = flip_batch(x, self.seed, self.rank, step)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        self._held = (step, x, y)
        return x, y

    def close(self) -> None:
        """Shut the workers down now (they also end with the stream)."""
        self._iterator, self._loader, self._held = None, None, None
