"""Density at a fixed CPU budget (the paper's Tables 1, 2 at CPU scale): MNIST and Fashion-MNIST,
the same wall-clock budget per run, MixerFlow vs our Glow vs normflows' Glow at similar parameter
counts. Reported per run: test bits/dim on the full test set, parameters, train images/s; and
train / log_prob throughput of every model timed in turns within one run (ratios to normflows).

    python bench/density.py                                  # 10 minutes per run, 2 threads
    python bench/density.py --datasets mnist --minutes 3 \\
        --models "mixerflow_tiny:hidden=96,num_layers=12,lr=2e-3,batch_size=64" glow_tiny
    python bench/density.py --smoke                          # seconds: checks the plumbing

Tuning for the budget: pass several specs (width ``hidden``, depth ``num_layers``, ``steps``,
``patch_size``; training ``lr``, ``batch_size``, ``warmup``) and ``--name density_tuning`` so
the sweep lands beside, not over, bench/results/density.json; the renderer shows both.

Every trained model is kept under runs/bench/<dataset>/ for the embedding and OOD benchmarks
(``--reuse`` there loads it instead of training again).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import torch  # noqa: E402

DATASETS = ["mnist", "fashionmnist"]


def parse_args(argv=None, name: str = "density"):
    p = C.base_parser(__doc__)
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated (default mnist,fashionmnist)")
    p.add_argument("--shuffle", choices=["none", "local", "global"], default="none",
                   help="pixel shuffling of train and test images (bench/permutations.py sweeps it)")
    p.add_argument("--timing-repeats", type=int, default=5, help="interleaved throughput repeats (0: skip)")
    p.add_argument("--timing-batch", type=int, default=None, help="batch of the throughput timing (default --batch-size)")
    p.add_argument("--name", default=name, help="results file name (bench/results/<name>.json)")
    args = p.parse_args(argv)
    args = C.finish_args(args, argv, args.name, script="density")
    if args.smoke:
        args.timing_repeats, args.timing_batch = min(args.timing_repeats, 1), 4
    return args


def run_one(args, dataset: str, shuffle: str | None, spec: C.ModelSpec) -> dict:
    """Train ``spec`` on ``dataset`` (pixels shuffled by ``shuffle``) for the budget; its row."""
    train = C.load_data(args, dataset, train=True, shuffle=shuffle)
    test = C.load_data(args, dataset, train=False, shuffle=shuffle)
    model, info = C.trained_model(args, spec, dataset, train, tag=shuffle or "")
    clock = C.timer()
    bpd = C.test_bits_per_dim(model, test.images, args.eval_batch)
    C.log(args, f"  {dataset}{'/' + shuffle if shuffle else ''} {spec.label}: {bpd:.4f} bits/dim "
                f"({len(test)} test images), {info['steps']} steps, {info['images_per_s']} img/s")
    return dict(dataset=dataset, shuffle=shuffle or "none", model=spec.label, spec=spec.as_dict(),
                family=spec.family, params=C.backbone_params(model), test_bits_per_dim=bpd,
                test_examples=len(test), eval_seconds=round(clock(), 1), train=info)


def run_dataset(args, dataset: str, shuffle: str | None) -> list[dict]:
    """Train every spec on ``dataset`` for the budget and measure test bits/dim."""
    return [run_one(args, dataset, shuffle, spec) for spec in args.specs]


def throughput(args, shape: tuple[int, int, int]) -> dict[str, dict]:
    """Train-step and log_prob throughput of every spec, timed in turns (ratios to normflows)."""
    if args.timing_repeats <= 0:
        return {}
    batch = args.timing_batch or args.batch_size
    torch.manual_seed(args.seed)
    pixels = torch.randint(0, 256, (batch, *shape), dtype=torch.uint8)
    models = {spec.label: (C.build_model(spec, shape, smoke=args.smoke), pixels) for spec in args.specs}
    timings = C.interleaved_timings(models, repeats=args.timing_repeats, iters=2)
    reference = next((s.label for s in args.specs if s.name == C.REFERENCE), None)
    for label, row in timings.items():
        row["params"] = C.backbone_params(models[label][0])
        if reference:
            ref = timings[reference]
            row["train_x_reference"] = row["train_img_s"] / ref["train_img_s"]
            row["log_prob_x_reference"] = row["log_prob_img_s"] / ref["log_prob_img_s"]
    return timings


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Per dataset: the best run of each family, and MixerFlow minus Glow (negative = MixerFlow lower)."""
    out = {}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        group = [r for r in rows if r["dataset"] == dataset]
        best = {}
        for r in group:
            if r["family"] not in best or r["test_bits_per_dim"] < best[r["family"]]["test_bits_per_dim"]:
                best[r["family"]] = r
        entry = {f"best_{fam}": dict(model=r["model"], test_bits_per_dim=r["test_bits_per_dim"], params=r["params"])
                 for fam, r in best.items()}
        if "mixerflow" in best and "glow" in best:
            entry["mixerflow_minus_glow"] = best["mixerflow"]["test_bits_per_dim"] - best["glow"]["test_bits_per_dim"]
        if "mixerflow" in best and C.REFERENCE in best:
            entry["mixerflow_minus_normflows"] = (best["mixerflow"]["test_bits_per_dim"]
                                                  - best[C.REFERENCE]["test_bits_per_dim"])
        out[dataset] = entry
    return out


def table(rows: list[dict]) -> str:
    return C.markdown_table(
        ["dataset", "model", "params", "test bits/dim", "steps", "epochs", "train img/s"],
        [[r["dataset"], r["model"], C.fmt(r["params"]), C.fmt(r["test_bits_per_dim"], 4), C.fmt(r["train"]["steps"]),
          C.fmt(r["train"]["epochs"], 2), C.fmt(r["train"]["images_per_s"], 0)] for r in rows], "llrrrrr")


def main(argv=None) -> dict:
    args = parse_args(argv)
    C.setup(args)
    clock = C.timer()
    shuffle = None if args.shuffle == "none" else args.shuffle
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    rows = [row for dataset in datasets for row in run_dataset(args, dataset, shuffle)]
    shape = tuple(C.load_data(args, datasets[0], train=False).image_shape)
    timings = throughput(args, shape)
    payload = dict(runs=rows, summary=summarise(rows), throughput=timings,
                   throughput_shape=list(shape), reference=C.REFERENCE)
    print(table(rows))
    C.write_results(args, payload, clock())
    return payload


if __name__ == "__main__":
    main()
