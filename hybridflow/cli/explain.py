"""``hybridflow explain``: captum attributions of one image's prediction and likelihood."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import torch

from .. import explain as explaining
from ..data import dataset_key
from ..plots import plot_attributions
from ..runs import check_data_shape, data_spec_from_run, load_model
from .group import cli
from .options import (boundary, data_root_option, device_options, download_option, emit, json_option, set_threads,
                      usage)

__all__ = ["explain", "parse_targets"]


def parse_targets(text: str) -> list[Any]:
    """``--target``: both (predicted and nll), predicted, nll or a class index."""
    if text == "both":
        return ["predicted", "nll"]
    if text in ("predicted", "nll"):
        return [text]
    if text.lstrip("-").isdigit():
        return [int(text)]
    raise usage(f"--target must be predicted, nll, both or a class index, got {text!r}")


@cli.command()
@click.option("--checkpoint", "-c", required=True, type=click.Path(), help="A run folder or checkpoint.")
@click.option("--dataset", "-d", default=None, help="[default: the checkpoint's dataset]")
@data_root_option
@download_option
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
@device_options
@json_option
@boundary
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
    method_names = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in method_names if m not in explaining.METHODS]
    if unknown or not method_names:
        raise usage(f"unknown attribution method {', '.join(map(repr, unknown)) or '(none)'}: choose from "
                    f"{', '.join(explaining.METHODS)}")
    targets = parse_targets(target_text)
    set_threads(threads)
    model, directory, run = load_model(checkpoint, device)
    spec = data_spec_from_run(run, dataset, data_root, download, None)
    data = spec.load(train=False)
    check_data_shape(model, data, spec.name)
    if index >= len(data):
        raise usage(f"--index {index} is out of range: the {spec.name} test split has {len(data)} images")
    for t in targets:
        if isinstance(t, int) and not 0 <= t < model.num_classes:
            raise usage(f"class {t} is out of range: the model has {model.num_classes} classes")
    image = data.images[index]
    references = replace(spec, limit=512).load(train=True).images if baseline == "mean" else None
    maps = explaining.explain(model, image, methods=method_names, targets=targets, baseline=baseline,
                              references=references, n_steps=ig_steps)
    with torch.no_grad():
        probs = model.predict_proba(image[None])[0]
        bpd = float(model.bits_per_dim(image[None])[0])
    predicted = int(probs.argmax())
    label = int(data.labels[index])
    names = data.classes or [str(k) for k in range(model.num_classes)]
    out_path = out_path or f"explain-{dataset_key(Path(spec.name).stem)}-{index}.png"
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
    emit(as_json, dict(dataset=spec.name, index=index, label=label, predicted=predicted,
                       probability=float(probs[predicted]), bits_per_dim=bpd, attributions=rows, path=str(path),
                       checkpoint=str(directory)), "\n".join(lines))
