"""Out-of-distribution detection: Fashion-MNIST -> MNIST and MNIST -> Fashion-MNIST, every scorer
of ``hybridflow.ood``, AUROC / AUPR-in / AUPR-out / FPR95 (inliers positive; scikit-learn's
metrics), plus each model's mean test bits/dim on both sets (a Fashion-MNIST flow famously rates
MNIST as *more* likely: a likelihood AUROC below 0.5).

Per direction and model: the flow trained on the in-distribution train set for the budget
(``--reuse`` loads the density benchmark's); for the likelihood ratio a reference density
(``--reference``): ``patches`` (default, the library's own: a bag-of-patches flow on the
in-distribution set's 4x4 patches, ``--patch-steps`` steps, one per dataset shared by every model;
section 13 of BENCHMARKS.md compares the references) or ``perturbed`` (Ren et al. 2019: the same
architecture trained on inputs perturbed at rate ``--perturb-rate`` for ``--ref-minutes``); for
max-softmax and entropy a logistic-regression head on the frozen latent
(a pure flow has no classifier of its own); typicality statistics from ``--n-fit`` training images.

    python bench/ood.py --reuse                  # after bench/density.py
    python bench/ood.py --directions fashionmnist:mnist --models mixerflow_tiny --ref-minutes 5
    python bench/ood.py --smoke
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from hybridflow.data import ImageData  # noqa: E402
from hybridflow.ood import (  # noqa: E402
    BitsPerDim, Complexity, LikelihoodRatio, LogLikelihood, MaxSoftmax, PredictiveEntropy, Typicality, evaluate,
    fit_patch_reference, log_likelihood, perturb,
)
from hybridflow.probe import embed_images  # noqa: E402
from ood_probe import ood_table  # noqa: E402

DIRECTIONS = "fashionmnist:mnist,mnist:fashionmnist"


def parse_args(argv=None):
    p = C.base_parser(__doc__)
    p.add_argument("--directions", default=DIRECTIONS, help="IN:OUT pairs, comma-separated")
    p.add_argument("--ref-minutes", type=float, default=None, help="budget of the reference model (default --minutes)")
    p.add_argument("--reference", choices=("patches", "perturbed"), default="patches",
                   help="the likelihood ratio's reference density (default: patches)")
    p.add_argument("--patch-steps", type=int, default=1500, help="training steps of the patch reference")
    p.add_argument("--perturb-rate", type=float, default=0.2)
    p.add_argument("--typicality-m", type=int, default=10, help="batch size M of the batch typicality test")
    p.add_argument("--n-fit", type=int, default=2000, help="training images for typicality's statistics")
    p.add_argument("--head-train", type=int, default=10000, help="training images for the latent classifier head")
    p.add_argument("--head-c", type=float, default=0.1, help="inverse regularisation of the head")
    p.add_argument("--name", default="ood", help="results file name (bench/results/<name>.json; section 5 renders "
                                                 "ood.json and, beside it, ood_cpu_default*.json)")
    args = p.parse_args(argv)
    args = C.finish_args(args, argv, args.name, script="ood")
    if args.smoke:
        args.n_fit, args.head_train, args.typicality_m, args.patch_steps = 64, 128, 4, 4
    return args


class LatentClassifier:
    """A standardised logistic regression on a frozen flow's latent, with ``predict_proba`` on
    integer images, so that ``MaxSoftmax`` / ``PredictiveEntropy`` can score any flow."""

    def __init__(self, flow: torch.nn.Module, c: float = 0.1) -> None:
        self.flow, self.c = flow, c
        self.input_shape = tuple(flow.input_shape)

    def fit(self, data: ImageData) -> "LatentClassifier":
        with threadpool_limits(1, user_api="blas"):
            self.head_ = make_pipeline(StandardScaler(), LogisticRegression(C=self.c, max_iter=1000))
            self.head_.fit(embed_images(self.flow, data.images, features="latent"), data.labels.numpy())
        return self

    def predict_proba(self, images: torch.Tensor) -> np.ndarray:
        with threadpool_limits(1, user_api="blas"):
            return self.head_.predict_proba(embed_images(self.flow, images, features="latent"))


def patch_reference(args, in_name: str, train: ImageData, references: dict):
    """The bag-of-patches reference of ``in_name``: trained once per run (``references``, a dict
    that ``main`` owns) and shared by every model of that run."""
    if in_name not in references:
        clock = C.timer()
        references[in_name] = fit_patch_reference(train.images, steps=args.patch_steps, seed=args.seed)
        C.log(args, f"  patch reference of {in_name}: {args.patch_steps} steps, {clock():.0f} s")
    return references[in_name]


def run_direction(args, spec, in_name: str, out_name: str, references: dict) -> dict:
    train = C.load_data(args, in_name, train=True)
    x_in = C.load_data(args, in_name, train=False).images
    x_out = C.load_data(args, out_name, train=False).images
    model, info = C.trained_model(args, spec, in_name, train)
    flow = model.backbone if hasattr(model, "backbone") else model
    if args.reference == "patches":
        reference, ref_info, ref_label = patch_reference(args, in_name, train, references), None, "likelihood_ratio (patches)"
    else:
        noisy = ImageData(perturb(train.images, args.perturb_rate, seed=1), train.labels, list(train.classes))
        reference, ref_info = C.trained_model(args, spec, in_name, noisy, tag=f"perturbed{args.perturb_rate:g}",
                                              minutes=args.ref_minutes)
        reference = reference.backbone if hasattr(reference, "backbone") else reference
        ref_label = f"likelihood_ratio (mu={args.perturb_rate:g})"
    fit_set = C.load_data(args, in_name, train=True, limit=min(args.n_fit, len(train)))
    head_set = C.load_data(args, in_name, train=True, limit=min(args.head_train, len(train)))
    clock = C.timer()
    head = LatentClassifier(flow, args.head_c).fit(head_set)
    head_seconds = clock()
    typicality = Typicality(flow).fit(fit_set.images)
    scorers = {
        "loglik": LogLikelihood(flow), "bpd": BitsPerDim(flow), "typicality (M=1)": typicality,
        ref_label: LikelihoodRatio(flow, reference),
        "complexity (png)": Complexity(flow, "png"), "complexity (zlib)": Complexity(flow, "zlib"),
        "max_softmax (latent head)": MaxSoftmax(head), "entropy (latent head)": PredictiveEntropy(head),
    }
    metrics = {}
    for label, scorer in scorers.items():
        clock = C.timer()
        metrics[label] = dict(evaluate(scorer(x_in), scorer(x_out)), seconds=round(clock(), 1))
    m = args.typicality_m
    metrics[f"typicality (batch M={m})"] = evaluate(typicality.score_batches(x_in, m), typicality.score_batches(x_out, m))
    d = int(np.prod(x_in.shape[1:]))
    bpd_in = float(-log_likelihood(flow, x_in).mean() / (d * np.log(2)))
    bpd_out = float(-log_likelihood(flow, x_out).mean() / (d * np.log(2)))
    head_accuracy = float((head.predict_proba(x_in).argmax(1) == C.load_data(args, in_name, train=False).labels.numpy()).mean())
    print(f"\n{in_name} -> {out_name}, {spec.label}: in {bpd_in:.3f} bits/dim, out {bpd_out:.3f} bits/dim "
          f"({len(x_in)} / {len(x_out)} test images)\n{ood_table(metrics)}\n", flush=True)
    return dict(direction=f"{in_name}->{out_name}", in_dataset=in_name, out_dataset=out_name, model=spec.label,
                spec=spec.as_dict(), params=C.backbone_params(flow), train=info, reference=ref_info,
                test_bits_per_dim_in=bpd_in, test_bits_per_dim_out=bpd_out, n_in=len(x_in), n_out=len(x_out),
                head_test_accuracy=head_accuracy, head_seconds=round(head_seconds, 1), metrics=metrics)


def main(argv=None) -> dict:
    args = parse_args(argv)
    C.setup(args)
    clock = C.timer()
    runs, references = [], {}
    for pair in [p.strip() for p in args.directions.split(",") if p.strip()]:
        in_name, out_name = pair.split(":")
        for spec in args.specs:
            runs.append(run_direction(args, spec, in_name, out_name, references))
    payload = dict(runs=runs, reference=args.reference, patch_steps=args.patch_steps, perturb_rate=args.perturb_rate,
                   typicality_m=args.typicality_m)
    C.write_results(args, payload, clock())
    return payload


if __name__ == "__main__":
    main()
