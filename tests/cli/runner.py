"""Helpers shared by the command-line tests: invoke a command, read its one-line error."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from hybridflow.cli import cli

# A one-layer MixerFlow on 2x2 patches: a training step takes milliseconds.
TINY = ["-o", "num_layers=1", "-o", "hidden=8", "-o", "steps=1"]
COMMANDS = ["train", "probe", "eval", "sample", "ood", "explain", "backbones", "recipes"]
RECIPES = Path(__file__).resolve().parents[2] / "hybridflow" / "recipe_files"


def run(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


def one_line_error(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]
