"""What every backbone offers on top of the layer protocol: densities of integer images,
bits/dim, samples and embeddings.

A backbone's ``forward(u) -> (z, logdet)`` maps a dequantised image ``u`` in ``[0, 1)^D``,
shape ``(B, C, H, W)``, to a latent ``z`` of the same shape under a standard normal base;
``logdet`` includes the preprocessing's. ``log_prob(x)`` and friends take integer pixels.

Example:
    >>> import torch
    >>> from hybridflow import create_backbone
    >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2).eval()
    >>> x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    >>> flow.bits_per_dim(x).shape
    torch.Size([4])
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import Tensor

from ..flows import (
    CONDITIONER_DTYPES, DEQUANTIZATIONS, AffineCoupling, Centre, Conditioner, Flow, VariationalDequantizer, check_pixels,
    freeze, is_inference_copy, quantize,
)
from ..flows.precision import resolve_conditioner_dtype
from ..flows.preprocess import NoiseKind
from .density import bits_per_dim, dequantize_for, integer_log_prob, parameter_dtype_device

__all__ = ["FlowBackbone"]


class FlowBackbone(Flow):
    """Base class of MixerFlow, Glow and friends.

    Subclasses set ``self.body`` (a :class:`Flow` on centred images) or override
    ``_body_forward`` / ``_body_inverse``, and may override ``_pool`` for ``embed(pooled=True)``.
    In evaluation mode each image's dequantisation noise is its own, seeded from its pixels and
    ``eval_seed`` (see :func:`~hybridflow.flows.evaluation_noise`), so ``log_prob`` is
    deterministic and independent of the batch. Set ``flow.eval_seed = k`` to draw another
    evaluation noise (the spread of a test-set figure over a few seeds is its noise error).
    """

    @property
    def eval_seed(self) -> int:
        """Seed of the evaluation dequantisation noise (an integer: set it on the model)."""
        return self.__dict__.get("_eval_seed", 0)

    @eval_seed.setter
    def eval_seed(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"eval_seed must be an integer, got {value!r}")
        self.__dict__["_eval_seed"] = int(value)

    def __init__(self, input_shape: tuple[int, int, int], preprocess: Flow | None = None) -> None:
        super().__init__()
        self.input_shape = _check_input_shape(input_shape)
        self.preprocess = preprocess if preprocess is not None else Centre()
        # q(v | x) of dequantization="variational" (hybridflow.flows.dequantization), else None
        self.dequantizer: VariationalDequantizer | None = None

    # -- the flow itself ------------------------------------------------------------------
    def _body_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.body(x)

    def _body_inverse(self, z: Tensor) -> Tensor:
        return self.body.inverse(z)

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        x, logdet_pre = self.preprocess(u)
        z, logdet = self._body_forward(x)
        return z, logdet + logdet_pre

    def inverse(self, z: Tensor) -> Tensor:
        if not isinstance(z, Tensor) or tuple(z.shape[1:]) != tuple(self.latent_shape):
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"inverse needs latents of shape (N, {', '.join(map(str, self.latent_shape))}), "
                             f"got {got}")
        return self.preprocess.inverse(self._body_inverse(z))

    # -- densities ----------------------------------------------------------------------------
    @property
    def num_dims(self) -> int:
        return math.prod(self.input_shape)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.input_shape

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- precision ------------------------------------------------------------------------------
    conditioner_dtype: str = "float32"

    def set_conditioner_dtype(self, dtype: str) -> FlowBackbone:
        """Run every coupling conditioner in ``dtype`` (``"float32"``, ``"bfloat16"``, or ``"auto"``:
        bfloat16 where the hardware computes it natively, float32 elsewhere; see
        :mod:`~hybridflow.flows.precision`).

        The flow's own arithmetic (couplings, linear blocks, log-dets) stays in float32, so every
        coupling stays invertible and every log-det exact for the function computed; a deep flow
        then inverts to about 1e-3 rather than 1e-5 (see :class:`~hybridflow.flows.Conditioner`).
        The choice is part of ``config`` (a checkpoint rebuilds the same function; ``"auto"`` is
        recorded as the precision it chose). Backbones whose couplings have no such conditioner
        (MAF) refuse ``"bfloat16"`` and resolve ``"auto"`` to ``"float32"``. On a CPU that emulates
        bfloat16 (AVX2 only) bfloat16 conditioners train about 4x slower than float32, and warn.

        Example:
            >>> from hybridflow import create_backbone
            >>> flow = create_backbone("mixerflow_tiny").set_conditioner_dtype("bfloat16")
            >>> flow.config["conditioner_dtype"]
            'bfloat16'
        """
        if dtype not in CONDITIONER_DTYPES and dtype != "auto":
            raise ValueError(f"conditioner_dtype must be one of {sorted(CONDITIONER_DTYPES) + ['auto']}, got {dtype!r}")
        conditioners = [m for m in self.modules() if isinstance(m, Conditioner)]
        if dtype == "auto":
            dtype = resolve_conditioner_dtype(dtype) if conditioners else "float32"
        if CONDITIONER_DTYPES[dtype] is not None and not conditioners:
            raise ValueError(f"{type(self).__name__} has no coupling conditioner that can run in {dtype}")
        for module in conditioners:
            module.compute_dtype = CONDITIONER_DTYPES[dtype]
        self.conditioner_dtype = dtype
        config = getattr(self, "config", None)
        if isinstance(config, dict):  # float32, the default, stays out: old configs are unchanged
            config.pop("conditioner_dtype", None)
            if dtype != "float32":
                config["conditioner_dtype"] = dtype
        return self

    compiled_couplings: bool = False

    def set_compiled_couplings(self, enabled: bool = True) -> FlowBackbone:
        """Train the affine coupling layers through ``torch.compile`` (or stop doing so).

        With autograd on, each coupling's forward, conditioner included, runs as one compiled
        graph whose BatchNorms, GELUs and element-wise arithmetic are fused, forward and backward.
        mixerflow_tiny trains 1.19x faster in float32 and 1.12x with bfloat16 conditioners (see
        :mod:`~hybridflow.flows.inference.compiled`); the first step compiles, for seconds.
        Evaluation without autograd runs eagerly (fast evaluation: :meth:`inference_copy`). A run option, not part of the
        model: ``config`` and checkpoints are unchanged. Where compiling fails (no C++
        compiler), the layers warn once and run eagerly.

        Example:
            >>> from hybridflow import create_backbone
            >>> flow = create_backbone("mixerflow_tiny").set_compiled_couplings()
            >>> flow.compiled_couplings
            True
        """
        couplings = [m for m in self.modules() if isinstance(m, AffineCoupling)]
        if enabled and not couplings:
            raise ValueError(f"{type(self).__name__} has no affine coupling layer to compile")
        for module in couplings:
            module.compiled = bool(enabled)
        self.compiled_couplings = bool(enabled)
        return self

    def _record_options(self, preprocess: str, conditioner_dtype: str, compile_couplings: bool = False,
                        dequantization: str = "uniform") -> None:
        """After a subclass has set ``self.config``: note the non-default preprocessing and
        dequantisation there (defaults stay out, so old configs are unchanged), build the
        variational dequantiser if asked (after the body: a uniform model draws the same weights
        as before), apply the conditioner precision and, if asked, compile the couplings for
        training (a run option, kept out of ``config``)."""
        if preprocess != "centre":
            self.config["preprocess"] = preprocess
        if dequantization not in DEQUANTIZATIONS:
            raise ValueError(f"dequantization must be one of {DEQUANTIZATIONS}, got {dequantization!r}")
        if dequantization == "variational":
            self.dequantizer = VariationalDequantizer(self.input_shape)
            self.config["dequantization"] = dequantization
        self.set_conditioner_dtype(conditioner_dtype)
        if compile_couplings:
            self.set_compiled_couplings(True)

    def dequantize(self, x: Tensor, noise: NoiseKind = "uniform", generator: torch.Generator | None = None) -> Tensor:
        """Validate integer pixels and dequantise them, in the model's dtype and device.

        ``noise="uniform"`` draws fresh noise from ``generator`` in training mode and uses each
        image's own evaluation noise (seeded with ``eval_seed``) in evaluation mode, so an
        image's ``log_prob`` depends neither on the call nor on the rest of its batch. A variational
        dequantiser maps that noise through its ``q(v | x)`` (except the midpoint).
        """
        kind = self._noise_kind(noise)
        dtype, device = self._dtype_device()
        return dequantize_for(self, check_pixels(x, self.input_shape), kind, self.eval_seed, generator, dtype,
                              device)[0]

    def _noise_kind(self, noise: NoiseKind) -> NoiseKind:
        """``"uniform"`` means fresh noise in training and each image's own seeded noise in evaluation."""
        return "evaluation" if noise == "uniform" and not self.training else noise

    def encode(self, x: Tensor, noise: NoiseKind = "uniform",
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """One pass over integer pixels: the latent ``z`` and ``log p(x)`` in nats (see
        :mod:`~hybridflow.backbones.density`; ``noise`` as in :meth:`dequantize`)."""
        kind = self._noise_kind(noise)
        return integer_log_prob(self, x, self.input_shape, kind, self.eval_seed, generator)

    def log_prob(self, x: Tensor) -> Tensor:
        """Per-image log-likelihood in nats of integer pixels ``x`` (B, C, H, W)."""
        return self.encode(x)[1]

    def bits_per_dim(self, x: Tensor) -> Tensor:
        """Per-image bits per dimension of integer pixels ``x`` (the 8-bit offset included)."""
        return bits_per_dim(self.log_prob(x), self.num_dims)

    def train(self, mode: bool = True) -> FlowBackbone:
        if mode and is_inference_copy(self):
            raise ValueError("an inference copy (hybridflow.freeze) computes the evaluation function only: "
                             "train the live model and freeze it again")
        return super().train(mode)

    def inference_copy(self) -> FlowBackbone:
        """A weight-owning copy that runs the fused evaluation path: see
        :func:`~hybridflow.flows.inference.freeze`."""
        return freeze(self)

    # -- generation and embeddings --------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images as ``uint8`` (n, C, H, W) on the model's device, from ``z ~ N(0, temperature^2 I)``.

        ``z`` is drawn on ``generator``'s device (the CPU for the global RNG), so a seed gives the
        same samples on every device. ``n`` must be a positive integer and ``temperature`` a finite
        number ``>= 0`` (``ValueError`` otherwise).

        Example:
            >>> from hybridflow import create_backbone
            >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
            >>> flow.sample(2, temperature=0.5).shape
            torch.Size([2, 1, 8, 8])
            >>> flow.sample(2, temperature=float("nan"))
            Traceback (most recent call last):
            ...
            ValueError: temperature must be a finite number >= 0, got nan
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"number of samples n must be a positive integer, got {n!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.number)):
            raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
        if not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
        was_training = self.training
        self.eval()  # BatchNorm in the conditioners must use its running statistics
        try:
            dtype, device = self._dtype_device()
            source = generator.device if generator is not None else torch.device("cpu")
            z = torch.randn((int(n), *self.latent_shape), generator=generator, device=source)
            z = z.to(device=device, dtype=dtype) * float(temperature)
            u = self.inverse(z)
        finally:
            self.train(was_training)
        return quantize(torch.nan_to_num(u, nan=0.5))

    def embed(self, x: Tensor, pooled: bool = False) -> Tensor:
        """The latent of integer pixels, flattened ``(B, D)`` (midpoint dequantisation, so it does
        not depend on noise or on the batch); ``pooled=True`` averages it over spatial positions."""
        z, _ = self(self.dequantize(x, noise="midpoint"))
        return self._pool(z) if pooled else z.flatten(1)

    def _pool(self, z: Tensor) -> Tensor:
        return z.mean(dim=(2, 3))

    def _dtype_device(self) -> tuple[torch.dtype, torch.device]:
        return parameter_dtype_device(self)

    def _device(self) -> torch.device:
        return self._dtype_device()[1]

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}, num_params={self.num_params:,}"


def _check_input_shape(input_shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (channels, height, width), got {tuple(input_shape)}")
    if shape[0] not in (1, 3):
        raise ValueError(f"input_shape must have 1 or 3 channels, got {shape[0]}")
    if min(shape[1:]) < 1:
        raise ValueError(f"input_shape must have a positive height and width, got {shape}")
    return shape
