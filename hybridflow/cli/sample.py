"""``hybridflow sample``: draw images from a trained flow into one PNG grid."""

from __future__ import annotations

import click

from ..runs import sample_run
from .group import cli
from .options import FiniteFloat, boundary, device_options, emit, image_path, json_option, set_threads

__all__ = ["sample"]


@cli.command()
@click.option("--checkpoint", "-c", required=True, type=click.Path(),
              help="A run folder, a checkpoint, or pretrained:NAME (a model shipped in the package).")
@click.option("--n", "-n", "count", type=click.IntRange(min=1, max=4096), default=64, show_default=True,
              help="How many samples (drawn as a square grid).")
@click.option("--temperature", "-t", type=FiniteFloat(min=0), default=0.7, show_default=True,
              help="Scale of the latent's standard deviation (1 = the model's distribution; < 1 cleaner).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="samples.png", show_default=True,
              callback=image_path,
              help="The grid image: .png, .jpg or another extension Pillow writes.")
@click.option("--nrow", type=click.IntRange(min=1), default=None, help="Images per row [default: square grid].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the latent draws.")
@click.option("--ema", is_flag=True, help="Use the EMA weights of the checkpoint.")
@device_options
@json_option
@boundary
def sample(checkpoint, count, temperature, out_path, nrow, seed, ema, device, threads, as_json) -> None:
    """Draw images from a trained flow and save them as one PNG grid.

    \b
    Examples:
        hybridflow sample --checkpoint runs/digits --n 100 --temperature 0.8 --out digits.png
    """
    set_threads(threads)
    # A model trained on shuffled pixels is shown in the images' own pixel order.
    payload = sample_run(checkpoint, count, temperature, out_path, nrow, seed, ema, device)
    emit(as_json, payload, f"{count} samples at temperature {temperature:g} -> {payload['path']}")
