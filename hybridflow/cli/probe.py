"""``hybridflow probe``: linear probes on frozen flow embeddings against raw pixels."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from ..factory import build_model, check_backbone_name, fit_options
from ..probe import compare_probes, embed_images, format_table, raw_pixel_features
from ..runs import check_data_shape, data_spec_from_run, load_model
from ..training import TrainConfig, evaluate_model, resolve_device, save_checkpoint
from ..training import train as run_training
from .group import cli
from .options import (boundary, data_root_option, device_options, download_option, emit, info, json_option,
                      parse_options, set_threads, usage)

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
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True)
@click.option("--lam", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="0 trains the flow by maximum likelihood only (the paper's Table 7 protocol).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Train on N images.")
@click.option("--test-limit", type=click.IntRange(min=1), default=None, help="Probe-test on N images.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Probe seeds (each draws the validation split that picks the regularisation).")
@click.option("--option", "-o", "option_pairs", multiple=True, metavar="KEY=VALUE",
              help="Backbone override for every trained backbone, repeatable.")
@click.option("--full-size", is_flag=True, help="On small images, use the registered configurations as they "
              "are instead of the light probe settings (4 layers / steps, width 32).")
@click.option("--pooled", is_flag=True, help="Probe the pooled latent instead of the full one.")
@click.option("--no-pixels", is_flag=True, help="Leave out the raw-pixel row.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Save each trained backbone as a checkpoint under this folder.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@device_options
@json_option
@boundary
def probe(backbones, checkpoints, dataset, data_root, download, steps, batch_size, lr, lam, limit, test_limit, seeds,
          option_pairs, full_size, pooled, no_pixels, out_dir, seed, quiet, device, threads, as_json) -> None:
    """Linear probes on frozen flow embeddings against raw pixels.

    Trains each --backbone by maximum likelihood (lam=0) on the training split, freezes it,
    fits a standardised logistic regression on its latent (regularisation picked on a held-out
    split) and reports test accuracy and log-loss, mean ± std over seeds: the protocol of the
    paper's Table 7. With no options it uses the embedded digits (8x8, no download) and light
    settings (MixerFlow: 2x2 patches, 4 layers, width 32; Glow: 4 steps, width 32) that train in
    about a minute on 2 CPU cores; runs on one thread unless --threads says otherwise.

    \b
    Examples:
        hybridflow probe --backbone mixerflow
        hybridflow probe -b mixerflow -b glow --seeds 5
        hybridflow probe --checkpoint runs/mnist_density --data-root ../shared/data
    """
    started = time.perf_counter()
    only_checkpoints = bool(checkpoints) and backbones == ("mixerflow",) and \
        click.get_current_context().get_parameter_source("backbones") == click.core.ParameterSource.DEFAULT
    names = [] if only_checkpoints else [check_backbone_name(b) for b in backbones]
    loaded = [load_model(path, device) + (path,) for path in checkpoints]
    set_threads(threads if threads is not None else 1)
    run = loaded[0][2] if loaded else {}
    spec = data_spec_from_run(run, dataset, data_root, download, limit, seed)
    train_data = spec.load(train=True)
    test_data = replace(spec, limit=test_limit).load(train=False)
    for data, what in ((train_data, "training"), (test_data, "test")):
        if int((data.labels >= 0).sum()) < len(data):
            raise usage(f"the {what} split of {spec.name} is not fully labelled: a probe needs labels")
    c, h, w = train_data.image_shape
    header = (f"linear probes on {spec.name} ({c}x{h}x{w}): {len(train_data):,} train / {len(test_data):,} "
              f"test images, {seeds} seed{'s' if seeds > 1 else ''}")
    info(header)
    user_options = parse_options(option_pairs)
    features: dict[str, tuple[Any, Any]] = {}
    models_info = []
    if not no_pixels:
        features["raw pixels"] = (raw_pixel_features(train_data.images), raw_pixel_features(test_data.images))
    small = max(h, w) <= 16 and not full_size
    for index, name in enumerate(names):
        options = fit_options(name, train_data.image_shape, user_options, small=small)
        model = build_model(name, train_data.image_shape, train_data.num_classes, lam, options, seed=seed)
        shown = ", ".join(f"{k}={v}" for k, v in options.items())
        info(f"training {name} ({shown + '; ' if shown else ''}{model.backbone.num_params:,} parameters) "
             f"for {steps} steps, lam={lam:g}")
        t0 = time.perf_counter()
        model = model.to(resolve_device(device))
        if steps > 0:
            config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device,
                                 warmup_steps=min(20, steps // 10), log_every=max(1, steps // 4), progress=not quiet)
            run_training(model, train_data, config)
        seconds = time.perf_counter() - t0
        test_bpd = evaluate_model(model, test_data)["bits_per_dim"]
        label = name if names.count(name) == 1 else f"{name} #{index + 1}"
        if out_dir:
            save_checkpoint(model.cpu(), Path(out_dir) / label.replace(" #", "-"))
        features[label] = (embed_images(model, train_data.images, pooled=pooled),
                           embed_images(model, test_data.images, pooled=pooled))
        models_info.append(dict(name=label, backbone=name, options=options, params=model.backbone.num_params,
                                steps=steps, lam=lam, train_seconds=round(seconds, 1), test_bits_per_dim=test_bpd))
        info(f"  {label}: {seconds:.0f} s, test {test_bpd:.3f} bits/dim")
    for model, directory, _, path in loaded:
        check_data_shape(model, train_data, spec.name)
        label = f"checkpoint {Path(path).name}"
        test_bpd = evaluate_model(model, test_data)["bits_per_dim"]
        features[label] = (embed_images(model, train_data.images, pooled=pooled),
                           embed_images(model, test_data.images, pooled=pooled))
        models_info.append(dict(name=label, backbone=model.config()["backbone"], checkpoint=str(directory),
                                params=model.backbone.num_params, test_bits_per_dim=test_bpd))
    if not features:
        raise usage("nothing to probe: give a --backbone or a --checkpoint (or drop --no-pixels)")
    info("fitting the probes")
    results = compare_probes(features, train_data.labels, test_data.labels, seeds=tuple(range(seed, seed + seeds)))
    elapsed = time.perf_counter() - started
    table = format_table(results)
    payload = dict(dataset=spec.name, image_shape=[c, h, w], n_train=len(train_data), n_test=len(test_data),
                   seeds=list(range(seed, seed + seeds)), models=models_info,
                   results=[r.as_dict() for r in results.values()], elapsed_s=round(elapsed, 1))
    note = ("accuracy and log-loss of a logistic-regression probe on the frozen features (test split); "
            f"higher accuracy / lower log-loss is better; {elapsed:.0f} s in all")
    emit(as_json, payload, f"{header}\n{table}\n{note}")
