"""``hybridflow data convert``: write a dataset in the ``.npy`` layout that training streams from disk."""

from __future__ import annotations

import click

from ..data import convert_dataset
from .group import cli
from .options import boundary, data_root_option, download_option, emit, json_option, writable_path

__all__ = ["data_group", "convert_command"]


@cli.group("data")
def data_group() -> None:
    """Datasets on disk: convert one to the .npy layout that training streams from."""


@data_group.command("convert")
@click.argument("src")
@click.argument("dst", type=click.Path(file_okay=False), callback=writable_path)
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True,
              help="Which split of a named dataset to convert.")
@data_root_option
@download_option
@click.option("--size", type=click.IntRange(min=1), default=None,
              help="Image folders: resize the shorter side to SIZE and centre-crop a square.")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None,
              help="Image folders: 1 (grey) or 3 (RGB) [default: the first image's].")
@click.option("--chunk", type=click.IntRange(min=1), default=512, show_default=True,
              help="Images decoded and written at a time (bounds the memory used).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes decoding image files in parallel.")
@click.option("--overwrite", is_flag=True, help="Replace a converted dataset already at DST.")
@json_option
@boundary
def convert_command(src, dst, split, data_root, download, size, channels, chunk, workers, overwrite, as_json) -> None:
    """Convert SRC (an image folder, an .npz, or a dataset name with --data-root) to DST/images.npy
    (uint8 N,C,H,W), DST/labels.npy and DST/meta.json, read image by image during training.

    \b
    Examples:
        hybridflow data convert ~/imagenet64/train $HYBRIDFLOW_DATA/imagenet64/train --size 64 --workers 4
        hybridflow data convert mnist runs/mnist-train --download
        hybridflow data convert cifar10-train4000.npz runs/cifar10-train
    """
    summary = convert_dataset(src, dst, root=data_root, train=split == "train", download=download, size=size,
                              channels=None if channels is None else int(channels), chunk=chunk,
                              num_workers=workers, overwrite=overwrite)
    shape = "x".join(map(str, summary["image_shape"]))
    named = f"{len(summary['classes'])} classes" if summary["classes"] else "no class names"  # an .npz may lack them
    emit(as_json, summary, f"wrote {summary['n']:,} images ({shape}, {summary['labelled']:,} labelled, "
                           f"{named}) from {summary['source']} to {summary['dst']}")
