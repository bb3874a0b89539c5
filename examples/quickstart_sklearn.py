"""Quick start: a hybrid normalising flow as a scikit-learn classifier, on the bundled 8x8 digits.

One flow gives a classifier (predict, predict_proba), a density (score_samples: log-likelihood in
nats per image) and an embedding (transform), and it plugs into scikit-learn's tools.

    python examples/quickstart_sklearn.py            # about a minute on a laptop CPU
    python examples/quickstart_sklearn.py --fast     # seconds: a smoke run (HYBRIDFLOW_FAST=1 too)
"""

import argparse
import os

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hybridflow.estimators import HybridFlowClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", default=os.environ.get("HYBRIDFLOW_FAST") == "1",
                        help="tiny model, few steps: checks that the script runs")
    args = parser.parse_args()
    X, y = load_digits(return_X_y=True)  # (1797, 64) flattened 8x8 images with values 0..16
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)

    # MixerFlow on 2x2 patches of the 8x8 images; lam weighs the classification loss against bits/dim;
    # verbose shows a progress bar, and num_threads=None picks HYBRIDFLOW_THREADS, else half the cores.
    small = dict(patch_size=2, num_layers=1, hidden=8, steps=1) if args.fast else dict(patch_size=2, num_layers=4,
                                                                                       hidden=32)
    clf = HybridFlowClassifier(backbone="mixerflow_tiny", backbone_kwargs=small, lam=1.0,
                               steps=5 if args.fast else 600, lr=2e-3, random_state=0, device="cpu",
                               verbose=not args.fast)
    clf.fit(X_train, y_train)

    print(f"test accuracy            {clf.score(X_test, y_test):.3f}")
    log_likelihood = clf.score_samples(X_test)  # nats per image; bits/dim = -log p / (D ln 2), D = 64 pixels
    print(f"mean log-likelihood      {log_likelihood.mean():.1f} nats per image, "
          f"{-log_likelihood.mean() / (64 * np.log(2)):.2f} bits/dim")
    print(f"class probabilities      {np.round(clf.predict_proba(X_test[:1])[0], 2)}")
    print(f"embedding                {clf.transform(X_test[:5]).shape} (the flow's latent, one row per image)")

    # The embedding feeds any scikit-learn model: a standardised logistic regression on top.
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(clf.transform(X_train), y_train)
    print(f"probe on the embedding   {probe.score(clf.transform(X_test), y_test):.3f} accuracy")


if __name__ == "__main__":
    main()
