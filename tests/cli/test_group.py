"""`hybridflow --help` and every command's help: examples, --json, exit codes."""

from __future__ import annotations

import pytest

from tests.cli.runner import COMMANDS, run


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself_with_an_example(command):
    text = run(command, "--help").stdout
    assert "Example" in text and f"hybridflow {command}" in text
    assert "--json" in text


def test_main_help_lists_commands_and_exit_codes():
    text = run("--help").stdout
    assert all(c in text for c in COMMANDS)
    assert "hybridflow probe --backbone mixerflow" in text and "Exit codes" in text
