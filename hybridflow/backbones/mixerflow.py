"""MixerFlow (paper, section 4): an MLP-Mixer turned into a normalising flow.

An invertible 1x1 convolution mixes the colour channels; the image is cut into a mixer-matrix
of ``n_patches`` rows by ``patch_dim`` columns; then each mixer layer runs ``k`` channel-mixing
flow steps on the rows and ``k`` patch-mixing flow steps on the columns. Every step's weights
are shared by all rows (or all columns): one batched matmul handles them together. Every
``shift_every``-th layer runs on a shifted-mixer-matrix (patches re-cut ``shift`` pixels down
and right) so that information crosses patch borders.

Example:
    >>> import torch
    >>> flow = MixerFlow((1, 28, 28), patch_size=4, num_layers=2, hidden=32, steps=1)
    >>> u = torch.rand(3, 1, 28, 28)
    >>> z, logdet = flow(u)
    >>> torch.allclose(flow.inverse(z), u, atol=1e-5)
    True
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from ..flows import (
    ActNorm, Flow, FlowSequence, InvConv1x1, LULinear, Patchify, RandomPermutation, RepatchedFlow, ShiftedFlow,
    create_coupling, make_preprocess,
)
from ..flows.invertible_backprop import check_invertible_backprop, invertible_backprop_forward
from ..flows.reshape import as_pair, patchify, unpatchify
from .base import FlowBackbone
from .registry import register_backbone

__all__ = ["MixerFlow", "MixerLayer", "MixingFlow", "Transpose"]


class Transpose(Flow):
    """Swap the last two dimensions: rows become columns. Log-det 0."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.transpose(-1, -2), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y.transpose(-1, -2)


class MixingFlow(FlowSequence):
    """``steps`` flow steps on the last dimension of ``(B, rows, features)``, shared by all rows.

    ActNorm on every activation first (the paper normalises just before the first linear block
    after each transpose), then per step: linear block (LU or RLU; ``permutation="random"``: a
    fixed random permutation instead, Jet's choice), coupling, ActNorm. With a single feature
    there is nothing to couple, and the steps reduce to the linear block.
    """

    def __init__(self, rows: int, features: int, hidden: int, steps: int,
                 permutation: Literal["identity", "reverse", "random"] = "identity", coupling: str = "affine",
                 **coupling_options) -> None:
        def actnorm() -> ActNorm:
            return ActNorm((rows, features), pooled_scale_init=True)

        layers: list[Flow] = [actnorm()]
        for _ in range(steps):
            layers.append(RandomPermutation(features) if permutation == "random"
                          else LULinear(features, permutation=permutation))
            if features >= 2:
                layers.append(create_coupling(coupling, features, hidden, **coupling_options))
            layers.append(actnorm())
        super().__init__(*layers)


class MixerLayer(FlowSequence):
    """Channel-mixing flow on the rows of ``(B, n_patches, patch_dim)``, then patch-mixing flow
    on its columns (a transpose, the flow, and the transpose back). ``steps`` channel-mixing steps,
    ``patch_steps`` (default ``steps``) patch-mixing ones."""

    def __init__(self, n_patches: int, patch_dim: int, hidden: int, steps: int, patch_hidden: int | None = None,
                 patch_steps: int | None = None, **options) -> None:
        super().__init__(
            MixingFlow(n_patches, patch_dim, hidden, steps, **options),
            Transpose(),
            MixingFlow(patch_dim, n_patches, patch_hidden or hidden, patch_steps or steps, **options),
            Transpose(),
        )


