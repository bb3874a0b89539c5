"""Fixtures of the command-line tests: one thread, and one tiny trained run shared by them all."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from hybridflow.cli import cli
from tests.cli.runner import TINY


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    # The CLI's --threads (from HYBRIDFLOW_THREADS) sets torch's global thread count: restore it.
    threads = torch.get_num_threads()
    monkeypatch.setenv("HYBRIDFLOW_THREADS", "1")
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="package")
def trained(tmp_path_factory) -> Path:
    """A hybrid model trained for 4 steps on the digits (lam = 1, so the head learns too)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    torch_threads = torch.get_num_threads()
    result = CliRunner(env={"HYBRIDFLOW_THREADS": "1"}).invoke(
        cli, ["train", "--steps", "4", "--out", str(out), "--log-every", "2", "-q", "--json", *TINY],
        catch_exceptions=False)
    torch.set_num_threads(torch_threads)
    assert result.exit_code == 0, result.stderr
    return out
