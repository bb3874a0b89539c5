"""``hybridflow explain``: captum attributions of one image's prediction and likelihood."""

from __future__ import annotations

from typing import Any

import click

from ..explain import METHODS
from ..explaining import explain_run
from .group import cli
from .options import (boundary, data_root_option, device_options, download_option, emit, json_option, set_threads,
                      usage, writable_path)

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
@click.option("--checkpoint", "-c", required=True, type=click.Path(),
              help="A run folder, a checkpoint, or pretrained:NAME (a model shipped in the package).")
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
@click.option("--ig-steps", type=click.IntRange(min=2), default=64, show_default=True,
              help="Integrated Gradients' path steps: more steps, a smaller completeness error.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, callback=writable_path,
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
    unknown = [m for m in method_names if m not in METHODS]
    if unknown or not method_names:
        raise usage(f"unknown attribution method {', '.join(map(repr, unknown)) or '(none)'}: choose from "
                    f"{', '.join(METHODS)}")
    targets = parse_targets(target_text)
    set_threads(threads)
    result = explain_run(checkpoint, index, dataset, data_root, download, method_names, targets, baseline, ig_steps,
                         out_path, device)
    lines = [result.title]
    for row in result.attributions:
        line = f"  {row['name']}: sum {row['sum']:+.4f}"
        if "completeness_error" in row:
            line += (f" = f(x) - f(baseline) {row['value'] - row['baseline_value']:+.4f} "
                     f"(error {row['completeness_error']:+.1e})")
        lines.append(line)
    lines.append(f"heat-maps -> {result.path}")
    emit(as_json, result.as_dict(), "\n".join(lines))
