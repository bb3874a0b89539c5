"""Linear probes on frozen embeddings: how linearly separable are a model's features?

A probe standardises the features, fits a multinomial logistic regression whose inverse
regularisation ``C`` is chosen on a held-out split of the training set, refits on all of it, and
reports test top-1 accuracy and log-loss (the paper's Table 7) as mean and spread over seeds
(the seed draws the validation split). Feature sources: raw pixels (the floor every probe must
beat), any backbone's features (:func:`embed_images`: by default its latents at every depth and
its conditioners' pooled hidden units, see :mod:`hybridflow.features`) and a briefly trained timm MLP-Mixer as a discriminative
reference (:func:`timm_mixer_features`; no pretrained weights are downloaded).
The whole train-then-probe workflow of ``hybridflow probe`` is :func:`hybridflow.probing.run_probe`.

Example:
    >>> from hybridflow.data import load_digits_data
    >>> train, test = load_digits_data(train=True), load_digits_data(train=False)
    >>> result = linear_probe(raw_pixel_features(train.images), train.labels,
    ...                       raw_pixel_features(test.images), test.labels, seeds=(0,), Cs=[0.1])
    >>> result.accuracy_mean > 0.9
    True
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from .data import as_images
from .features import default_features, flow_features
from .logistic import as_float32_rows, fit_logistic_path
from .seeding import seeded

__all__ = [
    "ProbeResult", "linear_probe", "compare_probes", "format_table",
    "embed_images", "raw_pixel_features", "timm_mixer_features", "SKLEARN_PROBE_SIZE",
]

SKLEARN_PROBE_SIZE = 20_000_000
"""Training values up to which ``solver="auto"`` probes with scikit-learn (digits: 14 million); above
it the float32 torch solver (full MNIST: 298 million; 2.5x faster than scikit-learn, less memory)."""


@dataclass
class ProbeResult:
    """Test metrics of a linear probe, one entry per seed, with their mean and standard deviation."""

    dim: int
    seeds: list[int]
    accuracies: list[float]
    log_losses: list[float]
    chosen_Cs: list[float]
    name: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def accuracy_mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def accuracy_std(self) -> float:
        return float(np.std(self.accuracies))

    @property
    def log_loss_mean(self) -> float:
        return float(np.mean(self.log_losses))

    @property
    def log_loss_std(self) -> float:
        return float(np.std(self.log_losses))

    def as_dict(self) -> dict:
        """JSON-ready summary and per-seed values."""
        return {"name": self.name, "dim": self.dim, "accuracy_mean": self.accuracy_mean,
                "accuracy_std": self.accuracy_std, "log_loss_mean": self.log_loss_mean,
                "log_loss_std": self.log_loss_std, "seeds": list(self.seeds), "accuracies": list(self.accuracies),
                "log_losses": list(self.log_losses), "chosen_Cs": list(self.chosen_Cs), **self.extra}


def _features(x: Any, what: str) -> np.ndarray:
    # float32, as the features come: a float64 copy of 60,000 x 10,000 features is 5 GB
    f = as_float32_rows(x, what).numpy()
    if len(f) == 0:
        raise ValueError(f"{what} is empty")
    if not np.isfinite(f).all():
        raise ValueError(f"{what} holds NaN or infinite values")
    return f


def _labels(y: Any, n: int, what: str) -> np.ndarray:
    labels = np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y)
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"{what} must be 1-D with one label per row ({n}), got shape {labels.shape}")
    return labels


def linear_probe(train_features: Any, train_labels: Any, test_features: Any, test_labels: Any,
                 seeds: Sequence[int] = (0, 1, 2), Cs: Sequence[float] = np.logspace(-4, 2, 7),
                 val_fraction: float = 0.2, max_iter: int = 300, name: str = "",
                 blas_threads: int | None = 1, log: Callable[[str], None] | None = None,
                 solver: str = "auto", progress: bool = False) -> ProbeResult:
    """Fit a standardised logistic-regression probe and report test accuracy and log-loss.

    Per seed: a stratified ``val_fraction`` of the training set is held out; every ``C`` in
    ``Cs`` is fitted on the rest and the one with the best validation accuracy (ties: lower
    validation log-loss, then smaller C) is refitted on the whole training set (the scaler
    too). The same grid and split serve every feature set, so no set gets a finer search. The
    validation fits run in increasing C with warm starts, each lbfgs run capped at ``max_iter``
    iterations (on the digits' pixels 300 and 2000 pick the same C and give the same accuracies). ``log`` gets one line per seed (C, test metrics, seconds).

    ``solver="auto"`` (default): scikit-learn up to :data:`SKLEARN_PROBE_SIZE` values, else torch.
    ``solver="torch"`` minimises scikit-learn's objective with scikit-learn's L-BFGS-B
    settings but in float32 torch (:func:`~hybridflow.logistic.fit_logistic_path`: no float64 or
    split copies of the features); its validation fits are capped at 100 iterations (they only
    rank the C) and the refit starts from the chosen validation fit. ``solver="sklearn"`` runs scikit-learn's own pipeline. ``progress`` shows a
    tqdm bar per probe (one step per fit) on stderr.
    Log-loss is ``sklearn.metrics.log_loss`` over all training classes. Test labels unseen in
    training raise ``ValueError``. ``blas_threads`` caps BLAS threads during the fits
    (``None`` leaves them alone): lbfgs on probe-sized problems runs 10-100x slower with
    OpenBLAS threads on a busy machine than with one.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = np.arange(100) % 2
        >>> x = rng.normal(size=(100, 3)) + 5 * y[:, None]
        >>> linear_probe(x, y, x, y, seeds=(0,)).accuracy_mean
        1.0
    """
    x_train, x_test = _features(train_features, "train_features"), _features(test_features, "test_features")
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"train features have {x_train.shape[1]} dimensions, test features {x_test.shape[1]}")
    y_train = _labels(train_labels, len(x_train), "train_labels")
    y_test = _labels(test_labels, len(x_test), "test_labels")
    classes = np.unique(y_train)
    if len(classes) < 2:
        raise ValueError("a probe needs at least two classes in the training labels")
    unseen = np.setdiff1d(np.unique(y_test), classes)
    if len(unseen):
        raise ValueError(f"test labels {unseen.tolist()} do not occur in the training labels")
    Cs = [float(c) for c in np.atleast_1d(Cs)]
    if not Cs or min(Cs) <= 0:
        raise ValueError("Cs must hold positive values")
    if solver not in ("auto", "torch", "sklearn"):
        raise ValueError(f"unknown solver {solver!r}: choose 'auto', 'torch' or 'sklearn'")
    if solver == "auto":
        solver = "sklearn" if x_train.size <= SKLEARN_PROBE_SIZE else "torch"

    from tqdm.auto import tqdm

    fits = len(seeds) * (1 + (len(Cs) > 1) * len(Cs))
    with threadpool_limits(blas_threads, user_api="blas"), \
            tqdm(total=fits, desc=f"probe {name or 'features'}", unit="fit", disable=not progress, leave=False,
                 dynamic_ncols=True) as bar:
        if solver == "torch":
            accuracies, losses, chosen = _torch_seeds(x_train, y_train, x_test, y_test, seeds, Cs, val_fraction,
                                                      max_iter, log, name, bar)
        else:  # scikit-learn's own path in float64, as it always ran (float32 input moves its optimum)
            x_train, x_test = x_train.astype(np.float64), x_test.astype(np.float64)
            accuracies, losses, chosen = _probe_seeds(x_train, y_train, x_test, y_test, seeds, Cs, val_fraction,
                                                      max_iter, log, name, bar)
    return ProbeResult(dim=x_train.shape[1], seeds=[int(s) for s in seeds], accuracies=accuracies,
                       log_losses=losses, chosen_Cs=chosen, name=name)


def _fit_path(x: np.ndarray, y: np.ndarray, Cs: Sequence[float], max_iter: int) -> list[Any]:
    """One standardised probe per C, fitted in increasing C with warm starts: each fit starts from
    the previous, more regularised solution, so lbfgs needs fewer iterations than from zero."""
    scaler = StandardScaler().fit(x)
    xs = scaler.transform(x)
    model = LogisticRegression(solver="lbfgs", max_iter=max_iter, warm_start=True)
    fitted = {}
    for C in sorted(set(Cs)):
        model.set_params(C=C)
        with warnings.catch_warnings():  # a capped max_iter is a speed choice, not a failure
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(xs, y)
        fitted[C] = make_pipeline(scaler, copy.deepcopy(model))
    return [fitted[C] for C in Cs]


def _probe_seeds(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 seeds: Sequence[int], Cs: list[float], val_fraction: float, max_iter: int,
                 log: Callable[[str], None] | None, name: str, bar: Any = None
                 ) -> tuple[list[float], list[float], list[float]]:
    accuracies, losses, chosen = [], [], []
    for seed in seeds:
        started = time.perf_counter()
        if len(Cs) == 1:
            best = Cs[0]  # nothing to choose: skip the validation fits
        else:
            x_fit, x_val, y_fit, y_val = train_test_split(x_train, y_train, test_size=val_fraction,
                                                          random_state=seed, stratify=y_train)
            ranked = []
            for C, model in zip(Cs, _fit_path(x_fit, y_fit, Cs, max_iter)):
                p = model.predict_proba(x_val)
                ranked.append((-accuracy_score(y_val, model.classes_[p.argmax(1)]),
                               log_loss(y_val, p, labels=model.classes_), C))
            best = min(ranked)[2]
        model = _fit_path(x_train, y_train, [best], max_iter)[0]
        if bar is not None:
            bar.update(len(Cs) + 1 if len(Cs) > 1 else 1)
        p = model.predict_proba(x_test)
        _record(p, model.classes_, y_test, best, accuracies, losses, chosen)
        _log_seed(log, name, x_train.shape[1], seed, best, accuracies[-1], losses[-1], started)
    return accuracies, losses, chosen


def _record(p: np.ndarray, classes: np.ndarray, y_test: np.ndarray, C: float, accuracies: list[float],
            losses: list[float], chosen: list[float]) -> None:
    accuracies.append(float(accuracy_score(y_test, classes[p.argmax(1)])))
    losses.append(float(log_loss(y_test, p, labels=classes)))
    chosen.append(C)


def _log_seed(log: Callable[[str], None] | None, name: str, dim: int, seed: int, C: float, accuracy: float,
              loss: float, started: float) -> None:
    if log is not None:
        log(f"  probe {name or 'features'} ({dim} dims), seed {seed}: C={C:g}, test accuracy "
            f"{100 * accuracy:.2f}%, log-loss {loss:.4f} ({time.perf_counter() - started:.0f} s)")


_PATH_MAX_ITER = 100  # validation fits only rank the C: on the digits 100 and 300 choose the same C


def _torch_seeds(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 seeds: Sequence[int], Cs: list[float], val_fraction: float, max_iter: int,
                 log: Callable[[str], None] | None, name: str, bar: Any) -> tuple[list[float], list[float], list[float]]:
    """:func:`_probe_seeds` with :func:`~hybridflow.logistic.fit_logistic_path`: the same splits
    (row indices instead of copies), the same ranking; the refit starts from the chosen validation fit."""
    accuracies, losses, chosen = [], [], []
    for seed in seeds:
        started = time.perf_counter()
        start = None
        if len(Cs) == 1:
            best = Cs[0]
        else:
            fit_rows, val_rows = train_test_split(np.arange(len(x_train)), test_size=val_fraction,
                                                  random_state=seed, stratify=y_train)
            # each C from the last (as scikit-learn's path); a start from another seed's path saves
            # little (175 of 197 evaluations on 20,000 MNIST features) and moves the choice of C
            path = fit_logistic_path(x_train, y_train, Cs, fit_rows, max_iter=min(max_iter, _PATH_MAX_ITER), bar=bar)
            x_val, y_val = x_train[val_rows], y_train[val_rows]
            ranked = []
            for j, C in enumerate(Cs):
                p = path.predict_proba(x_val, j)
                ranked.append((-accuracy_score(y_val, path.classes[p.argmax(1)]),
                               log_loss(y_val, p, labels=path.classes), C, j))
            _, _, best, j = min(ranked)
            start = path.solutions()[j:j + 1] if len(path.classes) == len(np.unique(y_train)) else None
        model = fit_logistic_path(x_train, y_train, [best], max_iter=max_iter, init=start, bar=bar)
        _record(model.predict_proba(x_test), model.classes, y_test, best, accuracies, losses, chosen)
        _log_seed(log, name, x_train.shape[1], seed, best, accuracies[-1], losses[-1], started)
    return accuracies, losses, chosen



def compare_probes(feature_sets: dict[str, tuple[Any, Any]], train_labels: Any, test_labels: Any,
                   **probe_kwargs: Any) -> dict[str, ProbeResult]:
    """:func:`linear_probe` on each named ``(train_features, test_features)`` pair, same labels.

    Example:
        >>> x = np.r_[np.zeros((10, 2)), np.ones((10, 2))]; y = np.r_[np.zeros(10), np.ones(10)]
        >>> print(format_table(compare_probes({"toy": (x, x)}, y, y, seeds=(0,), Cs=[1.0])))
        features  dim   accuracy (%)         log-loss  seeds
        toy         2  100.00 ± 0.00  0.0685 ± 0.0000      1
    """
    return {name: linear_probe(train, train_labels, test, test_labels, name=name, **probe_kwargs)
            for name, (train, test) in feature_sets.items()}


def format_table(results: dict[str, ProbeResult] | Sequence[ProbeResult]) -> str:
    """An aligned text table: features, dim, accuracy (%) mean ± std, log-loss mean ± std, seeds.

    Example:
        >>> r = ProbeResult(dim=64, seeds=[0, 1], accuracies=[0.9, 0.92], log_losses=[0.3, 0.28],
        ...                 chosen_Cs=[1.0, 1.0], name="pixels")
        >>> print(format_table([r]))
        features  dim  accuracy (%)         log-loss  seeds
        pixels     64  91.00 ± 1.00  0.2900 ± 0.0100      2
    """
    items = list(results.items()) if isinstance(results, dict) else [(r.name, r) for r in results]
    header = ["features", "dim", "accuracy (%)", "log-loss", "seeds"]
    rows = [[name, str(r.dim), f"{100 * r.accuracy_mean:.2f} ± {100 * r.accuracy_std:.2f}",
             f"{r.log_loss_mean:.4f} ± {r.log_loss_std:.4f}", str(len(r.seeds))] for name, r in items]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    # Names left-aligned, numbers right-aligned, so the ± signs line up.
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join(line(row).rstrip() for row in [header, *rows])


# --------------------------------------------------------------------------- feature sources


def raw_pixel_features(images: Any) -> np.ndarray:
    """Pixels scaled to [0, 1] and flattened, ``(N, C*H*W)`` float32: the floor of every probe.

    Example:
        >>> raw_pixel_features(np.full((2, 1, 4, 4), 255, np.uint8)).max()
        np.float32(1.0)
    """
    return as_images(images).flatten(1).numpy().astype(np.float32) / 255.0


def embed_images(model: Any, images: Any, batch_size: int = 256, pooled: bool = False,
                 features: str | None = None) -> np.ndarray:
    """A backbone's (a hybrid model's: its ``.backbone``'s) ``features`` of ``images`` as float32
    ``(N, dim)``, computed without gradients on a copy (the model itself is left as it is).

    ``features`` is one of :data:`~hybridflow.features.FEATURE_SETS`; the default
    (:func:`~hybridflow.features.default_features`: ``"depths+hidden"`` for MixerFlow and Glow) is
    the latents at every depth and the conditioners' pooled hidden units, and
    ``"latent"`` the flattened final latent (``pooled=True`` is short for ``"pooled"``). See
    :func:`~hybridflow.features.flow_features`.

    Example:
        >>> from hybridflow import create_backbone
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
        >>> embed_images(flow, np.zeros((3, 1, 8, 8), np.uint8), features="latent").shape
        (3, 64)
    """
    if pooled and features not in (None, "pooled"):
        raise ValueError(f"pooled=True asks for the pooled latent, features={features!r} for another set")
    return flow_features(model, images, "pooled" if pooled else features or default_features(model), batch_size)


def _mixer_patch(h: int, w: int) -> int:
    """The largest of 4, 2, 1 that divides both sides (28 -> 4, 8 -> 2)."""
    return next(p for p in (4, 2, 1) if h % p == 0 and w % p == 0)


def timm_mixer_features(train_images: Any, train_labels: Any, *images: Any, steps: int = 300,
                        batch_size: int = 64, lr: float = 1e-3, patch_size: int | None = None,
                        embed_dim: int = 128, num_blocks: int = 4, seed: int = 0, device: str | None = None,
                        max_seconds: float | None = None, verbose: int = 0) -> list[np.ndarray]:
    """A discriminative reference: timm's MLP-Mixer trained from scratch (no downloads) on the
    labelled images for ``steps`` AdamW steps, then its pre-logits features (mean-pooled tokens,
    ``embed_dim`` wide) of ``train_images`` and of each of ``images``.

    Returns ``[train_features, *features_of_images]``; ``train_labels`` may be any labels.

    Example:
        >>> from hybridflow.data import load_digits_data
        >>> d = load_digits_data()
        >>> train_f, test_f = timm_mixer_features(d.images[:64], d.labels[:64], d.images[:8], steps=2)
        >>> train_f.shape, test_f.shape
        ((64, 128), (8, 128))
    """
    from timm.models.mlp_mixer import MlpMixer

    x_train = as_images(train_images)
    _, c, h, w = x_train.shape
    labels = np.asarray(train_labels.cpu() if isinstance(train_labels, Tensor) else train_labels)
    classes, y = np.unique(labels, return_inverse=True)
    if len(y) != len(x_train):
        raise ValueError(f"got {len(y)} labels for {len(x_train)} images")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with seeded(seed, dev):
        model = MlpMixer(num_classes=len(classes), img_size=(h, w), in_chans=c,
                         patch_size=patch_size or _mixer_patch(h, w), num_blocks=num_blocks,
                         embed_dim=embed_dim).to(dev)
    generator = torch.Generator().manual_seed(seed)
    targets = torch.as_tensor(y, dtype=torch.int64)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    prep = lambda x: x.to(dev).float() / 127.5 - 1.0  # noqa: E731 - pixels to [-1, 1]
    import time

    start = time.monotonic()
    model.train()
    for step in range(steps):
        idx = torch.randint(len(x_train), (min(batch_size, len(x_train)),), generator=generator, device="cpu")
        loss = nn.functional.cross_entropy(model(prep(x_train[idx])), targets[idx].to(dev))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if verbose and step % max(1, steps // 10) == 0:
            print(f"mixer step {step + 1}/{steps}: cross-entropy {loss.item():.4f}", flush=True)
        if max_seconds is not None and time.monotonic() - start > max_seconds:
            break
    model.eval()
    out = []
    with torch.no_grad():
        for batch_images in (x_train, *images):
            x = as_images(batch_images, (c, h, w))
            feats = [model.forward_head(model.forward_features(prep(b)), pre_logits=True).cpu()
                     for b in x.split(256)]
            out.append(torch.cat(feats).numpy())
    return out
