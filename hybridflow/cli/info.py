"""``hybridflow backbones`` and ``hybridflow recipes``: what the library offers."""

from __future__ import annotations

import click

from ..backbones import FAMILY_DEFAULTS
from ..factory import describe_backbones
from ..recipes import list_recipes
from .group import cli
from .options import CLIError, boundary, emit, json_option, usage

__all__ = ["backbones", "recipes"]


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
    """List the recipes (recipes/*.toml): one per experiment of the paper, at paper and CPU scale.

    \b
    Example:
        hybridflow recipes
        hybridflow train --recipe recipes/cifar10_density --scale cpu --data-root ../shared/data
    """
    rows = list_recipes()
    if not rows:
        raise CLIError("no recipes found (looked in ./recipes and beside the package)")
    width = max(len(r["name"]) for r in rows)
    emit(as_json, dict(recipes=rows), "\n".join(f"{r['name']:<{width}}  {r['reproduces']}" for r in rows))
