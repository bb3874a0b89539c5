r"""A step plan whose every batch holds a fixed number of labelled images: :class:`LabelledBatches`.

Semi-supervised data is mostly unlabelled (label ``-1``): with 100 labels among 60,000 images a
uniformly drawn batch of 64 holds a labelled image one step in ten, so the classifier's gradient
is noise and more labels can even lower the accuracy. :class:`LabelledBatches` (the loop's plan when
:attr:`~hybridflow.training.TrainConfig.labelled_per_batch` is set) gives each batch exactly ``k``
labelled images, then ``batch_size - k`` unlabelled ones:

* the labelled images are dealt out without replacement, cycle after cycle over the labelled
  set, each cycle a new permutation (so 100 labels with ``k = 16`` are all seen every ~6 steps);
* the unlabelled images likewise over the unlabelled set; a pass over it is the plan's epoch.

Everything is a function of ``(seed, step, rank)``: cycle ``c`` of each stream is a permutation
drawn from a generator seeded by ``(seed, stream, c)``, and step ``s`` on rank ``r`` of
``world_size`` reads positions ``(s * world_size + r) * k ...`` of the labelled stream (and the
same of the unlabelled one). A resumed run therefore reads exactly what the uninterrupted run
reads, and ranks never read the same positions in a step.

Example:
    >>> labels = torch.tensor([0, -1, 1, -1, -1, 2, -1, -1])
    >>> plan = LabelledBatches(labels, labelled_per_batch=2, batch_size=4, seed=0)
    >>> idx = plan.indices(0)
    >>> labels[idx].ge(0).tolist()
    [True, True, False, False]
    >>> torch.equal(idx, LabelledBatches(labels, 2, 4, seed=0).indices(0))
    True
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import Tensor

__all__ = ["LabelledBatches"]

_LABELLED_STREAM, _UNLABELLED_STREAM = 0x6C616231, 0x756E6C31  # keeps the two streams' draws apart


class _CycledStream:
    """An endless stream over ``pool`` (indices): permutation after permutation, one per cycle."""

    def __init__(self, pool: Tensor, seed: int, tag: int) -> None:
        self.pool, self.seed, self.tag = pool, seed, tag
        self._cycles: dict[int, Tensor] = {}

    def _cycle(self, cycle: int) -> Tensor:
        if cycle not in self._cycles:
            state = np.random.SeedSequence([self.seed, self.tag, cycle]).generate_state(1, np.uint64)
            generator = torch.Generator().manual_seed(int(state[0] >> 1))
            order = torch.randperm(len(self.pool), generator=generator, device="cpu")
            # Steps run forwards: older cycles are never read again (a resume restarts this object).
            for old in [c for c in self._cycles if c < cycle - 1]:
                del self._cycles[old]
            self._cycles[cycle] = self.pool[order]
        return self._cycles[cycle]

    def take(self, start: int, count: int) -> Tensor:
        """Positions ``start .. start + count - 1`` of the stream."""
        size, parts, position = len(self.pool), [], start
        while position < start + count:
            cycle, offset = divmod(position, size)
            chunk = self._cycle(cycle)[offset : offset + start + count - position]
            parts.append(chunk)
            position += len(chunk)
        return torch.cat(parts)


class LabelledBatches:
    """The batch of every step with ``labelled_per_batch`` labelled images first, then
    ``batch_size - labelled_per_batch`` unlabelled ones (see the module docstring).

    Args:
        labels: ``(N,)`` integer labels of the training data, ``-1`` = unlabelled.
        labelled_per_batch: ``k``, labelled images in each batch of this rank (1 .. ``batch_size - 1``).
        batch_size: images per batch on this rank.
        seed: seeds both streams' permutations.
        rank, world_size: this process and the number of processes (each rank reads its own slots).

    Attributes:
        n: ``N``; num_labelled, num_unlabelled: the two pools' sizes; batch_size, labelled_per_batch;
        batches_per_epoch: steps per pass over the unlabelled images (at least 1).

    Raises ValueError, naming ``labelled_per_batch``, when the data holds fewer than ``k`` labelled
    images or no unlabelled one.
    """

    def __init__(self, labels: Tensor, labelled_per_batch: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        k = labelled_per_batch
        for name, value, low in (("labelled_per_batch", k, 1), ("batch_size", batch_size, 2),
                                 ("world_size", world_size, 1)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if k >= batch_size:
            raise ValueError(f"labelled_per_batch ({k}) must be below batch_size ({batch_size}): the rest of "
                             "each batch is unlabelled images")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in 0..{world_size - 1}, got {rank!r}")
        labels = torch.as_tensor(labels).cpu()
        if labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be a 1-D integer tensor (-1 = unlabelled), got {labels.dtype} of "
                             f"shape {tuple(labels.shape)}")
        labelled = torch.nonzero(labels >= 0).flatten()
        unlabelled = torch.nonzero(labels < 0).flatten()
        if len(labelled) < k:
            raise ValueError(f"labelled_per_batch={k} but the training data holds only {len(labelled)} labelled "
                             f"images (of {len(labels)}): lower labelled_per_batch or label more images")
        if len(unlabelled) == 0:
            raise ValueError(f"labelled_per_batch={k} needs unlabelled images (label -1) to fill the rest of each "
                             f"batch, but all {len(labels)} training images are labelled: leave "
                             "labelled_per_batch unset (None) for fully labelled data")
        self.n, self.seed, self.rank, self.world_size = len(labels), int(seed), int(rank), int(world_size)
        self.batch_size, self.labelled_per_batch = int(batch_size), int(k)
        self.num_labelled, self.num_unlabelled = len(labelled), len(unlabelled)
        self.batches_per_epoch = max(1, self.num_unlabelled // ((self.batch_size - k) * self.world_size))
        self._labelled = _CycledStream(labelled, self.seed, _LABELLED_STREAM)
        self._unlabelled = _CycledStream(unlabelled, self.seed, _UNLABELLED_STREAM)

    def __repr__(self) -> str:
        return (f"LabelledBatches(n={self.n}, labelled={self.num_labelled}, batch_size={self.batch_size}, "
                f"labelled_per_batch={self.labelled_per_batch}, rank={self.rank}, world_size={self.world_size})")

    def indices(self, step: int) -> Tensor:
        """Indices into the training data of this rank's batch at ``step``: ``k`` labelled, then the rest."""
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        slot = int(step) * self.world_size + self.rank
        k, u = self.labelled_per_batch, self.batch_size - self.labelled_per_batch
        return torch.cat([self._labelled.take(slot * k, k), self._unlabelled.take(slot * u, u)])
