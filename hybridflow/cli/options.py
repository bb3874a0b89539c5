"""What every command shares: the error boundary (one line on stderr, a meaningful exit code),
the common options (--json, --device, --threads, --data-root, --download) and output helpers."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import click

from ..data import UnknownDatasetError
from ..data.subsets import ClassSelectionError, parse_classes
from ..data.patches import PatchSizeError
from ..factory import BackboneOptionError, UnknownBackboneError, check_backbone_options
from ..pretrained import UnknownPretrainedError
from ..recipes import RecipeError
from ..runs import CheckpointNotFoundError, DataShapeError, RequestError, RunFolderError, json_default
from ..training import CheckpointError, NonFiniteLossError
from ..training.config import SettingsError
from ..training.distributed import DeviceError, resolve_device

__all__ = ["CLIError", "USAGE_ERRORS", "FiniteFloat", "ClassList", "AdamBetas", "usage", "boundary", "json_option",
           "device_options", "check_device", "writable_path", "image_path", "data_root_option", "download_option",
           "set_threads", "emit", "info", "parse_options"]

#: Library errors that mean the command line is wrong (exit code 2), not that the work failed.
USAGE_ERRORS = (UnknownDatasetError, UnknownBackboneError, RecipeError, CheckpointNotFoundError, RunFolderError,
                DataShapeError, RequestError, SettingsError, BackboneOptionError, DeviceError, ClassSelectionError,
                PatchSizeError, UnknownPretrainedError)


class FiniteFloat(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan`` and ``inf`` (FloatRange lets ``nan`` through:
    every comparison with it is false, so no bound ever fails).

    Example:
        >>> FiniteFloat(min=0).convert("0.5", None, None)
        0.5
    """

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class ClassList(click.ParamType):
    """Class labels as ``0-4``, ``0,1,2,3,4`` or ``0-2,7`` (:func:`~hybridflow.data.subsets.parse_classes`):
    a list of ints, or a usage error naming the bad part.

    Example:
        >>> ClassList().convert("5-7,9", None, None)
        [5, 6, 7, 9]
    """

    name = "classes"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return list(parse_classes(value))
        except ClassSelectionError as error:
            self.fail(str(error), param, ctx)


class AdamBetas(click.ParamType):
    """Adam's two betas as ``B1,B2``, each in ``[0, 1)``: a tuple, or a usage error naming the problem.

    Example:
        >>> AdamBetas().convert("0.9,0.99", None, None)
        (0.9, 0.99)
    """

    name = "betas"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        parts = [part.strip() for part in str(value).split(",")]
        try:
            betas = tuple(float(part) for part in parts)
        except ValueError:
            self.fail(f"{value!r} is not two numbers B1,B2 (e.g. 0.9,0.99).", param, ctx)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):  # also refuses nan
            self.fail(f"{value!r} must be two numbers B1,B2, each in [0, 1) (e.g. 0.9,0.99).", param, ctx)
        return betas


class CLIError(click.ClickException):
    """One line on stderr and a meaningful exit code (1 failure, 2 bad command line)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(" ".join(str(message).split()))
        self.exit_code = exit_code


def usage(message: str) -> CLIError:
    """A bad-command-line error (exit code 2)."""
    return CLIError(message, exit_code=2)


def _failure(error: Exception) -> CLIError | None:
    """The one-line report of a library failure (exit code 1); None for an unexpected kind."""
    if isinstance(error, CheckpointError):
        return CLIError(f"checkpoint: {error}")
    if isinstance(error, NonFiniteLossError):
        return CLIError(f"training diverged: {error}")
    if isinstance(error, (FileNotFoundError, ImportError)):
        return CLIError(str(error))
    if isinstance(error, (ValueError, TypeError, RuntimeError, FloatingPointError, OSError)):
        return CLIError(f"{type(error).__name__}: {error}")
    return None


def boundary(fn: Callable) -> Callable:
    """Turn the library's errors into one-line messages (no traceback) with an exit code;
    ``HYBRIDFLOW_DEBUG=1`` lets failures (not command-line mistakes) through with their traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except USAGE_ERRORS as error:
            raise usage(str(error)) from None
        except KeyboardInterrupt:
            if os.environ.get("HYBRIDFLOW_DEBUG"):
                raise
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as error:
            failure = None if os.environ.get("HYBRIDFLOW_DEBUG") else _failure(error)
            if failure is None:
                raise
            raise failure from None

    return wrapper


