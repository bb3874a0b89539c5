"""Shared pieces of the benchmarks behind BENCHMARKS.md (internal to ``bench/``).

* the command line every script shares (``--minutes``, ``--threads``, ``--data-root``, ``--smoke``...),
* model specs (``"mixerflow_tiny:hidden=96,num_layers=12,lr=2e-3"``) and building them, normflows'
  Glow included (behind :class:`PixelFlow`, which gives it our integer-pixel API),
* a wall-clock-budget training loop over any model with ``bits_per_dim`` (a :class:`HybridModel`,
  a backbone or a :class:`PixelFlow`), with a cache of trained models so that one density run
  serves the embedding and OOD benchmarks,
* interleaved, median timings (the machine is shared: compare ratios measured in one run),
* JSON results with the command, the date and the machine.

Smoke mode (``--smoke``) keeps every script to seconds: a few hundred training images, five
steps, tiny models, a small test subset; its JSON goes to ``bench/results/smoke/``.
"""

from __future__ import annotations

import os

# OpenMP's wait policy is left to the caller (set it before torch loads). Spinning, the default,
# is right on a quiet machine: OMP_WAIT_POLICY=PASSIVE halved MixerFlow's speed at 2 threads, which
# would bias every comparison here. On a machine shared with other jobs, PASSIVE avoids a far
# worse slowdown; run all models of a comparison under the same policy.

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from functools import lru_cache  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import _comparators  # noqa: E402
from _pseudo_labels import PseudoLabelHybrid  # noqa: E402
from hybridflow.backbones import backbone_family  # noqa: E402
from hybridflow.backbones.density import parameter_dtype_device  # noqa: E402
from hybridflow.data import ImageData, load_dataset  # noqa: E402
from hybridflow.flows import NUM_BINS, check_pixels, dequantize, native_bfloat16  # noqa: E402
from hybridflow.hybrid import HybridModel  # noqa: E402
from hybridflow.training import load_checkpoint, make_adam, save_checkpoint  # noqa: E402

__all__ = [
    "ROOT", "RESULTS_DIR", "REFERENCE", "DEFAULT_MODELS", "base_parser", "finish_args", "setup",
    "load_data", "ModelSpec", "parse_spec", "parse_specs", "build_model", "PixelFlow", "TrainSettings",
    "train_settings", "train_for_budget", "training_loss", "test_bits_per_dim", "trained_model",
    "interleaved_timings", "machine_info", "write_results", "results_path", "markdown_table", "backbone_params",
]

RESULTS_DIR = BENCH / "results"
SMOKE_DIR = RESULTS_DIR / "smoke"
CHECKPOINT_ROOT = ROOT / "runs" / "bench"  # runs/ is git-ignored: trained models are not committed
REFERENCE = "normflows_glow"
DEFAULT_MODELS = ["mixerflow_tiny", "glow_tiny", REFERENCE]
_LN2 = math.log(2.0)

#: Backbone options that make every family tiny in smoke mode (they override the spec's).
SMOKE_OVERRIDES = {
    "mixerflow": dict(num_layers=1, hidden=8, steps=1),
    "glow": dict(num_steps=1, hidden=8),
    "nsf_glow": dict(num_steps=1, hidden=8),
    REFERENCE: dict(num_steps=1, hidden=8),
}
#: Keys of a model spec that are training settings, not backbone options.
TRAIN_KEYS = ("lr", "batch_size", "warmup", "clip", "beta2", "schedule", "ema")


# --------------------------------------------------------------------------- command line


def default_data_root() -> str:
    """``$HYBRIDFLOW_DATA``, else ``../shared/data`` beside the checkout."""
    return os.environ.get("HYBRIDFLOW_DATA", str(ROOT.parent / "shared" / "data"))


