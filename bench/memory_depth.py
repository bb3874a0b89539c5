"""Peak training memory and step time against depth, with and without ``invertible_backprop``.

Each (depth, option) pair trains in a fresh subprocess, so one run's freed-but-kept heap never
counts against the next. Memory is the rise of the process's peak resident set over its resident
set before the timed steps (``/proc/self/clear_refs`` resets the peak after a warm-up step), with
glibc told to map every block of 64 KiB or more on its own and to give it back when freed
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``), so that freed activations leave the
resident set; on CUDA it is ``torch.cuda.max_memory_allocated`` above the memory held before
the timed steps. It counts everything a step allocates: activations, gradients, Adam's update
temporaries; the parameters, Adam's moments and the batch were allocated before. The step is
the density objective (bits/dim of uint8 images, fresh dequantisation noise) and an Adam update.

Step times are CPU seconds of the process (one thread by default), the two paths in turns in one
process per depth: on a shared machine wall-clock time measures the neighbours (both are in the
JSON).

    python bench/memory_depth.py                      # mixerflow 3x32x32, batch 64, depths 8,16,30
    python bench/memory_depth.py --hidden 128 --steps-per-layer 4 --device cuda   # paper width, GPU
    python bench/memory_depth.py --smoke              # seconds: tiny images, depths 2 and 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "memory_depth.json"


def _status(key: str) -> int:
    """``VmHWM`` / ``VmRSS`` of this process, in bytes."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+)", text).group(1)) * 1024


def setup(args: argparse.Namespace, invertible: bool):
    """The backbone and one training step of it (density objective, Adam)."""
    import torch

    from hybridflow import create_backbone

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    shape = tuple(int(s) for s in args.shape.split("x"))
    flow = create_backbone(args.backbone, input_shape=shape, num_layers=args.depth, hidden=args.hidden,
                           steps=args.steps_per_layer, invertible_backprop=invertible).to(device).train()
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, *shape), generator=generator, dtype=torch.uint8)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        _, log_prob = flow.encode(images, generator=generator)
        (-log_prob.mean()).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return flow, step, images, generator, device


def timer(args: argparse.Namespace) -> dict:
    """Step times of one depth, the two paths in turns (one model switching), so that the ratio
    is not at the mercy of what the rest of a shared machine did in between."""
    import torch

    flow, step, _, _, _ = setup(args, False)
    pairs, walls = [], []
    for round_ in range(args.rounds + 1):
        times, wall = [], []
        for invertible in (False, True):
            flow.invertible_backprop = invertible
            start, start_wall = time.process_time(), time.perf_counter()
            step()
            times.append(time.process_time() - start)
            wall.append(time.perf_counter() - start_wall)
        if round_:  # round 0 warms both paths up
            pairs.append(times)
            walls.append(wall)
    ratios = sorted(on / off for off, on in pairs)
    del torch
    return dict(depth=args.depth, step_cpu_s=min(p[0] for p in pairs), step_cpu_s_invertible=min(p[1] for p in pairs),
                time_ratio_median=ratios[len(ratios) // 2], time_ratios=ratios,
                step_wall_s=min(w[0] for w in walls), step_wall_s_invertible=min(w[1] for w in walls))


def worker(args: argparse.Namespace) -> dict:
    """One (depth, option) memory measurement in this (fresh) process."""
    import torch

    flow, step, images, generator, device = setup(args, bool(args.invertible))
    step()  # warm-up: ActNorm initialisation, Adam's moments, allocator pools
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set to the current one
        before = _status("VmRSS")
    times = []
    for _ in range(args.timed_steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _status("VmHWM")
    with torch.no_grad():  # how well the deepest inverse rebuilds its input (float32)
        u = flow.dequantize(images, generator=generator)
        z, _ = flow(u)
        drift = float((flow.inverse(z) - u).abs().max())
    return dict(depth=args.depth, invertible_backprop=bool(args.invertible), step_s=min(times),
                step_s_median=sorted(times)[len(times) // 2], peak_step_mb=(peak - before) / 2**20,
                params=flow.num_params, reconstruction_error=drift)


def run_one(args: argparse.Namespace, role: str, depth: int, invertible: bool = False) -> dict:
    """``role`` (``--worker``: memory of one path, ``--timer``: both paths' step times) in a fresh process."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", OMP_WAIT_POLICY="PASSIVE",
               OMP_NUM_THREADS=str(args.threads),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, __file__, role, "--depth", str(depth), "--invertible", str(int(invertible)),
               "--backbone", args.backbone, "--shape", args.shape, "--batch", str(args.batch),
               "--hidden", str(args.hidden), "--steps-per-layer", str(args.steps_per_layer),
               "--timed-steps", str(args.timed_steps), "--rounds", str(args.rounds), "--threads", str(args.threads),
               "--device", args.device]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{role} for depth {depth} (invertible_backprop={invertible}) failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict], timings: list[dict]) -> str:
    by = {(r["depth"], r["invertible_backprop"]): r for r in rows}
    times = {t["depth"]: t for t in timings}
    lines = ["| layers | params | peak step memory, ordinary (MB) | with invertible_backprop (MB) | memory ratio | "
             "step CPU time, ordinary (s) | with invertible_backprop (s) | time ratio, median (range) | "
             "rebuilt input error |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for depth in sorted(times):
        off, on, t = by[(depth, False)], by[(depth, True)], times[depth]
        lines.append(f"| {depth} | {off['params']:,} | {off['peak_step_mb']:.0f} | {on['peak_step_mb']:.0f} | "
                     f"{on['peak_step_mb'] / off['peak_step_mb']:.2f} | {t['step_cpu_s']:.2f} | "
                     f"{t['step_cpu_s_invertible']:.2f} | {t['time_ratio_median']:.2f} "
                     f"({min(t['time_ratios']):.2f}-{max(t['time_ratios']):.2f}) | {on['reconstruction_error']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="mixerflow_cifar10")
    parser.add_argument("--shape", default="3x32x32")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--depths", default="8,16,30")
    parser.add_argument("--hidden", type=int, default=32, help="conditioner width (the paper's CIFAR-10: 128)")
    parser.add_argument("--steps-per-layer", type=int, default=2, help="flow steps k per mixing flow (paper: 4)")
    parser.add_argument("--timed-steps", type=int, default=1, help="steps whose peak memory is measured")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (one step of each path) per depth")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny images and depths: checks the script runs")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--timer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--invertible", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker or args.timer:
        print(json.dumps(worker(args) if args.worker else timer(args)))
        return
    if args.smoke:
        args.shape, args.batch, args.depths, args.hidden, args.rounds = "3x8x8", 8, "2,4", 8, 1
    rows, timings = [], []
    start = time.perf_counter()
    for depth in (int(d) for d in args.depths.split(",")):
        for invertible in (False, True):
            rows.append(run_one(args, "--worker", depth, invertible))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        timings.append(run_one(args, "--timer", depth))
        print(json.dumps(timings[-1]), file=sys.stderr, flush=True)
    print(table(rows, timings))
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "timer", "depth", "invertible", "results")}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(dict(settings=settings, machine=platform.machine(), cpu_count=os.cpu_count(),
                                            load_average=os.getloadavg(), wall_s=time.perf_counter() - start,
                                            memory=rows, step_times=timings), indent=1) + "\n")


if __name__ == "__main__":
    main()
