"""Embeddings (the paper's Table 7 at CPU scale): every feature set of MixerFlow and Glow, side
by side in one run at the same training budget, against the raw pixels.

Each backbone is trained by maximum likelihood through :func:`hybridflow.probing.run_probe` (the
code behind ``hybridflow probe``; on the digits exactly the README's main job: 400 steps of the
light settings), frozen, and every feature set of :mod:`hybridflow.features` is probed with
:func:`hybridflow.probe.linear_probe` (standardised logistic regression, the same C grid and
validation split for every set): test accuracy and log-loss, mean and spread over probe seeds.
On Fashion-MNIST and the CIFAR-10 subset each backbone trains for ``--minutes`` of wall clock
on ``--limit`` images (the same images the probes are fitted on).

    python bench/embedding_features.py --datasets digits
    python bench/embedding_features.py --datasets fashionmnist --minutes 2.5 --limit 6000 --test-limit 2000 --seeds 1
    python bench/embedding_features.py --datasets fashionmnist --budget-steps 300 --limit 3000 --test-limit 1000
    python bench/embedding_features.py --datasets digits --train-seeds 0,1,2,3   # the main job, 4 flows
    python bench/embedding_features.py --smoke

``--train-seeds`` trains one flow per seed (the probe seeds start at each, as in ``hybridflow probe
--seed``) and adds a summary over them: on the digits (450 test images, one image = 0.22 points) the
spread between training seeds is larger than the gaps between feature sets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hybridflow.features import FEATURE_SETS  # noqa: E402
from hybridflow.probing import run_probe  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="digits", help="comma-separated: digits, fashionmnist, cifar10")
    p.add_argument("--backbones", default="mixerflow,glow")
    p.add_argument("--features", default=",".join(f for f in FEATURE_SETS if f != "pooled"))
    p.add_argument("--minutes", type=float, default=2.5, help="training budget per model off the digits")
    p.add_argument("--steps", type=int, default=400, help="training steps on the digits (the main job's)")
    p.add_argument("--budget-steps", type=int, default=None,
                   help="off the digits: train this many steps instead of --minutes (a budget a busy machine "
                   "cannot skew)")
    p.add_argument("--limit", type=int, default=6000, help="train images off the digits")
    p.add_argument("--test-limit", type=int, default=2000)
    p.add_argument("--seeds", type=int, default=3, help="probe seeds per trained flow")
    p.add_argument("--train-seeds", default="0", help="comma-separated seeds: one trained flow (and probe) each")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root", default=os.environ.get("HYBRIDFLOW_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--smoke", action="store_true", help="seconds: 3 steps, tiny models, few images")
    p.add_argument("--out", default=None, help="results JSON (default bench/results/embeddings_features_<datasets>.json)")
    return p.parse_args(argv)


def summarise(reports: list[dict]) -> dict[str, dict]:
    """Per row: mean and spread over the trained flows of each flow's mean probe accuracy and log-loss."""
    rows: dict[str, list[dict]] = {}
    for report in reports:
        for result in report["results"]:
            rows.setdefault(result["name"], []).append(result)
    summary = {}
    for name, results in rows.items():
        acc = np.array([r["accuracy_mean"] for r in results])
        loss = np.array([r["log_loss_mean"] for r in results])
        summary[name] = dict(dim=results[0]["dim"], flows=len(results), accuracy_mean=float(acc.mean()),
                             accuracy_std=float(acc.std()), accuracies=acc.tolist(), log_loss_mean=float(loss.mean()),
                             log_loss_std=float(loss.std()))
    return summary


def run_dataset(args: argparse.Namespace, dataset: str) -> dict:
    seeds = [int(s) for s in args.train_seeds.split(",") if s.strip()]
    reports = [run_seed(args, dataset, seed) for seed in seeds]
    if len(seeds) == 1:
        return reports[0]
    summary = summarise(reports)
    width = max(map(len, summary))
    print(f"{dataset}: mean over {len(seeds)} trained flows (seeds {args.train_seeds})")
    for name, row in summary.items():
        print(f"  {name:{width}s} {100 * row['accuracy_mean']:6.2f} ± {100 * row['accuracy_std']:.2f}  "
              f"log-loss {row['log_loss_mean']:.4f} ± {row['log_loss_std']:.4f}", flush=True)
    return dict(reports[0], train_seeds=seeds, per_seed=reports, summary=summary)


def run_seed(args: argparse.Namespace, dataset: str, seed: int) -> dict:
    digits = dataset == "digits"
    kwargs = dict(steps=args.steps, seeds=args.seeds, progress=False, log=lambda m: print(m, flush=True),
                  features=args.features.split(","), seed=seed)
    if not digits:  # a wall-clock budget: the step count only sets the (then barely decaying) cosine schedule
        kwargs.update(dataset=dataset, data_root=args.data_root, limit=args.limit, test_limit=args.test_limit,
                      steps=100_000, max_seconds=60 * args.minutes)
        if args.budget_steps:
            kwargs.update(steps=args.budget_steps, max_seconds=None)
    if args.smoke:
        kwargs.update(steps=3, max_seconds=None, limit=200, test_limit=100, seeds=1,
                      options=dict(num_layers=1, hidden=8, steps=1) if args.backbones == "mixerflow" else None)
    report = run_probe(args.backbones.split(","), **kwargs)
    print(f"{report.header}\n{report.table()}\n", flush=True)
    return report.as_dict()


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out = {}
    for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        out[dataset] = run_dataset(args, dataset)
    payload = dict(benchmark="embeddings", command="python bench/embedding_features.py " + " ".join(sys.argv[1:]),
                   date=time.strftime("%Y-%m-%dT%H:%M:%S"), wall_seconds=round(time.perf_counter() - started, 1),
                   threads=args.threads, datasets=out)
    name = f"embeddings_features_{'_'.join(out)}.json"  # bench/embeddings.py's embeddings.json is another record
    path = Path(args.out) if args.out else RESULTS / ("smoke" if args.smoke else "") / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
