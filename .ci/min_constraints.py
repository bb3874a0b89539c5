"""Print a pip constraints file that pins every dependency in pyproject.toml (and the extras named
on the command line) to its declared lower bound: ``>=X`` becomes ``==X``.

    python .ci/min_constraints.py dev > min.txt
    pip install -c min.txt -e ".[dev]"

torch and torchvision are pinned to their declared upper cap instead (the releases this machine
keeps on disk): their lower bounds are not installable here (see .ci/run).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

#: Pinned to their cap (``<=X``), not their lower bound: the only builds this machine can install.
AT_CAP = {"torch", "torchvision"}
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(;.*)?$")


def pin(requirement: str) -> str:
    """``name>=X,...; marker`` -> ``name==X; marker`` (the cap for :data:`AT_CAP`)."""
    match = REQUIREMENT.match(requirement)
    if match is None:
        raise SystemExit(f"cannot read the requirement {requirement!r}")
    name, _, specifiers, marker = match.groups()
    bounds = dict(re.findall(r"(>=|<=)\s*([^,\s]+)", specifiers))
    wanted = "<=" if name.lower() in AT_CAP else ">="
    if wanted not in bounds:
        raise SystemExit(f"{name}: declare a {wanted} bound so that the minimum-versions run can pin it")
    return f"{name}=={bounds[wanted]}" + (f"{marker}" if marker else "")


def constraints(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    return [pin(r) for r in requirements]


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    print("\n".join(constraints(root / "pyproject.toml", sys.argv[1:])))
