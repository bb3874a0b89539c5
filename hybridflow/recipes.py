"""Recipes: one TOML file per experiment, with a ``[paper]`` and a ``[cpu]`` table.

The recipes ship inside the package (``hybridflow/recipe_files/*.toml``, read through
:mod:`importlib.resources`), so ``--recipe NAME`` works from a plain wheel in any directory; a
``./recipes/NAME.toml`` beside the user shadows the packaged recipe of the same name. A recipe's
top-level settings hold for both scales; the chosen scale's table overrides them. Keys are checked
against :data:`RECIPE_KEYS`, so a typo never silently does nothing.

A recipe's ``kind`` says which command runs it (:data:`RECIPE_KINDS`): a ``"train"`` recipe (the
default) holds training settings for ``hybridflow train --recipe``; an ``"ood"`` recipe holds
:data:`OOD_RECIPE_KEYS` (the model to score, the in- and out-of-distribution sets, the scorers)
for ``hybridflow ood --recipe``. Loading a recipe for the other command says which one to use.

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

__all__ = ["RECIPE_KEYS", "OOD_RECIPE_KEYS", "RECIPE_KINDS", "RECIPE_META", "SCALES", "RecipeError", "find_recipe",
           "list_recipes", "load_recipe", "packaged_recipe_dir", "recipe_dirs"]

#: Settings a recipe (or its ``[paper]`` / ``[cpu]`` table) may hold.
RECIPE_KEYS = {
    "backbone", "dataset", "data_root", "lam", "steps", "batch_size", "lr", "warmup_steps", "grad_clip", "ema_decay",
    "seed", "limit", "val_limit", "labelled_fraction", "labelled_per_batch", "patches", "shuffle", "shuffle_patch", "shuffle_seed", "size", "pooled", "head_input",
    "backbone_options", "log_every", "eval_every", "checkpoint_every", "betas", "flip", "num_workers", "classes",
    "pseudo_labels", "translate", "align_pseudo_labels",
}
#: Settings an OOD recipe (``kind = "ood"``) may hold: the model to score (``checkpoint``: a run
#: folder, a checkpoint or ``pretrained:NAME``; or ``train_recipe``: the training recipe whose run
#: folder ``runs/<name>-<scale>`` to score), likewise the reference of ``likelihood_ratio``
#: (``reference`` / ``reference_recipe``), the sets and the classes kept of each (``in_classes``,
#: ``out_classes``: ``"0-4"`` or a list of labels), the scorers and how many images each set has.
OOD_RECIPE_KEYS = {"checkpoint", "train_recipe", "reference", "reference_recipe", "in_data", "out_data", "scores",
                   "limit", "batch_size", "data_root", "in_classes", "out_classes"}
#: Each kind of recipe and the command that runs it.
RECIPE_KINDS = {"train": "hybridflow train", "ood": "hybridflow ood"}
#: Descriptive keys, listed by :func:`list_recipes`; not settings.
RECIPE_META = {"name", "title", "kind", "reproduces", "paper_result", "cpu_expectation", "source", "notes", "metric"}
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


def load_recipe(path: str | Path, scale: str = "cpu", kind: str = "train") -> tuple[dict[str, Any], dict[str, Any]]:
    """``(settings, meta)`` of a TOML recipe at ``scale``: top-level settings, then the scale's
    table over them. Unknown keys are refused, so a typo never silently does nothing; so is a
    recipe of another ``kind`` than the caller runs (the message names its command).

    Example:
        >>> settings, meta = load_recipe("fashionmnist_mnist_ood", "cpu", kind="ood")
        >>> meta["kind"], settings["in_data"], settings["out_data"]
        ('ood', 'fashionmnist', 'mnist')
        >>> load_recipe("fashionmnist_mnist_ood")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        hybridflow.recipes.RecipeError: recipe fashionmnist_mnist_ood is an ood recipe: run it with `hybridflow ood...
    """
    tomllib = _toml()
    if kind not in RECIPE_KINDS:
        raise RecipeError(f"kind must be one of {', '.join(RECIPE_KINDS)}, got {kind!r}")
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
    own_kind = recipe.get("kind", "train")
    if own_kind not in RECIPE_KINDS:
        raise RecipeError(f"recipe {path}: kind must be one of {', '.join(RECIPE_KINDS)}, got {own_kind!r}")
    if own_kind != kind:
        article = "an" if own_kind[0] in "aeiou" else "a"
        raise RecipeError(f"recipe {meta['name']} is {article} {own_kind} recipe: run it with "
                          f"`{RECIPE_KINDS[own_kind]} --recipe {meta['name']}` ({path})")
    allowed = RECIPE_KEYS if kind == "train" else OOD_RECIPE_KEYS
    settings: dict[str, Any] = {}
    for where, table in (("top level", recipe), (f"[{scale}]", recipe.get(scale, {}))):
        for key, value in table.items():
            if key in SCALES or key in RECIPE_META:
                continue
            if key not in allowed:
                raise RecipeError(f"recipe {path}: unknown key {key!r} at the {where}; "
                                  f"allowed: {', '.join(sorted(allowed))}")
            if key == "backbone_options":
                settings["backbone_options"] = {**settings.get("backbone_options", {}), **value}
            else:
                settings[key] = value
    if scale not in recipe:
        raise RecipeError(f"recipe {path} has no [{scale}] table")
    return settings, meta


def list_recipes() -> list[dict[str, str]]:
    """One row per recipe (the first of each name in :func:`recipe_dirs`): name, kind, command (the
    one that runs it), path, reproduces, paper_result, cpu_expectation.

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
            kind = str(recipe.get("kind", "train"))
            rows.append(dict(name=path.stem, kind=kind, command=RECIPE_KINDS.get(kind, ""), path=str(path),
                             reproduces=recipe.get("reproduces", ""),
                             paper_result=recipe.get("paper_result", ""),
                             cpu_expectation=recipe.get("cpu_expectation", "")))
    return rows
