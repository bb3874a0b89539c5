"""The ``hybridflow`` command line (click): one module per command group, each a thin wrapper that
parses its options, calls the library and prints.

    hybridflow probe --backbone mixerflow          # the main job: no download, a couple of minutes
    hybridflow train --recipe mnist_density --scale cpu
    hybridflow eval --checkpoint runs/mnist_density
    hybridflow sample --checkpoint runs/mnist_density --temperature 0.7
    hybridflow ood --checkpoint runs/fashion --in-data fashionmnist --out-data mnist --roc roc.png
    hybridflow explain --checkpoint runs/digits-hybrid --index 0
    hybridflow backbones --params

Exit codes: 0 success; 1 the command was well formed but failed (data not on disk, a damaged
checkpoint, training diverged); 2 the command line is wrong (bad or missing option, unknown
backbone, dataset or scorer, a path that does not exist); 130 interrupted (Ctrl-C). Mistakes are
reported as one line on stderr, never a traceback (set ``HYBRIDFLOW_DEBUG=1`` to see one).

Everything a command does is reachable from Python, one function per command:
:func:`hybridflow.runs.train_run`, :func:`~hybridflow.runs.evaluate_run`,
:func:`~hybridflow.runs.sample_run`, :func:`~hybridflow.runs.explain_run`,
:func:`hybridflow.probing.run_probe`, :func:`hybridflow.ood.ood_report`,
:func:`hybridflow.factory.describe_backbones` and :func:`hybridflow.recipes.list_recipes`; beneath them
:mod:`hybridflow.data` (datasets, the synthetic OOD sets), :mod:`hybridflow.recipes`,
:mod:`hybridflow.factory` (model building) and :mod:`hybridflow.runs` (run folders, loading a trained model).
"""

from ..recipes import RECIPE_KEYS, load_recipe
# The command modules are imported on first use of their command (see group.COMMANDS), so that
# `hybridflow --help` and importing this package load no torch.
from .group import cli, main

__all__ = ["main", "cli", "load_recipe", "RECIPE_KEYS"]
