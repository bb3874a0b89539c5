"""Permutations (the paper's Tables 4, 5 at CPU scale): the density benchmark on globally and on
locally shuffled pixels, and each model's bits/dim change against the unshuffled images.

The paper's claim: Glow, whose convolutions lean on neighbouring pixels, degrades a lot; MixerFlow
(MLPs over patches and over positions) little, and under local shuffling (patch order and the
pixel order inside patches, ``LocalShuffle`` with patch 4) barely at all, up to its shift layers.

    python bench/permutations.py                    # global and local, 10 minutes per run
    python bench/permutations.py --shuffles global --datasets mnist
    python bench/permutations.py --smoke

The unshuffled numbers come from bench/results/density.json when it holds the same models,
datasets and budget (``--baseline auto``, the default), else they are measured here too.
"""

from __future__ import annotations

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
    p.add_argument("--density-json", default=None, help="default: density.json in --results-dir")
    args = p.parse_args(argv)
    return C.finish_args(args, argv, "permutations")


def baseline_from_density(args, datasets: list[str]) -> list[dict] | None:
    """Unshuffled runs from density.json if it measured every (dataset, model) here at this budget."""
    path = Path(args.density_json) if args.density_json else C.results_path(args, "density")
    if args.baseline != "auto" or not path.exists():
        return None
    record = json.loads(path.read_text())
    same = (record.get("settings", {}).get("minutes") == args.minutes and bool(record.get("smoke")) == bool(args.smoke)
            and record.get("settings", {}).get("seed") == args.seed)
    runs = [r for r in record.get("runs", []) if r.get("shuffle", "none") == "none"]
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


def main(argv=None) -> dict:
    args = parse_args(argv)
    C.setup(args)
    clock = C.timer()
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    shuffles = [s.strip() for s in args.shuffles.split(",") if s.strip()]
    rows = baseline_from_density(args, datasets)
    if rows is None:
        rows = [r for d in datasets for r in density.run_dataset(args, d, None)]
    for shuffle in shuffles:
        for dataset in datasets:
            rows += density.run_dataset(args, dataset, shuffle)
    changes = deltas(rows, shuffles)
    print(C.markdown_table(
        ["dataset", "model", "unshuffled", *[f"{s} (change)" for s in shuffles]],
        [[d["dataset"], d["model"], C.fmt(d["unshuffled"], 4),
          *[f"{C.fmt(d.get(s), 4)} ({d[f'delta_{s}']:+.4f})" if s in d else "-" for s in shuffles]] for d in changes],
        "ll" + "r" * (1 + len(shuffles))))
    C.write_results(args, dict(runs=rows, changes=changes, shuffles=shuffles, local_patch=4), clock())
    return dict(runs=rows, changes=changes)


if __name__ == "__main__":
    main()
