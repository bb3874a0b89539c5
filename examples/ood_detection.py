"""Out-of-distribution detection with a flow, and a ROC plot.

A flow trained by maximum likelihood on the digits 0-4 scores test images of 0-4 (in distribution)
against three outlier sets: the digits 5-9 (a semantic shift: same strokes, other classes), uniform
noise and inverted digits. Raw log-likelihood is only one scorer: flows are known to rate some
outliers as *more* likely than their own data, so typicality and input complexity are scored too.
Metrics: AUROC (0.5 = chance), AUPR-in, AUPR-out, FPR at 95% TPR (lower is better).

    python examples/ood_detection.py                  # about a minute; writes examples-output/ood_roc.png
    python examples/ood_detection.py --fast --out /tmp/ood
"""

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from hybridflow.data import load_digits_data
from hybridflow.estimators.fitting import default_threads
from hybridflow.ood import FlowDensity, evaluate
from hybridflow.plots import plot_roc_curves, plot_score_histograms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", default=os.environ.get("HYBRIDFLOW_FAST") == "1")
    parser.add_argument("--out", default="examples-output", help="folder for the plots")
    args = parser.parse_args()
    # Tiny models on a busy machine run far faster on few threads: HYBRIDFLOW_THREADS if set, else half
    # the cores (one thread on a 2-core machine), as the estimators choose.
    torch.set_num_threads(default_threads())

    train, test = load_digits_data(train=True), load_digits_data(train=False)
    x_train = train.images[train.labels < 5]
    fit_part, held_out = x_train[:-100], x_train[-100:]  # held-out inliers set the typicality statistics
    x_in = test.images[test.labels < 5]
    outliers = {
        "digits 5-9": test.images[test.labels >= 5],
        "noise": torch.randint(0, 256, x_in.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8),
        "inverted": 255 - x_in,
    }

    backbone_kwargs = dict(patch_size=2, num_layers=1, hidden=8, steps=1) if args.fast else \
        dict(patch_size=2, num_layers=4, hidden=32)
    detector = FlowDensity("mixerflow_tiny", backbone_kwargs, scorer="loglik", steps=5 if args.fast else 600,
                           lr=2e-3, random_state=0, device="cpu").fit(fit_part)
    print(f"trained on {len(fit_part)} images of 0-4: test bits/dim "
          f"{-detector.score(x_in) / (64 * np.log(2)):.2f}")

    scorers = {name: FlowDensity.from_model(detector.backbone_, scorer=name, X_fit=held_out)
               for name in ("loglik", "typicality", "complexity")}
    print(f"{'outliers':<12}{'scorer':<12}{'AUROC':>7}{'AUPR-in':>9}{'AUPR-out':>10}{'FPR95-in':>10}{'FPR95-out':>11}")
    curves = {}
    for set_name, x_out in outliers.items():
        for name, scorer in scorers.items():
            s_in, s_out = scorer.score_samples(x_in), scorer.score_samples(x_out)
            m = evaluate(s_in, s_out)
            print(f"{set_name:<12}{name:<12}{m['auroc']:>7.3f}{m['aupr_in']:>9.3f}{m['aupr_out']:>10.3f}"
                  f"{m['fpr_at_95_tpr_in']:>10.3f}{m['fpr_at_95_tpr_out']:>11.3f}")
            if set_name == "digits 5-9":
                curves[name] = (s_in, s_out)
    out = Path(args.out)
    roc = plot_roc_curves(curves, out / "ood_roc.png", title="in: digits 0-4, out: digits 5-9")
    hist = plot_score_histograms(curves, out / "ood_hist.png", labels=("digits 0-4 (in)", "digits 5-9 (out)"))
    print(f"ROC curves -> {roc}\nscore histograms -> {hist}")


if __name__ == "__main__":
    main()
