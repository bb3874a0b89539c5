r"""How the estimator builds and trains its :class:`~hybridflow.hybrid.HybridModel`.

:func:`build_classifier_model` makes the model for an image shape (a MixerFlow falls back to a
patch that divides the images), its initial weights drawn under :func:`~hybridflow.seeding.seeded`;
:func:`train_model` runs one :func:`~hybridflow.training.train` call (its own generators) and keeps
the EMA weights when there are any. Neither moves the caller's global random states.

Threads: :func:`thread_limit` runs a block on :func:`default_threads` threads (``num_threads``, else
``$HYBRIDFLOW_THREADS``, else torch's count capped at half the usable cores) and puts torch's
global thread count back afterwards, so an estimator never leaves the caller's process changed.
On a busy 2-core machine the README's snippet sat in ``fit`` for 16 minutes on torch's default (2)
threads and took 3m40s on one: tiny models gain little from a second thread and lose a lot when
the OpenMP threads wait on cores other processes hold.

Example:
    >>> model = build_classifier_model("mixerflow_tiny", 2, (1, 1, 6), seed=0,
    ...                                backbone_kwargs=dict(num_layers=1, hidden=8))
    >>> model.backbone.patch_size, model.num_classes
    ((1, 1), 2)
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from ..backbones import backbone_family
from ..data import ImageData
from ..hybrid import HybridModel
from ..seeding import seeded
from ..training import TrainConfig, TrainResult, train

__all__ = ["build_classifier_model", "train_model", "default_threads", "thread_limit", "threads_of_estimator",
           "THREADS_ENV"]

#: The environment variable the CLI's ``--threads`` and the estimators read.
THREADS_ENV = "HYBRIDFLOW_THREADS"


def default_threads(num_threads: int | None = None) -> int:
    """The thread count to use: ``num_threads`` if given, else ``$HYBRIDFLOW_THREADS`` if set, else
    torch's current count capped at half the cores this process may use (at least 1).

    Example:
        >>> default_threads(3)
        3
    """
    if num_threads is not None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
        return num_threads
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {env!r}")
        return int(env)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(torch.get_num_threads(), usable // 2))


@contextmanager
def thread_limit(num_threads: int | None = None) -> Iterator[int]:
    """Run the block on :func:`default_threads` ``(num_threads)`` torch threads; restore the count after.

    Example:
        >>> before = torch.get_num_threads()
        >>> with thread_limit(1) as n:
        ...     n, torch.get_num_threads()
        (1, 1)
        >>> torch.get_num_threads() == before
        True
    """
    previous = torch.get_num_threads()
    threads = default_threads(num_threads)
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:  # the caller's process keeps its own setting, even after an error or Ctrl-C
        torch.set_num_threads(previous)


def threads_of_estimator(method: Callable) -> Callable:
    """Run an estimator's ``method`` under :func:`thread_limit` ``(self.num_threads)``: the
    estimator's own thread setting, the caller's restored after."""
    @functools.wraps(method)
    def limited(self: Any, *args: Any, **kwargs: Any) -> Any:
        if hasattr(self, "_validate_params"):  # scikit-learn's message for a bad num_threads, not ours
            self._validate_params()
        with thread_limit(getattr(self, "num_threads", None)):
            return method(self, *args, **kwargs)
    return limited


def build_classifier_model(backbone: str, num_classes: int, image_shape: tuple[int, int, int], seed: int,
                           lam: float = 1.0, pooled: bool = False, head_input: str | None = None,
                           backbone_kwargs: dict[str, Any] | None = None) -> HybridModel:
    """A new :class:`~hybridflow.hybrid.HybridModel` whose initial weights are a function of
    ``seed``; a MixerFlow without an explicit ``patch_size`` whose default patch does not divide
    ``image_shape`` gets the largest side <= 4 that does (1 for tabular rows)."""
    kwargs = dict(backbone_kwargs or {})  # copied: a parameter is never modified
    make = lambda **kw: HybridModel(backbone, num_classes, lam=float(lam), input_shape=image_shape,  # noqa: E731
                                    pooled=bool(pooled), head_input=head_input, **kw)
    with seeded(seed):  # the initial weights are a function of random_state
        try:
            return make(**kwargs)
        except ValueError as error:
            # The registered MixerFlows cut 28x28 or 32x32 images in 4x4 (or 8x8) patches; tabular
            # rows (1, 1, D) and small images need a patch that divides them.
            if "patch_size" in kwargs or backbone_family(backbone) != "mixerflow":
                raise ValueError(f"backbone {backbone!r} cannot be built for images of shape {image_shape}: "
                                 f"{error}") from None
            patch = max(p for p in range(1, 5) if image_shape[1] % p == 0 and image_shape[2] % p == 0)
            try:
                return make(patch_size=patch, **kwargs)
            except ValueError:
                raise ValueError(f"backbone {backbone!r} cannot be built for images of shape {image_shape}: "
                                 f"{error}") from None


def train_model(model: HybridModel, images: Tensor, labels: Tensor, config: TrainConfig,
                num_threads: int | None = None) -> TrainResult:
    """Train ``model`` on uint8 ``images`` and int64 ``labels`` (-1 = unlabelled) with ``config`` on
    :func:`default_threads` ``(num_threads)`` threads (restored after); afterwards ``model`` holds the
    EMA weights when ``config.ema_decay`` is set, in eval mode."""
    with thread_limit(num_threads):
        result = train(model, ImageData(images, labels), config)  # its own generators: no global RNG
    if result.ema is not None:  # the averaged weights are the ones to predict with
        model.load_state_dict(result.ema.state_dict())
    model.eval()
    return result
