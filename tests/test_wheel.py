"""The wheel a plain (non-editable) `pip install .` builds: a complete library on its own.

Built once from a copy of the package sources (so no build/ lands in the checkout), then checked
for what it must hold and what it must not, and installed into a fresh virtual environment (the
machine's packages visible, `--no-deps`) where the CLI runs from a directory outside the source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hybridflow"
#: Code and recipes are ~0.3 MB; pretrained weights may add a few MB. Far more means something
#: that is not the library (runs, data, caches) slipped in.
MAX_WHEEL_BYTES = 20 * 2**20

pytestmark = pytest.mark.slow


def _setuptools_is_recent() -> bool:
    try:
        return tuple(int(p) for p in version("setuptools").split(".")[:2]) >= (77, 0)
    except Exception:
        return False


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if not _setuptools_is_recent():
        pytest.skip("building without isolation needs setuptools>=77 (pyproject's build requirement)")
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(PACKAGE, src / "hybridflow", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                             "-q", "-w", str(dist)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    (path,) = dist.glob("hybridflow-*.whl")
    return path


def test_the_wheel_holds_the_library_and_nothing_else(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = {f"hybridflow/recipe_files/{p.name}" for p in (PACKAGE / "recipe_files").glob("*.toml")}
    assert recipes and recipes <= names
    assert "hybridflow/py.typed" in names and "hybridflow/__main__.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    sources = {f"hybridflow/{p.relative_to(PACKAGE).as_posix()}" for p in PACKAGE.rglob("*.py")}
    assert sources <= names, sorted(sources - names)
    strays = [n for n in names if not (n.startswith("hybridflow/") or ".dist-info/" in n)
              or "__pycache__" in n or n.endswith(".pyc")]
    assert strays == []  # no tests/, bench/, examples/, recipes/ at the top, no caches
    assert wheel.stat().st_size < MAX_WHEEL_BYTES


def test_the_wheel_declares_the_dependencies_of_pyproject(wheel):
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (metadata,) = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA")]
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    requires = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]
    names = {r.split(";")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower() for r in requires}
    assert {d.split(";")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower() for d in declared} <= names
    assert "License-Expression: MIT" in text


def test_the_installed_wheel_runs_outside_the_source_tree(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=300)
    python = venv / "bin" / "python"
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                             "--force-reinstall", str(wheel)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HYBRIDFLOW_THREADS"] = "1"

    def run(*args: str) -> str:
        done = subprocess.run([*args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    where = run(str(python), "-c", "import hybridflow; print(hybridflow.__file__)").strip()
    assert Path(where).is_relative_to(venv), where  # the wheel's copy, not the checkout
    listing = json.loads(run(str(venv / "bin" / "hybridflow"), "recipes", "--json"))["recipes"]
    assert {r["name"] for r in listing} == {p.stem for p in (PACKAGE / "recipe_files").glob("*.toml")}
    assert all(Path(r["path"]).is_relative_to(venv) for r in listing)
    assert "Commands:" in run(str(python), "-m", "hybridflow", "--help")
    # --recipe NAME resolves against the packaged copy
    found = run(str(python), "-c", "from hybridflow.recipes import find_recipe; print(find_recipe('mnist_density'))")
    assert Path(found.strip()).is_relative_to(venv)
