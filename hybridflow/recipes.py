"""Recipes: one TOML file per experiment, with a ``[paper]`` and a ``[cpu]`` table.

The recipes ship inside the package (``hybridflow/recipe_files/*.toml``, read through
:mod:`importlib.resources`), so ``--recipe NAME`` works from a plain wheel in any directory; a
``./recipes/NAME.toml`` beside the user shadows the packaged recipe of the same name. A recipe's
top-level settings hold for both scales; the chosen scale's table overrides them. Keys are checked
against :data:`RECIPE_KEYS`, so a typo never silently does nothing.

Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "tiny.toml"
    >>> _ = path.write_text('name = "tiny"\\nlam = 0.5\\n[paper]\\nsteps = 1000\\n[cpu]\\nsteps = 3\\n')
    >>> settings, meta = load_recipe(path, "cpu")
    >>> settings, meta["name"]
    ({'lam': 0.5, 'steps': 3}, 'tiny')
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["RECIPE_KEYS", "RECIPE_META", "SCALES", "RecipeError", "find_recipe", "list_recipes", "load_recipe",
           "packaged_recipe_dir", "recipe_dirs"]

#: Settings a recipe (or its ``[paper]`` / ``[cpu]`` table) may hold.
RECIPE_KEYS = {
    "backbone", "dataset", "data_root", "lam", "steps", "batch_size", "lr", "warmup_steps", "grad_clip", "ema_decay",
    "seed", "limit", "val_limit", "labelled_fraction", "shuffle", "shuffle_patch", "shuffle_seed", "size", "pooled",
    "backbone_options", "log_every", "eval_every", "checkpoint_every", "betas",
}
#: Descriptive keys, listed by :func:`list_recipes`; not settings.
RECIPE_META = {"name", "title", "reproduces", "paper_result", "cpu_expectation", "source", "notes", "metric"}
#: The tables a recipe holds, one per scale.
SCALES = ("cpu", "paper")


class RecipeError(ValueError):
    """A recipe that cannot be found or read: a missing file, bad TOML, an unknown key or scale."""


def packaged_recipe_dir() -> Path:
    """The folder of the recipes shipped with the package (``hybridflow/recipe_files``).

    Example:
        >>> (packaged_recipe_dir() / "mnist_density.toml").is_file()
        True
    """
    # A wheel is installed unpacked, so the resource folder is a real directory; Path() also gives
    # the user a path to print and to copy from.
    return Path(str(files(__package__ or "hybridflow").joinpath("recipe_files")))


def recipe_dirs() -> list[Path]:
    """Where recipes are looked for: ``./recipes`` (the user's own), then :func:`packaged_recipe_dir`."""
    return [Path.cwd() / "recipes", packaged_recipe_dir()]


def find_recipe(name: str | Path) -> Path:
    """A recipe file from a path (``.toml`` optional) or a bare name in :func:`recipe_dirs`.

    Example:
        >>> find_recipe("no_such_recipe")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        hybridflow.recipes.RecipeError: recipe not found: no_such_recipe...
    """
    name = str(name)
    candidates = [Path(name), Path(name + ".toml")]
    candidates += [d / (Path(name).name + ("" if name.endswith(".toml") else ".toml")) for d in recipe_dirs()]
    for path in candidates:
        if path.is_file():
            return path
    available = sorted({p.stem for d in recipe_dirs() if d.is_dir() for p in d.glob("*.toml")})
    raise RecipeError(f"recipe not found: {name}" + (f" (available: {', '.join(available)})" if available else ""))


def _toml() -> ModuleType:
    """``tomllib`` (Python 3.11+) or its backport ``tomli``."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ImportError("recipes need Python 3.11+ (tomllib) or `pip install tomli`") from None
    return tomllib


def load_recipe(path: str | Path, scale: str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """``(settings, meta)`` of a TOML recipe at ``scale``: top-level settings, then the scale's
    table over them. Unknown keys are refused, so a typo never silently does nothing."""
    tomllib = _toml()
    path = find_recipe(path)
    try:
        recipe = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f"recipe {path} is not valid TOML: {error}") from None
    if scale not in SCALES:
        raise RecipeError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    meta = {k: v for k, v in recipe.items() if k in RECIPE_META}
    meta.setdefault("name", path.stem)
    meta["path"] = str(path)
    settings: dict[str, Any] = {}
    for where, table in (("top level", recipe), (f"[{scale}]", recipe.get(scale, {}))):
        for key, value in table.items():
            if key in SCALES or key in RECIPE_META:
                continue
            if key not in RECIPE_KEYS:
                raise RecipeError(f"recipe {path}: unknown key {key!r} at the {where}; "
                                  f"allowed: {', '.join(sorted(RECIPE_KEYS))}")
            if key == "backbone_options":
                settings["backbone_options"] = {**settings.get("backbone_options", {}), **value}
            else:
                settings[key] = value
    if scale not in recipe:
        raise RecipeError(f"recipe {path} has no [{scale}] table")
    return settings, meta


def list_recipes() -> list[dict[str, str]]:
    """One row per recipe (the first of each name in :func:`recipe_dirs`): name, path, reproduces,
    paper_result, cpu_expectation.

    Example:
        >>> all({"name", "path", "reproduces"} <= set(row) for row in list_recipes())
        True
    """
    tomllib = _toml()
    seen, rows = set(), []
    for folder in recipe_dirs():
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            if path.stem in seen:
                continue
            seen.add(path.stem)
            recipe = tomllib.loads(path.read_text())
            rows.append(dict(name=path.stem, path=str(path), reproduces=recipe.get("reproduces", ""),
                             paper_result=recipe.get("paper_result", ""),
                             cpu_expectation=recipe.get("cpu_expectation", "")))
    return rows
