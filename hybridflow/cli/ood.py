"""``hybridflow ood``: out-of-distribution detection scores and metrics per scorer."""

from __future__ import annotations

import click

from ..data import SYNTHETIC_OOD
from ..ood import SCORERS, ood_report
from .group import cli
from .options import (boundary, data_root_option, device_options, download_option, emit, json_option, set_threads,
                      usage)

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
@click.option("--checkpoint", "-c", required=True, type=click.Path(), help="A run folder or checkpoint.")
@click.option("--in-data", default=None, help="In-distribution dataset [default: the checkpoint's].")
@click.option("--out-data", required=True, help="Out-of-distribution dataset, or a synthetic set made from the "
              "in-distribution test images: " + ", ".join(f"{k} ({v})" for k, v in SYNTHETIC_OOD.items()) + ".")
@click.option("--score", "scores", default="loglik,typicality,complexity", show_default=True,
              help="Comma-separated scorers: loglik, bpd, typicality, likelihood_ratio, complexity, max_softmax, "
                   "entropy.")
@click.option("--reference", type=click.Path(), default=None,
              help="Checkpoint of the reference model for likelihood_ratio (e.g. trained on perturbed images).")
@data_root_option
@download_option
@click.option("--limit", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Images per set (test splits; the typicality statistics use N training images).")
@click.option("--roc", "roc_path", type=click.Path(dir_okay=False), default=None, help="Write the ROC curves here.")
@click.option("--hist", "hist_path", type=click.Path(dir_okay=False), default=None,
              help="Write histograms of the scores here.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@device_options
@json_option
@boundary
def ood(checkpoint, in_data, out_data, scores, reference, data_root, download, limit, roc_path, hist_path, batch_size,
        device, threads, as_json) -> None:
    """Out-of-distribution detection: score in- and out-of-distribution images, print AUROC,
    AUPR-in, AUPR-out and FPR at 95% TPR (both conventions) per scorer (higher score = more
    in-distribution).

    Raw log-likelihood is one scorer among several: flows often rate other data as *more*
    likely (AUROC below 0.5). typicality uses the training split's NLL statistics.

    \b
    Examples:
        hybridflow ood -c runs/digits --out-data noise --roc roc.png --hist hist.png
        hybridflow ood -c runs/fashion --in-data fashionmnist --out-data mnist --data-root ../shared/data \\
            --score loglik,typicality,complexity,likelihood_ratio --reference runs/fashion-perturbed
    """
    names = parse_scores(scores)
    if "likelihood_ratio" in names and reference is None:
        raise usage("likelihood_ratio needs --reference CHECKPOINT (a second model, e.g. trained on perturbed "
                    "images, Ren et al. 2019)")
    set_threads(threads)
    report = ood_report(checkpoint, out_data, in_data, names, reference, data_root, download, limit, batch_size,
                        roc_path, hist_path, device)
    header = (f"in: {report.in_data} test ({report.n_in:,}), out: {out_data} ({report.n_out:,}); "
              f"checkpoint {report.checkpoint}")
    lines = [header, format_ood_table(report.metrics), *(f"{kind} -> {path}" for kind, path in report.plots.items())]
    emit(as_json, report.as_dict(), "\n".join(lines))
