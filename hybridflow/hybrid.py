r"""A hybrid generative classifier: one normalising flow, a linear head on its latent (or on its
conditioners' hidden units), and the joint objective of DESIGN.md.

One pass of the flow gives both the density and the prediction: ``z, log p(x) = flow.encode(x)``,
``logits = W f + b``. What the head sees, ``f``, is ``head_input``:

- ``"latent"`` (default): ``z`` flattened;
- ``"pooled"``: ``z`` averaged over positions (``pooled=True`` says the same);
- ``"hidden"``: the coupling conditioners' last hidden units in that same pass, averaged over
  the rows or positions that share each conditioner (MixerFlow: its MLP-Mixer blocks;
  :func:`~hybridflow.features.recording_hidden_units` with ``pooling="mean"``). The
  classification loss then trains the conditioners' features directly, not only the latent they
  produce. (The probes' ``"hidden"`` features add the max: for a head trained with the flow the
  mean alone measured as accurate, with a better density, and trains about 20% faster.)

The objective, per example ``i`` of a batch of ``B`` integer images::

    loss_i = bpd_i + lam * CE_i / ln 2        (labelled, y_i in 0..K-1)
    loss_i = bpd_i                            (unlabelled, y_i = -1)
    total  = (1 / B) * sum_i loss_i           (mean over *all* B examples)

``bpd_i = -log p(x_i) / (D ln 2)`` are bits per dimension of the integer image (8-bit offset
included) and ``CE_i = -log p(y_i | x_i)`` is in nats, so ``CE_i / ln 2`` is in bits: both terms
are in bits. Because the mean runs over all ``B`` examples, the classification term's weight in a
batch grows with its labelled fraction; unlabelled examples add nothing but their density term.
``lam = 0`` is a pure flow; a large ``lam`` is a discriminative model with an invertible body.

Nalisnick et al. (2019) maximise ``log p(y|x) + a * log p(x)``. Multiplying our loss by
``ln 2 / lam`` gives ``-log p(y|x) - log p(x) / (lam * D)``, the same objective with
``a = 1 / (lam * D)`` (and our loss is theirs times ``lam / ln 2``, so the optimum is the same).

Example:
    >>> import torch
    >>> model = HybridModel("mixerflow_tiny", num_classes=10, input_shape=(1, 8, 8), patch_size=2,
    ...                     num_layers=1, hidden=8, steps=1)
    >>> x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    >>> parts = model(x, torch.tensor([3, 1, -1, -1]))
    >>> parts.total.shape, parts.bits_per_dim.shape, parts.logits.shape
    (torch.Size([]), torch.Size([4]), torch.Size([4, 10]))
    >>> model.predict_proba(x).sum(1).allclose(torch.ones(4))
    True
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import FlowBackbone, bits_per_dim, create_backbone
from .features import hidden_width
from .head_input import HEAD_INPUTS, HEAD_POOLING, check_head_input, hidden_units_of_pass
from .flows import freeze, is_inference_copy

__all__ = ["HybridModel", "HybridLoss", "HEAD_INPUTS", "nalisnick_weight"]

_LN2 = math.log(2.0)

def nalisnick_weight(lam: float, num_dims: int) -> float:
    """Nalisnick et al.'s density weight ``a`` for our ``lam``: ``a = 1 / (lam * D)``
    (``inf`` for ``lam = 0``, a pure flow).

    Example:
        >>> nalisnick_weight(1.0, 784)
        0.0012755102040816326
    """
    return math.inf if lam == 0 else 1.0 / (lam * num_dims)


class HybridLoss(NamedTuple):
    """The parts of the hybrid objective for one batch of ``B`` examples.

    A NamedTuple so that ``DistributedDataParallel``, which only sees ``forward``'s output,
    finds the tensors in it.

    Attributes:
        total: scalar, ``mean_i(bits_per_dim_i + lam * cross_entropy_i / ln 2)`` over all ``B``.
        bits_per_dim: ``(B,)`` bits/dim of every example.
        cross_entropy: ``(B,)`` cross-entropy in nats, ``0`` for unlabelled examples.
        logits: ``(B, K)`` class scores from the same pass of the flow.
        targets: ``(B,)`` int64 labels on the logits' device, ``-1`` = unlabelled.
    """

    total: Tensor
    bits_per_dim: Tensor
    cross_entropy: Tensor
    logits: Tensor
    targets: Tensor

    @property
    def labelled(self) -> Tensor:
        """``(B,)`` bool mask of the labelled examples."""
        return self.targets >= 0

    @property
    def num_labelled(self) -> int:
        return int(self.labelled.sum())

    @property
    def num_correct(self) -> int:
        """Labelled examples whose largest logit is at their label."""
        return int((self.logits.argmax(1) == self.targets).sum())


class HybridModel(nn.Module):
    """A flow backbone with a linear classification head on its latent or its conditioners' hidden units.

    Args:
        backbone: a registered backbone name (see ``list_backbones()``) or a built
            :class:`FlowBackbone`. Only a named backbone can be rebuilt from a checkpoint.
        num_classes: ``K``, the number of classes of the head.
        lam: weight ``lambda >= 0`` of the cross-entropy (0 = pure flow; see the module docstring).
        input_shape: ``(C, H, W)`` passed to ``create_backbone`` (name only).
        pooled: put the head on the latent averaged over positions (``backbone.embed(pooled=True)``)
            instead of the full flattened latent of ``D`` values; short for ``head_input="pooled"``.
        head_input: what the head reads, one of :data:`HEAD_INPUTS` (see the module docstring);
            default ``"latent"`` (``"pooled"`` with ``pooled=True``). ``"hidden"`` needs a
            backbone with MLP or convolutional coupling conditioners (MixerFlow, Glow).
        **backbone_overrides: further ``create_backbone`` keyword arguments (name only).

    Evaluation-time methods (``predict_logits``, ``predict_proba``, ``embed``, ``log_prob``,
    ``bits_per_dim``) run the model in evaluation mode and restore the mode afterwards:
    BatchNorm uses its running statistics, embeddings and logits use midpoint dequantisation and
    densities use the backbone's seeded noise, so a result depends neither on the random noise
    nor on the rest of the batch. They leave autograd to the caller (wrap them in
    ``torch.no_grad()`` when no gradient is needed).

    Example:
        >>> model = HybridModel("glow_tiny", num_classes=10, lam=1.0)
        >>> model.config()["backbone"]
        'glow_tiny'
        >>> HybridModel("mixerflow_tiny", 10, input_shape=(1, 8, 8), patch_size=2, num_layers=2,
        ...             hidden=8, head_input="hidden").num_features   # 2 layers x 4 couplings x 8 units
        64
    """

    def __init__(
        self,
        backbone: str | FlowBackbone,
        num_classes: int,
        lam: float = 1.0,
        input_shape: tuple[int, int, int] | None = None,
        pooled: bool = False,
        head_input: str | None = None,
        **backbone_overrides: Any,
    ) -> None:
        super().__init__()
        head_input = check_head_input(head_input, bool(pooled))
        if isinstance(backbone, str):
            if input_shape is not None:
                backbone_overrides["input_shape"] = tuple(input_shape)
            backbone = create_backbone(backbone, **backbone_overrides)
        elif isinstance(backbone, FlowBackbone):
            if backbone_overrides:
                raise ValueError(f"backbone options {sorted(backbone_overrides)} need a backbone name, "
                                 "not a built backbone")
            if input_shape is not None and tuple(input_shape) != backbone.input_shape:
                raise ValueError(f"input_shape {tuple(input_shape)} does not match the backbone's "
                                 f"{backbone.input_shape}")
        else:
            raise TypeError(f"backbone must be a registered name or a FlowBackbone, got {type(backbone).__name__}")
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
        lam = float(lam)
        if not math.isfinite(lam) or lam < 0:
            raise ValueError(f"lam must be a finite number >= 0, got {lam}")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.lam = lam
        self.head_input = head_input
        self.head = nn.Linear(self.num_features, self.num_classes)
        self._frozen = False

    # -- shape facts -------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.backbone.input_shape

    @property
    def num_dims(self) -> int:
        """``D = C * H * W``."""
        return self.backbone.num_dims

    @property
    def pooled(self) -> bool:
        """Whether the head reads the latent averaged over positions (``head_input == "pooled"``)."""
        return self.head_input == "pooled"

    @property
    def num_features(self) -> int:
        """Length of the embedding the head sees: ``D``, the pooled size or the hidden units'."""
        if self.head_input == "hidden":
            return hidden_width(self.backbone, HEAD_POOLING)
        if not self.pooled:
            return self.num_dims
        # Pooling is a reshape-and-mean of the latent: no flow pass needed to learn its size.
        return int(self.backbone._pool(torch.zeros(1, *self.backbone.latent_shape)).shape[-1])

    @property
    def eval_seed(self) -> int:
        """The backbone's evaluation-noise seed (see :class:`~hybridflow.backbones.FlowBackbone`)."""
        return self.backbone.eval_seed

    @eval_seed.setter
    def eval_seed(self, seed: int) -> None:
        self.backbone.eval_seed = int(seed)

    @property
    def nalisnick_weight(self) -> float:
        """``a = 1 / (lam * D)`` of Nalisnick et al. (2019)."""
        return nalisnick_weight(self.lam, self.num_dims)

    # -- frozen-backbone mode (linear probes) -------------------------------------------------
    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze_backbone(self, frozen: bool = True) -> HybridModel:
        """Train only the head: the backbone's parameters stop requiring gradients and it stays
        in evaluation mode (running BatchNorm statistics, seeded noise) even under ``train()``.
        ``forward`` then runs the backbone without autograd; ``freeze_backbone(False)`` undoes it."""
        self._frozen = bool(frozen)
        self.backbone.requires_grad_(not self._frozen)
        self.train(self.training)
        return self

    def train(self, mode: bool = True) -> HybridModel:
        if mode and is_inference_copy(self):
            raise ValueError("an inference copy (hybridflow.freeze) computes the evaluation function only: "
                             "train the live model and freeze it again")
        super().train(mode)
        if self._frozen:
            self.backbone.eval()
        return self

    # -- the objective ---------------------------------------------------------------------------
    def _head_pass(self, batch: int, run: Callable[[], tuple[Tensor, Tensor | None]],
                   embedded: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(head features, z, log p)`` of one pass of the flow, ``run()`` returning ``(z, log p)``;
        ``embedded``: its ``z`` is already the latent head's input (``backbone.embed``)."""
        if self.head_input != "hidden":
            z, log_prob = run()
            features = z if embedded else (self.backbone._pool(z) if self.pooled else z.flatten(1))
            return features, z, log_prob
        units, (z, log_prob) = hidden_units_of_pass(self.backbone, batch, run, training=self.training)
        return units, z, log_prob

    def logits_of_flow_input(self, u: Tensor) -> Tensor:
        """Class scores ``(B, K)`` of the continuous flow input ``u`` (dequantised images, as
        ``backbone(u)`` takes them), differentiable in ``u`` (:mod:`hybridflow.explain`)."""
        return self.head(self._head_pass(len(u), lambda: (self.backbone(u)[0], None))[0])

    def _check_targets(self, y: Tensor, batch: int, device: torch.device) -> Tensor:
        y = torch.as_tensor(y)
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.dim() != 1 or len(y) != batch:
            raise ValueError(f"labels must be an integer tensor of shape ({batch},) with -1 for unlabelled, "
                             f"got dtype {y.dtype} and shape {tuple(y.shape)}")
        y = y.to(device=device, dtype=torch.int64)
        if batch and (int(y.min()) < -1 or int(y.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in -1..{self.num_classes - 1} (-1 = unlabelled), "
                             f"got range [{int(y.min())}, {int(y.max())}]")
        return y

    def forward(self, x: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None) -> HybridLoss:
        """The loss parts of integer images ``x`` (B, C, H, W) with labels ``y`` (B,), ``-1`` or
        ``None`` for unlabelled; one pass of the flow gives both terms (see the module docstring).
        ``generator`` draws the training-mode dequantisation noise (evaluation mode: each image's
        own seeded noise)."""
        with torch.no_grad() if self._frozen else contextlib.nullcontext():
            # a frozen backbone is a fixed feature map: keep no graph through it
            features, _, log_prob = self._head_pass(len(x), lambda: self.backbone.encode(x, generator=generator))
        bpd = bits_per_dim(log_prob, self.num_dims)
        logits = self.head(features)
        if y is None:
            y = torch.full((len(x),), -1, dtype=torch.int64, device=logits.device)
        y = self._check_targets(y, len(x), logits.device)
        labelled = y >= 0
        # Unlabelled rows get a dummy target and their CE is masked to exactly 0 (torch.where also
        # keeps their gradient at 0, even if that dummy CE were not finite).
        ce = F.cross_entropy(logits, torch.where(labelled, y, 0), reduction="none")
        ce = torch.where(labelled, ce, torch.zeros_like(ce))
        total = (bpd + (self.lam / _LN2) * ce).mean()
        return HybridLoss(total, bpd, ce, logits, y)

    def loss(self, x: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None) -> HybridLoss:
        """Same as calling the model: the :class:`HybridLoss` of a batch."""
        return self(x, y, generator)

    # -- evaluation-time queries ----------------------------------------------------------------
    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    def embed(self, x: Tensor) -> Tensor:
        """The head's input (midpoint dequantisation): the latent flattened ``(B, D)`` or pooled,
        or the pooled hidden units ``(B, num_features)``."""
        with self._evaluating():
            return self._head_pass(len(x), lambda: (self.backbone.embed(x, pooled=self.pooled), None), embedded=True)[0]

    def predict_logits(self, x: Tensor) -> Tensor:
        """Class scores ``(B, K)`` of integer images, independent of noise and batch."""
        return self.head(self.embed(x))

    def predict_proba(self, x: Tensor) -> Tensor:
        """Class probabilities ``(B, K)`` (softmax of :meth:`predict_logits`)."""
        return self.predict_logits(x).softmax(dim=1)

    def predict(self, x: Tensor) -> Tensor:
        """The most likely class ``(B,)``."""
        return self.predict_logits(x).argmax(dim=1)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` in nats of integer images ``(B,)`` (seeded dequantisation noise)."""
        with self._evaluating():
            return self.backbone.log_prob(x)

    def bits_per_dim(self, x: Tensor) -> Tensor:
        """Bits per dimension ``(B,)`` of integer images (8-bit offset included)."""
        return bits_per_dim(self.log_prob(x), self.num_dims)

    def inference_copy(self) -> HybridModel:
        """A weight-owning copy that runs the fused evaluation path (see
        :func:`~hybridflow.flows.inference.freeze`): make a new one after changing the weights."""
        return freeze(self)

    # -- rebuilding ------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON types (and ``eval_seed`` when it is not 0);
        ``HybridModel.from_config(config)`` rebuilds the architecture (weights come from the checkpoint).

        Raises ``ValueError`` for a backbone that was not built by ``create_backbone``.
        """
        name = getattr(self.backbone, "name", None)
        options = getattr(self.backbone, "config", None)
        if name is None or options is None:
            raise ValueError(f"backbone {type(self.backbone).__name__} was not built by create_backbone, so "
                             "its configuration cannot be stored; rebuild the model yourself and load the weights")
        config = dict(backbone=name, num_classes=self.num_classes, lam=self.lam, pooled=self.pooled,
                      head_input=self.head_input, input_shape=list(self.input_shape), backbone_options=dict(options))
        if self.eval_seed != 0:  # evaluation noise other than the default: a reloaded model scores the same
            config["eval_seed"] = self.eval_seed
        return _jsonable(config)

    @staticmethod
    def complete_config(config: dict[str, Any]) -> dict[str, Any]:
        """``config`` with the keys that configs written by older versions lack (``head_input``,
        which their ``pooled`` implies), so that an old checkpoint's config compares equal to
        :meth:`config` of the model it rebuilds.

        Example:
            >>> HybridModel.complete_config({"pooled": True})
            {'pooled': True, 'head_input': 'pooled'}
        """
        if config.get("head_input") is not None:
            return dict(config)
        return {**config, "head_input": "pooled" if config.get("pooled") else "latent"}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HybridModel:
        """Build an (untrained) model from :meth:`config`'s output."""
        try:
            options = {k: tuple(v) if isinstance(v, list) else v for k, v in config["backbone_options"].items()}
            # head_input is absent from configs written before it existed: pooled says it then
            model = cls(config["backbone"], num_classes=config["num_classes"], lam=config["lam"],
                        input_shape=tuple(config["input_shape"]), pooled=config["pooled"],
                        head_input=config.get("head_input"), **options)
        except KeyError as missing:
            raise ValueError(f"model config lacks the key {missing}") from None
        model.eval_seed = config.get("eval_seed", 0)
        return model

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, lam={self.lam}, head_input={self.head_input}, frozen={self._frozen}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
