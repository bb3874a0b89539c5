"""The hybrid frontier with a "where" for the hidden-unit head (issue 19): the head still reads
every conditioner's hidden units, but averaged over each cell of a ``--grid G`` x ``G`` grid of
the rows that share the conditioner (MixerFlow: the 7x7 patches of a channel-mixing coupling, the
4x4 positions of a patch-mixing one) instead of over all of them. ``--grid 1`` is the library's
``head_input="hidden"``; a large grid keeps every row (``--grid 7`` on MNIST: 58,848 features).

A measurement wrapper, not a library option: it replaces the pooling of
:mod:`hybridflow.features` in this process and then runs ``bench/hybrid_frontier.py`` with the
other arguments (one run at a time: ``--parallel`` children would not see the replacement; run
two of these side by side instead). It needs rows on a square grid (single-channel square images).

    SPEC=mixerflow_wide:head=hidden,dequantization=variational,steps=3,patch_steps=1,lr=6e-3
    SPEC=$SPEC,batch_size=64,conditioner_dtype=bfloat16,preprocess=logit,translate=2@1
    python bench/hybrid_frontier_grid.py --grid 2 --dataset mnist --minutes 10 --threads 1 --runs "$SPEC" \\
        --name hybrid_frontier_mnist_grid2
    python bench/hybrid_frontier_grid.py --grid 2 --smoke
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

import _common as C  # noqa: E402  (first: it puts the checkout on the path)
import hybrid_frontier  # noqa: E402

import hybridflow.features as flow_features_module  # noqa: E402

_GLOBAL_POOL = flow_features_module._pool_hidden


def grid_pool(grid: int) -> Callable[[Tensor, int, bool], Tensor]:
    """A replacement for ``hybridflow.features._pool_hidden`` whose mean-only pooling (the head's)
    averages over each cell of a ``grid`` x ``grid`` grid of the rows; mean+max (the probes') is kept."""

    def pool(h: Tensor, batch: int, with_max: bool = True) -> Tensor:
        if with_max or h.dim() == 4:
            return _GLOBAL_POOL(h, batch, with_max)
        rows = (h.float() if h.dtype in (torch.bfloat16, torch.float16) else h).reshape(batch, -1, h.shape[-1])
        side = math.isqrt(rows.shape[1])
        if side * side != rows.shape[1]:
            raise ValueError(f"--grid needs rows on a square grid, got {rows.shape[1]} rows")
        cells = rows.transpose(1, 2).reshape(batch, -1, side, side)
        return F.adaptive_avg_pool2d(cells, min(grid, side)).flatten(1)  # (batch, hidden * cells)

    return pool


def with_grid_head(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """``build`` whose hidden-unit hybrids get a head as wide as the grid-pooled units of one pass
    (of a copy: the model's data-dependent initialisation is left to its first training step)."""

    def build_model(spec, input_shape, smoke=False, lam=0.0, num_classes=10) -> nn.Module:
        model = build(spec, input_shape, smoke=smoke, lam=lam, num_classes=num_classes)
        if getattr(model, "head_input", None) == "hidden":
            backbone = copy.deepcopy(model.backbone).eval()
            with flow_features_module.recording_hidden_units(backbone, 2, "mean") as units, torch.no_grad():
                backbone.embed(torch.zeros(2, *input_shape, dtype=torch.uint8))
            model.head = nn.Linear(torch.cat(units, 1).shape[1], model.num_classes)
        return model

    return build_model


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     add_help=False)
    parser.add_argument("--grid", type=int, required=True, help="cells per side of the head's pooling grid")
    args, rest = parser.parse_known_args(argv)
    if args.grid < 1:
        parser.error(f"--grid must be at least 1, got {args.grid}")
    if any(a == "--parallel" or a.startswith("--parallel=") for a in rest):
        parser.error("--parallel would train in children without the grid pooling: run two of these side by side")
    build, train_one = C.build_model, hybrid_frontier.train_one

    def train_grid_run(run_args: argparse.Namespace, index: int) -> dict:
        row = train_one(run_args, index)
        return dict(row, head=f"{row['head']}, {args.grid}x{args.grid} grid") if row["head"] == "hidden" else row

    flow_features_module._pool_hidden, C.build_model = grid_pool(args.grid), with_grid_head(build)
    hybrid_frontier.train_one = train_grid_run
    try:
        return hybrid_frontier.main(rest)
    finally:  # a caller in this process (a test) gets the library's pooling back
        flow_features_module._pool_hidden, C.build_model, hybrid_frontier.train_one = _GLOBAL_POOL, build, train_one


if __name__ == "__main__":
    main()
