"""A CPU-scale Table 8: MixerFlow with each coupling type trained the same way on MNIST.

Every coupling (affine = the paper's "MLP coupling", spline, MAF, KAN) goes into the same
backbone configuration (``mixerflow_tiny`` by default), starts from seed 0 and sees the same
batches in the same order: Adam, constant learning rate, gradient-norm clip, ``--steps`` steps of
``--batch`` images. Reported: test bits/dim on a fixed test subset (evaluation mode, seeded
dequantisation noise), parameters, and train images/s from the median step time (the machine
is shared: the median resists the spikes from other jobs, but absolute numbers are noisy).

    python bench/couplings.py                      # 300 steps, batch 64, 2,000 test images
    python bench/couplings.py --couplings affine,maf --steps 100
    python bench/couplings.py --smoke              # seconds: a few steps on a few images, no JSON

On a CPU shared with other jobs use ``--threads 1``: with the cores oversubscribed, two OpenMP
threads per process were measured 5-50x slower per step than one (they wait on each other).

Data: MNIST from ``--data`` (default ``../shared/data`` beside the checkout).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hybridflow import create_backbone  # noqa: E402
from hybridflow.data import load_dataset  # noqa: E402

COUPLINGS = ["affine", "spline", "maf", "kan"]
TABLE_8_NAMES = {"affine": "MLP-coupling", "kan": "KAN-coupling", "spline": "Splines", "maf": "MAF-based"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="mixerflow_tiny")
    p.add_argument("--couplings", default=",".join(COUPLINGS))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--eval-batch", type=int, default=500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--out", default=None, help="JSON path (default bench/results/couplings.json; none with --smoke)")
    p.add_argument("--smoke", action="store_true", help="3 steps of 8 images, 32 test images, no JSON")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch, args.test_size, args.eval_batch = 3, 8, 32, 16
    if args.out is None and not args.smoke:
        args.out = str(ROOT / "bench" / "results" / "couplings.json")
    return args


def load_data(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images every coupling sees (in one fixed order) and the fixed test subset."""
    needed = args.steps * args.batch
    train = load_dataset("mnist", root=args.data, train=True, limit=min(needed, 60000), seed=args.seed)
    test = load_dataset("mnist", root=args.data, train=False, limit=args.test_size, seed=args.seed)
    return train.images, test.images


def batches(images: torch.Tensor, steps: int, batch: int, seed: int):
    """``steps`` batches; a fresh seeded permutation per epoch, identical for every coupling."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < batch:
            order = torch.cat([order, torch.randperm(len(images), generator=generator)])
        yield images[order[:batch]]
        order = order[batch:]


@torch.no_grad()
def test_bits_per_dim(model, images: torch.Tensor, eval_batch: int) -> float:
    model.eval()
    total = sum(model.bits_per_dim(chunk).sum().item() for chunk in images.split(eval_batch))
    return total / len(images)


def run(coupling: str, train: torch.Tensor, test: torch.Tensor, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    model = create_backbone(args.backbone, coupling=coupling)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    step_times, losses = [], []
    model.train()
    start = time.perf_counter()
    for pixels in batches(train, args.steps, args.batch, args.seed):
        tick = time.perf_counter()
        loss = model.bits_per_dim(pixels).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimiser.step()
        step_times.append(time.perf_counter() - tick)
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            break
    train_seconds = time.perf_counter() - start
    tick = time.perf_counter()
    bpd = test_bits_per_dim(model, test, args.eval_batch)
    eval_seconds = time.perf_counter() - tick
    # the first step holds ActNorm's data-dependent initialisation: leave it out of the median
    median_step = statistics.median(step_times[1:] or step_times)
    tail = losses[-max(1, len(losses) // 10):]
    return dict(
        coupling=coupling, table_8_name=TABLE_8_NAMES.get(coupling, coupling), params=model.num_params,
        test_bpd=bpd, final_train_bpd=sum(tail) / len(tail), steps_done=len(losses),
        diverged=not all(math.isfinite(v) for v in losses) or not math.isfinite(bpd),
        train_images_per_s=args.batch / median_step, train_seconds=train_seconds,
        eval_images_per_s=len(test) / eval_seconds,
    )


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [f"{args.backbone}, {args.steps} steps x batch {args.batch}, Adam lr {args.lr}, clip {args.clip}; "
             f"test bits/dim on {args.test_size} MNIST test images",
             "",
             "| coupling (Table 8 name) | test bits/dim | train bits/dim (last 10%) | params | train img/s | eval img/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        flag = " (diverged)" if r["diverged"] else ""
        lines.append(f"| {r['coupling']} ({r['table_8_name']}) | {r['test_bpd']:.3f}{flag} | "
                     f"{r['final_train_bpd']:.3f} | {r['params'] / 1e6:.2f}M | {r['train_images_per_s']:.0f} | "
                     f"{r['eval_images_per_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    couplings = [c.strip() for c in args.couplings.split(",") if c.strip()]
    train, test = load_data(args)
    rows = []
    for coupling in couplings:
        rows.append(run(coupling, train, test, args))
        print(f"# {coupling}: test {rows[-1]['test_bpd']:.3f} bits/dim, "
              f"{rows[-1]['train_seconds']:.0f} s training", flush=True)
    print(markdown(rows, args))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        meta = dict(vars(args), torch=torch.__version__, python=platform.python_version(),
                    cpu_count=os.cpu_count(), load_average=os.getloadavg(),
                    note="shared CPU: timings are noisy; images/s from the median step time")
        Path(args.out).write_text(json.dumps(dict(config=meta, results=rows), indent=2) + "\n")
        print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
