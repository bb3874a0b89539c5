"""The ``hybridflow`` click group and the console-script entry point."""

from __future__ import annotations

import click

__all__ = ["cli", "main"]


@click.group(context_settings=dict(help_option_names=["-h", "--help"], max_content_width=100))
@click.version_option(package_name="hybridflow")
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
    """Console-script entry point."""
    cli.main(args=argv, prog_name="hybridflow")
