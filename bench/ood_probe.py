"""OOD scorers (Fashion-MNIST in vs MNIST out) and linear probes on MNIST, for the issue's note.

Trains each flow by maximum likelihood for a wall-clock budget on the CPU, scores
Fashion-MNIST test (in) against MNIST test (out) with every scorer, and probes frozen
embeddings (raw pixels, glow_tiny, mixerflow_tiny, a briefly trained timm MLP-Mixer) on MNIST.
Prints tables and writes JSON to bench/results/.

    python bench/ood_probe.py --smoke                 # seconds: checks the plumbing
    python bench/ood_probe.py --minutes 4             # the measurement (about 35 minutes)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from hybridflow import create_backbone
from hybridflow.training import fit_backbone
from hybridflow.data import load_dataset
from hybridflow.ood import (
    BitsPerDim, Complexity, LikelihoodRatio, LogLikelihood, Typicality, evaluate, log_likelihood, perturb,
)
from hybridflow.probe import compare_probes, embed_images, format_table, raw_pixel_features, timm_mixer_features

ROOT = Path(__file__).resolve().parents[1]
BACKBONES = ("mixerflow_tiny", "glow_tiny")


def train_flow(name: str, images: torch.Tensor, args, tag: str, seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """A backbone trained for ``args.minutes`` (or ``args.steps`` in smoke mode), cached in /tmp."""
    torch.manual_seed(seed)
    model = create_backbone(name, input_shape=tuple(images.shape[1:]))
    cache = Path(args.cache) / f"{tag}_{name}_{args.minutes}min{'_smoke' if args.smoke else ''}.pt"
    if args.reuse and cache.exists():
        saved = torch.load(cache, weights_only=True)  # state dict and plain numbers: nothing to execute
        model.load_state_dict(saved["state"])
        return model.eval(), saved["info"]
    start = time.monotonic()
    losses = fit_backbone(model, images, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=seed,
                          max_seconds=None if args.smoke else 60 * args.minutes)
    info = {"steps": len(losses), "seconds": round(time.monotonic() - start, 1),
            "final_train_bpd": float(np.mean(losses[-50:])), "params": model.num_params}
    print(f"  trained {tag} {name}: {info}", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": model.state_dict(), "info": info}, cache)
    return model.eval(), info


def ood_table(rows: dict[str, dict]) -> str:
    lines = [f"{'scorer':<28}{'AUROC':>8}{'AUPR-in':>9}{'AUPR-out':>10}{'FPR95-in':>10}{'FPR95-out':>11}"]
    for name, m in rows.items():
        lines.append(f"{name:<28}{m['auroc']:>8.3f}{m['aupr_in']:>9.3f}{m['aupr_out']:>10.3f}"
                     f"{m['fpr_at_95_tpr_in']:>10.3f}{m['fpr_at_95_tpr_out']:>11.3f}")
    return "\n".join(lines)


def run_ood(args) -> dict:
    fashion = load_dataset("fashionmnist", root=args.data, train=True)
    order = torch.randperm(len(fashion), generator=torch.Generator().manual_seed(0))
    held_out, train = fashion.images[order[: args.n_eval]], fashion.images[order[args.n_eval:]]
    if args.smoke:
        train = train[:512]
    x_in = load_dataset("fashionmnist", root=args.data, train=False, limit=args.n_eval).images
    x_out = load_dataset("mnist", root=args.data, train=False, limit=args.n_eval).images
    results = {}
    for name in BACKBONES:
        print(f"OOD, {name}: training on Fashion-MNIST ({len(train)} images)", flush=True)
        model, info = train_flow(name, train, args, "fashion")
        print(f"  training the reference on perturbed inputs (rate {args.perturb_rate})", flush=True)
        reference, ref_info = train_flow(name, perturb(train, args.perturb_rate, seed=1), args,
                                         f"fashion_perturbed{args.perturb_rate}", seed=1)
        typicality = Typicality(model).fit(held_out)
        scorers = {
            "loglik": LogLikelihood(model), "bpd": BitsPerDim(model), "typicality (M=1)": typicality,
            f"likelihood_ratio (mu={args.perturb_rate})": LikelihoodRatio(model, reference),
            "complexity (png)": Complexity(model, "png"), "complexity (zlib)": Complexity(model, "zlib"),
        }
        metrics = {label: evaluate(scorer(x_in), scorer(x_out)) for label, scorer in scorers.items()}
        m = args.typicality_m
        metrics[f"typicality (batch M={m})"] = evaluate(typicality.score_batches(x_in, m),
                                                        typicality.score_batches(x_out, m))
        bpd_in = float(-log_likelihood(model, x_in).mean() / (784 * math.log(2)))
        bpd_out = float(-log_likelihood(model, x_out).mean() / (784 * math.log(2)))
        results[name] = {"train": info, "reference": ref_info, "test_bpd_in": bpd_in, "test_bpd_out": bpd_out,
                         "metrics": metrics}
        print(f"\n{name}: Fashion-MNIST test {bpd_in:.3f} bits/dim, MNIST test {bpd_out:.3f} bits/dim "
              f"({args.n_eval} each)\n{ood_table(metrics)}\n", flush=True)
    return results


def run_probe(args) -> dict:
    train = load_dataset("mnist", root=args.data, train=True)
    probe_train = load_dataset("mnist", root=args.data, train=True, limit=args.probe_train, seed=1)
    probe_test = load_dataset("mnist", root=args.data, train=False, limit=args.probe_test, seed=1)
    flow_train = train.images[:512] if args.smoke else train.images
    features = {"raw pixels": (raw_pixel_features(probe_train.images), raw_pixel_features(probe_test.images))}
    infos = {}
    for name in BACKBONES:
        print(f"probe, {name}: training on MNIST ({len(flow_train)} images)", flush=True)
        model, infos[name] = train_flow(name, flow_train, args, "mnist")
        features[name] = (embed_images(model, probe_train.images, features="latent"),
                          embed_images(model, probe_test.images, features="latent"))
    print("probe, timm MLP-Mixer: training on the probe's labelled train set", flush=True)
    start = time.monotonic()
    mixer_train, mixer_test = timm_mixer_features(
        probe_train.images, probe_train.labels, probe_test.images, steps=args.steps if args.smoke else 10**9,
        batch_size=args.batch_size, lr=args.lr, max_seconds=None if args.smoke else 60 * args.mixer_minutes)
    infos["timm mixer (discriminative)"] = {"seconds": round(time.monotonic() - start, 1)}
    features["timm mixer (discriminative)"] = (mixer_train, mixer_test)
    kwargs = dict(seeds=(0,), Cs=[0.01, 0.1, 1.0]) if args.smoke else {}
    start = time.monotonic()
    results = compare_probes(features, probe_train.labels, probe_test.labels, **kwargs)
    print(f"\nlinear probes on MNIST ({len(probe_train)} train / {len(probe_test)} test; "
          f"{time.monotonic() - start:.0f} s)\n{format_table(results)}\n", flush=True)
    return {name: {**r.as_dict(), "model": infos.get(name, {})} for name, r in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run on tiny subsets")
    parser.add_argument("--minutes", type=float, default=4.0, help="training budget per flow")
    parser.add_argument("--mixer-minutes", type=float, default=2.0, help="training budget of the timm mixer")
    # One thread: on a shared 2-core machine OpenMP's spinning threads made 2 threads 6x slower.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--n-eval", type=int, default=2000, help="test images per OOD set")
    parser.add_argument("--perturb-rate", type=float, default=0.2)
    parser.add_argument("--typicality-m", type=int, default=10)
    parser.add_argument("--probe-train", type=int, default=5000)
    parser.add_argument("--probe-test", type=int, default=2000)
    parser.add_argument("--only", choices=["ood", "probe"], default=None)
    parser.add_argument("--data", default=os.environ.get("HYBRIDFLOW_DATA", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--cache", default="/tmp/hybridflow_bench_cache", help="trained models, for --reuse")
    parser.add_argument("--reuse", action="store_true", help="load models trained by an earlier run")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    args.steps = 3 if args.smoke else 10**9  # otherwise the wall-clock budget stops training
    if args.smoke:
        args.n_eval, args.probe_train, args.probe_test, args.typicality_m = 100, 300, 100, 5
        args.batch_size = 16
    torch.set_num_threads(args.threads)
    start = time.monotonic()
    report = {"config": {k: v for k, v in vars(args).items() if k not in ("cache",)},
              "machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "cpu_threads": args.threads}}
    if args.only in (None, "ood"):
        report["ood"] = run_ood(args)
    if args.only in (None, "probe"):
        report["probe"] = run_probe(args)
    report["total_seconds"] = round(time.monotonic() - start, 1)
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"ood_probe{'_smoke' if args.smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out} ({report['total_seconds']} s)")


if __name__ == "__main__":
    main()
