"""Pseudo-labels with a translated view (FixMatch-style, Sohn et al. 2020) on the hybrid objective,
for issue 19's semi-supervised measurement: the benchmark's own experiment, not a library option.

Each training batch: the model, in evaluation mode and without autograd, predicts the unlabelled
images; those it gives at least ``threshold`` probability become labelled with its guess. Then
the hybrid loss (bits/dim + lam * CE / ln 2) runs on a randomly translated copy of the batch
(every image moved by up to ``max_shift`` pixels each way, the background filling in), so the
head is trained to give the translated digit the label the untranslated one got. The density
term sees the translated images too: one flow pass per step, as in the plain hybrid run.

A trained model is an ordinary :class:`~hybridflow.hybrid.HybridModel` (the class adds only
``training_loss``): it checkpoints, loads and evaluates as one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hybridflow.hybrid import HybridModel

__all__ = ["PseudoLabelHybrid", "translate"]


def translate(images: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Each image of ``images`` (B, C, H, W) moved by its own random whole-pixel offset in
    ``[-max_shift, max_shift]`` on both axes; uncovered pixels are 0 (MNIST's background).

    Example:
        >>> x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
        >>> torch.equal(translate(x, 0), x)
        True
    """
    if max_shift <= 0:
        return images
    b, _, h, w = images.shape
    s = int(max_shift)
    offsets = torch.randint(-s, s + 1, (2, b), generator=generator).to(images.device)
    padded = torch.nn.functional.pad(images, (s, s, s, s)).permute(0, 2, 3, 1)  # (B, H+2s, W+2s, C)
    rows = torch.arange(h, device=images.device)[None, :, None] + s + offsets[0][:, None, None]
    cols = torch.arange(w, device=images.device)[None, None, :] + s + offsets[1][:, None, None]
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


class PseudoLabelHybrid(HybridModel):
    """A :class:`HybridModel` whose ``training_loss`` adds confident pseudo-labels on a translated
    view (module docstring); ``threshold`` and ``max_shift`` are set after construction."""

    threshold: float = 0.95
    max_shift: int = 2

    def training_loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        y = torch.full((len(x),), -1, dtype=torch.int64) if y is None else y.clone()
        unlabelled = torch.nonzero(y < 0).flatten()
        # the first pass initialises the ActNorms from data: let the training batch do it, not the guess
        if len(unlabelled) and self.__dict__.get("_started", False):
            with torch.no_grad():
                confidence, guess = self.predict_proba(x[unlabelled]).max(dim=1)
            keep = confidence >= self.threshold
            y[unlabelled[keep.to(unlabelled.device)]] = guess[keep].to(y.device)
        self.__dict__["_started"] = True
        return self(translate(x, self.max_shift), y).total
