"""The hybrid trade-off: one flow, a linear head on its latent, and the objective
``bits/dim + lambda * CE / ln 2`` (DESIGN.md). Sweeps lambda over decades on MNIST and reports
test accuracy and bits/dim per lambda (a table and bench/results/hybrid_tradeoff.png), then
semi-supervised learning: 100 and 1,000 labels (the other training images labelled -1; the labelled
ones repeated to make half of each epoch, ``--labelled-share``) against the same model trained on
the labelled images alone, each for the same budget.

lambda = 0 is a pure flow: its head gets no gradient, so its accuracy is chance by design.

    python bench/hybrid_tradeoff.py                         # 6 lambdas + 4 semi-supervised runs
    python bench/hybrid_tradeoff.py --lambdas 0.1,1,10 --labels 100 --minutes 3
    python bench/hybrid_tradeoff.py --smoke
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hybridflow.data import ImageData  # noqa: E402
from hybridflow.training import evaluate_model as evaluate  # noqa: E402

LAMBDAS = "0,0.01,0.1,1,10,100"


def parse_args(argv=None):
    p = C.base_parser(__doc__, models=["mixerflow_tiny"])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--lambdas", default=LAMBDAS)
    p.add_argument("--labels", default="100,1000", help="labelled-set sizes of the semi-supervised runs ('' = none)")
    p.add_argument("--semi-lam", type=float, default=1.0, help="lambda of the semi-supervised runs")
    p.add_argument("--labelled-share", type=float, default=0.5,
                   help="share of each semi-supervised epoch drawn from the labelled images, which are repeated "
                        "to reach it (default 0.5; 0: no repetition, so 100 labels among 60,000 images reach the "
                        "head about once every 10 batches of 64)")
    args = p.parse_args(argv)
    args = C.finish_args(args, argv, "hybrid_tradeoff")
    if args.smoke:
        args.lambdas, args.labels = "0,1,100", "20"
    if any(s.name == C.REFERENCE for s in args.specs):
        p.error("normflows_glow has no classifier head: pick our backbones")
    return args


def oversample_labelled(data: ImageData, share: float) -> ImageData:
    """``data`` with its labelled images repeated so that they are about ``share`` of it: with a
    handful of labels among many unlabelled images, most batches would hold none and the
    classifier would hardly train (the usual remedy in semi-supervised learning)."""
    if not 0 <= share < 1:
        raise ValueError(f"--labelled-share must lie in [0, 1), got {share}")
    labelled = torch.nonzero(data.labels >= 0).flatten()
    unlabelled = len(data) - len(labelled)
    if share == 0 or len(labelled) == 0 or unlabelled == 0:
        return data
    repeats = max(1, round(share / (1 - share) * unlabelled / len(labelled)))
    order = torch.cat([torch.nonzero(data.labels < 0).flatten(), labelled.repeat(repeats)])
    return data.subset(order)


def labelled_subset(data: ImageData, n: int, seed: int) -> torch.Tensor:
    """Indices of ``n`` training images, ``n // K`` per class (the rest from any class), seeded."""
    generator = torch.Generator().manual_seed(seed)
    classes = int(data.labels.max()) + 1
    chosen = []
    for k in range(classes):
        idx = torch.nonzero(data.labels == k).flatten()
        chosen.append(idx[torch.randperm(len(idx), generator=generator)[: n // classes]])
    chosen = torch.cat(chosen)
    if len(chosen) < n:
        rest = torch.tensor(sorted(set(range(len(data))) - set(chosen.tolist())))
        chosen = torch.cat([chosen, rest[torch.randperm(len(rest), generator=generator)[: n - len(chosen)]]])
    return chosen.sort().values


def run(args, spec, name: str, train: ImageData, test: ImageData, lam: float, tag: str) -> dict:
    model, info = C.trained_model(args, spec, args.dataset, train, tag=tag, lam=lam)
    figures = evaluate(model, test, batch_size=args.eval_batch)
    C.log(args, f"  {name}: accuracy {figures['accuracy']:.4f}, {figures['bits_per_dim']:.4f} bits/dim")
    return dict(model=spec.label, run=name, lam=lam, num_train=len(train), num_labelled=int((train.labels >= 0).sum()),
                test_accuracy=figures["accuracy"], test_bits_per_dim=figures["bits_per_dim"],
                test_cross_entropy=figures["cross_entropy"], test_examples=figures["num_examples"],
                params=C.backbone_params(model), train=info)


def plot(rows: list[dict], path: Path) -> None:
    figure, (ax_acc, ax_bpd) = C.two_panel_figure()
    for model in dict.fromkeys(r["model"] for r in rows):
        group = sorted((r for r in rows if r["model"] == model), key=lambda r: r["lam"])
        lams = [r["lam"] for r in group]
        ax_acc.plot(lams, [100 * r["test_accuracy"] for r in group], "o-", label=model)
        ax_bpd.plot(lams, [r["test_bits_per_dim"] for r in group], "o-", label=model)
    positive = [r["lam"] for r in rows if r["lam"] > 0]
    for ax, ylabel in ((ax_acc, "test accuracy (%)"), (ax_bpd, "test bits/dim")):
        ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
        ax.set(xlabel="lambda (0 = pure flow)", ylabel=ylabel)
        ax.grid(alpha=0.3)
    ax_acc.legend()
    figure.suptitle("hybrid trade-off: one flow, bits/dim + lambda * CE / ln 2")
    C.save_figure(figure, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    C.setup(args)
    clock = C.timer()
    train = C.load_data(args, args.dataset, train=True)
    test = C.load_data(args, args.dataset, train=False)
    lambdas = [float(v) for v in args.lambdas.split(",") if v.strip()]
    sweep = [run(args, spec, f"lambda={lam:g}", train, test, lam, "hybrid")
             for spec in args.specs for lam in lambdas]
    semi = []
    for n in [int(v) for v in args.labels.split(",") if v.strip()]:
        idx = labelled_subset(train, n, args.seed)
        partial = torch.full_like(train.labels, -1)
        partial[idx] = train.labels[idx]
        with_unlabelled = oversample_labelled(ImageData(train.images, partial, list(train.classes)),
                                              args.labelled_share)
        labelled_only = train.subset(idx)
        for spec in args.specs:
            semi.append(dict(run(args, spec, f"{n} labels + {len(train) - n} unlabelled", with_unlabelled, test,
                                 args.semi_lam, f"semi{n}"), labels=n, setting="semi-supervised"))
            semi.append(dict(run(args, spec, f"{n} labels only", labelled_only, test, args.semi_lam, f"labelled{n}"),
                             labels=n, setting="labelled only"))
    png = C.results_path(args, suffix=".png")
    plot(sweep, png)
    print(C.markdown_table(["model", "lambda", "test accuracy", "test bits/dim"],
                           [[r["model"], f"{r['lam']:g}", C.fmt(r["test_accuracy"], 4), C.fmt(r["test_bits_per_dim"], 4)]
                            for r in sweep]))
    if semi:
        print(C.markdown_table(["model", "labels", "setting", "test accuracy", "test bits/dim"],
                               [[r["model"], r["labels"], r["setting"], C.fmt(r["test_accuracy"], 4),
                                 C.fmt(r["test_bits_per_dim"], 4)] for r in semi], "lrlrr"))
    payload = dict(dataset=args.dataset, sweep=sweep, semi_supervised=semi, semi_lam=args.semi_lam, plot=png.name)
    C.write_results(args, payload, clock())
    return payload


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
