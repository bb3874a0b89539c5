"""Permutations (the paper's Tables 4, 5 at CPU scale): the density benchmark on globally and on
locally shuffled pixels, and each model's bits/dim change against the unshuffled images.

The paper's claim: Glow, whose convolutions lean on neighbouring pixels, degrades a lot; MixerFlow
(MLPs over patches and over positions) little, and under local shuffling (patch order and the
pixel order inside patches, ``LocalShuffle`` with patch 4) barely at all, up to its shift layers.

    python bench/permutations.py                    # global and local, 10 minutes per run
    python bench/permutations.py --shuffles global --datasets mnist
    python bench/permutations.py --smoke
    python bench/permutations.py --parallel 2       # two runs at a time, one torch thread each

``--parallel 2`` trains two runs at a time in separate processes, one thread each (as
``bench/time_to_quality.py`` does), so a 10-minute budget is 10 minutes of one core for each run
and the unshuffled baselines of a ``--parallel 2`` density run (``--threads 1``) match.

The unshuffled numbers come from bench/results/density.json when it holds the same models,
datasets and budget (``--baseline auto``, the default), else they are measured here too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import density  # noqa: E402

SHUFFLES = ["global", "local"]


def parse_args(argv=None):
    p = C.base_parser(__doc__)
    p.add_argument("--datasets", default=",".join(density.DATASETS))
    p.add_argument("--shuffles", default=",".join(SHUFFLES))
    p.add_argument("--baseline", choices=["auto", "rerun"], default="auto",
                   help="auto: unshuffled numbers from density.json when it matches, else rerun")
    p.add_argument("--density-json", default=None,
                   help="default: density.json in --results-dir; a time_to_quality JSON works too")
    p.add_argument("--parallel", type=int, default=1, help="runs trained at a time (one thread each when > 1)")
    # internal: train only job number ONLY (in a subprocess of --parallel) and print its row as JSON
    p.add_argument("--only", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--name", default="permutations", help="results file name (bench/results/<name>.json; section 2 "
                                                          "renders permutations.json and permutations_cpu_default*.json)")
    args = p.parse_args(argv)
    return C.finish_args(args, argv, args.name, script="permutations")


def baseline_from_density(args, datasets: list[str]) -> list[dict] | None:
    """Unshuffled runs from density.json (or ``--density-json``: a density or time_to_quality record)
    if it measured every (dataset, model) here at this budget."""
    path = Path(args.density_json) if args.density_json else C.results_path(args, "density")
    if args.baseline != "auto" or not path.exists():
        return None
    record = json.loads(path.read_text())
    same = (record.get("settings", {}).get("minutes") == args.minutes and bool(record.get("smoke")) == bool(args.smoke)
            and record.get("settings", {}).get("seed") == args.seed)
    # a time_to_quality record names its one dataset at the top, not per run
    runs = [dict(r, dataset=r.get("dataset", record.get("dataset")), shuffle=r.get("shuffle", "none"))
            for r in record.get("runs", []) if r.get("shuffle", "none") == "none"]
    wanted = {(d, s.label) for d in datasets for s in args.specs}
    have = {(r["dataset"], r["model"]) for r in runs}
    if not same or not wanted <= have:
        C.log(args, f"{path} does not cover these models/datasets at this budget: measuring the unshuffled runs too")
        return None
    C.log(args, f"unshuffled numbers from {path}")
    return [dict(r, baseline_source=str(path)) for r in runs if (r["dataset"], r["model"]) in wanted]


def deltas(rows: list[dict], shuffles: list[str]) -> list[dict]:
    """Per (dataset, model): bits/dim unshuffled and shuffled, and the change (shuffled - unshuffled)."""
    out = []
    keys = list(dict.fromkeys((r["dataset"], r["model"]) for r in rows))
    for dataset, model in keys:
        by = {r["shuffle"]: r for r in rows if r["dataset"] == dataset and r["model"] == model}
        if "none" not in by:
            continue
        entry = dict(dataset=dataset, model=model, family=by["none"]["family"], params=by["none"]["params"],
                     unshuffled=by["none"]["test_bits_per_dim"])
        for s in shuffles:
            if s in by:
                entry[s] = by[s]["test_bits_per_dim"]
                entry[f"delta_{s}"] = by[s]["test_bits_per_dim"] - by["none"]["test_bits_per_dim"]
        out.append(entry)
    return out


def jobs(args, datasets: list[str], shuffles: list[str], measure_baseline: bool) -> list[tuple[str, str | None, int]]:
    """(dataset, shuffle, spec index) of every run to train: the shuffled ones, and the unshuffled
    baselines first when density.json does not hold them."""
    kinds: list[str | None] = ([None] if measure_baseline else []) + list(shuffles)
    return [(d, s, i) for s in kinds for d in datasets for i in range(len(args.specs))]


def main(argv=None) -> dict:
    args = parse_args(argv)
    C.setup(args)
    clock = C.timer()
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    shuffles = [s.strip() for s in args.shuffles.split(",") if s.strip()]
    baseline = baseline_from_density(args, datasets)
    todo = jobs(args, datasets, shuffles, measure_baseline=baseline is None)

    def train_one(args, index: int) -> dict:
        dataset, shuffle, spec = todo[index]
        return density.run_one(args, dataset, shuffle, args.specs[spec])

    trained = C.run_jobs(args, argv, __file__, train_one, len(todo))
    if trained is None:  # one job of a --parallel run
        return {}
    rows = (baseline or []) + trained
    changes = deltas(rows, shuffles)
    print(C.markdown_table(
        ["dataset", "model", "unshuffled", *[f"{s} (change)" for s in shuffles]],
        [[d["dataset"], d["model"], C.fmt(d["unshuffled"], 4),
          *[f"{C.fmt(d.get(s), 4)} ({d[f'delta_{s}']:+.4f})" if s in d else "-" for s in shuffles]] for d in changes],
        "ll" + "r" * (1 + len(shuffles))))
    C.write_results(args, dict(runs=rows, changes=changes, shuffles=shuffles, local_patch=4,
                               parallel=args.parallel), clock())
    return dict(runs=rows, changes=changes)


if __name__ == "__main__":
    main()
