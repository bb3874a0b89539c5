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
    python bench/hybrid_tradeoff.py --minutes 10 --parallel 2 --lambdas "" --labels 100 \
        --models "mixerflow_wide:head_input=hidden,lr=6e-3,batch_size=64,conditioner_dtype=bfloat16,preprocess=logit"

A spec's ``head_input`` (``latent``, ``pooled``, ``hidden``) says what the head reads
(:class:`hybridflow.HybridModel`). ``--parallel 2`` trains two runs at a time on one thread each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hybridflow.data import ImageData  # noqa: E402
from hybridflow.features import DEFAULT_FEATURES, flow_features  # noqa: E402
from hybridflow.probe import linear_probe  # noqa: E402
from hybridflow.training import evaluate_model as evaluate  # noqa: E402

LAMBDAS = "0,0.01,0.1,1,10,100"


def parse_args(argv=None):
    p = C.base_parser(__doc__, models=["mixerflow_tiny"])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--lambdas", default=None, help=f"the sweep's lambdas ('' = no sweep; default {LAMBDAS}, smoke 0,1,100)")
    p.add_argument("--labels", default=None,
                   help="labelled-set sizes of the semi-supervised runs ('' = none; default 100,1000, smoke 20)")
    p.add_argument("--semi-lam", type=float, default=1.0, help="lambda of the semi-supervised runs")
    p.add_argument("--labelled-share", type=float, default=0.5,
                   help="share of each semi-supervised epoch drawn from the labelled images, which are repeated "
                        "to reach it (default 0.5; 0: no repetition, so 100 labels among 60,000 images reach the "
                        "head about once every 10 batches of 64)")
    p.add_argument("--semi-runs", default="semi,labelled",
                   help="which runs per labelled-set size: semi (with the unlabelled images), labelled (the "
                        "labelled images alone), comma-separated")
    p.add_argument("--probe", action="store_true",
                   help="also the two-stage baseline: a linear probe on the labelled images' features of the pure "
                        "flow trained on every image (with --reuse: the one bench/time_to_quality.py trained), "
                        "and on their raw pixels")
    p.add_argument("--parallel", type=int, default=1, help="runs trained at a time (one thread each when > 1)")
    p.add_argument("--only", type=int, default=None, help=argparse.SUPPRESS)  # internal: one run, JSON out
    p.add_argument("--name", default="hybrid_tradeoff", help="results file name (bench/results/<name>.json)")
    args = p.parse_args(argv)
    args = C.finish_args(args, argv, args.name, script="hybrid_tradeoff")
    if args.lambdas is None:
        args.lambdas = "0,1,100" if args.smoke else LAMBDAS
    if args.labels is None:
        args.labels = "20" if args.smoke else "100,1000"
    args.semi_runs = [k.strip() for k in args.semi_runs.split(",") if k.strip()]
    if not set(args.semi_runs) <= {"semi", "labelled"}:
        p.error(f"--semi-runs takes semi and/or labelled, got {','.join(args.semi_runs)}")
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


def jobs(args) -> list[tuple[str, int, float]]:
    """Every run: ``("sweep", spec, lambda)``, then ``("semi", spec, labels)`` and
    ``("labelled", spec, labels)`` per labelled-set size."""
    lambdas = [float(v) for v in args.lambdas.split(",") if v.strip()]
    sizes = [int(v) for v in args.labels.split(",") if v.strip()]
    out = ([("sweep", i, lam) for i in range(len(args.specs)) for lam in lambdas]
           + [(kind, i, n) for n in sizes for i in range(len(args.specs)) for kind in ("semi", "labelled")
              if kind in args.semi_runs])
    if args.probe:  # one probe per pure-flow spec (specs differing only in head_input share it)
        firsts = {density_spec(s).label: i for i, s in reversed(list(enumerate(args.specs)))}
        out += [("probe", i, n) for n in sizes for i in sorted(firsts.values())]
    return out


def density_spec(spec: C.ModelSpec) -> C.ModelSpec:
    """``spec`` without its ``head_input``: the pure flow a linear probe reads."""
    _, _, rest = spec.label.partition(":")
    items = [i for i in rest.split(",") if i.strip() and not i.strip().startswith("head_input=")]
    return C.parse_spec(spec.name + (":" + ",".join(items) if items else ""))


