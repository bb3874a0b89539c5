"""The ``hybridflow`` command line (click).

    hybridflow probe --backbone mixerflow          # the main job: no download, a couple of minutes
    hybridflow train --recipe recipes/mnist_density --scale cpu
    hybridflow eval --checkpoint runs/mnist_density
    hybridflow sample --checkpoint runs/mnist_density --temperature 0.7
    hybridflow ood --checkpoint runs/fashion --in-data fashionmnist --out-data mnist --roc roc.png
    hybridflow explain --checkpoint runs/digits-hybrid --index 0
    hybridflow backbones --params

Exit codes: 0 success; 1 the command was well formed but failed (data not on disk, a damaged
checkpoint, training diverged); 2 the command line is wrong (bad or missing option, unknown
backbone, dataset or scorer, a path that does not exist); 130 interrupted (Ctrl-C). Mistakes are
reported as one line on stderr, never a traceback (set ``HYBRIDFLOW_DEBUG=1`` to see one).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import click

__all__ = ["main", "cli", "load_recipe", "RECIPE_KEYS"]

# Deliberately light imports at the top: `hybridflow --help` should not wait for torch.

RUN_FILE = "run.json"
EXTERNAL_DATASETS = {
    "imagenet32": dict(size=32, source="Downsampled ImageNet 32x32 (Chrabaszcz et al. 2017; "
                                       "https://image-net.org/download-images.php, 'Imagenet32'; the version flow "
                                       "papers use is on Academic Torrents)"),
    "imagenet64": dict(size=64, source="Downsampled ImageNet 64x64 (Chrabaszcz et al. 2017; "
                                       "https://image-net.org/download-images.php, 'Imagenet64')"),
    "galaxy32": dict(size=32, source="the merging / non-merging galaxy images of Ackermann et al. (2018) "
                                     "(the paper's ref. [1]), downsampled to 32x32"),
    "animefaces": dict(size=64, source="the AnimeFace dataset (Naftali et al. 2023; Kaggle 'animefacedataset'), "
                                       "64x64"),
}
SYNTHETIC_OOD = {
    "noise": "uniform random pixels of the in-distribution image shape",
    "inverted": "the in-distribution test images with inverted pixels (255 - x)",
    "shuffled": "the in-distribution test images with one fixed global pixel shuffle",
}


# --------------------------------------------------------------------------- errors


class CLIError(click.ClickException):
    """One line on stderr and a meaningful exit code (1 failure, 2 bad command line)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(" ".join(str(message).split()))
        self.exit_code = exit_code


def _usage(message: str) -> CLIError:
    return CLIError(message, exit_code=2)


