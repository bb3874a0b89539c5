"""Explain a prediction, and a likelihood, with captum.

Trains a small hybrid model (flow + linear head) on the bundled digits, then asks two questions of
one test image:

* which pixels drive the predicted class? (Integrated Gradients and Saliency on the class logit)
* which pixels make the image unlikely? (the same methods on -log2 p(x), in bits)

Integrated Gradients is *complete*: its attributions add up to f(x) - f(baseline), printed below.
The heat-maps are saved beside the image in one PNG (red: pushes the quantity up, blue: down).

    python examples/explain_prediction.py           # about a minute; examples-output/explain.png
    python examples/explain_prediction.py --fast --out /tmp/explain
"""

import argparse
import os
from pathlib import Path

import torch

from hybridflow import HybridModel, TrainConfig, train
from hybridflow.data import load_digits_data
from hybridflow.estimators.fitting import default_threads
from hybridflow.explain import explain
from hybridflow.plots import plot_attributions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", default=os.environ.get("HYBRIDFLOW_FAST") == "1")
    parser.add_argument("--index", type=int, default=0, help="which test image")
    parser.add_argument("--out", default="examples-output", help="folder for the PNG")
    args = parser.parse_args()
    # Tiny models on a busy machine run far faster on few threads: HYBRIDFLOW_THREADS if set, else half
    # the cores (one thread on a 2-core machine), as the estimators choose.
    torch.set_num_threads(default_threads())

    train_data, test_data = load_digits_data(train=True), load_digits_data(train=False)
    options = dict(patch_size=2, num_layers=1, hidden=8, steps=1) if args.fast else \
        dict(patch_size=2, num_layers=4, hidden=32)
    torch.manual_seed(0)
    model = HybridModel("mixerflow_tiny", num_classes=10, lam=1.0, input_shape=(1, 8, 8), **options)
    train(model, train_data, TrainConfig(steps=5 if args.fast else 600, batch_size=64, lr=2e-3,
                                         progress=not args.fast))

    image, label = test_data.images[args.index], int(test_data.labels[args.index])
    with torch.no_grad():
        probs = model.predict_proba(image[None])[0]
        bits = float(model.bits_per_dim(image[None])[0])
    predicted = int(probs.argmax())
    print(f"test image {args.index}: label {label}, predicted {predicted} (p={float(probs[predicted]):.2f}), "
          f"{bits:.2f} bits/dim")

    maps = explain(model, image, methods=("ig", "saliency"), targets=("predicted", "nll"),
                   n_steps=16 if args.fast else 64)
    for name, a in maps.items():
        line = f"  {name:<36} attributions sum to {float(a.attributions.sum()):+.3f}"
        if a.delta is not None:
            line += f"; f(x) - f(baseline) = {float(a.values[0] - a.baseline_values[0]):+.3f}"
        print(line)
    path = plot_attributions(image, {k: a.attributions[0] for k, a in maps.items()},
                             Path(args.out) / "explain.png",
                             title=f"label {label}, predicted {predicted} (p={float(probs[predicted]):.2f}), "
                                   f"{bits:.2f} bits/dim")
    print(f"heat-maps -> {path}")


if __name__ == "__main__":
    main()
