"""Checkpoints that load without executing code and are never half-written.

A checkpoint is a directory::

    step-000001000/
        model.safetensors           weights; its metadata holds the model config as JSON
        training_state.safetensors  optimiser moments, RNG states, EMA weights (training runs only)
        checkpoint.json             the manifest: format, step, model config, the JSON training
                                    state and the SHA-256 of every file above, written last

Every file is written atomically (a temporary file in the same directory, flush, fsync,
``os.replace``), and the manifest goes last, so a directory without a manifest is an unfinished
write: :func:`find_checkpoint` skips it in a folder of checkpoints, and loading it by name is
refused. A training run keeps its checkpoints under ``out_dir/checkpoints/``; :func:`find_checkpoint`
resolves an ``out_dir``, that folder, a checkpoint directory or a ``model.safetensors`` file to a
checkpoint. Damaged files raise :class:`CheckpointError` naming the file.

What a checkpoint says is what it holds: the model config in ``checkpoint.json`` must equal the
copy bound to the weights in ``model.safetensors`` (whose SHA-256 the manifest holds), so an edited
config (say ``preprocess`` centre -> logit) is refused rather than building another model around
the weights. Checkpoints written before the copy was kept have none: they load with a warning.
Non-finite weights (and training-state tensors) are refused on writing and on loading.

Example:
    >>> import tempfile
    >>> from hybridflow.hybrid import HybridModel
    >>> model = HybridModel("mixerflow_tiny", 10, input_shape=(1, 8, 8), patch_size=2, num_layers=1)
    >>> path = save_checkpoint(model, tempfile.mkdtemp() + "/digits-model")
    >>> load_checkpoint(path).num_classes
    10
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import Tensor

from ..flows import contains_inference_copy
from ..hybrid import HybridModel

__all__ = [
    "CheckpointError", "TrainingState", "CHECKPOINTS_DIR", "atomic_write_bytes", "find_checkpoint",
    "load_checkpoint", "load_model_parts", "load_training_state", "load_weights", "prune_checkpoints",
    "save_checkpoint", "step_directory", "write_checkpoint",
]

PathLike = Union[str, "os.PathLike[str]"]

FORMAT = "hybridflow-checkpoint"
VERSION = 1
MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.safetensors"
MANIFEST_FILE = "checkpoint.json"
CHECKPOINTS_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupted or of an unknown format."""


@dataclass
class TrainingState:
    """What a training run needs besides the weights: ``state`` (JSON) and ``tensors``."""

    step: int
    state: dict[str, Any]
    tensors: dict[str, Tensor]


