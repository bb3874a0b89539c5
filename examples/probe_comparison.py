"""Compare frozen embeddings with linear probes: MixerFlow vs Glow vs raw pixels (the paper's Table 7
protocol, on the bundled digits).

Each flow is trained by maximum likelihood only (lam = 0: the labels are never seen), frozen, and a
standardised logistic regression is fitted on its latent; test accuracy and log-loss are reported as
mean ± std over seeds (each seed draws the validation split that picks the regularisation).
`hybridflow probe -b mixerflow -b glow` runs the same comparison from the command line.

    python examples/probe_comparison.py           # about a minute
    python examples/probe_comparison.py --fast
"""

import argparse
import os

import torch

from hybridflow import HybridModel, TrainConfig, train
from hybridflow.data import load_digits_data
from hybridflow.estimators.fitting import default_threads
from hybridflow.probe import compare_probes, embed_images, format_table, raw_pixel_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", default=os.environ.get("HYBRIDFLOW_FAST") == "1")
    args = parser.parse_args()
    # Tiny models on a busy machine run far faster on few threads: HYBRIDFLOW_THREADS if set, else half
    # the cores (one thread on a 2-core machine), as the estimators choose.
    torch.set_num_threads(default_threads())

    train_data, test_data = load_digits_data(train=True), load_digits_data(train=False)
    backbones = {  # small settings for 8x8 images
        "mixerflow_tiny": dict(patch_size=2, num_layers=4, hidden=32),
        "glow_tiny": dict(num_steps=4, hidden=32),
    }
    if args.fast:
        backbones = {"mixerflow_tiny": dict(patch_size=2, num_layers=1, hidden=8, steps=1),
                     "glow_tiny": dict(num_levels=1, num_steps=1, hidden=8)}
    features = {"raw pixels": (raw_pixel_features(train_data.images), raw_pixel_features(test_data.images))}
    for name, options in backbones.items():
        torch.manual_seed(0)
        model = HybridModel(name, num_classes=10, lam=0.0, input_shape=(1, 8, 8), **options)
        result = train(model, train_data, TrainConfig(steps=5 if args.fast else 400, batch_size=64, lr=2e-3,
                                                      progress=not args.fast), val_data=test_data)
        print(f"{name}: test {result.metrics['val_bits_per_dim']:.3f} bits/dim")
        features[name] = (embed_images(model, train_data.images), embed_images(model, test_data.images))

    seeds = (0,) if args.fast else (0, 1, 2)
    results = compare_probes(features, train_data.labels, test_data.labels, seeds=seeds,
                             **({"Cs": [1.0]} if args.fast else {}))
    print(format_table(results))


if __name__ == "__main__":
    main()
