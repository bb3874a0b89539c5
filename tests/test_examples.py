"""The scripts in examples/ run (in their fast mode) and print what they promise, so they never rot.

They run in this process (runpy) rather than in subprocesses: importing torch once saves seconds
per script."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def _fast_and_one_thread(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("HYBRIDFLOW_FAST", "1")
    monkeypatch.setenv("HYBRIDFLOW_THREADS", "1")
    yield
    torch.set_num_threads(threads)


def run_example(name: str, monkeypatch, capsys, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out


def _needs_estimators() -> None:
    try:
        import hybridflow.estimators  # noqa: F401
    except ImportError as error:  # built in parallel (issue 4): skip rather than fail until it lands
        pytest.skip(f"hybridflow.estimators is not importable yet: {error}")


def test_every_example_has_a_fast_mode_and_a_docstring():
    scripts = sorted(EXAMPLES.glob("*.py"))
    assert len(scripts) >= 5
    for script in scripts:
        text = script.read_text()
        assert text.startswith('"""') and "--fast" in text and "HYBRIDFLOW_FAST" in text, script.name


def test_examples_and_readme_point_at_nothing_a_user_lacks():
    """A user has the package, the embedded digits and what --download fetches: no paths into this
    project's machine (../shared, /work) and no run folders they never trained."""
    readme = EXAMPLES.parent / "README.md"
    for path in [*sorted(EXAMPLES.glob("*.py")), readme]:
        text = path.read_text()
        for local in ("../shared", "/work/", "shared/data"):
            assert local not in text, f"{path.name} points at {local}"
    assert (EXAMPLES / "pretrained_mnist_samples.png").stat().st_size > 1000  # the README shows it


def test_quickstart_sklearn(monkeypatch, capsys):
    _needs_estimators()
    out = run_example("quickstart_sklearn.py", monkeypatch, capsys)
    assert "test accuracy" in out and "nats per image" in out and "bits/dim" in out and "(5, 64)" in out


def test_semi_supervised(monkeypatch, capsys):
    _needs_estimators()
    out = run_example("semi_supervised.py", monkeypatch, capsys)
    assert "13 labelled and 1334 unlabelled" in out
    assert all(f"{k}. " in out for k in (1, 2, 3))


def test_ood_detection(monkeypatch, capsys, tmp_path):
    out = run_example("ood_detection.py", monkeypatch, capsys, "--out", str(tmp_path))
    assert "AUROC" in out and "digits 5-9" in out and "typicality" in out
    assert (tmp_path / "ood_roc.png").stat().st_size > 1000 and (tmp_path / "ood_hist.png").stat().st_size > 1000


def test_probe_comparison(monkeypatch, capsys):
    out = run_example("probe_comparison.py", monkeypatch, capsys)
    assert "raw pixels" in out and "mixerflow_tiny" in out and "glow_tiny" in out and "±" in out


def test_explain_prediction(monkeypatch, capsys, tmp_path):
    out = run_example("explain_prediction.py", monkeypatch, capsys, "--out", str(tmp_path))
    assert "Integrated Gradients" in out and "f(x) - f(baseline)" in out
    assert (tmp_path / "explain.png").stat().st_size > 1000
