"""Evaluation speed of this tree's inference copy (``hybridflow.freeze``) against an earlier
tree's evaluation path, in ONE process on the same weights, alternating call by call: a shared
machine's noise then hits both alike (separate processes, as in throughput.py, were too noisy to
rank two paths within 10%).

    git worktree add /tmp/base 9761264            # the tree to compare against
    python bench/inference_ab.py --baseline /tmp/base --calls 40

Prints, per model: ``bits_per_dim`` images/s of both, and the median (interquartile range) of
new speed / old speed, end to end and for the flow pass alone on the same dequantised input.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import hybridflow


def load_baseline(tree: Path):
    """The ``hybridflow`` package of ``tree``, imported as ``hybridflow_baseline`` (its imports are
    relative, so a renamed copy is self-contained)."""
    folder = Path(tempfile.mkdtemp())
    shutil.copytree(tree / "hybridflow", folder / "hybridflow_baseline", ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, str(folder))
    return importlib.import_module("hybridflow_baseline")


def alternate(old, new, calls: int) -> tuple[float, float, list[float]]:
    """Median seconds of ``old()`` and ``new()`` and the per-pair ratios old / new (= new speed / old)."""
    for _ in range(3):
        old(), new()
    t_old, t_new, ratios = [], [], []
    for _ in range(calls):
        start = time.perf_counter(); old(); a = time.perf_counter() - start
        start = time.perf_counter(); new(); b = time.perf_counter() - start
        t_old.append(a), t_new.append(b), ratios.append(a / b)
    return statistics.median(t_old), statistics.median(t_new), ratios


def spread(ratios: list[float]) -> str:
    q = statistics.quantiles(ratios, n=4)
    return f"{statistics.median(ratios):.3f} ({q[0]:.3f}-{q[2]:.3f})"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, type=Path, help="a checkout of the tree to compare against")
    p.add_argument("--models", default="mixerflow_tiny,mixerflow_wide,glow_tiny")
    p.add_argument("--dtypes", default="float32,bfloat16", help="conditioner precisions")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--calls", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    baseline = load_baseline(args.baseline)
    x = torch.randint(0, 256, (args.batch, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    u = (x.float() + 0.5) / 256
    print("| model | conditioners | old img/s | new img/s | bits_per_dim: new / old | flow pass: new / old |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.models.split(","):
        for dtype in args.dtypes.split(","):
            torch.manual_seed(0)
            live = hybridflow.create_backbone(name, conditioner_dtype=dtype).train()
            live.bits_per_dim(x)  # data-dependent initialisation, BatchNorm statistics
            old = baseline.create_backbone(name, conditioner_dtype=dtype)
            old.load_state_dict(live.state_dict())
            old.eval()
            fast = hybridflow.freeze(live.eval())
            with torch.no_grad():
                a, b, end_to_end = alternate(lambda: old.bits_per_dim(x), lambda: fast.bits_per_dim(x), args.calls)
                _, _, flow_pass = alternate(lambda: old(u), lambda: fast(u), args.calls)
            print(f"| {name} | {dtype} | {args.batch / a:.0f} | {args.batch / b:.0f} | {spread(end_to_end)} | "
                  f"{spread(flow_pass)} |", flush=True)


if __name__ == "__main__":
    main()
