"""Calibration and the reject option of the shipped hybrid MNIST classifier (issue 19.4).

1. ECE of ``predict_proba`` on MNIST test, and whether the density flags the test images the
   classifier gets (confidently) wrong: AUROC of bits/dim, wrong vs correct.
2. One call for "class, and is this input in distribution": ``predict_or_reject`` with the threshold
   at the ``--quantile`` (5%) quantile of the OOD scores of ``--calibration`` (2,000) seeded MNIST
   *training* images, per scorer: the fraction of MNIST test kept, the accuracy on the kept images
   against all, the fraction of Fashion-MNIST test rejected, and the AUROC of the score, MNIST
   (positive) against Fashion-MNIST.

Everything goes through :class:`hybridflow.estimators.HybridFlowClassifier` wrapped around
``pretrained:mnist-hybrid`` (float32 inference: float64 is 5x slower on CPU).
Needs MNIST and Fashion-MNIST under ``--data-root``:
    python bench/calibration.py --data-root ../shared/data            # JSON: bench/results/calibration.json
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, SMOKE_DIR, default_data_root, write_results  # noqa: E402

from hybridflow.data import load_dataset  # noqa: E402
from hybridflow.estimators import (OOD_SCORERS, HybridFlowClassifier, expected_calibration_error,  # noqa: E402
                                   ood_scores)


def subset(images: torch.Tensor, labels: torch.Tensor, limit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded subset of ``limit`` images (all of them for ``None``), as numpy."""
    rows = np.arange(len(images)) if limit is None or limit >= len(images) else \
        np.sort(np.random.default_rng(seed).choice(len(images), limit, replace=False))
    return images.numpy()[rows], labels.numpy()[rows]


def mean_or_none(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def auroc_or_none(labels: np.ndarray, scores: np.ndarray) -> float | None:
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else None  # both classes present


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=default_data_root())
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--test-limit", type=int, default=None, help="seeded subset of each test set (default: all)")
    p.add_argument("--calibration", type=int, default=2000, help="MNIST training images setting the threshold")
    p.add_argument("--quantile", type=float, default=0.05, help="reject_quantile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="200 images a side; JSON to bench/results/smoke/")
    args = p.parse_args(argv)
    args.command = shlex.join(["python", "bench/calibration.py", *(sys.argv[1:] if argv is None else argv)])
    if args.smoke:
        args.test_limit, args.calibration = min(args.test_limit or 200, 200), min(args.calibration, 200)
    args.results_dir, args.name = (SMOKE_DIR if args.smoke else RESULTS_DIR), "calibration"
    torch.set_num_threads(args.threads)
    start = time.time()

    load = lambda name, train: load_dataset(name, args.data_root, train=train)  # noqa: E731
    x, y = subset(*(lambda d: (d.images, d.labels))(load("mnist", False)), args.test_limit, args.seed)
    x_ood, _ = subset(*(lambda d: (d.images, d.labels))(load("fashionmnist", False)), args.test_limit, args.seed)
    x_cal, _ = subset(*(lambda d: (d.images, d.labels))(load("mnist", True)), args.calibration, args.seed + 1)
    clf = HybridFlowClassifier.from_model("pretrained:mnist-hybrid", device="cpu", inference_dtype="float32",
                                          batch_size=500, num_threads=args.threads)

    # 1. Calibration, and does the density flag the errors?
    p_test, loglik = clf.predict_proba(x), clf.score_samples(x)
    bpd = -loglik / (x[0].size * np.log(2))
    wrong, conf = p_test.argmax(1) != y, p_test.max(1)
    confident_wrong = wrong & (conf > 0.9)
    calibration = dict(
        test_images=len(x), accuracy=float(1 - wrong.mean()), ece_15_bins=expected_calibration_error(p_test, y),
        errors=int(wrong.sum()), confidently_wrong_p_gt_0_9=int(confident_wrong.sum()),
        bpd_correct=mean_or_none(bpd[~wrong]), bpd_wrong=mean_or_none(bpd[wrong]),
        bpd_confidently_wrong=mean_or_none(bpd[confident_wrong]),
        auroc_bpd_wrong_vs_correct=auroc_or_none(wrong, bpd),
        auroc_bpd_confidently_wrong_vs_correct=auroc_or_none(confident_wrong[~wrong | confident_wrong],
                                                             bpd[~wrong | confident_wrong]))
    print(f"MNIST test ({len(x)}): accuracy {calibration['accuracy']:.4f}; ECE (15 bins) "
          f"{calibration['ece_15_bins']:.4f}; {calibration['errors']} errors, "
          f"{calibration['confidently_wrong_p_gt_0_9']} of them confident (p > 0.9)")
    print("bits/dim: correct {bpd_correct}, wrong {bpd_wrong}, confidently wrong {bpd_confidently_wrong}; AUROC "
          "wrong vs correct {auroc_bpd_wrong_vs_correct}, confidently wrong vs correct "
          "{auroc_bpd_confidently_wrong_vs_correct}".format(
              **{k: "n/a" if v is None else f"{v:.3f}" for k, v in calibration.items()}))

    # 2. The reject option: threshold at the quantile of training scores, MNIST test vs Fashion-MNIST test.
    reject = {}
    print(f"\nreject below the {args.quantile:.0%} quantile of {len(x_cal)} MNIST training scores; "
          f"MNIST test {len(x)} vs Fashion-MNIST test {len(x_ood)}")
    print(f"{'scorer':<11} {'MNIST kept':>10} {'acc kept':>9} {'acc all':>8} {'FMNIST rejected':>16} {'AUROC':>6}")
    # The flow's passes over the test sets are shared by the scorers: log p(x) once per set (MNIST's
    # from above); predict_or_reject gives the same answer, checked on a slice.
    loglik_ood, predicted = clf.score_samples(x_ood), clf.classes_[p_test.argmax(1)]
    for scorer in OOD_SCORERS:
        tic = time.time()
        clf.set_params(ood_scorer=scorer, reject_quantile=args.quantile).fit_reject(x_cal)
        s_in, s_out = (ood_scores(ll, torch.from_numpy(images), scorer, clf.ood_nll_mean_)
                       for ll, images in ((loglik, x), (loglik_ood, x_ood)))
        kept = s_in >= clf.reject_threshold_
        check = slice(0, 100)
        assert np.array_equal(clf.predict_or_reject(x[check]), np.where(kept[check], predicted[check], -1))
        auroc = roc_auc_score(np.r_[np.ones(len(x)), np.zeros(len(x_ood))], np.r_[s_in, s_out])
        reject[scorer] = dict(threshold=clf.reject_threshold_, mnist_kept=float(kept.mean()),
                              accuracy_kept=float((predicted[kept] == y[kept]).mean()),
                              accuracy_all=calibration["accuracy"],
                              fashion_rejected=float((s_out < clf.reject_threshold_).mean()),
                              auroc_mnist_vs_fashion=float(auroc), seconds=round(time.time() - tic, 1))
        r = reject[scorer]
        print(f"{scorer:<11} {r['mnist_kept']:>10.4f} {r['accuracy_kept']:>9.4f} {r['accuracy_all']:>8.4f} "
              f"{r['fashion_rejected']:>16.4f} {r['auroc_mnist_vs_fashion']:>6.3f}")
    payload = dict(model="pretrained:mnist-hybrid", calibration=calibration,
                   reject=dict(quantile=args.quantile, calibration_images=len(x_cal), scorers=reject))
    write_results(args, payload, time.time() - start)
    return payload


if __name__ == "__main__":
    main()
