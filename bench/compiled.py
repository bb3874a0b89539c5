"""Compiled against eager couplings (``set_compiled_couplings``), timed in turns in one process.

Separate processes on this shared machine differ by 20% from one to the next, more than the
effect measured here. So one model switches between the two paths, round after round, and the
table gives each round's ratio (compiled / eager train-step images/s) and their median.

    python bench/compiled.py                                    # mixerflow_tiny, both precisions
    python bench/compiled.py --models mixerflow_tiny,glow_tiny --rounds 8 --shapes 1x28x28,3x32x32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import train_setup  # noqa: E402


def train_rates(name: str, shape: tuple[int, int, int], batch: int, rounds: int, steps: int) -> list[tuple[float, float]]:
    """``rounds`` pairs (eager, compiled) of train-step images/s for one model."""
    model, _, step = train_setup(name, shape, batch)

    def rate(compiled: bool) -> float:
        model.set_compiled_couplings(compiled)
        step()  # warm-up (and, the first time, the compile)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return batch * steps / (time.perf_counter() - start)

    rate(True), rate(True)  # compile every shape before timing
    return [(rate(False), rate(True)) for _ in range(rounds)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mixerflow_tiny,mixerflow_tiny:bfloat16")
    parser.add_argument("--shapes", default="1x28x28")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=6, help="timed train steps per path per round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("| model | input | eager img/s | compiled img/s | compiled / eager, median (range) |")
    print("|---|---|---:|---:|---:|")
    for shape_text in args.shapes.split(","):
        shape = tuple(int(s) for s in shape_text.split("x"))
        for name in args.models.split(","):
            pairs = train_rates(name, shape, args.batch, args.rounds, args.steps)
            ratios = [c / e for e, c in pairs]
            eager, compiled = (statistics.median(p[i] for p in pairs) for i in (0, 1))
            print(f"| {name} | {shape_text} | {eager:.0f} | {compiled:.0f} | "
                  f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |", flush=True)


if __name__ == "__main__":
    main()