def base_parser(description: str, models: Sequence[str] | None = DEFAULT_MODELS) -> argparse.ArgumentParser:
    """The options every benchmark takes; ``models=None`` leaves out ``--models``."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget per run (default 10)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--data-root", default=default_data_root(),
                   help="folder holding MNIST/, FashionMNIST/, cifar10-*.npz (default $HYBRIDFLOW_DATA or "
                        "../shared/data)")
    p.add_argument("--smoke", action="store_true",
                   help="seconds: tiny models, a few steps on a small subset; JSON to bench/results/smoke/")
    p.add_argument("--results-dir", default=None,
                   help="where the JSON (and plots) go (default bench/results, or bench/results/smoke with --smoke)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="cache of trained models (default runs/bench, or runs/bench-smoke with --smoke)")
    p.add_argument("--reuse", action="store_true",
                   help="load a model trained earlier with the same spec and settings instead of training it")
    p.add_argument("--fresh-minutes", type=float, default=None,
                   help="with --reuse: the budget of models that are not found and must be trained "
                        "(default --minutes), e.g. embeddings' CIFAR-10 models beside reused MNIST ones")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (the benchmarks are CPU-scale), cuda, auto")
    if models is not None:
        p.add_argument("--models", nargs="+", default=list(models), metavar="SPEC",
                       help="model specs: NAME[:key=value,...], NAME a registered backbone or normflows_glow; "
                            "keys lr, batch_size, warmup, clip are training settings, the rest backbone "
                            f"options (default: {' '.join(models)})")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps (then cosine decay over the budget)")
    p.add_argument("--clip", type=float, default=5.0, help="gradient-norm clip (0: none)")
    p.add_argument("--schedule", choices=["cosine", "linear", "constant"], default="cosine",
                   help="cosine: decay to 0 over the wall-clock budget")
    p.add_argument("--eval-batch", type=int, default=500)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps even within budget")
    p.add_argument("--train-limit", type=int, default=None, help="train on a seeded subset of this size")
    p.add_argument("--test-limit", type=int, default=None, help="evaluate on a seeded subset (default: full test set)")
    p.add_argument("--quiet", action="store_true")
    return p


def finish_args(args: argparse.Namespace, argv: Sequence[str] | None, name: str,
                script: str | None = None) -> argparse.Namespace:
    """Smoke-mode settings, output folders and the exact command line. ``name`` names the results
    file; ``script`` (default ``name``) the bench script the command line runs."""
    args.name = name
    argv = list(sys.argv[1:] if argv is None else argv)
    args.command = shlex.join(["python", f"bench/{script or name}.py", *argv])
    if args.smoke:
        args.train_limit = min(args.train_limit or 256, 256)
        args.test_limit = min(args.test_limit or 64, 64)
        args.max_steps = min(args.max_steps or 5, 5)
        args.batch_size, args.warmup, args.eval_batch = 16, 1, 64
        args.minutes = min(args.minutes, 0.5)
    args.results_dir = Path(args.results_dir) if args.results_dir else (SMOKE_DIR if args.smoke else RESULTS_DIR)
    default_ckpt = ROOT / "runs" / "bench-smoke" if args.smoke else CHECKPOINT_ROOT
    args.checkpoint_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else default_ckpt
    if hasattr(args, "models"):
        args.specs = parse_specs(args.models)
    return args


def setup(args: argparse.Namespace) -> None:
    """Threads and seeds."""
    torch.set_num_threads(max(1, int(args.threads)))
    seed_everything(args.seed)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def log(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(spec)


# --------------------------------------------------------------------------- data


@lru_cache(maxsize=16)
def _load_cached(name: str, root: str, train: bool, limit: int | None, seed: int, shuffle: str | None) -> ImageData:
    return load_dataset(name, root=root, train=train, limit=limit, seed=seed, shuffle=shuffle)


def load_data(args: argparse.Namespace, name: str, train: bool, shuffle: str | None = None,
              limit: int | None | str = "auto") -> ImageData:
    """A dataset by name; ``limit="auto"`` takes ``--train-limit`` / ``--test-limit``. Cached in-process
    (callers must not modify the tensors)."""
    if limit == "auto":
        limit = args.train_limit if train else args.test_limit
    return _load_cached(name, str(args.data_root), bool(train), limit, 0, shuffle)


def data_available(root: str | os.PathLike, *names: str) -> bool:
    folders = {"mnist": "MNIST", "fashionmnist": "FashionMNIST"}
    root = Path(root)
    for name in names:
        if name == "cifar10":
            if not ((root / "cifar10-train4000.npz").exists() or (root / "cifar-10-batches-py").exists()):
                return False
        elif not (root / folders.get(name, name)).exists():
            return False
    return True


# --------------------------------------------------------------------------- models


@dataclass
class ModelSpec:
    """``NAME[:key=value,...]``: a backbone name (or ``normflows_glow``) with options.

    ``lr``, ``batch_size``, ``warmup``, ``clip``, ``beta2`` (Adam's), ``schedule`` (``cosine``,
    ``linear`` or ``constant``) and ``ema`` (a decay: evaluate an exponential moving average of the
    weights) go to training; every other key to the backbone.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    @property
    def label(self) -> str:
        return self.text or self.name

    @property
    def family(self) -> str:
        return REFERENCE if self.name == REFERENCE else backbone_family(self.name)

    def as_dict(self) -> dict[str, Any]:
        return dict(spec=self.label, name=self.name, family=self.family, options=self.options, train=self.train)