def json_option(fn: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of text.")(fn)


def check_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--device``: refuse (exit 2, before any work) a device that is unknown or not on this machine."""
    try:
        resolve_device(value)
    except DeviceError as error:
        raise click.BadParameter(str(error), ctx, param) from None
    return value


def device_options(fn: Callable) -> Callable:
    fn = click.option("--threads", type=click.IntRange(min=1), envvar="HYBRIDFLOW_THREADS", default=None,
                      help="torch.set_num_threads (env HYBRIDFLOW_THREADS). Tiny models on a busy machine run "
                           "faster with 1.")(fn)
    return click.option("--device", default="auto", show_default=True, callback=check_device,
                        help="auto (cuda if available), cpu, cuda, cuda:1, ...")(fn)


def data_root_option(fn: Callable) -> Callable:
    return click.option("--data-root", type=click.Path(file_okay=False), envvar="HYBRIDFLOW_DATA", default=None,
                        help="Folder holding the datasets (env HYBRIDFLOW_DATA; default ~/.cache/hybridflow/data).")(fn)


def download_option(fn: Callable) -> Callable:
    return click.option("--download", is_flag=True, help="Let torchvision download a missing dataset.")(fn)


def set_threads(threads: int | None) -> None:
    """``--threads N``, else ``$HYBRIDFLOW_THREADS``, else half the usable cores (at least one):
    on a busy 2-core machine torch's default of every core ran 30x slower than one thread."""
    import torch

    from ..estimators.fitting import default_threads

    torch.set_num_threads(threads if threads is not None else default_threads())


def emit(as_json: bool, payload: dict[str, Any], text: str | None = None) -> None:
    """The command's result on stdout: ``payload`` as JSON, or ``text``."""
    if as_json:
        click.echo(json.dumps(payload, indent=1, default=json_default))
    elif text is not None:
        click.echo(text)


def info(message: str) -> None:
    """Progress notes go to stderr, so stdout stays clean (and JSON when asked)."""
    click.echo(message, err=True)


def _parse_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise usage(f"--option takes KEY=VALUE (for example patch_size=2), got {text!r}")
    key, value = text.split("=", 1)
    if not key.strip():
        raise usage(f"--option takes KEY=VALUE with a key (for example patch_size=2), got {text!r}")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    if isinstance(parsed, list):
        parsed = tuple(parsed)
    return key.strip(), parsed


def parse_options(pairs: tuple[str, ...], backbone: str | None = None) -> dict[str, Any]:
    """``-o KEY=VALUE`` pairs as a dict; values are read as JSON when they parse (``2``, ``[1, 2]``).
    With ``backbone``, each value is checked against that backbone's option types: a usage error
    (exit 2) names the key and the type it needs (``-o hidden=abc``)."""
    options = dict(_parse_option(p) for p in pairs)
    if backbone is None:
        return options
    try:
        return check_backbone_options(backbone, options)
    except BackboneOptionError as error:
        raise usage(f"-o: {error}") from None


def writable_path(ctx: click.Context | None, param: click.Parameter | None, value: Any) -> Any:
    """A click callback for a file or folder a command will write: ``value`` as given, or a usage
    error (exit code 2) before any work when it cannot be written there (a file where a folder must
    be, a folder this process may not write in). Nothing is created.

    Example:
        >>> writable_path(None, None, "out/samples.png")
        'out/samples.png'
    """
    if value is None:
        return value
    name = "/".join(param.opts) if param is not None and param.opts else "the output"
    path = Path(value)
    is_folder = param is not None and isinstance(param.type, click.Path) and not param.type.file_okay
    if path.is_dir() and not is_folder:
        raise usage(f"{name} {value}: a folder is there, not a file")
    ancestor = path if is_folder else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise usage(f"{name} {value}: {ancestor} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as error:
        raise usage(f"{name} {value}: cannot write in {ancestor} ({error.strerror or error})") from None
    return value


def image_path(ctx: click.Context | None, param: click.Parameter | None, value: Any) -> Any:
    """:func:`writable_path` for an image Pillow writes, whose extension it must know (``.png``, ``.jpg``...)."""
    from PIL import Image

    value = writable_path(ctx, param, value)
    if value is not None and Path(value).suffix.lower() not in Image.registered_extensions():
        raise usage(f"--out {value}: not an image file name Pillow writes; end it in .png or .jpg")
    return value