# --------------------------------------------------------------------------- writing


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    A crash mid-write leaves at most a hidden ``.*.tmp`` file, which is removed when the write
    fails inside Python.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _cpu_tensors(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    # safetensors wants contiguous CPU tensors that share no memory: copy each one.
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def _first_nonfinite(tensors: dict[str, Tensor]) -> str | None:
    return next((k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_checkpoint(
    directory: PathLike,
    model_state: dict[str, Tensor],
    model_config: dict[str, Any],
    step: int = 0,
    training_state: dict[str, Any] | None = None,
    training_tensors: dict[str, Tensor] | None = None,
) -> Path:
    """Write one checkpoint directory (created if needed); the manifest goes last.

    An existing checkpoint in ``directory`` is first marked unfinished (manifest removed), so a
    crash during the rewrite never leaves a directory that mixes two states.
    """
    for what, tensors in (("weight", model_state), ("training-state tensor", training_tensors or {})):
        name = _first_nonfinite(tensors)
        if name is not None:
            raise CheckpointError(f"refusing to write a checkpoint: {what} {name!r} is not finite")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path = directory / MANIFEST_FILE
    if manifest_path.exists():
        manifest_path.unlink()
        _fsync_dir(directory)
    config_json = json.dumps(model_config, sort_keys=True)
    files: dict[str, str] = {}
    data = save_safetensors_bytes(_cpu_tensors(model_state),
                                  metadata={"format": FORMAT, "model_config": config_json})
    atomic_write_bytes(directory / MODEL_FILE, data)
    files[MODEL_FILE] = _sha256(data)
    if training_tensors is not None:
        data = save_safetensors_bytes(_cpu_tensors(training_tensors), metadata={"format": FORMAT})
        atomic_write_bytes(directory / STATE_FILE, data)
        files[STATE_FILE] = _sha256(data)
    elif (directory / STATE_FILE).exists():
        (directory / STATE_FILE).unlink()
    manifest = dict(format=FORMAT, version=VERSION, step=int(step), model_config=model_config,
                    training_state=training_state, files=files)
    atomic_write_bytes(manifest_path, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return directory


def save_checkpoint(model: HybridModel, path: PathLike) -> Path:
    """Save a model's weights and configuration to the checkpoint directory ``path``.

    Example:
        >>> save_checkpoint(model, "runs/probe")  # doctest: +SKIP
    """
    if contains_inference_copy(model):  # its weights are folded buffers: a checkpoint could not rebuild it
        raise ValueError("save_checkpoint got an inference copy (hybridflow.freeze): save the model it was made from")
    return write_checkpoint(path, model.state_dict(), model.config())


def step_directory(root: PathLike, step: int) -> Path:
    """``root/step-000000123``: where a run keeps the checkpoint of ``step``."""
    return Path(root) / f"step-{int(step):09d}"


def prune_checkpoints(root: PathLike, current: Path, keep: int) -> None:
    """Delete unfinished checkpoint directories and all but the ``keep`` newest finished ones up
    to ``current`` (never ``current`` itself; later steps, from an abandoned run, are left alone)."""
    root = Path(root)
    current_step = _step_of(current)
    finished = []
    for entry in root.iterdir():
        step = _step_of(entry)
        if step is None or entry == current:
            continue
        if not (entry / MANIFEST_FILE).exists():
            shutil.rmtree(entry, ignore_errors=True)
        elif current_step is not None and step < current_step:
            finished.append((step, entry))
    finished.sort()
    for _, entry in finished[: max(0, len(finished) - (keep - 1))]:
        shutil.rmtree(entry, ignore_errors=True)


def _step_of(path: Path) -> int | None:
    match = _STEP_DIR.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


# --------------------------------------------------------------------------- reading


def find_checkpoint(path: PathLike) -> Path:
    """Resolve ``path`` to a complete checkpoint directory.

    Accepts a checkpoint directory, a ``model.safetensors`` inside one, a folder of ``step-*``
    checkpoints (the newest complete one wins) or a training ``out_dir`` holding such a folder.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: the path does not exist")
    if path.is_file():
        if path.name in (MODEL_FILE, MANIFEST_FILE, STATE_FILE):
            return path.parent
        raise CheckpointError(f"{path} is not a checkpoint: expected a directory holding {MODEL_FILE}")
    if (path / MANIFEST_FILE).exists() or (path / MODEL_FILE).exists():
        return path
    root = path / CHECKPOINTS_DIR if (path / CHECKPOINTS_DIR).is_dir() else path
    steps = [(s, p) for p in root.iterdir() if (s := _step_of(p)) is not None and (p / MANIFEST_FILE).exists()]
    if not steps:
        raise CheckpointError(f"no complete checkpoint in {path} (looked for step-*/{MANIFEST_FILE})")
    return max(steps)[1]


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint manifest {path} is unreadable or corrupted: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a hybridflow checkpoint manifest")
    if manifest.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} has format version {manifest['version']}; this hybridflow reads "
                              f"up to {VERSION}: upgrade hybridflow")
    return manifest


def _read_tensors(path: Path, expected_sha256: str | None) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} is missing") from None
    if expected_sha256 is not None and _sha256(data) != expected_sha256:
        raise CheckpointError(f"checkpoint file {path} is corrupted: its SHA-256 does not match the "
                              "manifest (truncated or modified after writing)")
    try:
        tensors = load_safetensors_bytes(data)
        metadata = _safetensors_metadata(data)
    except (SafetensorError, ValueError, OSError) as error:
        raise CheckpointError(f"checkpoint file {path} is corrupted or not a safetensors file: {error}") from None
    return tensors, metadata


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    # The header is an 8-byte little-endian length, then JSON; "__metadata__" holds our strings.
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]).get("__metadata__", {}) or {}


def _require_manifest(directory: Path) -> dict[str, Any]:
    manifest = _read_manifest(directory)
    if manifest is None:
        raise CheckpointError(f"{directory} has no {MANIFEST_FILE}: it is an unfinished checkpoint (the manifest "
                              "is written last) or not a hybridflow checkpoint; refusing to load it")
    return manifest


def _config_differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in _config_differences(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix[:-1] or 'config'}: {a!r} vs {b!r}"]


def load_model_parts(directory: PathLike) -> tuple[dict[str, Any], dict[str, Any], dict[str, Tensor]]:
    """``(manifest, model config, weights)`` of the checkpoint directory ``directory``.

    Raises :class:`CheckpointError` when the manifest is missing, when its model config differs
    from the copy bound to the weights in ``model.safetensors``, or when a weight is not finite.
    """
    directory = Path(directory)
    manifest = _require_manifest(directory)
    path = directory / MODEL_FILE
    tensors, metadata = _read_tensors(path, manifest.get("files", {}).get(MODEL_FILE))
    config = manifest.get("model_config")
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {directory} holds no model config")
    if "model_config" in metadata:
        try:
            bound = json.loads(metadata["model_config"])
        except ValueError:
            raise CheckpointError(f"{path} holds a damaged copy of the model config") from None
        differences = _config_differences(config, bound)
        if differences:
            raise CheckpointError(
                f"the model config in {directory / MANIFEST_FILE} does not match the one bound to the weights in "
                f"{path} ({'; '.join(differences[:3])}, manifest vs weights): the manifest was edited or belongs "
                "to other weights; refusing to build another model around them")
    else:
        warnings.warn(f"{path} holds no copy of its model config (written by an older hybridflow): the config in "
                      f"{MANIFEST_FILE} cannot be checked against the weights; save the model again to bind them",
                      UserWarning, stacklevel=2)
    bad = _first_nonfinite(tensors)
    if bad is not None:
        raise CheckpointError(f"checkpoint file {path} holds non-finite values in {bad!r}: refusing to load them")
    return manifest, config, tensors


def load_checkpoint(path: PathLike, ema: bool = False, map_location: str | torch.device = "cpu") -> HybridModel:
    """Rebuild a :class:`HybridModel` from a checkpoint (see :func:`find_checkpoint` for ``path``).

    ``ema=True`` loads the exponential moving average of the weights a training run kept
    (``TrainConfig.ema_decay``). The model comes back in evaluation mode, in the floating dtype
    its weights were stored in (a float64 model stays float64).

    Example:
        >>> model = load_checkpoint("runs/mnist")  # doctest: +SKIP
    """
    directory = find_checkpoint(path)
    manifest, config, weights = load_model_parts(directory)
    if ema:
        state = load_training_state(directory)
        weights = {k[len("ema."):]: v for k, v in state.tensors.items() if k.startswith("ema.")}
        if not weights:
            raise CheckpointError(f"checkpoint {directory} holds no EMA weights (trained without ema_decay)")
    try:
        model = HybridModel.from_config(config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {directory} holds a model config that cannot be built: {error}") from None
    _match_stored_dtypes(model, weights)
    load_weights(model, weights, directory)
    return model.to(map_location).eval()


def _match_stored_dtypes(model: HybridModel, weights: dict[str, Tensor]) -> None:
    # The model is built in the default dtype; load_state_dict copies *into* its tensors, which would
    # turn float64 weights into float32 silently. Give each floating tensor its stored dtype first.
    dtypes = {w.dtype for w in weights.values() if w.is_floating_point()}
    if len(dtypes) == 1:
        model.to(dtypes.pop())  # the usual case: one dtype throughout (module-level casts stay consistent)
        return
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    for name, tensor in tensors.items():
        stored = weights.get(name)
        if stored is not None and tensor.is_floating_point() and stored.is_floating_point():
            tensor.data = tensor.data.to(stored.dtype)


def load_weights(model: HybridModel, weights: dict[str, Tensor], source: PathLike = "checkpoint") -> None:
    """Copy ``weights`` into ``model``, raising :class:`CheckpointError` on any mismatch."""
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"weights in {source} do not fit the model: {error}") from None


def load_training_state(path: PathLike) -> TrainingState:
    """The training state of the checkpoint at ``path`` (for ``train(..., resume=path)``)."""
    directory = find_checkpoint(path)
    manifest = _require_manifest(directory)
    if manifest.get("training_state") is None:
        raise CheckpointError(f"checkpoint {directory} holds no training state (it was saved as a model only)")
    tensors, _ = _read_tensors(directory / STATE_FILE, manifest.get("files", {}).get(STATE_FILE))
    bad = _first_nonfinite(tensors)
    if bad is not None:
        raise CheckpointError(f"checkpoint file {directory / STATE_FILE} holds non-finite values in {bad!r}: "
                              "refusing to load them")
    return TrainingState(int(manifest["step"]), manifest["training_state"], tensors)
