"""The package's shape: one concept per module, no shadowed or ambiguous public names, no reach
into another module's private names."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import click

import hybridflow

PACKAGE = Path(hybridflow.__file__).parent
MAX_LINES = 400


def modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE)], "hybridflow.")
                  if not m.name.endswith("__main__"))


def test_training_is_a_module_and_train_the_function():
    import hybridflow.training as training

    assert training.TrainConfig is hybridflow.TrainConfig
    assert callable(hybridflow.train) and hybridflow.train is training.train
    assert not hasattr(hybridflow.train, "TrainConfig")


def test_no_module_is_over_the_size_limit():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_a_public_name_means_one_thing_across_the_package():
    """Two public functions of the same name must be the same function (re-exports are fine):
    ``ood.evaluate`` and ``training.evaluate`` once did different jobs under one name."""
    seen: dict[str, tuple[str, object]] = {}
    clashes = []
    for name in modules():
        module = importlib.import_module(name)
        for public in getattr(module, "__all__", []):
            obj = getattr(module, public)
            if not callable(obj) or isinstance(obj, click.Command):  # CLI commands are named by the CLI
                continue
            if public in seen and seen[public][1] is not obj:
                clashes.append((public, seen[public][0], name))
            seen.setdefault(public, (name, obj))
    assert clashes == []


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("", "hybridflow") \
                    or isinstance(node, ast.ImportFrom) and node.level > 0:
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    offenders.append((str(path.relative_to(PACKAGE)), node.module, private))
    assert offenders == []


def test_every_module_declares_its_public_names():
    missing = [name for name in modules() if not hasattr(importlib.import_module(name), "__all__")]
    assert missing == []
