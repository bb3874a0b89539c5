"""What a training run writes beside its checkpoints: ``run.json`` (the model, the settings, the
data) and ``curves.png``, from Python's :func:`~hybridflow.training.train` as from ``hybridflow train``.

:class:`RunFiles` is the training callback that writes them: ``run.json`` when the run starts
(so that an interrupted or diverged run has it too) and ``curves.png`` at its end. ``train`` adds
one by itself when ``TrainConfig.out_dir`` is set; :func:`hybridflow.runs.train_run` passes its
own, which adds the command's settings and the named dataset to the same file (one writer, one
file). Being a callback, it runs in rank 0 only, and a failure to write (a full disk) is reported
as a warning rather than ending the run.

Example:
    >>> import tempfile
    >>> path = write_run_file(tempfile.mkdtemp(), {"data": {"name": "digits"}, "path": Path("a")})
    >>> json.loads(path.read_text())["path"]
    'a'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..data import ImageData
from .callbacks import TrainCallback, TrainInfo
from .checkpoint import atomic_write_bytes

__all__ = ["RUN_FILE", "CURVES_FILE", "json_default", "write_run_file", "describe_data", "RunFiles"]

RUN_FILE = "run.json"
CURVES_FILE = "curves.png"


def json_default(value: Any) -> Any:
    """``json.dumps``'s ``default``: paths as strings, tensors and arrays as lists.

    Example:
        >>> import torch
        >>> json.dumps({"x": torch.tensor([1, 2]), "p": Path("a")}, default=json_default)
        '{"x": [1, 2], "p": "a"}'
    """
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_run_file(out_dir: str | Path, run: dict[str, Any]) -> Path:
    """Write ``run`` as ``<out_dir>/run.json`` (folder created) atomically, like the checkpoints:
    a crash leaves the old file or the new one, never half of one. Returns its path."""
    path = Path(out_dir) / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(run, indent=1, default=json_default).encode())
    return path


def describe_data(source: Any) -> dict[str, Any]:
    """What is known of a run's training data (a :class:`~hybridflow.data.BatchSource`): its kind,
    size, image shape, classes, labelled count (in memory only), loading options, and ``name``:
    ``None``, since a Python object has none that later commands could load it by (``train_run``
    replaces it with the named dataset's spec).

    Example:
        >>> from hybridflow.data import as_batch_source, load_digits_data
        >>> d = describe_data(as_batch_source(load_digits_data()))
        >>> d["name"], d["kind"], d["num_examples"], d["image_shape"], d["labelled"]
        (None, 'ImageData', 1347, [1, 8, 8], 1347)
    """
    data = source.data
    description: dict[str, Any] = dict(name=None, kind=type(data).__name__, num_examples=source.num_examples,
                                       image_shape=list(source.image_shape), classes=list(source.classes),
                                       flip=source.flip, num_workers=source.num_workers)
    if isinstance(data, ImageData):
        description["labelled"] = int((data.labels >= 0).sum())
    for attribute in ("folder", "root"):  # NpyImages, LazyImageFolder: where the files are
        if isinstance(getattr(data, attribute, None), (str, Path)):
            description["path"] = str(getattr(data, attribute))
    return description


class RunFiles(TrainCallback):
    """Writes ``run.json`` when the run starts and ``curves.png`` when it ends, into
    ``TrainConfig.out_dir``.

    ``run.json`` holds ``model`` (the model's config), ``train_config`` (the
    :class:`~hybridflow.training.TrainConfig`), ``data`` (:func:`describe_data`, updated with
    ``run["data"]``) and every other key of ``run``. ``plot=False``: no ``curves.png``; ``title``
    its title (default: the backbone and the data). :attr:`curves` is the picture's path once drawn.
    """

    def __init__(self, run: dict[str, Any] | None = None, plot: bool = True, title: str | None = None) -> None:
        self.run, self.plot, self.title = dict(run or {}), plot, title
        self.out_dir: Path | None = None
        self.curves: Path | None = None
        self._title = title

    def on_train_start(self, info: TrainInfo) -> None:
        self.out_dir, self.curves = info.out_dir, None
        if self.out_dir is None:
            return
        data = {**describe_data(info.data), **self.run.get("data", {})}
        try:
            model = info.model.config()
        except ValueError:  # a backbone not built by create_backbone: train() refuses it with out_dir anyway
            model = None
        self._title = self.title or f"{model['backbone'] if model else 'model'} on {data['name'] or data['kind']}"
        write_run_file(self.out_dir, {"model": model, "train_config": info.config.to_dict(), **self.run, "data": data})

    def on_train_end(self, result: Any) -> None:
        if self.out_dir is None or not self.plot or result is None or not result.history:
            return
        from ..plots import plot_training_curves  # matplotlib, only when a picture is drawn

        self.curves = plot_training_curves(result.history, self.out_dir / CURVES_FILE, title=self._title)
