"""``hybridflow train``: train a hybrid model, from options or a recipe, into a run folder."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..factory import check_backbone_name, check_train_settings
from ..recipes import SCALES, load_recipe
from ..run_settings import merge_train_settings
from ..runs import TRAIN_DEFAULTS, TrainingInterrupted, find_run, train_run
from ..training import TensorBoardCallback
from ..training.distributed import is_main_process
from .group import cli
from .options import (AdamBetas, ClassList, FiniteFloat, boundary, data_root_option, device_options, download_option,
                      emit, info, json_option, parse_options, set_threads, usage, writable_path)

__all__ = ["train", "planned_settings"]


def planned_settings(options: dict[str, Any], recipe: str | None, scale: str, out_dir: str | None,
                     resume: bool) -> dict[str, Any]:
    """The settings :func:`~hybridflow.runs.train_run` will merge (defaults, the resumed run's, the
    recipe's, then ``options``: :func:`~hybridflow.run_settings.merge_train_settings`), read before
    any data loads so that they can be checked first."""
    saved = find_run(out_dir) if (resume and out_dir) else {}
    from_recipe = load_recipe(recipe, scale)[0] if recipe else {}
    return merge_train_settings(options, from_recipe, saved, out_dir or "the run folder")


@cli.command()
@click.option("--recipe", "recipe_name", metavar="FILE", help="A recipe (NAME or .toml file): its values are defaults "
              "that explicit options override. See `hybridflow recipes`.")
@click.option("--scale", type=click.Choice(SCALES), default="cpu", show_default=True,
              help="Which table of the recipe to run.")
@click.option("--backbone", "-b", default=TRAIN_DEFAULTS["backbone"], show_default=True,
              help="A registered backbone or a family (mixerflow, glow).")
@click.option("--dataset", "-d", default=TRAIN_DEFAULTS["dataset"], show_default=True,
              help="digits (embedded), mnist, fashionmnist, cifar10, svhn, celeba, imagenet32, imagenet64, "
                   "galaxy32, animefaces, or a path to an .npz / image folder.")
@data_root_option
@download_option
@click.option("--lam", type=FiniteFloat(min=0), default=TRAIN_DEFAULTS["lam"], show_default=True,
              help="Weight of the classification loss: 0 = pure flow (maximum likelihood).")
@click.option("--steps", type=click.IntRange(min=1), default=TRAIN_DEFAULTS["steps"], show_default=True,
              help="Optimiser steps in all (with --resume: the total to reach, not more steps).")
@click.option("--batch-size", type=click.IntRange(min=1), default=TRAIN_DEFAULTS["batch_size"], show_default=True,
              help="Images per step (at least 2: BatchNorm).")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=TRAIN_DEFAULTS["lr"], show_default=True,
              help="Adam's peak learning rate (cosine decay to 0 at the last step).")
@click.option("--betas", type=AdamBetas(), default=None, metavar="B1,B2",
              help="Adam's betas [default: 0.9,0.999]. 0.9,0.99 trained both MixerFlow and Glow faster in "
                   "10-minute CPU runs (BENCHMARKS.md, section 11).")
@click.option("--warmup-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="Linear warm-up from 0 over this many steps, then the schedule.")
@click.option("--ema-decay", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=None,
              help="Keep an exponential moving average of the weights (e.g. 0.999).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Train on a random subset of N images.")
@click.option("--classes", type=ClassList(), default=None, metavar="0-4",
              help="Train on these classes only (0-4, 0,1,2,3,4 or 0-2,7), in both splits; labels are kept as "
                   "they are (the head keeps every class of the dataset). Stored in run.json for later commands.")
@click.option("--val-limit", type=click.IntRange(min=1), default=TRAIN_DEFAULTS["val_limit"], show_default=True,
              help="Validate on N test images.")
@click.option("--labelled-fraction", type=FiniteFloat(0, 1, min_open=True), default=None,
              help="Keep the labels of this fraction of the training images (stratified); the rest are "
                   "unlabelled and train the density only (semi-supervised).")
@click.option("--labelled-per-batch", type=click.IntRange(min=0), default=None, metavar="K",
              help="Semi-supervised: every batch holds exactly K labelled images (cycled, reshuffled each "
                   "cycle) and batch_size - K unlabelled ones; lam then weighs the CE by lam*K/batch_size. "
                   "0 turns a recipe's K off (batches drawn uniformly).")
@click.option("--patches", type=click.IntRange(min=1), default=None, metavar="P",
              help="Train on every image's non-overlapping PxP patches (a bag-of-patches model: the "
                   "likelihood_ratio reference of `hybridflow ood`).")
@click.option("--shuffle", type=click.Choice(["local", "global"]), default=None,
              help="Permute the pixels (the paper's section 5.4).")
@click.option("--option", "-o", "option_pairs", multiple=True, metavar="KEY=VALUE",
              help="Backbone override, repeatable (e.g. -o patch_size=2 -o hidden=32).")
@click.option("--pooled", is_flag=True, help="Put the classifier head on the pooled latent (--head-input pooled).")
@click.option("--head-input", type=click.Choice(["latent", "pooled", "hidden"]), default=None,
              help="What the classifier head reads: the flattened latent (default), the latent pooled over "
                   "positions, or the coupling conditioners' hidden units from the same pass (hidden).")
@click.option("--pseudo-labels", type=FiniteFloat(0, 1, min_open=True), default=None, metavar="THRESHOLD",
              help="Semi-supervised: each step, unlabelled images the model predicts with at least this "
                   "probability train the head with that guess (FixMatch-style; 0.95 with --align-pseudo-labels "
                   "and --translate 2 took MNIST with 100 labels from 70.6% to 92-93% in 10 CPU-minutes).")
@click.option("--translate", type=click.IntRange(min=0), default=None, metavar="PIXELS",
              help="Move each training image by a random offset of up to PIXELS on both axes (seeded by the "
                   "step; with --pseudo-labels the guesses come from the unmoved images). 0 turns it off.")
@click.option("--align-pseudo-labels/--no-align-pseudo-labels", default=TRAIN_DEFAULTS["align_pseudo_labels"],
              help="With --pseudo-labels: align the guesses' class distribution over each batch to equal "
                   "classes before the threshold, so that no class takes over another's images.")
@click.option("--flip/--no-flip", default=TRAIN_DEFAULTS["flip"],
              help="Mirror each training image left-right with probability 1/2 (as Glow trains CIFAR-10).")
@click.option("--workers", "num_workers", type=click.IntRange(min=0), default=TRAIN_DEFAULTS["num_workers"],
              show_default=True, help="DataLoader worker processes reading a dataset streamed from disk.")
@click.option("--tensorboard", "tensorboard_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Also write the metrics as TensorBoard scalars into DIR (needs `pip install tensorboard`).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, callback=writable_path,
              help="Run folder: checkpoints/, metrics.jsonl, run.json, curves.png [default: runs/<recipe or "
                   "backbone>-<dataset>].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Delete the checkpoints already in --out and start afresh.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the weights, the data order and the noise (a run is reproducible from it).")
@click.option("--log-every", type=click.IntRange(min=1), default=50, show_default=True,
              help="Steps between training log lines (metrics.jsonl and the progress bar's figures).")
@click.option("--eval-every", type=click.IntRange(min=1), default=None, help="Validate every N steps (and at the end).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None,
              help="Checkpoint every N steps (always at the end and on Ctrl-C).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--plot/--no-plot", default=True, show_default=True, help="Write curves.png from the metrics log.")
@device_options
@json_option
@click.pass_context
@boundary
def train(ctx: click.Context, recipe_name, scale, option_pairs, out_dir, resume, overwrite, quiet, plot, device,
          threads, as_json, download, tensorboard_dir, **given) -> None:
    """Train a hybrid model (flow + linear head): bits/dim + lam * cross-entropy.

    A progress bar shows bits/dim and accuracy; checkpoints (safetensors) and a metrics log go to
    --out; a final line sums up. Ctrl-C writes a checkpoint; --resume continues from it.

    \b
    Examples:
        hybridflow train --backbone mixerflow --dataset digits --steps 300 --out runs/digits
        hybridflow train --recipe mnist_density --scale cpu --download
        hybridflow train --out runs/digits --resume --steps 600
        hybridflow train --dataset cifar10 --flip --workers 4 --tensorboard runs/tb
        hybridflow train --recipe digits_0to4_density    # a flow of the digits 0-4 (--classes 0-4)

    Settings that cannot work (a batch of 1 image for a backbone with BatchNorm, -o hidden=abc, a
    NaN learning rate in a recipe, a device this machine lacks) stop it with exit code 2 before
    any data loads.
    """
    if resume and overwrite:
        raise usage("--resume continues the run in --out and --overwrite deletes it: give one of them")
    # Options given on the command line (or by environment) override the recipe and the resumed run.
    options = {key: value for key, value in given.items()
               if ctx.get_parameter_source(key) not in (click.core.ParameterSource.DEFAULT, None)}
    if options.get("labelled_per_batch") == 0:  # off: overrides a recipe's K
        options["labelled_per_batch"] = None
    planned = planned_settings(options, recipe_name, scale, out_dir, resume)
    backbone_options = parse_options(option_pairs, check_backbone_name(planned["backbone"]))
    planned["backbone_options"].update(backbone_options)
    check_train_settings(planned, device)
    callbacks = [TensorBoardCallback(tensorboard_dir)] if tensorboard_dir else []  # no tensorboard: fails here
    set_threads(threads)
    main = is_main_process()  # under torchrun every rank runs this command: rank 0 alone reports
    try:
        run = train_run(options, recipe_name, scale, out_dir, resume, overwrite, backbone_options,
                        download, device, progress=not quiet and main, plot=plot, log=info if main else _quiet,
                        callbacks=callbacks)
    except TrainingInterrupted as interrupted:
        if not main:
            sys.exit(130)
        click.echo(f"interrupted: checkpoint in {interrupted.out_dir}; continue with "
                   f"`hybridflow train --out {interrupted.out_dir} --resume`", err=True)
        sys.exit(130)
    if not main:
        return
    m, settings = run.result.metrics, run.settings
    parts = [f"{run.backbone} on {run.dataset}: {run.result.steps} steps in {m['elapsed_s']:.0f} s"]
    if m.get("bits_per_dim") is not None:
        parts.append(f"train {m['bits_per_dim']:.3f} bits/dim")
    if m.get("val_bits_per_dim") is not None:
        parts.append(f"val {m['val_bits_per_dim']:.3f} bits/dim")
    if m.get("val_accuracy") is not None and settings["lam"] > 0:
        parts.append(f"val accuracy {100 * m['val_accuracy']:.1f}%")
    if m.get("nonfinite_steps"):
        parts.append(f"{m['nonfinite_steps']} skipped steps")
    emit(as_json, run.summary(), ", ".join(parts) + f" -> {run.result.checkpoint}")


def _quiet(message: str) -> None:
    """The setup line of a rank other than 0: dropped."""
