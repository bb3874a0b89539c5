"""``hybridflow ood``: out-of-distribution detection scores and metrics per scorer."""

from __future__ import annotations

from typing import Any

import click

from ..data import SYNTHETIC_OOD
from ..data.subsets import parse_classes
from ..ood import SCORERS, ood_report
from ..ood.report import ood_recipe_settings
from ..recipes import SCALES
from .group import cli
from .options import (ClassList, boundary, data_root_option, device_options, download_option, emit, json_option, set_threads,
                      usage, writable_path)

__all__ = ["ood", "format_ood_table", "parse_scores"]

#: Short names the command line accepts for scorers.
SCORER_ALIASES = {"ratio": "likelihood_ratio", "lr": "likelihood_ratio", "msp": "max_softmax"}


def parse_scores(text: str) -> list[str]:
    """Comma-separated scorer names (aliases resolved), or a usage error naming the unknown ones."""
    names = [SCORER_ALIASES.get(n, n) for n in (s.strip() for s in text.split(",")) if n]
    unknown = [n for n in names if n not in SCORERS]
    if unknown or not names:
        raise usage(f"unknown scorer {', '.join(map(repr, unknown)) or '(none)'}: choose from {', '.join(SCORERS)}")
    return names


def format_ood_table(rows: dict[str, dict[str, float]]) -> str:
    """An aligned table: scorer, AUROC, AUPR-in, AUPR-out and the FPR at 95% TPR with inliers
    positive (FPR95-in: outliers accepted) and with outliers positive (FPR95-out: pytorch-ood's)."""
    header = f"{'scorer':<18}{'AUROC':>8}{'AUPR-in':>9}{'AUPR-out':>10}{'FPR95-in':>10}{'FPR95-out':>11}"
    lines = [header]
    for name, m in rows.items():
        lines.append(f"{name:<18}{m['auroc']:>8.3f}{m['aupr_in']:>9.3f}{m['aupr_out']:>10.3f}"
                     f"{m['fpr_at_95_tpr_in']:>10.3f}{m['fpr_at_95_tpr_out']:>11.3f}")
    return "\n".join(lines)


@cli.command()
@click.option("--recipe", "recipe_name", metavar="NAME", default=None,
              help="An OOD recipe (see `hybridflow recipes`): the model, the sets and the scorers; explicit options "
                   "override it.")
@click.option("--scale", type=click.Choice(SCALES), default="cpu", show_default=True,
              help="Which table of the recipe to run.")
@click.option("--checkpoint", "-c", default=None, type=click.Path(),
              help="A run folder, checkpoint or pretrained:NAME (required without --recipe).")
@click.option("--in-data", default=None, help="In-distribution dataset [default: the checkpoint's].")
@click.option("--out-data", default=None, help="Out-of-distribution dataset (required without --recipe), or a "
              "synthetic set made from the in-distribution test images: "
              + ", ".join(f"{k} ({v})" for k, v in SYNTHETIC_OOD.items()) + ".")
@click.option("--in-classes", type=ClassList(), default=None, metavar="0-4",
              help="Keep these classes of the in-distribution set (0-4 or 0,1,2) [default: the run's own classes].")
@click.option("--out-classes", type=ClassList(), default=None, metavar="5-9",
              help="Keep these classes of the out-of-distribution set [default: all], e.g. the held-out classes of "
                   "the same dataset: --out-data digits --out-classes 5-9.")
@click.option("--score", "scores", default="loglik,typicality,complexity", show_default=True,
              help="Comma-separated scorers: loglik, bpd, typicality, likelihood_ratio, complexity, max_softmax, "
                   "entropy.")
@click.option("--reference", type=click.Path(), default=None,
              help="Checkpoint of the reference model for likelihood_ratio (e.g. trained on perturbed images).")
