"""``hybridflow train``: train a hybrid model, from options or a recipe, into a run folder."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click

from ..data import DataSpec, check_dataset_name, keep_labels
from ..factory import build_model, check_backbone_name, fit_options
from ..recipes import SCALES, load_recipe
from ..training import TrainConfig
from ..training import train as run_training
from ..runs import TRAIN_DEFAULTS, default_run_folder, find_run, prepare_run_folder, write_run_file
from .group import cli
from .options import (boundary, data_root_option, device_options, download_option, emit, info, json_option,
                      parse_options, set_threads)

__all__ = ["train"]


@cli.command()
@click.option("--recipe", "recipe_name", metavar="FILE", help="A recipe (recipes/*.toml): its values are defaults "
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
@click.option("--lam", type=click.FloatRange(min=0), default=TRAIN_DEFAULTS["lam"], show_default=True,
              help="Weight of the classification loss: 0 = pure flow (maximum likelihood).")
@click.option("--steps", type=click.IntRange(min=1), default=TRAIN_DEFAULTS["steps"], show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=TRAIN_DEFAULTS["batch_size"], show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=TRAIN_DEFAULTS["lr"], show_default=True)
@click.option("--warmup-steps", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--ema-decay", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Keep an exponential moving average of the weights (e.g. 0.999).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Train on a random subset of N images.")
@click.option("--val-limit", type=click.IntRange(min=1), default=TRAIN_DEFAULTS["val_limit"], show_default=True,
              help="Validate on N test images.")
@click.option("--labelled-fraction", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Keep the labels of this fraction of the training images (stratified); the rest are "
                   "unlabelled and train the density only (semi-supervised).")
@click.option("--shuffle", type=click.Choice(["local", "global"]), default=None,
              help="Permute the pixels (the paper's section 5.4).")
@click.option("--option", "-o", "option_pairs", multiple=True, metavar="KEY=VALUE",
              help="Backbone override, repeatable (e.g. -o patch_size=2 -o hidden=32).")
@click.option("--pooled", is_flag=True, help="Put the classifier head on the pooled latent.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run folder: checkpoints/, metrics.jsonl, run.json, curves.png [default: runs/<recipe or "
                   "backbone>-<dataset>].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Delete the checkpoints already in --out and start afresh.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--log-every", type=click.IntRange(min=1), default=50, show_default=True)
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
          threads, as_json, download, **given) -> None:
    """Train a hybrid model (flow + linear head): bits/dim + lam * cross-entropy.

    A progress bar shows bits/dim and accuracy; checkpoints (safetensors) and a metrics log go to
    --out; a final line sums up. Ctrl-C writes a checkpoint; --resume continues from it.

    \b
    Examples:
        hybridflow train --backbone mixerflow --dataset digits --steps 300 --out runs/digits
        hybridflow train --recipe recipes/mnist_density --scale cpu --data-root ../shared/data
        hybridflow train --out runs/digits --resume --steps 600
    """
    recipe, meta = ({}, {}) if recipe_name is None else load_recipe(recipe_name, scale)
    out_path = Path(out_dir) if out_dir else None
    saved_run = find_run(out_path) if (resume and out_path is not None) else {}
    # Later sources win: the defaults, the resumed run's settings, the recipe, the options given.
    settings = dict(TRAIN_DEFAULTS)
    settings.update(saved_run.get("settings", {}))
    settings.update(recipe)
    for key, value in given.items():
        if ctx.get_parameter_source(key) not in (click.core.ParameterSource.DEFAULT, None) or \
                (key not in settings and value is not None):
            settings[key] = value
    settings["backbone_options"] = {**settings.get("backbone_options", {}), **parse_options(option_pairs)}
    name = check_backbone_name(settings["backbone"])
    check_dataset_name(settings["dataset"])
    set_threads(threads)
    if out_path is None:
        out_path = default_run_folder(name, settings["dataset"], meta.get("name") if meta else None, scale)
    prepare_run_folder(out_path, resume, overwrite)

    spec = DataSpec(settings["dataset"], settings.get("data_root"), download, settings["limit"], settings["seed"],
                    settings["shuffle"], settings["shuffle_patch"], settings["shuffle_seed"], settings["size"])
    train_data = spec.load(train=True)
    val_data = replace(spec, limit=settings["val_limit"]).load(train=False)
    if settings["labelled_fraction"] is not None:
        train_data = keep_labels(train_data, settings["labelled_fraction"], settings["seed"])
    options = fit_options(name, train_data.image_shape, settings["backbone_options"])
    model = build_model(name, train_data.image_shape, train_data.num_classes, settings["lam"], options,
                        settings["pooled"], settings["seed"])
    labelled = int((train_data.labels >= 0).sum())
    shuffled = f" ({spec.shuffle} shuffle)" if spec.shuffle else ""
    info(f"{name} ({model.backbone.num_params:,} parameters) on {spec.name}{shuffled}: {len(train_data):,} train "
         f"images ({labelled:,} labelled), {len(val_data):,} validation, lam={settings['lam']:g}, "
         f"{settings['steps']} steps of {settings['batch_size']} -> {out_path}")
    write_run_file(out_path, dict(settings=dict(settings), backbone=name, backbone_options=options,
                                  data=spec.to_dict(), recipe=meta or None, scale=scale if meta else None))
    config = TrainConfig(steps=settings["steps"], batch_size=settings["batch_size"], lr=settings["lr"],
                         betas=tuple(settings["betas"]), warmup_steps=settings["warmup_steps"],
                         grad_clip=settings["grad_clip"], ema_decay=settings["ema_decay"],
                         log_every=settings["log_every"], eval_every=settings["eval_every"],
                         out_dir=out_path, checkpoint_every=settings["checkpoint_every"], seed=settings["seed"],
                         device=device, progress=not quiet)
    try:
        result = run_training(model, train_data, config, val_data=val_data, resume=out_path if resume else None)
    except KeyboardInterrupt:
        click.echo(f"interrupted: checkpoint in {out_path}; continue with "
                   f"`hybridflow train --out {out_path} --resume`", err=True)
        sys.exit(130)
    curves = None
    if plot and result.history:
        from ..plots import plot_training_curves

        curves = plot_training_curves(result.history, out_path / "curves.png", title=f"{name} on {spec.name}")
    m = result.metrics
    summary = {**m, **dict(backbone=name, dataset=spec.name, steps=result.steps, out=str(out_path),
                           checkpoint=str(result.checkpoint) if result.checkpoint else None,
                           curves=str(curves) if curves else None, params=model.backbone.num_params)}
    parts = [f"{name} on {spec.name}: {result.steps} steps in {m['elapsed_s']:.0f} s"]
    if m.get("bits_per_dim") is not None:
        parts.append(f"train {m['bits_per_dim']:.3f} bits/dim")
    if m.get("val_bits_per_dim") is not None:
        parts.append(f"val {m['val_bits_per_dim']:.3f} bits/dim")
    if m.get("val_accuracy") is not None and settings["lam"] > 0:
        parts.append(f"val accuracy {100 * m['val_accuracy']:.1f}%")
    if m.get("nonfinite_steps"):
        parts.append(f"{m['nonfinite_steps']} skipped steps")
    emit(as_json, summary, ", ".join(parts) + f" -> {result.checkpoint}")
