"""The ``hybridflow`` click group and the console-script entry point.

The group is lazy: a command's module (and with it torch) is imported only when that command runs
or shows its own help, so ``hybridflow --help`` answers at once. It lists the commands of the
static table :data:`COMMANDS`, each with the first sentence of its docstring, read from the
module's source without importing it (one copy of each help text: no table to keep in step).
"""

from __future__ import annotations

import ast
import functools
import importlib
import os
import warnings
from pathlib import Path

import click

from .. import __version__

__all__ = ["COMMANDS", "LazyGroup", "command_docstring", "cli", "main", "one_line_warning"]

#: Every command: the ``hybridflow.cli`` module that defines it and the function it decorates.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train"),
    "eval": ("evaluate", "evaluate_command"),
    "sample": ("sample", "sample"),
    "ood": ("ood", "ood"),
    "probe": ("probe", "probe"),
    "explain": ("explain", "explain"),
    "backbones": ("info", "backbones"),
    "recipes": ("info", "recipes"),
    "pretrained": ("info", "pretrained"),
    "data": ("data", "data_group"),
}


@functools.lru_cache(maxsize=None)
def _module_docstrings(module: str) -> dict[str, str]:
    """The docstrings of the top-level functions of ``hybridflow/cli/<module>.py``, from its source."""
    try:
        tree = ast.parse(Path(__file__).with_name(f"{module}.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError):  # no source shipped: the listing shows no help, the command still runs
        return {}
    return {node.name: ast.get_docstring(node) or "" for node in tree.body if isinstance(node, ast.FunctionDef)}


def command_docstring(name: str) -> str:
    """The docstring of command ``name`` (a key of :data:`COMMANDS`), without importing its module.

    Example:
        >>> command_docstring("recipes").startswith("List the recipes")
        True
    """
    module, function = COMMANDS[name]
    return _module_docstrings(module).get(function, "")


class LazyGroup(click.Group):
    """A click group whose commands live in modules imported on first use (see :data:`COMMANDS`);
    importing a command module registers its command on :data:`cli`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(f".{COMMANDS[cmd_name][0]}", __package__)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's own layout, with the help of the commands not imported yet read from their source."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            # a bare Command shortens a docstring exactly as click shortens a real command's
            command = self.commands.get(name) or click.Command(name, help=command_docstring(name))
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                     file: object = None, line: str | None = None) -> None:
    """``warnings.showwarning`` for the command line: ``warning: <message>`` on stderr, without
    Python's file, line number and source line (``HYBRIDFLOW_DEBUG=1`` keeps Python's format)."""
    click.echo(f"warning: {message}", err=True)


@click.group(cls=LazyGroup, context_settings=dict(help_option_names=["-h", "--help"], max_content_width=100))
@click.version_option(version=__version__, prog_name="hybridflow")
def cli() -> None:
    """Hybrid generative classifiers from one normalising flow (MixerFlow, Glow).

    \b
    Start here (no download, a couple of minutes on a laptop CPU):
        hybridflow probe --backbone mixerflow

    \b
    Exit codes: 0 ok; 1 the command failed (data not on disk, damaged checkpoint, training
    diverged); 2 bad command line (unknown option, backbone, dataset or scorer, missing file);
    130 interrupted. Errors are one line on stderr (HYBRIDFLOW_DEBUG=1 shows the traceback).
    """


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (also ``python -m hybridflow``): warnings print as one line."""
    previous = warnings.showwarning
    if not os.environ.get("HYBRIDFLOW_DEBUG"):
        warnings.showwarning = one_line_warning
    try:
        cli.main(args=argv, prog_name="hybridflow")
    finally:  # an in-process caller gets its own warnings display back
        warnings.showwarning = previous
