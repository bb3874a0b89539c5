"""Train a hybrid model on MNIST for a fixed wall-clock budget, then report test bits/dim and
accuracy on the full 10k test set. Prints one JSON line.

The cosine schedule needs a step count, so a short calibration run on a copy of the model
measures the step time first, and the budget is turned into steps (the run's own time is
reported: on a shared machine it drifts from the budget).

Example:
    python bench/train_mnist.py --backbone mixerflow_tiny --minutes 10 --lam 1 --batch-size 64 --lr 1e-3
"""

from __future__ import annotations

import argparse
import copy
import json
import time

# OpenMP's wait policy is left to the caller. Spinning (the default) is right on a quiet machine:
# OMP_WAIT_POLICY=PASSIVE halved MixerFlow's speed at 2 threads (its many mid-sized ops each wake
# sleeping threads). On a machine shared with other jobs, PASSIVE avoids a far worse slowdown.

import torch  # noqa: E402

from hybridflow.data import load_dataset  # noqa: E402
from hybridflow.hybrid import HybridModel  # noqa: E402
from hybridflow.training import TrainConfig, train  # noqa: E402
from hybridflow.training import evaluate_model as evaluate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mixerflow_tiny")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget (calibration excluded)")
    parser.add_argument("--lam", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100, help="warm-up steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-root", default="/work/shared/data")
    parser.add_argument("--out-dir", default=None, help="metrics.jsonl and the final checkpoint go here")
    parser.add_argument("--calibration-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    train_data = load_dataset("mnist", root=args.data_root, train=True)
    test_data = load_dataset("mnist", root=args.data_root, train=False)
    torch.manual_seed(args.seed)
    model = HybridModel(args.backbone, num_classes=10, lam=args.lam, input_shape=train_data.image_shape)

    started = time.perf_counter()
    probe = train(copy.deepcopy(model), train_data,
                  TrainConfig(steps=args.calibration_steps, batch_size=args.batch_size, lr=args.lr,
                              seed=args.seed + 1, progress=False, log_every=args.calibration_steps))
    seconds_per_step = probe.metrics["elapsed_s"] / args.calibration_steps
    calibration_s = time.perf_counter() - started
    steps = max(1, int(args.minutes * 60 / seconds_per_step))

    config = TrainConfig(steps=steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=min(args.warmup, steps // 10),
                         log_every=max(1, steps // 50), out_dir=args.out_dir, seed=args.seed, progress=args.progress)
    started = time.perf_counter()
    result = train(model, train_data, config)
    train_wall_s = time.perf_counter() - started

    started = time.perf_counter()
    test = evaluate(model, test_data, batch_size=500)
    eval_s = time.perf_counter() - started

    print(json.dumps(dict(
        backbone=args.backbone, params=sum(p.numel() for p in model.parameters()), lam=args.lam,
        batch_size=args.batch_size, lr=args.lr, threads=args.threads, steps=result.steps,
        epochs=round(result.steps * args.batch_size / len(train_data), 3),
        train_wall_s=round(train_wall_s, 1), calibration_s=round(calibration_s, 1),
        images_per_s=result.metrics["images_per_s"], nonfinite_steps=result.metrics["nonfinite_steps"],
        train_bits_per_dim=result.metrics["bits_per_dim"], train_accuracy=result.metrics["accuracy"],
        test_bits_per_dim=test["bits_per_dim"], test_accuracy=test["accuracy"], test_examples=test["num_examples"],
        eval_s=round(eval_s, 1),
    )), flush=True)


if __name__ == "__main__":
    main()