def probe_run(args, spec: C.ModelSpec, n: int, train: ImageData, test: ImageData) -> list[dict]:
    """Two-stage semi-supervised learning: the pure flow (lambda 0) trained on every training image
    for the budget (``--reuse`` finds the one ``bench/time_to_quality.py`` trained), then a linear
    probe on its default features of the ``n`` labelled images; and the same probe on raw pixels."""
    flow_spec = density_spec(spec)
    model, info = C.trained_model(args, flow_spec, args.dataset, train, lam=0.0)
    idx = labelled_subset(train, n, args.seed)
    bpd = C.test_bits_per_dim(model, test.images, args.eval_batch)
    # the probe picks its C on a stratified held-out part: at least one image per class
    val_fraction = max(0.2, min(0.5, len(train.classes or range(10)) / n))
    rows = []
    for name, extract in (("flow features + linear probe (flow trained on every image, no labels)",
                           lambda images: flow_features(model, images, DEFAULT_FEATURES)),
                          ("raw pixels + linear probe", lambda images: images.flatten(1).float().numpy())):
        result = linear_probe(extract(train.images[idx]), train.labels[idx].numpy(), extract(test.images),
                              test.labels.numpy(), seeds=(0, 1, 2), val_fraction=val_fraction)
        C.log(args, f"  {n} labels, {name}: accuracy {result.accuracy_mean:.4f}")
        rows.append(dict(model=flow_spec.label, run=name, lam=0.0, num_train=len(train), num_labelled=n,
                         test_accuracy=result.accuracy_mean, test_accuracy_std=result.accuracy_std,
                         test_log_loss=result.log_loss_mean, test_cross_entropy=result.log_loss_mean,
                         test_bits_per_dim=bpd if name.startswith("flow") else None, test_examples=len(test),
                         params=C.backbone_params(model), train=info if name.startswith("flow") else None,
                         labels=n, setting=name, part="semi"))
    return rows


def run_job(args, job: tuple[str, int, float]) -> dict:
    """Train and evaluate one run of :func:`jobs`."""
    kind, index, value = job
    spec = args.specs[index]
    train = C.load_data(args, args.dataset, train=True)
    test = C.load_data(args, args.dataset, train=False)
    if kind == "sweep":
        return dict(run(args, spec, f"lambda={value:g}", train, test, value, "hybrid"), part="sweep")
    n = int(value)
    if kind == "probe":
        return dict(rows=probe_run(args, spec, n, train, test))
    idx = labelled_subset(train, n, args.seed)
    if kind == "labelled":
        return dict(run(args, spec, f"{n} labels only", train.subset(idx), test, args.semi_lam, f"labelled{n}"),
                    labels=n, setting="labelled only", part="semi")
    partial = torch.full_like(train.labels, -1)
    partial[idx] = train.labels[idx]
    with_unlabelled = oversample_labelled(ImageData(train.images, partial, list(train.classes)), args.labelled_share)
    return dict(run(args, spec, f"{n} labels + {len(train) - n} unlabelled", with_unlabelled, test, args.semi_lam,
                    f"semi{n}"), labels=n, setting="semi-supervised", part="semi")


def main(argv=None) -> dict:
    args = parse_args(argv)
    C.setup(args)
    clock = C.timer()
    todo = jobs(args)
    rows = C.run_jobs(args, argv, __file__, lambda a, i: run_job(a, todo[i]), len(todo))
    if rows is None:  # one job of a --parallel run
        return {}
    rows = [r for row in rows for r in row.get("rows", [row])]  # a probe job gives two rows
    sweep = [r for r in rows if r["part"] == "sweep"]
    semi = [r for r in rows if r["part"] == "semi"]
    png = C.results_path(args, suffix=".png")
    if sweep:
        plot(sweep, png)
        print(C.markdown_table(["model", "lambda", "test accuracy", "test bits/dim"],
                               [[r["model"], f"{r['lam']:g}", C.fmt(r["test_accuracy"], 4),
                                 C.fmt(r["test_bits_per_dim"], 4)] for r in sweep]))
    if semi:
        print(C.markdown_table(["model", "labels", "setting", "test accuracy", "test bits/dim"],
                               [[r["model"], r["labels"], r["setting"], C.fmt(r["test_accuracy"], 4),
                                 C.fmt(r["test_bits_per_dim"], 4)] for r in semi], "lrlrr"))
    payload = dict(dataset=args.dataset, sweep=sweep, semi_supervised=semi, semi_lam=args.semi_lam,
                   plot=png.name if sweep else None, parallel=args.parallel)
    C.write_results(args, payload, clock())
    return payload


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
