"""The library's semi-supervised recipe (``TrainConfig(pseudo_labels=..., translate=...)``, see
:mod:`hybridflow.training.pseudo_labels`) for the benchmarks' own training loop
(``_common.train_for_budget``), which calls a model's ``training_loss``.

Each step: the model predicts the batch's unlabelled images (evaluation mode, no autograd); those
it gives at least ``threshold`` probability take its guess as their label; then the hybrid loss
runs on the batch translated by up to ``max_shift`` pixels, each image its own offset, seeded by
the step. A trained model is an ordinary :class:`~hybridflow.hybrid.HybridModel` (the class adds
only ``training_loss``): it checkpoints, loads and evaluates as one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hybridflow.hybrid import HybridModel
from hybridflow.training.pseudo_labels import apply_pseudo_labels, translate_batch

__all__ = ["PseudoLabelHybrid"]


class PseudoLabelHybrid(HybridModel):
    """A :class:`HybridModel` whose ``training_loss`` adds confident pseudo-labels on a translated
    view (module docstring); ``threshold``, ``max_shift`` and ``seed`` are set after construction.
    ``threshold=None`` trains on the translated view alone (augmentation, no guesses); ``align``
    aligns the guesses' class distribution first (``align_to_uniform``)."""

    threshold: float | None = 0.95
    align: bool = False
    max_shift: int = 2
    seed: int = 0

    def training_loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        y = torch.full((len(x),), -1, dtype=torch.int64) if y is None else y
        step = self.__dict__.get("_step", 0)
        # the first pass initialises the ActNorms from data: let the training batch do it, not the guess
        if step > 0 and self.threshold is not None:
            y = apply_pseudo_labels(self, x, y, self.threshold, align=self.align)
        self.__dict__["_step"] = step + 1
        return self(translate_batch(x, self.max_shift, self.seed, 0, step), y).total