def _boundary(fn: Callable) -> Callable:
    """Turn the library's errors into one-line messages (no traceback) with an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if os.environ.get("HYBRIDFLOW_DEBUG"):
            return fn(*args, **kwargs)
        from .checkpoint import CheckpointError
        from .train import NonFiniteLossError

        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except CheckpointError as error:
            raise CLIError(f"checkpoint: {error}") from None
        except NonFiniteLossError as error:
            raise CLIError(f"training diverged: {error}") from None
        except FileNotFoundError as error:
            raise CLIError(str(error)) from None
        except (ValueError, TypeError, RuntimeError, FloatingPointError, OSError) as error:
            raise CLIError(f"{type(error).__name__}: {error}") from None

    return wrapper


# --------------------------------------------------------------------------- shared options


def _json_option(fn: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of text.")(fn)


def _device_options(fn: Callable) -> Callable:
    fn = click.option("--threads", type=click.IntRange(min=1), envvar="HYBRIDFLOW_THREADS", default=None,
                      help="torch.set_num_threads (env HYBRIDFLOW_THREADS). Tiny models on a busy machine run "
                           "faster with 1.")(fn)
    return click.option("--device", default="auto", show_default=True,
                        help="auto (cuda if available), cpu, cuda, cuda:1, ...")(fn)


def _data_root_option(fn: Callable) -> Callable:
    return click.option("--data-root", type=click.Path(file_okay=False), envvar="HYBRIDFLOW_DATA", default=None,
                        help="Folder holding the datasets (env HYBRIDFLOW_DATA; default ~/.cache/hybridflow/data).")(fn)


def _download_option(fn: Callable) -> Callable:
    return click.option("--download", is_flag=True, help="Let torchvision download a missing dataset.")(fn)


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _emit(as_json: bool, payload: dict[str, Any], text: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(payload, indent=1, default=_json_default))
    elif text is not None:
        click.echo(text)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _info(as_json: bool, message: str) -> None:
    """Progress notes go to stderr, so stdout stays clean (and JSON when asked)."""
    click.echo(message, err=True)


# --------------------------------------------------------------------------- data


@dataclass
class DataSpec:
    """How to load one dataset: a known name, an external name or a path."""

    name: str
    root: str | None = None
    download: bool = False
    limit: int | None = None
    seed: int = 0
    shuffle: str | None = None
    shuffle_patch: int = 4
    shuffle_seed: int = 0
    size: int = 64

    def to_dict(self) -> dict[str, Any]:
        return dict(name=self.name, root=self.root, shuffle=self.shuffle, shuffle_patch=self.shuffle_patch,
                    shuffle_seed=self.shuffle_seed, size=self.size)


def _known_datasets() -> list[str]:
    from .data import list_datasets

    return list_datasets()


def _dataset_key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


def check_dataset_name(name: str, extra: tuple[str, ...] = ()) -> None:
    """Raise a usage error for a name that is neither a dataset, an external one nor a path."""
    key = _dataset_key(name)
    if key in _known_datasets() or key in EXTERNAL_DATASETS or key in extra or Path(name).exists():
        return
    known = ", ".join(_known_datasets() + sorted(EXTERNAL_DATASETS) + list(extra))
    raise _usage(f"unknown dataset {name!r}: known datasets are {known}, or give a path to an .npz file "
                 "or an image folder")


def _root(root: str | None) -> str:
    from .data import _default_root

    return os.path.expanduser(root if root is not None else _default_root())


def load_data(spec: DataSpec, train: bool):
    """The train or test split of ``spec`` as :class:`~hybridflow.data.ImageData`."""
    from .data import GlobalShuffle, LocalShuffle, load_dataset

    key = _dataset_key(spec.name)
    if key in _known_datasets():
        try:
            data = load_dataset(key, root=spec.root, train=train, download=spec.download, limit=spec.limit,
                                seed=spec.seed, size=spec.size)
        except FileNotFoundError:
            raise FileNotFoundError(f"dataset {spec.name} is not in {_root(spec.root)}: pass --download to fetch "
                                    "it, or --data-root (env HYBRIDFLOW_DATA) the folder that holds it") from None
    elif key in EXTERNAL_DATASETS:
        data = _load_external(key, spec, train)
    else:
        data = _load_path(Path(spec.name), spec, train)
    if spec.shuffle == "local":
        data = data.permuted(LocalShuffle(data.image_shape, spec.shuffle_patch, spec.shuffle_seed))
    elif spec.shuffle == "global":
        data = data.permuted(GlobalShuffle(data.image_shape, spec.shuffle_seed))
    elif spec.shuffle is not None:
        raise ValueError(f"shuffle must be 'local' or 'global', got {spec.shuffle!r}")
    return data


def _limit(data, limit: int | None, seed: int):
    if limit is None or limit >= len(data):
        return data
    import torch

    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
    return data.subset(order)


def _load_path(path: Path, spec: DataSpec, train: bool, size: int | None = None):
    """An .npz file or an image folder: 90% train / 10% test, a fixed stratified split."""
    from .data import load_image_folder, load_npz

    if not path.exists():
        raise FileNotFoundError(f"dataset path {path} does not exist")
    data = load_npz(path) if path.is_file() else load_image_folder(path, size=size)
    rest, held_out = data.split(0.1, seed=0)
    return _limit(rest if train else held_out, spec.limit, spec.seed)


def _load_external(key: str, spec: DataSpec, train: bool):
    """Datasets torchvision cannot fetch: ``<root>/<name>/{train,test}.npz`` or image folders."""
    from .data import load_image_folder, load_npz

    info = EXTERNAL_DATASETS[key]
    base = Path(_root(spec.root)) / key
    split_names = ("train",) if train else ("test", "val")
    for split in split_names:
        if (base / f"{split}.npz").is_file():
            return _limit(load_npz(base / f"{split}.npz"), spec.limit, spec.seed)
        if (base / split).is_dir():
            return _limit(load_image_folder(base / split, size=info["size"]), spec.limit, spec.seed)
    if not train and ((base / "train.npz").is_file() or (base / "train").is_dir()):
        source = base / "train.npz" if (base / "train.npz").is_file() else base / "train"
        return _load_path(source, spec, train=False, size=info["size"])
    raise FileNotFoundError(
        f"dataset {key} is not on this machine: looked for {base}/train.npz (arrays x, y) or {base}/train/ "
        f"(an image folder, one sub-folder per class); it cannot be downloaded automatically: get "
        f"{info['source']} and put it there (or point --data-root / HYBRIDFLOW_DATA at its parent)")


def _ood_data(name: str, spec: DataSpec, in_test):
    """Out-of-distribution images: a dataset, or a synthetic set made from ``in_test``."""
    import torch

    from .data import GlobalShuffle, ImageData

    key = _dataset_key(name)
    if key == "noise":
        generator = torch.Generator().manual_seed(spec.seed + 1)
        return ImageData(torch.randint(0, 256, tuple(in_test.images.shape), generator=generator, dtype=torch.uint8))
    if key == "inverted":
        return ImageData(255 - in_test.images, in_test.labels, list(in_test.classes))
    if key == "shuffled":
        return in_test.permuted(GlobalShuffle(in_test.image_shape, seed=spec.seed + 1))
    return load_data(replace(spec, name=name, shuffle=None), train=False)


# --------------------------------------------------------------------------- models


def check_backbone_name(name: str) -> str:
    """The registered name ``name`` stands for, or a usage error listing the choices."""
    from .backbones import FAMILY_DEFAULTS, list_backbones

    key = FAMILY_DEFAULTS.get(name, name)
    if key not in list_backbones():
        raise _usage(f"unknown backbone {name!r}: choose one of {', '.join(list_backbones())} "
                     f"(or a family: {', '.join(FAMILY_DEFAULTS)}); see `hybridflow backbones`")
    return key


def _family(name: str) -> str:
    from .backbones import backbone_family

    return "glow" if backbone_family(name) == "nsf" else backbone_family(name)


def fit_options(name: str, image_shape: tuple[int, int, int], options: dict[str, Any],
                small: bool = False) -> dict[str, Any]:
    """Backbone overrides for ``image_shape``: a MixerFlow on images of 16 pixels or fewer a side
    gets 2x2 patches (4x4 would leave 4 patches on the 8x8 digits); ``small`` adds the probe's
    light settings (fewer, narrower layers) unless the user set them."""
    out = dict(options)
    family = _family(name)
    _, h, w = image_shape
    if family == "mixerflow" and max(h, w) <= 16:
        out.setdefault("patch_size", 2)
    if small:
        light = dict(num_layers=4, hidden=32) if family == "mixerflow" else dict(num_steps=4, hidden=32)
        for k, v in light.items():
            out.setdefault(k, v)
    return out


def build_model(name: str, image_shape: tuple[int, int, int], num_classes: int, lam: float,
                options: dict[str, Any], pooled: bool = False, seed: int = 0):
    import torch

    from .hybrid import HybridModel

    torch.manual_seed(seed)
    return HybridModel(name, max(1, num_classes), lam=lam, input_shape=image_shape, pooled=pooled, **options)


def _parse_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise _usage(f"--option takes KEY=VALUE (for example patch_size=2), got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    if isinstance(parsed, list):
        parsed = tuple(parsed)
    return key.strip(), parsed


def _options(pairs: tuple[str, ...]) -> dict[str, Any]:
    return dict(_parse_option(p) for p in pairs)


def _find_run(checkpoint_dir: Path) -> dict[str, Any]:
    """The ``run.json`` a training run wrote beside its checkpoints (``{}`` if none)."""
    for folder in [checkpoint_dir, *list(checkpoint_dir.parents)[:3]]:
        path = folder / RUN_FILE
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except ValueError:
                return {}
    return {}


def load_model(path: str, device: str = "auto", ema: bool = False):
    """``(model, checkpoint directory, run settings)``; a usage error when ``path`` does not exist."""
    from .checkpoint import find_checkpoint, load_checkpoint
    from .train import resolve_device

    if not Path(path).exists():
        raise _usage(f"checkpoint not found: {path} does not exist")
    directory = find_checkpoint(path)
    model = load_checkpoint(directory, ema=ema, map_location=resolve_device(device))
    return model, directory, _find_run(directory)


def _data_spec_from_run(run: dict[str, Any], name: str | None, root: str | None, download: bool,
                        limit: int | None, seed: int = 0) -> DataSpec:
    """The dataset a checkpoint was trained on (shuffle included) unless ``name`` says otherwise."""
    saved = run.get("data", {})
    if name is None:
        name = saved.get("name", "digits")
        spec = DataSpec(name, root if root is not None else saved.get("root"), download, limit, seed,
                        saved.get("shuffle"), saved.get("shuffle_patch", 4), saved.get("shuffle_seed", 0),
                        saved.get("size", 64))
    else:
        spec = DataSpec(name, root, download, limit, seed)
    check_dataset_name(spec.name)
    return spec


def _check_shape(model, data, what: str) -> None:
    if tuple(data.image_shape) != tuple(model.input_shape):
        c, h, w = data.image_shape
        mc, mh, mw = model.input_shape
        raise _usage(f"{what} images are {c}x{h}x{w} (CxHxW) but the model takes {mc}x{mh}x{mw}: "
                     "pick a dataset of the model's shape")


# --------------------------------------------------------------------------- recipes

#: Settings a recipe (or its ``[paper]`` / ``[cpu]`` table) may hold.
RECIPE_KEYS = {
    "backbone", "dataset", "data_root", "lam", "steps", "batch_size", "lr", "warmup_steps", "grad_clip", "ema_decay",
    "seed", "limit", "val_limit", "labelled_fraction", "shuffle", "shuffle_patch", "shuffle_seed", "size", "pooled",
    "backbone_options", "log_every", "eval_every", "checkpoint_every", "betas",
}
#: Descriptive keys, printed by ``hybridflow recipes``; not settings.
RECIPE_META = {"name", "title", "reproduces", "paper_result", "cpu_expectation", "source", "notes", "metric"}
SCALES = ("cpu", "paper")


def _recipe_dirs() -> list[Path]:
    return [Path.cwd() / "recipes", Path(__file__).resolve().parents[1] / "recipes"]


def find_recipe(name: str) -> Path:
    """A recipe file from a path (``.toml`` optional) or a bare name in ``./recipes``."""
    candidates = [Path(name), Path(name + ".toml")]
    candidates += [d / (Path(name).name + ("" if name.endswith(".toml") else ".toml")) for d in _recipe_dirs()]
    for path in candidates:
        if path.is_file():
            return path
    available = sorted({p.stem for d in _recipe_dirs() if d.is_dir() for p in d.glob("*.toml")})
    raise _usage(f"recipe not found: {name}" + (f" (available: {', '.join(available)})" if available else ""))


def _toml():
    """``tomllib`` (Python 3.11+) or its backport ``tomli``."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise CLIError("recipes need Python 3.11+ (tomllib) or `pip install tomli`") from None
    return tomllib


