"""Per-image OOD scores over a trained model, each "higher = more in-distribution".

============================  ===================================================================
``"loglik"``                  ``log p(x)`` in nats
``"bpd"``                     ``-bits/dim`` (the same ranking as ``loglik`` at a fixed size D)
``"typicality"``              ``-|nll(x) - mean training nll|`` (Nalisnick et al. 2019b); batches
                              of M via :meth:`Typicality.score_batches`
``"likelihood_ratio"``        ``log p(x) - log p_ref(x)`` (Ren et al. 2019; Schirrmeister 2020)
``"complexity"``              ``-(bits/dim(x) - L(x))``, L a lossless compressor's bits/dim
                              (Serra et al. 2020)
``"max_softmax"``             ``max_k p(k|x)`` of a hybrid model (Hendrycks & Gimpel 2017)
``"entropy"``                 ``-H[p(.|x)]`` of a hybrid model
============================  ===================================================================

Every scorer that reads the model's density goes through
:func:`~hybridflow.ood.likelihood.log_likelihood`.

Example:
    >>> import numpy as np
    >>> from hybridflow import create_backbone
    >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
    >>> create_scorer("bpd", flow)(np.zeros((2, 1, 8, 8), np.uint8)).shape
    (2,)
"""

from __future__ import annotations

import io
import zlib
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..backbones import bits_per_dim
from ..data import as_images
from ..flows import inference_model
from .likelihood import as_model_input, class_probabilities, log_likelihood

__all__ = [
    "perturb", "compressed_bits_per_dim",
    "Scorer", "LogLikelihood", "BitsPerDim", "Typicality", "LikelihoodRatio", "Complexity",
    "MaxSoftmax", "PredictiveEntropy", "SCORERS", "create_scorer",
]


