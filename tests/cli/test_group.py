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


def test_the_group_lists_each_command_with_its_own_one_line_help():
    """`hybridflow --help` lists the commands of the static table with help read from their source;
    every command module's commands must be in that table (else the listing would miss them), and
    the help read from source must be the command's own."""
    import importlib
    import pkgutil

    import click

    import hybridflow.cli
    from hybridflow.cli import cli
    from hybridflow.cli.group import COMMANDS, command_docstring

    for module in pkgutil.iter_modules(hybridflow.cli.__path__):
        importlib.import_module(f"hybridflow.cli.{module.name}")
    assert set(cli.commands) == set(COMMANDS)
    for name, (module, function) in COMMANDS.items():
        command = cli.commands[name]
        assert command.callback.__module__ == f"hybridflow.cli.{module}" and command.callback.__name__ == function
        assert click.Command(name, help=command_docstring(name)).get_short_help_str(1000) == \
            command.get_short_help_str(1000) != ""


def test_an_unknown_command_is_a_usage_error():
    result = run("trian", code=2)
    assert "No such command 'trian'" in result.stderr
