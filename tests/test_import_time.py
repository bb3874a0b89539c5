"""`import hybridflow` and `hybridflow --help` stay light: what they load, checked in a fresh
interpreter through ``sys.modules`` (wall time on a shared machine says little)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "sklearn", "scipy", "timm", "captum", "matplotlib", "torchvision")


def loaded_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; which HEAVY modules it loaded, and what it printed."""
    probe = (f"import sys, io, contextlib\nout = io.StringIO()\nwith contextlib.redirect_stdout(out):\n"
             + "".join(f"    {line}\n" for line in code.splitlines())
             + f"print(__import__('json').dumps(dict(loaded=[m for m in {HEAVY!r} if m in sys.modules], "
               f"out=out.getvalue())))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_import_hybridflow_loads_neither_sklearn_nor_scipy():
    assert loaded_after("import hybridflow")["loaded"] == []


@pytest.mark.slow  # a fresh interpreter imports torch: 3-10 s
def test_the_torch_side_of_the_api_does_not_load_sklearn():
    seen = loaded_after("from hybridflow import create_backbone, HybridModel, train, freeze\nimport hybridflow.runs")
    assert "torch" in seen["loaded"] and "sklearn" not in seen["loaded"] and "scipy" not in seen["loaded"]
    assert {"sklearn", "scipy"} <= set(loaded_after("from hybridflow import HybridFlowClassifier")["loaded"])


def test_lazy_names_resolve_to_the_real_objects():
    import hybridflow
    from hybridflow.backbones import create_backbone

    assert hybridflow.create_backbone is create_backbone
    assert set(hybridflow.__all__) <= set(dir(hybridflow))
    assert hybridflow.data.__name__ == "hybridflow.data"  # a subpackage by attribute, as before
    try:
        hybridflow.no_such_name
    except AttributeError as error:
        assert "no_such_name" in str(error)
    else:
        raise AssertionError("an unknown attribute must raise AttributeError")


def test_help_lists_every_command_without_importing_torch():
    from hybridflow.cli.group import COMMANDS

    seen = loaded_after("from hybridflow.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    assert seen["loaded"] == []
    listed = [line.split()[0] for line in seen["out"].split("Commands:")[1].splitlines() if line.strip()]
    assert listed == sorted(COMMANDS)
    assert "python -m hybridflow" not in seen["out"] and "Usage: hybridflow" in seen["out"]


def test_python_dash_m_hybridflow_is_the_cli():
    result = subprocess.run([sys.executable, "-m", "hybridflow", "--version"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "0.1.0" in result.stdout
