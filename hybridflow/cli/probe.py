"""``hybridflow probe``: linear probes on frozen flow embeddings against raw pixels."""

from __future__ import annotations

import click

from ..factory import check_backbone_name
from ..features import DEFAULT_FEATURES, FEATURE_SETS
from ..probing import run_probe
from .group import cli
from .options import (FiniteFloat, boundary, data_root_option, device_options, download_option, emit, info,
                      json_option, parse_options, set_threads, writable_path)

__all__ = ["probe"]


@cli.command()
@click.option("--backbone", "-b", "backbones", multiple=True, default=("mixerflow",), show_default=True,
              help="A backbone to train (by maximum likelihood) and probe; repeat to compare several.")
@click.option("--checkpoint", "-c", "checkpoints", multiple=True, type=click.Path(),
              help="Probe a trained model instead (repeatable); with only checkpoints no backbone is trained.")
@click.option("--dataset", "-d", default=None, help="[default: digits, or the checkpoint's dataset]")
@data_root_option
@download_option
@click.option("--steps", type=click.IntRange(min=0), default=400, show_default=True,
              help="Training steps of each backbone (0 probes the untrained flow).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=2e-3, show_default=True)
@click.option("--lam", type=FiniteFloat(min=0), default=0.0, show_default=True,
              help="0 trains the flow by maximum likelihood only (the paper's Table 7 protocol).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Train on N images.")
@click.option("--test-limit", type=click.IntRange(min=1), default=None, help="Probe-test on N images.")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Probe seeds (each draws the validation split that picks the regularisation); default 3, "
                   "or 1 on over 10,000 training images (full MNIST: each seed costs minutes).")
@click.option("--option", "-o", "option_pairs", multiple=True, metavar="KEY=VALUE",
              help="Backbone override for every trained backbone, repeatable.")
@click.option("--full-size", is_flag=True, help="On small images, use the registered configurations as they "
              "are instead of the light probe settings (4 layers / steps, width 32).")
@click.option("--features", "-f", "feature_sets", multiple=True, type=click.Choice(FEATURE_SETS),
              help=f"What to probe, repeatable (one row each) [default: {DEFAULT_FEATURES}]: depths = the latents after "
              "every block; hidden = the coupling conditioners' hidden units, mean- and max-pooled; latent = the "
              "flattened final latent; pooled = the latent averaged over positions.")
@click.option("--pooled", is_flag=True, help="Short for --features pooled.")
@click.option("--no-pixels", is_flag=True, help="Leave out the raw-pixel row.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, callback=writable_path,
              help="Save each trained backbone as a checkpoint under this folder.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@device_options
@json_option
@boundary
def probe(backbones, checkpoints, dataset, data_root, download, steps, batch_size, lr, lam, limit, test_limit, seeds,
          option_pairs, full_size, feature_sets, pooled, no_pixels, out_dir, seed, quiet, device, threads,
          as_json) -> None:
    """Linear probes on frozen flow embeddings against raw pixels.

    Trains each --backbone by maximum likelihood (lam=0) on the training split, freezes it,
    fits a standardised logistic regression on its features (regularisation picked on a
    held-out split) and reports test accuracy and log-loss, mean ± std over seeds: the protocol
    of the paper's Table 7. The features are, by default, the latents after every block and
    the hidden units of the coupling conditioners (MixerFlow's MLP-Mixer blocks), pooled over
    the rows they share; --features latent probes the flattened latent instead. With no options it uses the embedded digits (8x8, no download) and light
    settings (MixerFlow: 2x2 patches, 4 layers, width 32; Glow: 4 steps, width 32) that train in
    about a minute on 2 CPU cores; runs on one thread unless --threads says otherwise.

    \b
    Examples:
        hybridflow probe --backbone mixerflow
        hybridflow probe -b mixerflow -b glow --seeds 5
        hybridflow probe --features hidden --features latent
        hybridflow probe --checkpoint runs/mnist_density --download
    """
    # Only checkpoints given and --backbone left at its default: train nothing.
    only_checkpoints = bool(checkpoints) and backbones == ("mixerflow",) and \
        click.get_current_context().get_parameter_source("backbones") == click.core.ParameterSource.DEFAULT
    options = parse_options(option_pairs)
    for name in backbones:  # each -o value checked against each backbone's option types, before data loads
        parse_options(option_pairs, check_backbone_name(name))
    set_threads(threads if threads is not None else 1)
    report = run_probe(() if only_checkpoints else backbones, checkpoints, dataset, data_root, download, steps,
                       batch_size, lr, lam, limit, test_limit, seeds, options, full_size, pooled, not no_pixels,
                       out_dir, seed, device, progress=not quiet, log=info, features=feature_sets or None)
    note = ("accuracy and log-loss of a logistic-regression probe on the frozen features (test split); "
            f"higher accuracy / lower log-loss is better; {report.elapsed_s:.0f} s in all")
    emit(as_json, report.as_dict(), f"{report.header}\n{report.table()}\n{note}")