class MixerFlow(FlowBackbone):
    """MixerFlow on images of ``input_shape`` (C, H, W).

    Args:
        input_shape: (C, H, W), 1 or 3 channels; ``patch_size`` must divide H and W.
        patch_size: patch height and width (an int or a pair).
        num_layers: number of mixer layers (the paper uses 30).
        hidden: width of the coupling conditioners (128 for CIFAR-10, 64 for MNIST).
        patch_hidden: width of the patch-mixing conditioners, if not ``hidden`` (the MLP-Mixer's
            separate token-mixing width). Patch-mixing weights are applied to ``patch_dim``
            columns, channel-mixing ones to ``n_patches`` rows, so on a 28x28 image with 4x4
            patches a patch-mixing weight costs a third of the compute of a channel-mixing one.
        steps: flow steps ``k`` per channel- and per patch-mixing flow (the paper uses 4).
        patch_steps: patch-mixing steps per layer, if not ``steps`` (Jet puts many channel-wise
            couplings per spatial one: ``steps=3, patch_steps=1``).
        patch_sizes: a patch schedule: layer ``i`` runs on patches of ``patch_sizes[i % len]``
            (re-cut by :class:`~hybridflow.flows.RepatchedFlow`; shift layers keep ``patch_size``).
            ``None``: every layer on ``patch_size``.
        shift: shift of the shift layer in pixels, or ``None`` for no shift layers.
        shift_every: every ``shift_every``-th mixer layer is a shift layer (the paper: 4).
        linear: ``"LU"`` or ``"RLU"`` (``P`` reverses the dimensions; the paper's MNIST model), or
            ``"permute"``: a fixed random permutation per step instead of a learned linear block (Jet).
        coupling: a registered coupling name (``"affine"``; see ``list_couplings()``).
        num_blocks: residual blocks in each affine conditioner.
        conditioner_dtype: ``"bfloat16"`` runs the conditioners in mixed precision (faster on
            CPUs with AVX512-BF16, several times slower on AVX2-only CPUs; log-dets stay exact,
            see ``set_conditioner_dtype``); ``"auto"`` picks bfloat16 only where it is native.
        preprocess: ``"centre"`` (``u - 0.5``, the default) or ``"logit"`` (RealNVP's logit; on
            MNIST it took a 4-minute CPU run from 1.864 to 1.610 bits/dim, see BENCHMARKS.md).
        compile_couplings: train the couplings through ``torch.compile`` (see
            ``set_compiled_couplings``; a run option, not stored in ``config``).
        invertible_backprop: train without storing the mixer layers' activations: the backward
            pass rebuilds them by inverting each layer (memory flat in depth, about 1.5x the step
            time, ``bench/memory_depth.py``; see :mod:`~hybridflow.flows.invertible_backprop`). A
            run option, not stored in ``config``; also an attribute (``flow.invertible_backprop = True``).
        dequantization: ``"uniform"`` or ``"variational"``: a learnt ``q(v | x)`` supplies the
            dequantisation noise (:mod:`~hybridflow.flows.dequantization`; on MNIST it took the
            5-minute bits/dim from 1.701 to 1.632).
    """

    invertible_backprop: bool = False

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        patch_size: int | tuple[int, int] = 4,
        num_layers: int = 30,
        hidden: int = 128,
        steps: int = 4,
        patch_hidden: int | None = None,
        shift: int | None = 1,
        shift_every: int = 4,
        linear: Literal["LU", "RLU", "permute"] = "LU",
        coupling: str = "affine",
        patch_steps: int | None = None,
        patch_sizes: list[int | tuple[int, int]] | None = None,
        conditioner_dtype: str = "float32",
        preprocess: str = "centre",
        compile_couplings: bool = False,
        invertible_backprop: bool = False,
        dequantization: str = "uniform",
        **coupling_options,
    ) -> None:
        super().__init__(input_shape, make_preprocess(preprocess))
        c, h, w = self.input_shape
        self.patch_size = ph, pw = as_pair(patch_size)
        if ph < 1 or pw < 1 or h % ph or w % pw:
            raise ValueError(f"patch size {self.patch_size} must divide the image size {h}x{w}")
        if (h // ph) * (w // pw) < 2 and ph * pw * c < 2:
            raise ValueError(f"image {self.input_shape} with patch {self.patch_size} leaves nothing to mix")
        if linear not in _LINEAR_PERMUTATIONS:
            raise ValueError(f"linear must be one of {sorted(_LINEAR_PERMUTATIONS)}, got {linear!r}")
        if num_layers < 1 or steps < 1 or hidden < 1 or (patch_steps is not None and patch_steps < 1):
            raise ValueError("num_layers, steps, patch_steps and hidden must be positive")
        schedule = _patch_schedule(patch_sizes, self.patch_size, self.input_shape)
        options = dict(permutation=_LINEAR_PERMUTATIONS[linear], coupling=coupling, patch_hidden=patch_hidden,
                       patch_steps=patch_steps, **coupling_options)
        shifted = shift is not None and shift > 0 and h // ph >= 2 and w // pw >= 2
        n_patches, patch_dim = (h // ph) * (w // pw), ph * pw * c
        inner_patches = (h // ph - 1) * (w // pw - 1)
        layers: list[Flow] = [InvConv1x1(c, init="identity"), Patchify(self.input_shape, self.patch_size)]
        for index in range(num_layers):
            if shifted and index % shift_every == shift_every - 1:
                inner = MixerLayer(inner_patches, patch_dim, hidden, steps, **options)
                layers.append(ShiftedFlow(inner, self.input_shape, self.patch_size, shift))
            elif schedule[index % len(schedule)] != self.patch_size:
                qh, qw = patch = schedule[index % len(schedule)]
                inner = MixerLayer((h // qh) * (w // qw), qh * qw * c, hidden, steps, **options)
                layers.append(RepatchedFlow(inner, self.input_shape, self.patch_size, patch))
            else:
                layers.append(MixerLayer(n_patches, patch_dim, hidden, steps, **options))
        self.body = FlowSequence(*layers)
        self.config = dict(patch_size=self.patch_size, num_layers=num_layers, hidden=hidden, steps=steps,
                           patch_hidden=patch_hidden,
                           shift=shift if shifted else None, shift_every=shift_every, linear=linear,
                           coupling=coupling, **coupling_options)
        # new options enter the config only when used: older configs stay as they were
        if patch_steps is not None:
            self.config["patch_steps"] = patch_steps
        if patch_sizes is not None:
            self.config["patch_sizes"] = [list(p) for p in schedule]
        self._record_options(preprocess, conditioner_dtype, compile_couplings, dequantization)
        self.invertible_backprop = check_invertible_backprop(invertible_backprop)

    def _body_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # the body's activations are not stored: the backward pass rebuilds them layer by layer
        m, logdet = invertible_backprop_forward(self.body, x) if self.invertible_backprop else self.body(x)
        return unpatchify(m, self.input_shape, self.patch_size), logdet

    def _body_inverse(self, z: Tensor) -> Tensor:
        return self.body.inverse(patchify(z, self.patch_size))

    def _pool(self, z: Tensor) -> Tensor:
        """Average the latent mixer-matrix over its patches: one ``patch_dim`` vector."""
        return patchify(z, self.patch_size).mean(dim=1)


_LINEAR_PERMUTATIONS = {"LU": "identity", "RLU": "reverse", "permute": "random"}


def _patch_schedule(patch_sizes, patch_size: tuple[int, int], input_shape) -> list[tuple[int, int]]:
    """The patch size of each layer in turn, every one checked against the image."""
    if patch_sizes is None:
        return [patch_size]
    if isinstance(patch_sizes, (int, str)) or len(patch_sizes) == 0:
        raise ValueError(f"patch_sizes must be a non-empty list of patch sizes, got {patch_sizes!r}")
    c, h, w = input_shape
    schedule = [as_pair(p) for p in patch_sizes]
    for ph, pw in schedule:
        if ph < 1 or pw < 1 or h % ph or w % pw:
            raise ValueError(f"patch size {(ph, pw)} in patch_sizes must divide the image size {h}x{w}")
        if (h // ph) * (w // pw) < 2 or ph * pw * c < 2:
            raise ValueError(f"patch size {(ph, pw)} in patch_sizes leaves nothing to mix on {input_shape}")
    return schedule


# -- registered configurations: the paper's (Table 9) and small ones that train on a CPU -------
# Every factory takes ``input_shape`` and any constructor argument as an override.

# Table 9's MNIST column (30 layers, patch 4, hidden 64, 4 steps, no shift, RLU).
_MNIST = dict(input_shape=(1, 28, 28), patch_size=4, num_layers=30, hidden=64, steps=4, shift=None, linear="RLU")
# ``mixerflow_tiny``'s settings, so the tiny variants differ from it only in the coupling.
_TINY = dict(input_shape=(1, 28, 28), patch_size=4, num_layers=8, hidden=64, steps=2, shift=1, linear="LU")


def _config(defaults: dict, overrides: dict) -> MixerFlow:
    return MixerFlow(**{**defaults, **overrides})


@register_backbone
def mixerflow_cifar10(**overrides) -> MixerFlow:
    """Table 9, CIFAR-10 / ImageNet32: 30 layers, patch 4, hidden 128, shift 1, LU."""
    return _config(dict(input_shape=(3, 32, 32), patch_size=4, num_layers=30, hidden=128, steps=4,
                           shift=1, linear="LU"), overrides)


@register_backbone
def mixerflow_galaxy32(**overrides) -> MixerFlow:
    """Table 9, Galaxy32: as CIFAR-10 with hidden 64."""
    return _config(dict(input_shape=(3, 32, 32), patch_size=4, num_layers=30, hidden=64, steps=4,
                           shift=1, linear="LU"), overrides)


@register_backbone
def mixerflow_mnist(**overrides) -> MixerFlow:
    """Table 9, MNIST: 30 layers, patch 4, hidden 64, no shift, RLU (affine coupling here; the
    paper's MNIST model uses MAF steps)."""
    return _config(dict(input_shape=(1, 28, 28), patch_size=4, num_layers=30, hidden=64, steps=4,
                           shift=None, linear="RLU"), overrides)


@register_backbone
def mixerflow_64(**overrides) -> MixerFlow:
    """Table 9, ImageNet64 / AnimeFaces: 30 layers, patch 8, hidden 128, shift 2."""
    return _config(dict(input_shape=(3, 64, 64), patch_size=8, num_layers=30, hidden=128, steps=4,
                           shift=2, linear="LU"), overrides)


@register_backbone
def mixerflow_small(**overrides) -> MixerFlow:
    """A CPU-sized model for MNIST-like data: 12 layers, 2 steps, hidden 96."""
    return _config(dict(input_shape=(1, 28, 28), patch_size=4, num_layers=12, hidden=96, steps=2,
                           shift=1, linear="LU"), overrides)


@register_backbone
def mixerflow_tiny(**overrides) -> MixerFlow:
    """The smallest useful MixerFlow, for tests, the CLI default and CPU benchmarks."""
    return _config(dict(input_shape=(1, 28, 28), patch_size=4, num_layers=8, hidden=64, steps=2,
                           shift=1, linear="LU"), overrides)


@register_backbone
def mixerflow_wide(**overrides) -> MixerFlow:
    """The fast CPU MixerFlow: 4 layers of width 96, at the size of normflows' Glow reference.

    normflows' Glow with L=2, K=8 and 128 channels has 435,360 parameters; this has 435,337 on
    1x28x28, spent on fewer, wider layers than ``mixerflow_tiny``'s 8 of width 64.

    With shared weights a conditioner's matmul cost grows with its parameters, its element-wise
    work (GELU, BatchNorm, clamps) with its width, and the per-call overhead with the number of
    conditioners. Half the layers at 1.5x the width keep the parameters and the matmul work (23.2
    against 23.8 forward MFLOP per image), cut the element-wise work by a quarter and halve the
    kernel calls. Measured on 2 CPU threads, batch 128, bfloat16 conditioners
    (``bench/throughput.py``, 7 rounds): it trains 1.55x and scores (``log_prob``) 1.54x faster
    than ``mixerflow_tiny``. After 4 minutes of training (``bench/density.py``) it reaches 1.630
    bits/dim on MNIST against tiny's 1.623, and 3.487 on Fashion-MNIST against 3.525.

    Example:
        >>> from hybridflow import create_backbone
        >>> create_backbone("mixerflow_wide").num_params
        435337
    """
    return _config(dict(input_shape=(1, 28, 28), patch_size=4, num_layers=4, hidden=96, steps=2,
                           shift=1, linear="LU"), overrides)


@register_backbone
def mixerflow_cpu(**overrides) -> MixerFlow:
    """The CPU default (issue 20): ``mixerflow_wide`` with 3 channel-mixing steps per
    patch-mixing step, variational dequantisation, logit preprocessing, and bfloat16 conditioners
    where the hardware computes bfloat16 natively, float32 elsewhere (``conditioner_dtype="auto"``:
    on an AVX2-only CPU bfloat16 is emulated and a training step takes 4.4x as long).

    Train it with Adam at 8e-3, betas (0.9, 0.99) and batch 64 (the best settings measured). In 10
    minutes of one CPU core it reached 1.396 test bits/dim on MNIST and 3.329 on Fashion-MNIST,
    against 1.411 and 3.327 for our Glow with the same tricks at its own best rate; with Adam at
    6e-3 and the default betas, 1.485 and 3.424 on a slower CPU, against 1.591 and 3.523 for
    ``mixerflow_wide`` (BENCHMARKS.md, section 11). On an AVX2-only CPU, in float32, 10 minutes
    gave 1.579 on MNIST against our Glow's 1.828, and 5 minutes of its own 1.762.

    Example:
        >>> from hybridflow import create_backbone
        >>> flow = create_backbone("mixerflow_cpu")
        >>> flow.config["dequantization"], flow.config["patch_steps"], flow.num_params
        ('variational', 1, 412609)
    """
    return _config(dict(input_shape=(1, 28, 28), patch_size=4, num_layers=4, hidden=96, steps=3, patch_steps=1,
                        shift=1, linear="LU", conditioner_dtype="auto", preprocess="logit",
                        dequantization="variational"), overrides)


@register_backbone
def mixerflow_mnist_mlp(**overrides) -> MixerFlow:
    """Table 8, MLP coupling: ``mixerflow_mnist`` with affine couplings (ResidualMLP conditioners)."""
    return _config({**_MNIST, "coupling": "affine"}, overrides)


@register_backbone
def mixerflow_mnist_kan(**overrides) -> MixerFlow:
    """Table 8, KAN coupling: affine couplings whose conditioners are 2-layer KANs (grid 5, cubic)."""
    return _config({**_MNIST, "coupling": "kan"}, overrides)


@register_backbone
def mixerflow_mnist_spline(**overrides) -> MixerFlow:
    """Table 8, splines: rational-quadratic spline couplings (8 bins on [-3, 3])."""
    return _config({**_MNIST, "coupling": "spline"}, overrides)


@register_backbone
def mixerflow_mnist_maf(**overrides) -> MixerFlow:
    """Table 8 / Table 3, MAF-based: every coupling is a MAF step (sampling is sequential)."""
    return _config({**_MNIST, "coupling": "maf"}, overrides)


@register_backbone
def mixerflow_tiny_spline(**overrides) -> MixerFlow:
    """``mixerflow_tiny`` with spline couplings, for CPU runs."""
    return _config({**_TINY, "coupling": "spline"}, overrides)


@register_backbone
def mixerflow_tiny_maf(**overrides) -> MixerFlow:
    """``mixerflow_tiny`` with MAF steps, for CPU runs."""
    return _config({**_TINY, "coupling": "maf"}, overrides)


@register_backbone
def mixerflow_tiny_kan(**overrides) -> MixerFlow:
    """``mixerflow_tiny`` with KAN-conditioned couplings, for CPU runs."""
    return _config({**_TINY, "coupling": "kan"}, overrides)
