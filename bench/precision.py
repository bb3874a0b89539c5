"""bfloat16 against float32 conditioners on this machine's CPU, timed in turns in one process.

One model switches its conditioners between the two precisions (``set_conditioner_dtype``),
round after round, with the same weights and batch; the table gives the median ratio of
bfloat16 to float32 seconds per training step and per ``log_prob`` call, and the range over
rounds. It tells whether bfloat16 pays here: on a CPU with AVX512-BF16 or AMX it does; on an
AVX2-only CPU bfloat16 is emulated (what ``conditioner_dtype="auto"`` avoids).

    python bench/precision.py                                   # mixerflow_cpu and glow_tiny, 1 thread
    python bench/precision.py --models mixerflow_wide --rounds 5 --batch 128
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import train_setup  # noqa: E402

from hybridflow.flows import native_bfloat16  # noqa: E402


def _seconds(fn, calls: int) -> float:
    fn()  # warm-up after the switch
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def time_pairs(name: str, shape: tuple[int, int, int], batch: int, rounds: int, steps: int) -> dict:
    """Per-round seconds (float32, bfloat16) of a training step and of a ``log_prob`` call."""
    model, pixels, train_step = train_setup(f"{name}:float32", shape, batch)

    def score() -> None:
        with torch.no_grad():
            model.log_prob(pixels)

    train, score_times = [], []
    for _ in range(rounds):
        pair_train, pair_score = [], []
        for dtype in ("float32", "bfloat16"):
            model.set_conditioner_dtype(dtype)
            pair_train.append(_seconds(train_step, steps))
            model.eval()
            pair_score.append(_seconds(score, steps))
            model.train()
        train.append(pair_train)
        score_times.append(pair_score)
    return dict(model=name, shape="x".join(map(str, shape)), batch=batch, rounds=rounds, train_seconds=train,
                log_prob_seconds=score_times)


def _summary(pairs: list[list[float]]) -> tuple[float, float, float, float]:
    ratios = [b / f for f, b in pairs]
    return (statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs),
            statistics.median(ratios), max(ratios) - min(ratios))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mixerflow_cpu,glow_tiny")
    parser.add_argument("--shape", default="1x28x28")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed calls per precision per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="JSON results (default: bench/results/precision.json)")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # the slow-bfloat16 warning is what this measures
    shape = tuple(int(s) for s in args.shape.split("x"))
    caps = getattr(torch.cpu, "get_capabilities", lambda: {})()
    machine = dict(cpu=caps.get("cpu_name", ""), native_bfloat16=native_bfloat16("cpu"),
                   capability=torch.backends.cpu.get_cpu_capability(), threads=args.threads,
                   nproc=os.cpu_count(), torch=torch.__version__)
    print(f"CPU {machine['cpu']} ({machine['capability']}), native bfloat16: {machine['native_bfloat16']}, "
          f"{args.threads} thread(s), batch {args.batch}")
    print("| model | float32 train step (s) | bfloat16 train step (s) | bfloat16 / float32 (range) "
          "| log_prob: bfloat16 / float32 (range) |")
    print("|---|---:|---:|---:|---:|")
    rows = []
    for name in args.models.split(","):
        row = time_pairs(name, shape, args.batch, args.rounds, args.steps)
        f32, b16, ratio, spread = _summary(row["train_seconds"])
        _, _, score_ratio, score_spread = _summary(row["log_prob_seconds"])
        row.update(train_ratio=ratio, log_prob_ratio=score_ratio)
        rows.append(row)
        print(f"| {name} | {f32:.3f} | {b16:.3f} | {ratio:.2f} (±{spread / 2:.2f}) "
              f"| {score_ratio:.2f} (±{score_spread / 2:.2f}) |", flush=True)
    payload = dict(machine=machine, rows=rows, command=" ".join(["python bench/precision.py", *(argv or sys.argv[1:])]),
                   date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   wall_seconds=time.perf_counter() - began)
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / "precision.json"
    out.write_text(json.dumps(payload, indent=1))
    return payload


if __name__ == "__main__":
    main()
