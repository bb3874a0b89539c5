"""``hybridflow eval``: bits/dim and accuracy of a trained model on a dataset."""

from __future__ import annotations

import click

from ..runs import evaluate_run
from .group import cli
from .options import boundary, data_root_option, device_options, download_option, emit, json_option, set_threads

__all__ = ["evaluate_command"]


@cli.command("eval")
@click.option("--checkpoint", "-c", required=True, type=click.Path(),
              help="A run folder, a checkpoint, or pretrained:NAME (a model shipped in the package).")
@click.option("--dataset", "-d", default=None, help="[default: the dataset the checkpoint was trained on]")
@data_root_option
@download_option
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="Which split of the dataset to score.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate on N random images.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Images per evaluation batch (memory only: the figures do not depend on it).")
@click.option("--ema", is_flag=True, help="Use the EMA weights of the checkpoint.")
@device_options
@json_option
@boundary
def evaluate_command(checkpoint, dataset, data_root, download, split, limit, batch_size, ema, device, threads,
                     as_json) -> None:
    """Bits/dim (seeded dequantisation) and accuracy of a trained model on a dataset.

    \b
    Examples:
        hybridflow eval --checkpoint runs/digits
        hybridflow eval -c runs/mnist_density --dataset fashionmnist --download --json
    """
    set_threads(threads)
    figures = evaluate_run(checkpoint, dataset, data_root, download, split, limit, batch_size, ema, device)
    counted = f"{figures['num_examples']:,} images"
    if figures.get("patches"):  # a bag-of-patches model: its figures are per patch
        side = figures["patches"]
        counted = f"{figures['num_images']:,} images as {figures['num_examples']:,} {side}x{side} patches"
    text = f"{figures['dataset']} {split} ({counted}): {figures['bits_per_dim']:.4f} bits/dim"
    if figures["accuracy"] is not None:
        text += f", accuracy {100 * figures['accuracy']:.2f}%, cross-entropy {figures['cross_entropy']:.4f} nats"
    emit(as_json, figures, text)