def load_recipe(path: str | Path, scale: str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """``(settings, meta)`` of a TOML recipe at ``scale``: top-level settings, then the scale's
    table over them. Unknown keys are refused, so a typo never silently does nothing."""
    tomllib = _toml()
    path = find_recipe(str(path))
    try:
        recipe = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise _usage(f"recipe {path} is not valid TOML: {error}") from None
    if scale not in SCALES:
        raise _usage(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    meta = {k: v for k, v in recipe.items() if k in RECIPE_META}
    meta.setdefault("name", path.stem)
    meta["path"] = str(path)
    settings: dict[str, Any] = {}
    for where, table in (("top level", recipe), (f"[{scale}]", recipe.get(scale, {}))):
        for key, value in table.items():
            if key in SCALES or key in RECIPE_META:
                continue
            if key not in RECIPE_KEYS:
                raise _usage(f"recipe {path}: unknown key {key!r} at the {where}; "
                             f"allowed: {', '.join(sorted(RECIPE_KEYS))}")
            if key == "backbone_options":
                settings["backbone_options"] = {**settings.get("backbone_options", {}), **value}
            else:
                settings[key] = value
    if scale not in recipe:
        raise _usage(f"recipe {path} has no [{scale}] table")
    return settings, meta


# --------------------------------------------------------------------------- the group


@click.group(context_settings=dict(help_option_names=["-h", "--help"], max_content_width=100))
@click.version_option(package_name="hybridflow")
def cli() -> None:
    """Hybrid generative classifiers from one normalising flow (MixerFlow, Glow).

    \b
    Start here (no download, a couple of minutes on a laptop CPU):
        hybridflow probe --backbone mixerflow

    \b
    Exit codes: 0 ok; 1 the command failed (data not on disk, damaged checkpoint, training
    diverged); 2 bad command line (unknown option, backbone, dataset or scorer, missing file);
    130 interrupted. Errors are one line on stderr (HYBRIDFLOW_DEBUG=1 shows the traceback).
    """


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="hybridflow")


# --------------------------------------------------------------------------- train

_TRAIN_DEFAULTS = dict(backbone="mixerflow", dataset="digits", lam=1.0, steps=500, batch_size=64, lr=1e-3,
                       warmup_steps=0, grad_clip=5.0, ema_decay=None, seed=0, limit=None, val_limit=1000,
                       labelled_fraction=None, shuffle=None, shuffle_patch=4, shuffle_seed=0, size=64, pooled=False,
                       log_every=50, eval_every=None, checkpoint_every=None, betas=(0.9, 0.999), data_root=None)


@cli.command()
@click.option("--recipe", "recipe_name", metavar="FILE", help="A recipe (recipes/*.toml): its values are defaults "
              "that explicit options override. See `hybridflow recipes`.")
@click.option("--scale", type=click.Choice(SCALES), default="cpu", show_default=True,
              help="Which table of the recipe to run.")
@click.option("--backbone", "-b", default=_TRAIN_DEFAULTS["backbone"], show_default=True,
              help="A registered backbone or a family (mixerflow, glow).")
@click.option("--dataset", "-d", default=_TRAIN_DEFAULTS["dataset"], show_default=True,
              help="digits (embedded), mnist, fashionmnist, cifar10, svhn, celeba, imagenet32, imagenet64, "
                   "galaxy32, animefaces, or a path to an .npz / image folder.")
@_data_root_option
@_download_option
@click.option("--lam", type=click.FloatRange(min=0), default=_TRAIN_DEFAULTS["lam"], show_default=True,
              help="Weight of the classification loss: 0 = pure flow (maximum likelihood).")
@click.option("--steps", type=click.IntRange(min=1), default=_TRAIN_DEFAULTS["steps"], show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=_TRAIN_DEFAULTS["batch_size"], show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=_TRAIN_DEFAULTS["lr"], show_default=True)
@click.option("--warmup-steps", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--ema-decay", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Keep an exponential moving average of the weights (e.g. 0.999).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Train on a random subset of N images.")
@click.option("--val-limit", type=click.IntRange(min=1), default=_TRAIN_DEFAULTS["val_limit"], show_default=True,
              help="Validate on N test images.")
@click.option("--labelled-fraction", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Keep the labels of this fraction of the training images (stratified); the rest are "
                   "unlabelled and train the density only (semi-supervised).")
@click.option("--shuffle", type=click.Choice(["local", "global"]), default=None,
              help="Permute the pixels (the paper's section 5.4).")
@click.option("--option", "-o", "option_pairs", multiple=True, metavar="KEY=VALUE",
              help="Backbone override, repeatable (e.g. -o patch_size=2 -o hidden=32).")
@click.option("--pooled", is_flag=True, help="Put the classifier head on the pooled latent.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run folder: checkpoints/, metrics.jsonl, run.json, curves.png [default: runs/<recipe or "
                   "backbone>-<dataset>].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Delete the checkpoints already in --out and start afresh.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--log-every", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--eval-every", type=click.IntRange(min=1), default=None, help="Validate every N steps (and at the end).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None,
              help="Checkpoint every N steps (always at the end and on Ctrl-C).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--plot/--no-plot", default=True, show_default=True, help="Write curves.png from the metrics log.")
@_device_options
@_json_option
@click.pass_context
@_boundary
def train(ctx: click.Context, recipe_name, scale, option_pairs, out_dir, resume, overwrite, quiet, plot, device,
          threads, as_json, download, **given) -> None:
    """Train a hybrid model (flow + linear head): bits/dim + lam * cross-entropy.

    A progress bar shows bits/dim and accuracy; checkpoints (safetensors) and a metrics log go to
    --out; a final line sums up. Ctrl-C writes a checkpoint; --resume continues from it.

    \b
    Examples:
        hybridflow train --backbone mixerflow --dataset digits --steps 300 --out runs/digits
        hybridflow train --recipe recipes/mnist_density --scale cpu --data-root ../shared/data
        hybridflow train --out runs/digits --resume --steps 600
    """
    from .train import TrainConfig, train as run_training

    recipe, meta = ({}, {}) if recipe_name is None else load_recipe(recipe_name, scale)
    out_path = Path(out_dir) if out_dir else None
    saved_run = _find_run(out_path) if (resume and out_path is not None) else {}
    settings = dict(_TRAIN_DEFAULTS)
    settings.update(saved_run.get("settings", {}))
    settings.update(recipe)
    for key, value in given.items():
        if ctx.get_parameter_source(key) not in (click.core.ParameterSource.DEFAULT, None) or \
                (key not in settings and value is not None):
            settings[key] = value
    settings["backbone_options"] = {**settings.get("backbone_options", {}), **_options(option_pairs)}
    name = check_backbone_name(settings["backbone"])
    check_dataset_name(settings["dataset"])
    _set_threads(threads)
    if out_path is None:
        out_path = Path("runs") / (f"{meta['name']}-{scale}" if meta else
                                   f"{name}-{_dataset_key(Path(settings['dataset']).stem)}")
    existing = (out_path / "checkpoints").is_dir() and any((out_path / "checkpoints").iterdir())
    if resume and not existing:
        raise _usage(f"nothing to resume: {out_path} holds no checkpoint")
    if existing and not resume:
        if not overwrite:
            raise _usage(f"{out_path} already holds a training run: pass --resume to continue it, --overwrite "
                         "to start afresh, or another --out")
        shutil.rmtree(out_path / "checkpoints")

    spec = DataSpec(settings["dataset"], settings.get("data_root"), download, settings["limit"], settings["seed"],
                    settings["shuffle"], settings["shuffle_patch"], settings["shuffle_seed"], settings["size"])
    train_data = load_data(spec, train=True)
    val_data = load_data(replace(spec, limit=settings["val_limit"]), train=False)
    if settings["labelled_fraction"] is not None:
        train_data = keep_labels(train_data, settings["labelled_fraction"], settings["seed"])
    options = fit_options(name, train_data.image_shape, settings["backbone_options"])
    model = build_model(name, train_data.image_shape, train_data.num_classes, settings["lam"], options,
                        settings["pooled"], settings["seed"])
    labelled = int((train_data.labels >= 0).sum())
    shuffled = f" ({spec.shuffle} shuffle)" if spec.shuffle else ""
    _info(as_json, f"{name} ({model.backbone.num_params:,} parameters) on {spec.name}{shuffled}: "
                   f"{len(train_data):,} train "
                   f"images ({labelled:,} labelled), {len(val_data):,} validation, lam={settings['lam']:g}, "
                   f"{settings['steps']} steps of {settings['batch_size']} -> {out_path}")
    out_path.mkdir(parents=True, exist_ok=True)
    run = dict(settings={k: v for k, v in settings.items()}, backbone=name, backbone_options=options,
               data=spec.to_dict(), recipe=meta or None, scale=scale if meta else None)
    (out_path / RUN_FILE).write_text(json.dumps(run, indent=1, default=_json_default))
    config = TrainConfig(steps=settings["steps"], batch_size=settings["batch_size"], lr=settings["lr"],
                         betas=tuple(settings["betas"]), warmup_steps=settings["warmup_steps"],
                         grad_clip=settings["grad_clip"], ema_decay=settings["ema_decay"],
                         log_every=settings["log_every"], eval_every=settings["eval_every"],
                         out_dir=out_path, checkpoint_every=settings["checkpoint_every"], seed=settings["seed"],
                         device=device, progress=not quiet)
    try:
        result = run_training(model, train_data, config, val_data=val_data, resume=out_path if resume else None)
    except KeyboardInterrupt:
        click.echo(f"interrupted: checkpoint in {out_path}; continue with "
                   f"`hybridflow train --out {out_path} --resume`", err=True)
        sys.exit(130)
    curves = None
    if plot and result.history:
        from .plots import plot_training_curves

        curves = plot_training_curves(result.history, out_path / "curves.png", title=f"{name} on {spec.name}")
    m = result.metrics
    summary = {**m, **dict(backbone=name, dataset=spec.name, steps=result.steps, out=str(out_path),
                           checkpoint=str(result.checkpoint) if result.checkpoint else None,
                           curves=str(curves) if curves else None, params=model.backbone.num_params)}
    parts = [f"{name} on {spec.name}: {result.steps} steps in {m['elapsed_s']:.0f} s"]
    if m.get("bits_per_dim") is not None:
        parts.append(f"train {m['bits_per_dim']:.3f} bits/dim")
    if m.get("val_bits_per_dim") is not None:
        parts.append(f"val {m['val_bits_per_dim']:.3f} bits/dim")
    if m.get("val_accuracy") is not None and settings["lam"] > 0:
        parts.append(f"val accuracy {100 * m['val_accuracy']:.1f}%")
    if m.get("nonfinite_steps"):
        parts.append(f"{m['nonfinite_steps']} skipped steps")
    _emit(as_json, summary, ", ".join(parts) + f" -> {result.checkpoint}")


def keep_labels(data, fraction: float, seed: int):
    """A copy of ``data`` keeping the labels of a stratified ``fraction`` (at least one per class);
    the rest become -1 (unlabelled)."""
    import numpy as np
    import torch

    from .data import ImageData

    labels = data.labels.numpy()
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        k = max(1, int(round(fraction * len(members))))
        keep[rng.choice(members, size=min(k, len(members)), replace=False)] = True
    new = torch.where(torch.from_numpy(keep), data.labels, torch.full_like(data.labels, -1))
    return ImageData(data.images, new, list(data.classes))


# --------------------------------------------------------------------------- probe


@cli.command()
@click.option("--backbone", "-b", "backbones", multiple=True, default=("mixerflow",), show_default=True,
              help="A backbone to train (by maximum likelihood) and probe; repeat to compare several.")
@click.option("--checkpoint", "-c", "checkpoints", multiple=True, type=click.Path(),
              help="Probe a trained model instead (repeatable); with only checkpoints no backbone is trained.")
@click.option("--dataset", "-d", default=None, help="[default: digits, or the checkpoint's dataset]")
@_data_root_option
@_download_option
@click.option("--steps", type=click.IntRange(min=0), default=400, show_default=True,
              help="Training steps of each backbone (0 probes the untrained flow).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True)
@click.option("--lam", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="0 trains the flow by maximum likelihood only (the paper's Table 7 protocol).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Train on N images.")
@click.option("--test-limit", type=click.IntRange(min=1), default=None, help="Probe-test on N images.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Probe seeds (each draws the validation split that picks the regularisation).")
@click.option("--option", "-o", "option_pairs", multiple=True, metavar="KEY=VALUE",
              help="Backbone override for every trained backbone, repeatable.")
@click.option("--full-size", is_flag=True, help="On small images, use the registered configurations as they "
              "are instead of the light probe settings (4 layers / steps, width 32).")
@click.option("--pooled", is_flag=True, help="Probe the pooled latent instead of the full one.")
@click.option("--no-pixels", is_flag=True, help="Leave out the raw-pixel row.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Save each trained backbone as a checkpoint under this folder.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@_device_options
@_json_option
@_boundary
def probe(backbones, checkpoints, dataset, data_root, download, steps, batch_size, lr, lam, limit, test_limit, seeds,
          option_pairs, full_size, pooled, no_pixels, out_dir, seed, quiet, device, threads, as_json) -> None:
    """Linear probes on frozen flow embeddings against raw pixels.

    Trains each --backbone by maximum likelihood (lam=0) on the training split, freezes it,
    fits a standardised logistic regression on its latent (regularisation picked on a held-out
    split) and reports test accuracy and log-loss, mean ± std over seeds: the protocol of the
    paper's Table 7. With no options it uses the embedded digits (8x8, no download) and light
    settings (MixerFlow: 2x2 patches, 4 layers, width 32; Glow: 4 steps, width 32) that train in
    about a minute on 2 CPU cores; runs on one thread unless --threads says otherwise.

    \b
    Examples:
        hybridflow probe --backbone mixerflow
        hybridflow probe -b mixerflow -b glow --seeds 5
        hybridflow probe --checkpoint runs/mnist_density --data-root ../shared/data
    """
    import torch

    from .checkpoint import save_checkpoint
    from .probe import compare_probes, embed_images, format_table, raw_pixel_features
    from .train import TrainConfig, evaluate, resolve_device
    from .train import train as run_training

    started = time.perf_counter()
    only_checkpoints = bool(checkpoints) and backbones == ("mixerflow",) and \
        click.get_current_context().get_parameter_source("backbones") == click.core.ParameterSource.DEFAULT
    names = [] if only_checkpoints else [check_backbone_name(b) for b in backbones]
    loaded = [load_model(path, device) + (path,) for path in checkpoints]
    _set_threads(threads if threads is not None else 1)
    run = loaded[0][2] if loaded else {}
    spec = _data_spec_from_run(run, dataset, data_root, download, limit, seed)
    train_data = load_data(spec, train=True)
    test_data = load_data(replace(spec, limit=test_limit), train=False)
    for data, what in ((train_data, "training"), (test_data, "test")):
        if int((data.labels >= 0).sum()) < len(data):
            raise _usage(f"the {what} split of {spec.name} is not fully labelled: a probe needs labels")
    c, h, w = train_data.image_shape
    header = (f"linear probes on {spec.name} ({c}x{h}x{w}): {len(train_data):,} train / {len(test_data):,} "
              f"test images, "
              f"{seeds} seed{'s' if seeds > 1 else ''}")
    _info(as_json, header)
    user_options = _options(option_pairs)
    features: dict[str, tuple[Any, Any]] = {}
    models_info = []
    if not no_pixels:
        features["raw pixels"] = (raw_pixel_features(train_data.images), raw_pixel_features(test_data.images))
    small = max(h, w) <= 16 and not full_size
    for index, name in enumerate(names):
        options = fit_options(name, train_data.image_shape, user_options, small=small)
        model = build_model(name, train_data.image_shape, train_data.num_classes, lam, options, seed=seed)
        shown = ", ".join(f"{k}={v}" for k, v in options.items())
        _info(as_json, f"training {name} ({shown + '; ' if shown else ''}{model.backbone.num_params:,} parameters) "
                       f"for {steps} steps, "
                       f"lam={lam:g}")
        t0 = time.perf_counter()
        model = model.to(resolve_device(device))
        if steps > 0:
            config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device,
                                 warmup_steps=min(20, steps // 10), log_every=max(1, steps // 4), progress=not quiet)
            run_training(model, train_data, config)
        seconds = time.perf_counter() - t0
        test_bpd = evaluate(model, test_data)["bits_per_dim"]
        label = name if names.count(name) == 1 else f"{name} #{index + 1}"
        if out_dir:
            save_checkpoint(model.cpu(), Path(out_dir) / label.replace(" #", "-"))
        features[label] = (embed_images(model, train_data.images, pooled=pooled),
                           embed_images(model, test_data.images, pooled=pooled))
        models_info.append(dict(name=label, backbone=name, options=options, params=model.backbone.num_params,
                                steps=steps, lam=lam, train_seconds=round(seconds, 1), test_bits_per_dim=test_bpd))
        _info(as_json, f"  {label}: {seconds:.0f} s, test {test_bpd:.3f} bits/dim")
    for model, directory, _, path in loaded:
        _check_shape(model, train_data, spec.name)
        label = f"checkpoint {Path(path).name}"
        test_bpd = evaluate(model, test_data)["bits_per_dim"]
        features[label] = (embed_images(model, train_data.images, pooled=pooled),
                           embed_images(model, test_data.images, pooled=pooled))
        models_info.append(dict(name=label, backbone=model.config()["backbone"], checkpoint=str(directory),
                                params=model.backbone.num_params, test_bits_per_dim=test_bpd))
    if not features:
        raise _usage("nothing to probe: give a --backbone or a --checkpoint (or drop --no-pixels)")
    _info(as_json, "fitting the probes")
    results = compare_probes(features, train_data.labels, test_data.labels, seeds=tuple(range(seed, seed + seeds)))
    elapsed = time.perf_counter() - started
    table = format_table(results)
    payload = dict(dataset=spec.name, image_shape=[c, h, w], n_train=len(train_data), n_test=len(test_data),
                   seeds=list(range(seed, seed + seeds)), models=models_info,
                   results=[r.as_dict() for r in results.values()], elapsed_s=round(elapsed, 1))
    note = ("accuracy and log-loss of a logistic-regression probe on the frozen features (test split); "
            f"higher accuracy / lower log-loss is better; {elapsed:.0f} s in all")
    _emit(as_json, payload, f"{header}\n{table}\n{note}")


# --------------------------------------------------------------------------- eval


@cli.command("eval")
@click.option("--checkpoint", "-c", required=True, type=click.Path(), help="A run folder or checkpoint.")
@click.option("--dataset", "-d", default=None, help="[default: the dataset the checkpoint was trained on]")
@_data_root_option
@_download_option
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate on N random images.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--ema", is_flag=True, help="Use the EMA weights of the checkpoint.")
@_device_options
@_json_option
@_boundary
def evaluate_command(checkpoint, dataset, data_root, download, split, limit, batch_size, ema, device, threads,
                     as_json) -> None:
    """Bits/dim (seeded dequantisation) and accuracy of a trained model on a dataset.

    \b
    Examples:
        hybridflow eval --checkpoint runs/digits
        hybridflow eval -c runs/mnist_density --dataset fashionmnist --data-root ../shared/data --json
    """
    from .train import evaluate

    _set_threads(threads)
    model, directory, run = load_model(checkpoint, device, ema)
    spec = _data_spec_from_run(run, dataset, data_root, download, limit)
    data = load_data(spec, train=split == "train")
    _check_shape(model, data, spec.name)
    t0 = time.perf_counter()
    figures = evaluate(model, data, batch_size)
    figures.update(dataset=spec.name, split=split, checkpoint=str(directory),
                   seconds=round(time.perf_counter() - t0, 2))
    text = f"{spec.name} {split} ({figures['num_examples']:,} images): {figures['bits_per_dim']:.4f} bits/dim"
    if figures["accuracy"] is not None:
        text += f", accuracy {100 * figures['accuracy']:.2f}%, cross-entropy {figures['cross_entropy']:.4f} nats"
    _emit(as_json, figures, text)


# --------------------------------------------------------------------------- sample


@cli.command()
@click.option("--checkpoint", "-c", required=True, type=click.Path(), help="A run folder or checkpoint.")
@click.option("--n", "-n", "count", type=click.IntRange(min=1, max=4096), default=64, show_default=True)
@click.option("--temperature", "-t", type=click.FloatRange(min=0), default=0.7, show_default=True,
              help="Scale of the latent's standard deviation (1 = the model's distribution; < 1 cleaner).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="samples.png", show_default=True)
@click.option("--nrow", type=click.IntRange(min=1), default=None, help="Images per row [default: square grid].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--ema", is_flag=True, help="Use the EMA weights of the checkpoint.")
@_device_options
@_json_option
@_boundary
def sample(checkpoint, count, temperature, out_path, nrow, seed, ema, device, threads, as_json) -> None:
    """Draw images from a trained flow and save them as one PNG grid.

    \b
    Examples:
        hybridflow sample --checkpoint runs/digits --n 100 --temperature 0.8 --out digits.png
    """
    import torch

    from .plots import save_image_grid

    _set_threads(threads)
    model, directory, run = load_model(checkpoint, device, ema)
    images = model.backbone.sample(count, temperature=temperature, generator=torch.Generator().manual_seed(seed))
    shuffle = run.get("data", {}).get("shuffle")
    if shuffle:  # show what the model learnt in the images' own pixel order
        from .data import GlobalShuffle, LocalShuffle

        data = run["data"]
        perm = (LocalShuffle(model.input_shape, data.get("shuffle_patch", 4), data.get("shuffle_seed", 0))
                if shuffle == "local" else GlobalShuffle(model.input_shape, data.get("shuffle_seed", 0)))
        images = perm.inverse(images)
    path = save_image_grid(images, out_path, nrow=nrow)
    payload = dict(path=str(path), n=count, temperature=temperature, checkpoint=str(directory),
                   mean_pixel=float(images.float().mean()), unshuffled=bool(shuffle))
    _emit(as_json, payload, f"{count} samples at temperature {temperature:g} -> {path}")


# --------------------------------------------------------------------------- ood


def _parse_scores(text: str) -> list[str]:
    from .ood import SCORERS

    names = [s.strip() for s in text.split(",") if s.strip()]
    aliases = {"ratio": "likelihood_ratio", "lr": "likelihood_ratio", "msp": "max_softmax"}
    names = [aliases.get(n, n) for n in names]
    unknown = [n for n in names if n not in SCORERS]
    if unknown or not names:
        raise _usage(f"unknown scorer {', '.join(map(repr, unknown)) or '(none)'}: choose from {', '.join(SCORERS)}")
    return names


def format_ood_table(rows: dict[str, dict[str, float]]) -> str:
    """An aligned table: scorer, AUROC, AUPR-in, AUPR-out, FPR95."""
    header = f"{'scorer':<18}{'AUROC':>8}{'AUPR-in':>9}{'AUPR-out':>10}{'FPR95':>8}"
    lines = [header]
    for name, m in rows.items():
        lines.append(f"{name:<18}{m['auroc']:>8.3f}{m['aupr_in']:>9.3f}{m['aupr_out']:>10.3f}{m['fpr95']:>8.3f}")
    return "\n".join(lines)


@cli.command()
@click.option("--checkpoint", "-c", required=True, type=click.Path(), help="A run folder or checkpoint.")
@click.option("--in-data", default=None, help="In-distribution dataset [default: the checkpoint's].")
@click.option("--out-data", required=True, help="Out-of-distribution dataset, or a synthetic set made from the "
              "in-distribution test images: " + ", ".join(f"{k} ({v})" for k, v in SYNTHETIC_OOD.items()) + ".")
@click.option("--score", "scores", default="loglik,typicality,complexity", show_default=True,
              help="Comma-separated scorers: loglik, bpd, typicality, likelihood_ratio, complexity, max_softmax, "
                   "entropy.")
@click.option("--reference", type=click.Path(), default=None,
              help="Checkpoint of the reference model for likelihood_ratio (e.g. trained on perturbed images).")
@_data_root_option
@_download_option
@click.option("--limit", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Images per set (test splits; the typicality statistics use N training images).")
@click.option("--roc", "roc_path", type=click.Path(dir_okay=False), default=None, help="Write the ROC curves here.")
@click.option("--hist", "hist_path", type=click.Path(dir_okay=False), default=None,
              help="Write histograms of the scores here.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@_device_options
@_json_option
@_boundary
def ood(checkpoint, in_data, out_data, scores, reference, data_root, download, limit, roc_path, hist_path, batch_size,
        device, threads, as_json) -> None:
    """Out-of-distribution detection: score in- and out-of-distribution images, print AUROC,
    AUPR-in, AUPR-out and FPR at 95% TPR per scorer (higher score = more in-distribution).

    Raw log-likelihood is one scorer among several: flows often rate other data as *more*
    likely (AUROC below 0.5). typicality uses the training split's NLL statistics.

    \b
    Examples:
        hybridflow ood -c runs/digits --out-data noise --roc roc.png --hist hist.png
        hybridflow ood -c runs/fashion --in-data fashionmnist --out-data mnist --data-root ../shared/data \\
            --score loglik,typicality,complexity,likelihood_ratio --reference runs/fashion-perturbed
    """
    from .ood import create_scorer, evaluate

    names = _parse_scores(scores)
    if "likelihood_ratio" in names and reference is None:
        raise _usage("likelihood_ratio needs --reference CHECKPOINT (a second model, e.g. trained on perturbed "
                     "images, Ren et al. 2019)")
    check_dataset_name(out_data, tuple(SYNTHETIC_OOD))
    _set_threads(threads)
    model, directory, run = load_model(checkpoint, device)
    ref_model = load_model(reference, device)[0] if reference is not None else None
    spec = _data_spec_from_run(run, in_data, data_root, download, limit)
    x_in = load_data(spec, train=False)
    _check_shape(model, x_in, spec.name)
    fit_images = load_data(spec, train=True).images if "typicality" in names else None
    x_out = _ood_data(out_data, spec, x_in)
    _check_shape(model, x_out, out_data)
    rows, raw = {}, {}
    for name in names:
        scored = model if name in ("max_softmax", "entropy") else model.backbone
        scorer = create_scorer(name, scored, reference=None if ref_model is None else ref_model.backbone,
                               batch_size=batch_size)
        if fit_images is not None:
            scorer.fit(fit_images)
        s_in, s_out = scorer(x_in.images), scorer(x_out.images)
        rows[name] = evaluate(s_in, s_out)
        raw[name] = (s_in, s_out)
    plots = {}
    if roc_path:
        from .plots import plot_roc_curves

        plots["roc"] = str(plot_roc_curves(raw, roc_path, title=f"in: {spec.name}, out: {out_data}"))
    if hist_path:
        from .plots import plot_score_histograms

        plots["hist"] = str(plot_score_histograms(raw, hist_path, labels=(f"{spec.name} (in)", f"{out_data} (out)")))
    header = f"in: {spec.name} test ({len(x_in):,}), out: {out_data} ({len(x_out):,}); checkpoint {directory}"
    footer = "\n".join(f"{kind} -> {path}" for kind, path in plots.items())
    _emit(as_json, dict(in_data=spec.name, out_data=out_data, checkpoint=str(directory), metrics=rows, plots=plots),
          header + "\n" + format_ood_table(rows) + ("\n" + footer if footer else ""))


# --------------------------------------------------------------------------- explain


@cli.command()
@click.option("--checkpoint", "-c", required=True, type=click.Path(), help="A run folder or checkpoint.")
@click.option("--dataset", "-d", default=None, help="[default: the checkpoint's dataset]")
@_data_root_option
@_download_option
@click.option("--index", "-i", type=click.IntRange(min=0), default=0, show_default=True,
              help="Which test image to explain.")
@click.option("--target", "target_text", default="both", show_default=True,
              help="predicted (the predicted class), a class index, nll (which pixels make the image "
                   "unlikely), or both (predicted and nll).")
@click.option("--method", "methods", default="ig,saliency", show_default=True,
              help="Comma-separated captum methods: ig (Integrated Gradients), saliency, gradshap, inputxgrad.")
@click.option("--baseline", type=click.Choice(["black", "blur", "mean"]), default="black", show_default=True,
              help="Integrated Gradients' reference image (mean: of the training images).")
@click.option("--ig-steps", type=click.IntRange(min=2), default=64, show_default=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Heat-map PNG [default: explain-<dataset>-<index>.png].")
@_device_options
@_json_option
@_boundary
def explain(checkpoint, dataset, data_root, download, index, target_text, methods, baseline, ig_steps, out_path,
            device, threads, as_json) -> None:
    """Explain one image with captum: which pixels drive the predicted class, and which make the
    image unlikely (attributions of -log2 p(x), red = adds bits). Saves the image beside one
    heat-map per method and target; IG's completeness error is printed.

    \b
    Examples:
        hybridflow explain --checkpoint runs/digits --index 3
        hybridflow explain -c runs/digits --target nll --method ig,gradshap --baseline blur
    """
    from . import explain as explaining
    from .plots import plot_attributions

    method_names = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in method_names if m not in explaining.METHODS]
    if unknown or not method_names:
        raise _usage(f"unknown attribution method {', '.join(map(repr, unknown)) or '(none)'}: choose from "
                     f"{', '.join(explaining.METHODS)}")
    if target_text == "both":
        targets: list[Any] = ["predicted", "nll"]
    elif target_text in ("predicted", "nll"):
        targets = [target_text]
    elif target_text.lstrip("-").isdigit():
        targets = [int(target_text)]
    else:
        raise _usage(f"--target must be predicted, nll, both or a class index, got {target_text!r}")
    _set_threads(threads)
    model, directory, run = load_model(checkpoint, device)
    spec = _data_spec_from_run(run, dataset, data_root, download, None)
    data = load_data(spec, train=False)
    _check_shape(model, data, spec.name)
    if index >= len(data):
        raise _usage(f"--index {index} is out of range: the {spec.name} test split has {len(data)} images")
    for t in targets:
        if isinstance(t, int) and not 0 <= t < model.num_classes:
            raise _usage(f"class {t} is out of range: the model has {model.num_classes} classes")
    import torch

    image = data.images[index]
    references = load_data(replace(spec, limit=512), train=True).images if baseline == "mean" else None
    maps = explaining.explain(model, image, methods=method_names, targets=targets, baseline=baseline,
                              references=references, n_steps=ig_steps)
    with torch.no_grad():
        probs = model.predict_proba(image[None])[0]
        bpd = float(model.bits_per_dim(image[None])[0])
    predicted = int(probs.argmax())
    label = int(data.labels[index])
    names = data.classes or [str(k) for k in range(model.num_classes)]
    out_path = out_path or f"explain-{_dataset_key(Path(spec.name).stem)}-{index}.png"
    title = (f"{spec.name} test #{index}" + (f" (label {names[label]})" if label >= 0 else "")
             + f": predicted {names[predicted]} (p={float(probs[predicted]):.2f}), {bpd:.2f} bits/dim")
    path = plot_attributions(image, {k: a.attributions[0] for k, a in maps.items()}, out_path, title=title)
    rows = []
    for key, a in maps.items():
        row = dict(name=key, method=a.method, target=a.target, value=float(a.values[0]),
                   sum=float(a.attributions.sum()))
        if a.delta is not None:
            row.update(baseline_value=float(a.baseline_values[0]), completeness_error=float(a.delta[0]))
        rows.append(row)
    lines = [title]
    for row in rows:
        line = f"  {row['name']}: sum {row['sum']:+.4f}"
        if "completeness_error" in row:
            line += (f" = f(x) - f(baseline) {row['value'] - row['baseline_value']:+.4f} "
                     f"(error {row['completeness_error']:+.1e})")
        lines.append(line)
    lines.append(f"heat-maps -> {path}")
    _emit(as_json, dict(dataset=spec.name, index=index, label=label, predicted=predicted,
                        probability=float(probs[predicted]), bits_per_dim=bpd, attributions=rows, path=str(path),
                        checkpoint=str(directory)), "\n".join(lines))


# --------------------------------------------------------------------------- registry, recipes


@cli.command()
@click.option("--pattern", "-p", default=None, help="Shell-style filter, e.g. 'mixerflow_*'.")
@click.option("--params", "count_params", is_flag=True,
              help="Build each backbone at its default input shape and count its parameters (slower).")
@_json_option
@_boundary
def backbones(pattern, count_params, as_json) -> None:
    """List the registered backbones (and the families: mixerflow -> mixerflow_tiny, glow -> glow_tiny).

    \b
    Examples:
        hybridflow backbones
        hybridflow backbones --pattern 'mixerflow_tiny*' --params
    """
    from .backbones import FAMILY_DEFAULTS, create_backbone, list_backbones
    from .backbones.registry import _REGISTRY

    names = list_backbones(pattern)
    if not names:
        raise _usage(f"no backbone matches {pattern!r}; see `hybridflow backbones`")
    rows = []
    for name in names:
        doc = (_REGISTRY[name].__doc__ or "").strip().split("\n\n")[0]
        row = dict(name=name, family=_family(name), description=" ".join(doc.split()).replace("``", ""))
        if count_params:
            flow = create_backbone(name)
            row.update(input_shape=list(flow.input_shape), params=flow.num_params)
        rows.append(row)
    width = max(len(r["name"]) for r in rows)
    lines = []
    for r in rows:
        extra = f"  {'x'.join(map(str, r['input_shape'])):>8}  {r['params']:>11,}" if count_params else ""
        lines.append(f"{r['name']:<{width}}{extra}  {r['description']}")
    if count_params:
        lines.insert(0, f"{'name':<{width}}  {'input':>8}  {'parameters':>11}  description")
    families = ", ".join(f"{k} -> {v}" for k, v in FAMILY_DEFAULTS.items())
    _emit(as_json, dict(backbones=rows, families=dict(FAMILY_DEFAULTS)), "\n".join(lines) + f"\nfamilies: {families}")


@cli.command()
@_json_option
@_boundary
def recipes(as_json) -> None:
    """List the recipes (recipes/*.toml): one per experiment of the paper, at paper and CPU scale.

    \b
    Example:
        hybridflow recipes
        hybridflow train --recipe recipes/cifar10_density --scale cpu --data-root ../shared/data
    """
    tomllib = _toml()
    seen, rows = set(), []
    for folder in _recipe_dirs():
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            if path.stem in seen:
                continue
            seen.add(path.stem)
            recipe = tomllib.loads(path.read_text())
            rows.append(dict(name=path.stem, path=str(path), reproduces=recipe.get("reproduces", ""),
                             paper_result=recipe.get("paper_result", ""),
                             cpu_expectation=recipe.get("cpu_expectation", "")))
    if not rows:
        raise CLIError("no recipes found (looked in ./recipes and beside the package)")
    width = max(len(r["name"]) for r in rows)
    _emit(as_json, dict(recipes=rows), "\n".join(f"{r['name']:<{width}}  {r['reproduces']}" for r in rows))


if __name__ == "__main__":  # pragma: no cover
    main()