@data_root_option
@download_option
@click.option("--limit", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Images per set (test splits; the typicality statistics use N training images).")
@click.option("--roc", "roc_path", type=click.Path(dir_okay=False), default=None, callback=writable_path,
              help="Write the ROC curves here.")
@click.option("--hist", "hist_path", type=click.Path(dir_okay=False), default=None, callback=writable_path,
              help="Write histograms of the scores here.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@device_options
@json_option
@click.pass_context
@boundary
def ood(ctx: click.Context, recipe_name, scale, checkpoint, in_data, out_data, in_classes, out_classes, scores, reference,
        data_root, download, limit, roc_path, hist_path, batch_size, device, threads, as_json) -> None:
    """Out-of-distribution detection: score in- and out-of-distribution images, print AUROC,
    AUPR-in, AUPR-out and FPR at 95% TPR (both conventions) per scorer (higher score = more
    in-distribution).

    Raw log-likelihood is one scorer among several: flows often rate other data as *more*
    likely (AUROC below 0.5). typicality uses the training split's NLL statistics.

    \b
    Examples:
        hybridflow ood --recipe fashionmnist_mnist_ood --download
        hybridflow ood -c runs/digits04 --out-data digits --out-classes 5-9   # a run of train --classes 0-4
        hybridflow ood -c runs/digits --out-data noise --roc roc.png --hist hist.png
        hybridflow ood -c runs/fashion --in-data fashionmnist --out-data mnist --download \\
            --score loglik,typicality,complexity,likelihood_ratio --reference runs/fashion-perturbed
    """
    names = parse_scores(scores)
    if recipe_name is not None:
        # the recipe's values, then the options given on the command line (or by environment)
        given = {key: value for key, value in dict(checkpoint=checkpoint, in_data=in_data, out_data=out_data,
                                                   in_classes=in_classes, out_classes=out_classes,
                                                   scorers=names, reference=reference, data_root=data_root,
                                                   limit=limit, batch_size=batch_size).items()
                 if ctx.get_parameter_source("scores" if key == "scorers" else key)
                 not in (click.core.ParameterSource.DEFAULT, None)}
        settings = ood_recipe_settings(recipe_name, scale, **given)
    else:
        missing = [option for option, value in (("--checkpoint", checkpoint), ("--out-data", out_data)) if not value]
        if missing:
            raise usage(f"{' and '.join(missing)} needed (or --recipe NAME: see `hybridflow recipes`)")
        settings = dict(checkpoint=checkpoint, out_data=out_data, in_data=in_data, scorers=names, reference=reference,
                        data_root=data_root, limit=limit, batch_size=batch_size)
        settings.update({key: value for key, value in dict(in_classes=in_classes, out_classes=out_classes).items()
                         if value is not None})
    if "likelihood_ratio" in settings["scorers"] and settings["reference"] is None:
        raise usage("likelihood_ratio needs --reference CHECKPOINT (a second model, e.g. trained on perturbed "
                    "images, Ren et al. 2019)")
    set_threads(threads)
    report = ood_report(**settings, download=download, roc_path=roc_path, hist_path=hist_path, device=device)
    def named(data: str, classes: Any) -> str:
        return data if classes is None else f"{data} classes {_ranges(list(parse_classes(classes)))}"

    in_name = named(report.in_data, getattr(report, "in_classes", None) or settings.get("in_classes"))
    out_name = named(settings["out_data"], settings.get("out_classes"))
    header = (f"in: {in_name} test ({report.n_in:,}), out: {out_name} ({report.n_out:,}); "
              f"checkpoint {report.checkpoint}")
    lines = [header, format_ood_table(report.metrics), *(f"{kind} -> {path}" for kind, path in report.plots.items())]
    emit(as_json, report.as_dict(), "\n".join(lines))


def _ranges(classes: list[int]) -> str:
    """``[0, 1, 2, 4]`` as ``0-2,4``."""
    parts, start = [], None
    for i, c in enumerate(classes):
        start = c if start is None else start
        if i + 1 == len(classes) or classes[i + 1] != c + 1:
            parts.append(str(c) if c == start else f"{start}-{c}")
            start = None
    return ",".join(parts)