def perturb(images: Any, rate: float, seed: int = 0) -> Tensor:
    """Ren et al. (2019)'s background-model inputs: each pixel (all channels of a position alike)
    is replaced, with probability ``rate``, by a uniform random value in 0..255.

    Example:
        >>> perturb(np.zeros((2, 1, 8, 8), np.uint8), rate=1.0).float().mean() > 100
        tensor(True)
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"perturbation rate must lie in [0, 1], got {rate}")
    images = as_images(images)
    generator = torch.Generator().manual_seed(seed)
    n, c, h, w = images.shape
    flip = torch.rand((n, 1, h, w), generator=generator) < rate
    noise = torch.randint(0, 256, images.shape, generator=generator, dtype=torch.uint8)
    return torch.where(flip, noise, images)


def compressed_bits_per_dim(images: Any, compressor: str = "png") -> np.ndarray:
    """A lossless compressor's code length per image in bits/dim: ``8 * len(bytes) / D``.

    ``"png"`` (Pillow, level 9; the whole file, header included) or ``"zlib"`` (level 9 on the raw
    bytes). Headers add the same constant to every image of a size, so rankings do not change.

    Example:
        >>> flat = np.zeros((1, 1, 28, 28), np.uint8)
        >>> noisy = np.random.default_rng(0).integers(0, 256, (1, 1, 28, 28), dtype=np.uint8)
        >>> bool(compressed_bits_per_dim(flat) < compressed_bits_per_dim(noisy))
        True
    """
    if compressor not in ("png", "zlib"):
        raise ValueError(f"compressor must be 'png' or 'zlib', got {compressor!r}")
    images = as_images(images).numpy()
    dims = images[0].size
    if compressor == "png":
        from PIL import Image

        def length(image: np.ndarray) -> int:
            buffer = io.BytesIO()
            pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
            Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=9)
            return buffer.tell()
    else:
        def length(image: np.ndarray) -> int:
            return len(zlib.compress(image.tobytes(), 9))

    return np.array([8.0 * length(image) / dims for image in images])


class Scorer:
    """A per-image score over a trained model, higher = more in-distribution.

    ``fit(images)`` learns whatever statistics the scorer needs from in-distribution data (a
    no-op for most); calling the scorer on images returns a float64 array.
    """

    name = "scorer"

    def __init__(self, model: Any, batch_size: int = 256) -> None:
        # An inference copy: the scorer answers for the weights the model has now (make a new
        # scorer after training the model further).
        self.model = inference_model(model)
        self.batch_size = batch_size

    def fit(self, images: Any, sample_weight: Any = None) -> Scorer:
        """Learn the scorer's statistics from in-distribution ``images`` (rows weighted by
        ``sample_weight``, where the scorer has statistics)."""
        return self

    def score(self, images: Any) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, images: Any) -> np.ndarray:
        return self.score(images)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"


class LogLikelihood(Scorer):
    """``log p(x)`` in nats.

    Example:
        >>> from hybridflow import create_backbone
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
        >>> LogLikelihood(flow)(np.zeros((2, 1, 8, 8), np.uint8)).shape
        (2,)
    """

    name = "loglik"

    def score(self, images: Any) -> np.ndarray:
        return log_likelihood(self.model, images, self.batch_size)


class BitsPerDim(Scorer):
    """``-bits/dim(x)`` (negated so that higher = inlier)."""

    name = "bpd"

    def score(self, images: Any) -> np.ndarray:
        images = as_model_input(images, self.model)
        return -bits_per_dim(torch.from_numpy(log_likelihood(self.model, images, self.batch_size)),
                             images[0].numel()).numpy()


class Typicality(Scorer):
    """Nalisnick et al. (2019b)'s typicality test.

    ``fit`` stores the mean (``train_nll_mean_``, an estimate of the entropy) and standard
    deviation of the NLL on in-distribution data (held-out data is best). A batch of M images is
    atypical when ``|mean NLL of the batch - train_nll_mean_|`` is large; per image (M = 1) the
    score is ``-|nll(x) - train_nll_mean_|``, so images far *more* likely than usual (the mode
    of a high-dimensional Gaussian) count as outliers too.

    Example:
        >>> from hybridflow import create_backbone
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
        >>> x = np.random.default_rng(0).integers(0, 256, (20, 1, 8, 8), dtype=np.uint8)
        >>> Typicality(flow).fit(x).score_batches(x, m=5).shape
        (4,)
    """

    name = "typicality"

    def fit(self, images: Any, sample_weight: Any = None) -> Typicality:
        nll = -log_likelihood(self.model, images, self.batch_size)
        weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        self.train_nll_mean_ = float(np.average(nll, weights=weights))
        self.train_nll_std_ = float(np.sqrt(np.average((nll - self.train_nll_mean_) ** 2, weights=weights)))
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "train_nll_mean_"):
            raise RuntimeError("Typicality needs the training NLL statistics: call fit(images) first")

    def score(self, images: Any) -> np.ndarray:
        self._check_fitted()
        return -np.abs(-log_likelihood(self.model, images, self.batch_size) - self.train_nll_mean_)

    def score_batches(self, images: Any, m: int, n_batches: int | None = None, seed: int = 0) -> np.ndarray:
        """The batch test's score, ``-|mean NLL of a batch of m - train_nll_mean_|``, per batch.

        ``n_batches=None`` splits a seeded shuffle of ``images`` into ``len(images) // m``
        disjoint batches; an int draws that many batches with replacement (a bootstrap, as the
        paper does to set the test's threshold on held-out data).
        """
        self._check_fitted()
        if m < 1:
            raise ValueError(f"batch size m must be positive, got {m}")
        nll = -log_likelihood(self.model, images, self.batch_size)
        rng = np.random.default_rng(seed)
        if n_batches is None:
            if len(nll) < m:
                raise ValueError(f"{len(nll)} images make no batch of m={m}")
            groups = rng.permutation(len(nll))[: len(nll) // m * m].reshape(-1, m)
        else:
            groups = rng.integers(0, len(nll), size=(int(n_batches), m))
        return -np.abs(nll[groups].mean(axis=1) - self.train_nll_mean_)


class LikelihoodRatio(Scorer):
    """``log p_model(x) - log p_reference(x)`` (Ren et al. 2019; Schirrmeister et al. 2020).

    The reference explains away what any image model finds likely (smooth regions, low
    complexity): best a bag-of-patches model of the same data (:class:`~hybridflow.ood.PatchDensity`;
    a reference whose ``input_shape`` is a square patch that divides the images is applied to every
    patch and summed), or the same flow trained on :func:`perturb`-ed inputs (Ren et al.).

    Example:
        >>> from hybridflow import create_backbone
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
        >>> LikelihoodRatio(flow, flow)(np.zeros((2, 1, 8, 8), np.uint8))
        array([0., 0.])
    """

    name = "likelihood_ratio"

    def __init__(self, model: Any, reference: Any, batch_size: int = 256) -> None:
        super().__init__(model, batch_size)
        if reference is None or not hasattr(reference, "log_prob"):
            raise ValueError("likelihood_ratio needs a reference model with a log_prob method")
        from .patches import patch_reference_for

        shape = getattr(self.model, "input_shape", None)
        reference = inference_model(reference)
        self.reference = patch_reference_for(reference, shape) if shape is not None else reference

    def score(self, images: Any) -> np.ndarray:
        images = as_model_input(images, self.model)
        return (log_likelihood(self.model, images, self.batch_size)
                - log_likelihood(self.reference, images, self.batch_size))


class Complexity(Scorer):
    """Serra et al. (2020): the flow's bits/dim corrected by the image's complexity ``L(x)``, a
    lossless compressor's bits/dim. Their outlier score is ``S = bpd(x) - L(x)``; we return
    ``-S``, so an image the model codes much better than a generic compressor is an inlier.

    Example:
        >>> from hybridflow import create_backbone
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
        >>> Complexity(flow, "zlib")(np.zeros((2, 1, 8, 8), np.uint8)).shape
        (2,)
    """

    name = "complexity"

    def __init__(self, model: Any, compressor: str = "png", batch_size: int = 256) -> None:
        super().__init__(model, batch_size)
        compressed_bits_per_dim(np.zeros((1, 1, 2, 2), np.uint8), compressor)  # validates the name
        self.compressor = compressor

    def score(self, images: Any) -> np.ndarray:
        images = as_model_input(images, self.model)
        bpd = -BitsPerDim(self.model, self.batch_size)(images)
        return -(bpd - compressed_bits_per_dim(images, self.compressor))


class MaxSoftmax(Scorer):
    """The classifier's confidence ``max_k p(k|x)`` (Hendrycks & Gimpel 2017); needs a model with
    ``predict_proba`` (a hybrid model)."""

    name = "max_softmax"

    def score(self, images: Any) -> np.ndarray:
        return class_probabilities(self.model, images, self.batch_size).max(axis=1)


class PredictiveEntropy(Scorer):
    """Minus the entropy of ``p(.|x)`` in nats; needs a model with ``predict_proba``."""

    name = "entropy"

    def score(self, images: Any) -> np.ndarray:
        p = class_probabilities(self.model, images, self.batch_size)
        return (p * np.log(np.clip(p, 1e-300, None))).sum(axis=1)


SCORERS: dict[str, type[Scorer]] = {
    cls.name: cls for cls in (LogLikelihood, BitsPerDim, Typicality, LikelihoodRatio, Complexity,
                              MaxSoftmax, PredictiveEntropy)
}


def create_scorer(name: str, model: Any, reference: Any = None, compressor: str = "png",
                  batch_size: int = 256) -> Scorer:
    """A scorer by name (see :data:`SCORERS`); ``reference`` for ``likelihood_ratio``,
    ``compressor`` for ``complexity``.

    Example:
        >>> from hybridflow import create_backbone
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
        >>> create_scorer("bpd", flow)
        BitsPerDim(MixerFlow)
    """
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; choose from {', '.join(SCORERS)}")
    if name == "likelihood_ratio":
        return LikelihoodRatio(model, reference, batch_size)
    if name == "complexity":
        return Complexity(model, compressor, batch_size)
    return SCORERS[name](model, batch_size)
