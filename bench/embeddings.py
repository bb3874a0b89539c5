"""Embeddings (the paper's Table 7 at CPU scale): linear probes on the frozen latents of the
density-trained models, against raw pixels, on Fashion-MNIST and the CIFAR-10 subset
(4,000 train / 1,000 test images from ``cifar10-train4000.npz`` / ``cifar10-test1000.npz``).

Each flow is trained by maximum likelihood for the budget (or, with ``--reuse``, loaded from the
density or time-to-quality benchmark's run with the same spec and settings, under runs/bench/),
frozen, and each of its ``--features`` sets (default: the library's default, the latents at every
depth and the conditioners' pooled hidden units, then the flattened final latent; a flow whose
blocks the library cannot read, normflows' Glow, gets the latent only) fed to
``hybridflow.probe.linear_probe``: standardised multinomial logistic regression, C chosen on a
held-out fifth of the probe's train set, test accuracy and log-loss as mean and spread over seeds.

    python bench/embeddings.py --reuse              # after bench/density.py; trains CIFAR-10 models
    python bench/embeddings.py --datasets cifar10 --probe-seeds 0
    python bench/embeddings.py --smoke
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402

from hybridflow.features import DEFAULT_FEATURES, check_features, default_features  # noqa: E402
from hybridflow.probe import embed_images, format_table, linear_probe, raw_pixel_features  # noqa: E402

DATASETS = ["fashionmnist", "cifar10"]


def parse_args(argv=None):
    p = C.base_parser(__doc__)
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--probe-train", type=int, default=10000,
                   help="labelled train images the probe sees (seeded subset; 0 = all)")
    p.add_argument("--probe-seeds", default="0,1,2")
    p.add_argument("--probe-cs", default="1e-4,1e-3,1e-2,1e-1,1,10,100", help="candidate inverse regularisations")
    p.add_argument("--features", default=f"{DEFAULT_FEATURES},latent",
                   help="comma-separated feature sets of hybridflow.features, one row each")
    p.add_argument("--pooled", action="store_true", help="also probe the latents averaged over positions")
    args = p.parse_args(argv)
    args = C.finish_args(args, argv, "embeddings")
    if args.smoke:
        args.probe_train, args.probe_seeds, args.probe_cs = 128, "0", "0.1,1"
    return args


def run_dataset(args, dataset: str) -> dict:
    train = C.load_data(args, dataset, train=True)
    test = C.load_data(args, dataset, train=False)
    probe_train = train
    if args.probe_train and args.probe_train < len(train):
        probe_train = C.load_data(args, dataset, train=True, limit=args.probe_train)
    seeds = [int(s) for s in args.probe_seeds.split(",")]
    cs = [float(c) for c in args.probe_cs.split(",")]
    features = {"raw pixels": (raw_pixel_features(probe_train.images), raw_pixel_features(test.images))}
    models = {"raw pixels": dict(params=0)}
    wanted = [check_features(f.strip()) for f in args.features.split(",") if f.strip()]
    if args.pooled and "pooled" not in wanted:
        wanted.append("pooled")
    for spec in args.specs:
        model, info = C.trained_model(args, spec, dataset, train)
        record = dict(spec=spec.as_dict(), params=C.backbone_params(model), train=info,
                      test_bits_per_dim=C.test_bits_per_dim(model, test.images, args.eval_batch))
        readable = default_features(model) != "latent"  # its blocks and conditioners can be tapped
        for name in wanted:
            if name not in ("latent", "pooled") and not readable:
                C.log(args, f"  {spec.label}: no {name} features (the library cannot read its blocks); skipped")
                continue
            row = f"{spec.label} ({name})"
            models[row] = dict(record, features=name)
            features[row] = (embed_images(model, probe_train.images, features=name),
                             embed_images(model, test.images, features=name))
    results = {}
    for name, (x_train, x_test) in features.items():
        clock = C.timer()
        results[name] = linear_probe(x_train, probe_train.labels, x_test, test.labels, seeds=seeds, Cs=cs, name=name)
        C.log(args, f"  {dataset} probe {name}: accuracy {results[name].accuracy_mean:.4f} ({clock():.0f} s)")
    print(f"\n{dataset}: linear probes ({len(probe_train)} train / {len(test)} test)\n{format_table(results)}\n")
    raw = results["raw pixels"]
    return dict(dataset=dataset, probe_train=len(probe_train), probe_test=len(test), flow_train=len(train),
                features={name: dict(r.as_dict(), model=models[name],
                                     accuracy_minus_raw=r.accuracy_mean - raw.accuracy_mean,
                                     log_loss_minus_raw=r.log_loss_mean - raw.log_loss_mean)
                          for name, r in results.items()})


def main(argv=None) -> dict:
    args = parse_args(argv)
    C.setup(args)
    clock = C.timer()
    out = {}
    for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        out[dataset] = run_dataset(args, dataset)
    C.write_results(args, dict(datasets=out), clock())
    return out


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
