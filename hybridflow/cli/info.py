"""``hybridflow backbones``, ``hybridflow recipes`` and ``hybridflow pretrained``: what the library offers."""

from __future__ import annotations

import click

from ..backbones import FAMILY_DEFAULTS
from ..factory import describe_backbones
from ..pretrained import list_pretrained
from ..recipes import list_recipes
from .group import cli
from .options import CLIError, boundary, emit, json_option, usage

__all__ = ["backbones", "recipes", "pretrained"]


@cli.command()
@click.option("--pattern", "-p", default=None, help="Shell-style filter, e.g. 'mixerflow_*'.")
@click.option("--params", "count_params", is_flag=True,
              help="Build each backbone at its default input shape and count its parameters (slower).")
@json_option
@boundary
def backbones(pattern, count_params, as_json) -> None:
    """List the registered backbones (and the families: mixerflow -> mixerflow_tiny, glow -> glow_tiny).

    \b
    Examples:
        hybridflow backbones
        hybridflow backbones --pattern 'mixerflow_tiny*' --params
    """
    rows = describe_backbones(pattern, count_params)
    if not rows:
        raise usage(f"no backbone matches {pattern!r}; see `hybridflow backbones`")
    width = max(len(r["name"]) for r in rows)
    lines = []
    for r in rows:
        extra = f"  {'x'.join(map(str, r['input_shape'])):>8}  {r['params']:>11,}" if count_params else ""
        lines.append(f"{r['name']:<{width}}{extra}  {r['description']}")
    if count_params:
        lines.insert(0, f"{'name':<{width}}  {'input':>8}  {'parameters':>11}  description")
    families = ", ".join(f"{k} -> {v}" for k, v in FAMILY_DEFAULTS.items())
    emit(as_json, dict(backbones=rows, families=dict(FAMILY_DEFAULTS)), "\n".join(lines) + f"\nfamilies: {families}")


@cli.command()
@json_option
@boundary
def recipes(as_json) -> None:
    """List the recipes: one per experiment, at paper and CPU scale (shipped in hybridflow/recipe_files).

    \b
    Example:
        hybridflow recipes
        hybridflow train --recipe cifar10_density --scale cpu --download
        hybridflow ood --recipe fashionmnist_mnist_ood --download
    """
    rows = list_recipes()
    if not rows:
        raise CLIError("no recipes found (looked in ./recipes and beside the package)")
    width = max(len(r["name"]) for r in rows)
    emit(as_json, dict(recipes=rows), "\n".join(f"{r['name']:<{width}}  [{r['kind']}] {r['reproduces']}" for r in rows))


@cli.command()
@json_option
@boundary
def pretrained(as_json) -> None:
    """List the pretrained models shipped in the package, with their test figures (no download).

    Any command that takes --checkpoint takes pretrained:NAME.

    \b
    Example:
        hybridflow pretrained
        hybridflow ood --checkpoint pretrained:fashionmnist --out-data mnist --download
        hybridflow sample --checkpoint pretrained:mnist --out samples.png
    """
    rows = list_pretrained()
    name_w = max([4] + [len(r["name"]) for r in rows])
    kind_w = max([4] + [len(r["kind"]) for r in rows])
    lines = [f"{'name':<{name_w}} {'kind':<{kind_w}} {'backbone':<15} {'params':>8}  test figures (full test set)"]
    for r in rows:
        figures = f"{r['test_bits_per_dim']:.3f} bits/dim"
        if r.get("patches"):  # a bag-of-patches reference: its figure is per patch
            figures += f" per {r['patches']}x{r['patches']} patch"
        if r["test_accuracy"] is not None:
            figures += f", accuracy {100 * r['test_accuracy']:.2f}%"
        lines.append(f"{r['name']:<{name_w}} {r['kind']:<{kind_w}} {r['backbone']:<15} {r['parameters']:>8,}  "
                     f"{figures} on {r['dataset']} ({r['steps']:,} steps, recipe {r['recipe']})")
    emit(as_json, dict(pretrained=rows), "\n".join(lines))
