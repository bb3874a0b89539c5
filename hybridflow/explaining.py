"""The ``hybridflow explain`` job: explain one test image of a trained run with captum and save the
heat-maps (:func:`explain_run`); the attribution methods themselves live in :mod:`hybridflow.explain`.

Example:
    >>> from hybridflow.explaining import explain_run
    >>> explain_run("runs/digits", index=3)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from .data import dataset_key
from .explain import Attribution, explain
from .flows import freeze
from .plots import plot_attributions
from .runs import RequestError, check_data_shape, data_spec_from_run, load_model

__all__ = ["Explanation", "explain_run"]


@dataclass
class Explanation:
    """What :func:`explain_run` returns: the image's label and prediction, its bits/dim, one row per
    method and target (``f(x)``, the attributions' sum and, for Integrated Gradients, ``f(baseline)``
    and the completeness error), the heat-map file and a one-line title."""

    dataset: str
    index: int
    label: int
    predicted: int
    probability: float
    bits_per_dim: float
    attributions: list[dict[str, Any]]
    path: str
    checkpoint: str
    title: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: every field but the title."""
        return {k: v for k, v in asdict(self).items() if k != "title"}


def _attribution_row(name: str, a: Attribution) -> dict[str, Any]:
    row = dict(name=name, method=a.method, target=a.target, value=float(a.values[0]), sum=float(a.attributions.sum()))
    if a.delta is not None:
        row.update(baseline_value=float(a.baseline_values[0]), completeness_error=float(a.delta[0]))
    return row


def explain_run(checkpoint: str | Path, index: int = 0, dataset: str | None = None, data_root: str | None = None,
                download: bool = False, methods: Sequence[str] = ("ig", "saliency"),
                targets: Sequence[int | str] = ("predicted", "nll"), baseline: str = "black", ig_steps: int = 64,
                out_path: str | Path | None = None, device: str = "auto") -> Explanation:
    """Explain test image ``index`` of a trained run's dataset (or ``dataset``) with captum
    (:func:`hybridflow.explain.explain`) and save the image beside one heat-map per method and
    target (default ``explain-<dataset>-<index>.png``). ``baseline="mean"`` averages 512 training
    images. The prediction and bits/dim come from an inference copy (:func:`hybridflow.freeze`). A
    density model (lam 0) has no trained head: the default targets become ``nll`` alone and a class
    target is refused (:class:`~hybridflow.runs.RequestError`).
    """
    model, directory, run = load_model(checkpoint, device)
    spec = data_spec_from_run(run, dataset, data_root, download, None)
    data = spec.load(train=False)
    check_data_shape(model, data, spec.name)
    if index >= len(data):
        raise RequestError(f"--index {index} is out of range: the {spec.name} test split has {len(data)} images")
    for t in targets:
        if isinstance(t, int) and not 0 <= t < model.num_classes:
            raise RequestError(f"class {t} is out of range: the model has {model.num_classes} classes")
    if model.lam == 0:  # a density model's head never trained: class maps would explain noise
        if list(targets) not in (["predicted", "nll"], ["nll"]):
            raise RequestError(f"{directory} is a density model (lam 0): its class head was never trained, so "
                               "only --target nll (which pixels make the image unlikely) can be explained")
        targets = ["nll"]
    image = data.images[index]
    references = replace(spec, limit=512).load(train=True).images if baseline == "mean" else None
    maps = explain(model, image, methods=list(methods), targets=list(targets), baseline=baseline,
                   references=references, n_steps=ig_steps)
    fast = freeze(model)
    with torch.no_grad():
        probs = fast.predict_proba(image[None])[0]
        bpd = float(fast.bits_per_dim(image[None])[0])
    predicted, label = int(probs.argmax()), int(data.labels[index])
    names = data.classes or [str(k) for k in range(model.num_classes)]
    guess = f"predicted {names[predicted]} (p={float(probs[predicted]):.2f}), " if model.lam > 0 else ""
    title = (f"{spec.name} test #{index}" + (f" (label {names[label]})" if label >= 0 else "")
             + f": {guess}{bpd:.2f} bits/dim")
    path = plot_attributions(image, {k: a.attributions[0] for k, a in maps.items()},
                             out_path or f"explain-{dataset_key(Path(spec.name).stem)}-{index}.png", title=title)
    return Explanation(spec.name, index, label, predicted, float(probs[predicted]), bpd,
                       [_attribution_row(k, a) for k, a in maps.items()], str(path), str(directory), title)