def _value(text: str) -> Any:
    if "|" in text:  # a list: patch_sizes=4|7
        return [_value(t.strip()) for t in text.split("|")]
    lowered = text.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_spec(text: str) -> ModelSpec:
    """Parse a model spec.

    Example:
        >>> parse_spec("mixerflow_tiny:hidden=96,lr=2e-3").options
        {'hidden': 96}
    """
    name, _, rest = text.partition(":")
    options, train = {}, {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"model spec {text!r}: {item!r} is not key=value")
        (train if key in TRAIN_KEYS else options)[key.strip()] = _value(value.strip())
    return ModelSpec(name.strip(), options, train, text.strip())


def parse_specs(texts: Sequence[str]) -> list[ModelSpec]:
    specs = [parse_spec(t) for t in texts]
    if any(s.name == REFERENCE for s in specs) and not _comparators.normflows_available():
        print("normflows is not installed (pip install -e '.[bench]'): normflows_glow left out", file=sys.stderr)
        specs = [s for s in specs if s.name != REFERENCE]
    return specs


class PixelFlow(nn.Module):
    """A flow whose ``log_prob`` takes centred dequantised floats (normflows' Glow), behind our
    backbones' integer-pixel API: ``log_prob``, ``bits_per_dim``, ``embed``, ``input_shape``.

    Dequantisation as in :class:`hybridflow.backbones.FlowBackbone` (the library's own
    ``dequantize``): fresh uniform noise in training, each image's own seeded noise in evaluation
    (so a test bits/dim is deterministic), ``u = (x + noise) / 256 - 0.5``; the shift has log-det 0
    and ``log p(x) = log p(u) - D log 256``.
    """

    eval_seed = 0

    def __init__(self, flow: nn.Module, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.flow = flow
        self.input_shape = tuple(input_shape)

    @property
    def num_dims(self) -> int:
        return math.prod(self.input_shape)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _device(self) -> tuple[torch.dtype, torch.device]:
        p = next(self.parameters())
        return p.dtype, p.device

    def dequantize(self, x: Tensor, noise: str = "uniform") -> Tensor:
        dtype, device = self._device()
        kind = noise if noise == "midpoint" or self.training else "evaluation"
        u = dequantize(check_pixels(x, self.input_shape), noise=kind, seed=self.eval_seed)
        return u.to(device=device, dtype=dtype) - 0.5

    def log_prob(self, x: Tensor) -> Tensor:
        return self.flow.log_prob(self.dequantize(x)) - self.num_dims * math.log(NUM_BINS)

    def bits_per_dim(self, x: Tensor) -> Tensor:
        return -self.log_prob(x) / (self.num_dims * _LN2)

    def embed(self, x: Tensor, pooled: bool = False) -> Tensor:
        """The latents of every level, flattened and concatenated (midpoint dequantisation)."""
        z, _ = self.flow.model.inverse_and_log_det(self.dequantize(x, noise="midpoint"))
        if pooled:
            return torch.cat([zi.mean(dim=(2, 3)) for zi in z], dim=1)
        return torch.cat([zi.flatten(1) for zi in z], dim=1)


def build_model(spec: ModelSpec, input_shape: tuple[int, int, int], smoke: bool = False, lam: float = 0.0,
                num_classes: int = 10) -> nn.Module:
    """A :class:`HybridModel` (our backbones: so it checkpoints, and ``lam`` > 0 trains its head)
    or a :class:`PixelFlow` around normflows' Glow. The spec keys ``pseudo_labels=<threshold>``
    and ``translate=<pixels>`` (either alone too; ``align=1`` aligns the guesses) train a :class:`PseudoLabelHybrid`
    (bench/_pseudo_labels.py)."""
    options = dict(spec.options)
    if smoke:
        options.update(SMOKE_OVERRIDES.get(spec.family, {}))
    if spec.name == REFERENCE:
        return PixelFlow(_comparators.NormflowsGlow(tuple(input_shape), **options), input_shape)
    threshold, align = options.pop("pseudo_labels", None), bool(options.pop("align", False))
    max_shift = options.pop("translate", 2 if threshold is not None else 0)
    if threshold is None and not max_shift:
        return HybridModel(spec.name, num_classes=num_classes, lam=lam, input_shape=tuple(input_shape), **options)
    # spec keys pseudo_labels=<threshold>, translate=<pixels> (alone: augmentation): bench/_pseudo_labels.py
    model = PseudoLabelHybrid(spec.name, num_classes=num_classes, lam=lam, input_shape=tuple(input_shape), **options)
    model.threshold = None if threshold is None else float(threshold)
    model.max_shift, model.align = int(max_shift), align
    return model


def backbone_params(model: nn.Module) -> int:
    """Parameters of the density model (a hybrid model's head left out)."""
    inner = model.backbone if isinstance(model, HybridModel) else model
    return sum(p.numel() for p in inner.parameters())


# --------------------------------------------------------------------------- training


@dataclass
class TrainSettings:
    """A :class:`hybridflow.training.TrainConfig`-like set of settings, with a wall-clock budget."""

    seconds: float
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 100
    clip: float | None = 5.0
    schedule: str = "cosine"
    max_steps: int | None = None
    seed: int = 0
    max_nonfinite: int = 10
    beta2: float = 0.999
    ema: float | None = None

    def as_dict(self) -> dict[str, Any]:
        # the newer keys only when set, so that the cache keys of earlier runs stay the same
        return {k: v for k, v in self.__dict__.items()
                if not ((k == "beta2" and v == 0.999) or (k == "ema" and v is None))}


def train_settings(args: argparse.Namespace, spec: ModelSpec | None = None, minutes: float | None = None) -> TrainSettings:
    """The settings of one run: the command line, overridden by the spec's training keys."""
    own = dict(spec.train) if spec is not None else {}
    clip = own.get("clip", args.clip)
    return TrainSettings(seconds=60.0 * (args.minutes if minutes is None else minutes),
                         batch_size=int(own.get("batch_size", args.batch_size)), lr=float(own.get("lr", args.lr)),
                         warmup=int(own.get("warmup", args.warmup)), clip=float(clip) if clip else None,
                         schedule=str(own.get("schedule", args.schedule)), max_steps=args.max_steps, seed=args.seed,
                         beta2=float(own.get("beta2", 0.999)), ema=float(own["ema"]) if own.get("ema") else None)


def training_loss(model: nn.Module, x: Tensor, y: Tensor | None = None) -> Tensor:
    """The objective: the model's own ``training_loss`` if it has one (e.g. a discriminative
    baseline), a hybrid model's (labels used when ``lam`` > 0), else mean bits/dim."""
    if hasattr(model, "training_loss"):
        return model.training_loss(x, y)
    if isinstance(model, HybridModel):
        return model(x, y if model.lam > 0 else None).total
    return model.bits_per_dim(x).mean()


def _lr_factor(step: int, elapsed: float, settings: TrainSettings) -> float:
    warm = min(1.0, (step + 1) / settings.warmup) if settings.warmup else 1.0
    if settings.schedule == "constant":
        return warm
    if settings.schedule not in ("cosine", "linear"):
        raise ValueError(f"schedule must be cosine, linear or constant, got {settings.schedule!r}")
    if settings.max_steps is not None:
        progress = step / settings.max_steps
        if settings.seconds > 0:
            progress = max(progress, elapsed / settings.seconds)
    else:
        progress = elapsed / settings.seconds if settings.seconds > 0 else 1.0
    if settings.schedule == "linear":
        return warm * (1.0 - min(1.0, progress))
    return warm * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _copy_all(targets: Sequence[Tensor], sources: Sequence[Tensor]) -> None:
    for target, source in zip(targets, sources):
        target.copy_(source)


@contextlib.contextmanager
def _averaged_weights(params: list[nn.Parameter], averages: list[Tensor] | None):
    """The averaged weights in place of the trained ones, put back on exit (no-op without)."""
    if averages is None:
        yield
        return
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        _copy_all(params, averages)
    try:
        yield
    finally:
        with torch.no_grad():
            _copy_all(params, saved)


def train_for_budget(model: nn.Module, data: ImageData, settings: TrainSettings, device: torch.device | str = "cpu",
                     label: str = "", verbose: bool = True, log_every: float = 30.0,
                     on_log: Callable[[nn.Module, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train ``model`` on ``data`` until ``settings.seconds`` of training time have passed (or
    ``max_steps``): Adam, linear warm-up, cosine decay over the *budget* (the schedule follows
    the clock, so every run ends its decay when its budget ends), gradient clipping, epochs of
    seeded permutations; a non-finite step is skipped. Time spent logging is not counted.

    Returns steps, epochs, seconds, throughput (overall and from the median step time), the
    final training loss (mean of the last 50 steps) and a short loss history (an entry every
    ``log_every`` seconds of training time). ``on_log(model, entry)`` runs at each entry, off the
    clock (e.g. to measure test bits/dim along the way: it may add keys to ``entry``); the model
    is put back in training mode after it.
    """
    device = torch.device(device)
    model.to(device)
    seed_everything(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    images, labels = data.images, data.labels
    n = len(images)
    batch = min(settings.batch_size, n)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = make_adam(params, lr=settings.lr, betas=(0.9, settings.beta2))  # the same (fused) Adam for every model
    order, cursor = torch.randperm(n, generator=generator), 0

    def next_batch() -> tuple[Tensor, Tensor]:
        nonlocal order, cursor
        if cursor + batch > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        idx = order[cursor: cursor + batch]
        cursor += batch
        return images[idx].to(device), labels[idx].to(device)

    model.train()
    x, y = next_batch()
    with torch.no_grad():  # data-dependent initialisation (ActNorm) before the first update
        training_loss(model, x, y)
    # the weight average starts from the initialised weights
    averages = [p.detach().clone() for p in params] if settings.ema else None
    step_times: list[float] = []
    losses: list[float] = []
    history: list[dict[str, float]] = []
    elapsed, step, nonfinite, consecutive = 0.0, 0, 0, 0
    next_log = log_every
    while elapsed < settings.seconds and (settings.max_steps is None or step < settings.max_steps):
        started = time.perf_counter()
        for group in optimiser.param_groups:
            group["lr"] = settings.lr * _lr_factor(step, elapsed, settings)
        loss = training_loss(model, x, y)
        optimiser.zero_grad(set_to_none=True)
        ok = bool(torch.isfinite(loss))
        if ok:
            loss.backward()
            norm = nn.utils.clip_grad_norm_(params, settings.clip or math.inf)
            ok = bool(torch.isfinite(norm))
        if ok:
            optimiser.step()
            if averages is not None:  # on the clock: the average is part of the method's cost
                torch._foreach_lerp_(averages, [p.detach() for p in params], 1.0 - settings.ema)
            consecutive = 0
            losses.append(float(loss.detach()))
        else:
            optimiser.zero_grad(set_to_none=True)
            nonfinite += 1
            consecutive += 1
            if consecutive >= settings.max_nonfinite:
                raise RuntimeError(f"{label}: {consecutive} non-finite steps in a row at step {step}; "
                                   "lower the learning rate")
        step += 1
        x, y = next_batch()
        took = time.perf_counter() - started
        elapsed += took
        step_times.append(took)
        if elapsed >= next_log or (settings.max_steps is not None and step == settings.max_steps):
            window = losses[-50:]
            history.append(dict(step=step, seconds=round(elapsed, 1), loss=float(np.mean(window)) if window else None))
            if on_log is not None:
                with _averaged_weights(params, averages):
                    on_log(model, history[-1])
                model.train()
            if verbose:
                print(f"  {label} step {step} {elapsed:6.0f}s {history[-1]}", file=sys.stderr, flush=True)
            next_log = elapsed + log_every
    model.eval()
    if averages is not None:  # the model keeps the averaged weights
        with torch.no_grad():
            _copy_all(params, averages)
    median_step = statistics.median(step_times) if step_times else float("nan")
    return dict(steps=step, epochs=round(step * batch / n, 3), train_seconds=round(elapsed, 2),
                images_per_s=round(step * batch / elapsed, 1) if elapsed else None,
                median_step_s=median_step, images_per_s_median_step=round(batch / median_step, 1) if step else None,
                final_train_loss=float(np.mean(losses[-50:])) if losses else None, nonfinite_steps=nonfinite,
                history=history, settings=settings.as_dict(), num_train=n)


@torch.no_grad()
def test_bits_per_dim(model: nn.Module, images: Tensor, batch_size: int = 500) -> float:
    """Mean bits/dim over ``images`` in evaluation mode (each image's own seeded dequantisation
    noise), in batches; our models through their inference copy (``hybridflow.freeze``)."""
    model = model.inference_copy() if hasattr(model, "inference_copy") else model.eval()
    device = parameter_dtype_device(model)[1]
    total = 0.0
    for chunk in images.split(int(batch_size)):
        total += float(model.bits_per_dim(chunk.to(device)).double().sum())
    return total / len(images)


# --------------------------------------------------------------------------- the model cache


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)[:80]


def _cache_key(spec: ModelSpec, dataset: str, settings: TrainSettings, extra: dict[str, Any]) -> str:
    blob = json.dumps(dict(spec=spec.as_dict(), dataset=dataset, settings=settings.as_dict(), **extra),
                      sort_keys=True, default=str)
    return f"{_slug(spec.label)}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def _save(model: nn.Module, directory: Path, record: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(model, HybridModel):
        save_checkpoint(model, directory / "model")
    else:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, directory / "pixelflow.pt")
    (directory / "bench.json").write_text(json.dumps(record, indent=1, default=str))  # last: marks it complete


def _load(spec: ModelSpec, input_shape: tuple[int, int, int], directory: Path, smoke: bool,
          device: torch.device) -> nn.Module:
    if spec.name == REFERENCE:
        model = build_model(spec, input_shape, smoke=smoke)
        model.load_state_dict(torch.load(directory / "pixelflow.pt", weights_only=True))
        return model.to(device).eval()
    return load_checkpoint(directory / "model", map_location=device).eval()


def _cache_extra(args: argparse.Namespace, train_data: ImageData, tag: str, lam: float) -> dict[str, Any]:
    return dict(tag=tag, lam=lam, smoke=bool(args.smoke), num_train=len(train_data),
                labelled=int((train_data.labels >= 0).sum()))


def checkpoint_directory(args: argparse.Namespace, spec: ModelSpec, dataset: str, train_data: ImageData,
                         settings: TrainSettings, *, tag: str = "", lam: float = 0.0) -> Path:
    """Where :func:`trained_model` keeps (and ``--reuse`` finds) ``spec`` trained on ``dataset`` with
    ``settings``: another benchmark that trains the same run (``bench/time_to_quality.py``)
    saves it there too, so ``bench/density.py --reuse`` renders its figures without training."""
    key = _cache_key(spec, dataset, settings, _cache_extra(args, train_data, tag, lam))
    return Path(args.checkpoint_dir) / _slug(f"{dataset}{'-' + tag if tag else ''}") / key


def save_trained(model: nn.Module, directory: Path, spec: ModelSpec, dataset: str, info: dict[str, Any], *,
                 tag: str = "", lam: float = 0.0) -> None:
    """Save a model trained for a budget where :func:`trained_model` would have (its record last)."""
    _save(model, directory, dict(spec=spec.as_dict(), dataset=dataset, tag=tag, lam=lam, train=info, date=_now()))


def trained_model(args: argparse.Namespace, spec: ModelSpec, dataset: str, train_data: ImageData, *,
                  tag: str = "", lam: float = 0.0, minutes: float | None = None,
                  reuse: bool | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``spec`` on ``train_data`` for the budget, or with ``--reuse`` load the model an earlier
    run trained with the same spec, data, ``tag``, ``lam`` and settings. Every trained model is
    saved under ``--checkpoint-dir`` (``runs/bench/<dataset>/...``) with its training record."""
    settings = train_settings(args, spec, minutes)
    directory = checkpoint_directory(args, spec, dataset, train_data, settings, tag=tag, lam=lam)
    device = resolve_device(args.device)
    reuse = args.reuse if reuse is None else reuse
    if reuse and minutes is None and getattr(args, "fresh_minutes", None) is not None \
            and not (directory / "bench.json").exists():
        # not trained at --minutes: look for (or train) the model at the --fresh-minutes budget
        settings = train_settings(args, spec, args.fresh_minutes)
        directory = checkpoint_directory(args, spec, dataset, train_data, settings, tag=tag, lam=lam)
    if reuse and (directory / "bench.json").exists():
        record = json.loads((directory / "bench.json").read_text())
        log(args, f"  reusing {spec.label} on {dataset}{' ' + tag if tag else ''}: {directory}")
        model = _load(spec, train_data.image_shape, directory, args.smoke, device)
        return model, {**record["train"], "checkpoint": str(directory), "reused": True}
    torch.manual_seed(settings.seed)
    model = build_model(spec, train_data.image_shape, smoke=args.smoke, lam=lam,
                        num_classes=max(10, train_data.num_classes))
    log(args, f"training {spec.label} on {dataset}{' ' + tag if tag else ''} ({len(train_data)} images, "
              f"{backbone_params(model):,} params, {settings.seconds / 60:g} min)")
    info = train_for_budget(model, train_data, settings, device, label=spec.label, verbose=not args.quiet)
    save_trained(model, directory, spec, dataset, info, tag=tag, lam=lam)
    return model, {**info, "checkpoint": str(directory), "reused": False}


def run_in_parallel(script: str, argv: Sequence[str], jobs: int, parallel: int) -> list[dict[str, Any]]:
    """Run ``script argv --threads 1 --only i`` for each job ``i``, ``parallel`` processes at a time;
    each prints its result as one JSON line last. Models trained in a pair share a 2-core machine
    alike, so a budget of N minutes is N minutes of one core for each."""
    base, skip = [], False
    for arg in argv:  # drop the caller's --threads: every child runs on one thread
        if skip or arg.startswith("--threads="):
            skip = False
            continue
        if arg == "--threads":
            skip = True
            continue
        base.append(arg)
    rows: list[dict[str, Any]] = []
    for start in range(0, jobs, parallel):
        batch = range(start, min(start + parallel, jobs))
        procs = {i: subprocess.Popen([sys.executable, script, *base, "--threads", "1", "--only", str(i)],
                                     stdout=subprocess.PIPE, text=True) for i in batch}
        for i, proc in procs.items():
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"job {i} of {script} failed (exit {proc.returncode})")
            rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def run_jobs(args: argparse.Namespace, argv: Sequence[str] | None, script: str,
             train_one: Callable[[argparse.Namespace, int], dict[str, Any]], jobs: int) -> list[dict[str, Any]] | None:
    """The rows of ``jobs`` training jobs: in turn, or ``args.parallel`` at a time in subprocesses
    (:func:`run_in_parallel`). In such a subprocess (``--only I``) job ``I`` runs, its row is printed
    as JSON and None is returned."""
    if args.only is not None:
        print(json.dumps(train_one(args, args.only), default=_json_default))
        return None
    if args.parallel <= 1:
        return [train_one(args, i) for i in range(jobs)]
    return run_in_parallel(script, list(argv) if argv is not None else sys.argv[1:], jobs, args.parallel)


# --------------------------------------------------------------------------- timing


def interleaved_timings(models: dict[str, tuple[nn.Module, Tensor]], repeats: int = 5, iters: int = 2,
                        max_seconds: float | None = None) -> dict[str, dict[str, float]]:
    """Median seconds per train step and per ``log_prob`` pass of each model on its batch.

    The models take turns within every repeat (round-robin), so a burst of load from another job
    hits all of them alike: ratios between models are more trustworthy than absolute numbers.
    Each model gets a warm-up step (and its data-dependent initialisation) first. The timed
    ``log_prob`` passes follow one untimed pass: they measure the scoring speed of a fixed model,
    not the one-off rebuild of our evaluation caches after a training step changed the weights
    (about 7 ms for mixerflow_tiny: its conditioners fold their BatchNorms once per change).
    """
    state = {}
    for name, (model, x) in models.items():
        params = [p for p in model.parameters() if p.requires_grad]
        optimiser = torch.optim.Adam(params, lr=1e-4)
        model.train()
        with torch.no_grad():
            training_loss(model, x)
        state[name] = (model, x, params, optimiser)

    def train_step(name: str) -> None:
        model, x, params, optimiser = state[name]
        model.train()
        optimiser.zero_grad(set_to_none=True)
        training_loss(model, x).backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        optimiser.step()

    @torch.no_grad()
    def score(name: str) -> None:
        model, x, _, _ = state[name]
        model.eval()
        model.log_prob(x)

    for name in state:  # warm-up
        train_step(name)
        score(name)
    times: dict[str, dict[str, list[float]]] = {n: {"train": [], "log_prob": []} for n in state}
    started = time.perf_counter()
    for _ in range(max(1, repeats)):
        for name in state:
            for kind, fn in (("train", train_step), ("log_prob", score)):
                if kind == "log_prob":
                    score(name)  # untimed: the caches rebuild once after the training step
                t0 = time.perf_counter()
                for _ in range(max(1, iters)):
                    fn(name)
                times[name][kind].append((time.perf_counter() - t0) / max(1, iters))
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            break
    out = {}
    for name, (model, x, _, _) in state.items():
        b = len(x)
        train_s, score_s = statistics.median(times[name]["train"]), statistics.median(times[name]["log_prob"])
        out[name] = dict(batch=b, repeats=len(times[name]["train"]), train_step_s=train_s, log_prob_s=score_s,
                         train_s_per_image=train_s / b, log_prob_s_per_image=score_s / b,
                         train_img_s=b / train_s, log_prob_img_s=b / score_s)
        model.eval()
    return out


# --------------------------------------------------------------------------- results


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _git() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return dict(commit=commit or None, dirty=dirty)
    except (OSError, subprocess.SubprocessError):
        return dict(commit=None, dirty=None)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """nproc, CPU (and its vector capability, and whether it computes bfloat16 natively: the same
    "AMD EPYC" name has covered AVX-512 and AVX2-only machines), torch, Python, threads and the
    load average (the machine is shared)."""
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return dict(nproc=nproc, cpu=_cpu_model(), torch=torch.__version__, python=platform.python_version(),
                platform=platform.platform(), threads=threads if threads is not None else torch.get_num_threads(),
                normflows=_normflows_version(), loadavg=load, cuda=torch.cuda.is_available(),
                capability=torch.backends.cpu.get_cpu_capability(), native_bfloat16=native_bfloat16("cpu"))


def _normflows_version() -> str | None:
    try:
        import normflows

        return getattr(normflows, "__version__", "installed")
    except ImportError:
        return None


def results_path(args: argparse.Namespace, name: str | None = None, suffix: str = ".json") -> Path:
    return Path(args.results_dir) / f"{name or args.name}{suffix}"


def write_results(args: argparse.Namespace, payload: dict[str, Any], elapsed: float, name: str | None = None) -> Path:
    """``payload`` with the command, date, machine, git commit and settings, as JSON."""
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("specs", "command", "name")}
    # Evaluation noise since issue 15: each test image its own seeded draw (see bench/eval_noise.py).
    record = dict(benchmark=name or args.name, command=args.command, date=_now(), evaluation_noise="per_image",
                  wall_seconds=round(elapsed, 1), smoke=bool(args.smoke),
                  machine=machine_info(args.threads), git=_git(), settings=settings, **payload)
    path = results_path(args, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=_json_default))
    os.replace(tmp, path)
    log(args, f"wrote {path}")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (Path, torch.device)):
        return str(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub table; ``align`` one letter per column, l or r (default: first l, rest r)."""
    align = align or "l" + "r" * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def timer() -> Callable[[], float]:
    started = time.perf_counter()
    return lambda: time.perf_counter() - started


def two_panel_figure():
    """A 9x3.6-inch matplotlib figure with two side-by-side axes (Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.6))
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, 2)


def save_figure(figure, path: Path) -> None:
    """Lay out ``figure`` and write it to ``path`` (folders created)."""
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
