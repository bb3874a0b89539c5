"""Time to quality: test bits/dim against training time, and the minutes each model needs to reach
a target model's final bits/dim (issue 20's headline speed figure).

Every model trains once for the budget (the cosine schedule follows the clock, as in
``bench/density.py``); every ``--every`` seconds of training time, off the clock, its test bits/dim
is measured on a fixed subset of the test set (``--curve-limit`` images, each with its own seeded
dequantisation noise, the same subset for every model). At the end the full test set gives the
final figure. The target is the final figure of ``--target`` (default: the first Glow spec);
each model's time to quality is the first measured time at or below it (linear interpolation
between the two measurements around the crossing), or "not reached".

``--parallel 2`` trains two models at a time, one torch thread each, in separate processes: on a
2-core machine the pair shares the machine alike, so a "10-minute" budget is 10 minutes of one
core for each model. Plot: bench/results/<name>.png.

    python bench/time_to_quality.py --minutes 10 --parallel 2 \\
        --models mixerflow_wide:lr=6e-3,batch_size=64,conditioner_dtype=bfloat16,preprocess=logit \\
                 glow_tiny:lr=3e-3,conditioner_dtype=bfloat16,preprocess=logit normflows_glow
    python bench/time_to_quality.py --smoke
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import torch  # noqa: E402


def parse_args(argv=None):
    p = C.base_parser(__doc__)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--every", type=float, default=30.0, help="seconds of training between curve points")
    p.add_argument("--curve-limit", type=int, default=1000, help="test images of each curve point")
    p.add_argument("--target", default=None,
                   help="label of the target model (default: the first glow spec), or a bits/dim figure")
    p.add_argument("--parallel", type=int, default=1, help="models trained at a time (one thread each when > 1)")
    # internal: train only spec number ONLY (in a subprocess of --parallel) and print its row as JSON
    p.add_argument("--only", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--name", default="time_to_quality")
    args = p.parse_args(argv)
    args = C.finish_args(args, argv, args.name, script="time_to_quality")
    if args.smoke:
        args.every, args.curve_limit = min(args.every, 0.05), min(args.curve_limit, 32)
    return args


def train_one(args, index: int) -> dict:
    """Train spec ``index`` with its curve; the row of the results."""
    spec = args.specs[index]
    train = C.load_data(args, args.dataset, train=True)
    test = C.load_data(args, args.dataset, train=False)
    curve_images = test.images[: args.curve_limit]
    settings = C.train_settings(args, spec)
    torch.manual_seed(settings.seed)
    model = C.build_model(spec, train.image_shape, smoke=args.smoke, num_classes=max(10, train.num_classes))

    def measure(trained, entry: dict) -> None:
        entry["test_bits_per_dim"] = C.test_bits_per_dim(trained, curve_images, args.eval_batch)

    info = C.train_for_budget(model, train, settings, C.resolve_device(args.device), label=spec.label,
                              verbose=not args.quiet, log_every=args.every, on_log=measure)
    final = C.test_bits_per_dim(model, test.images, args.eval_batch)
    # Saved where bench/density.py (and embeddings.py, ood.py) look with --reuse: one training run
    # serves the time-to-quality curve, the density table, the probes and the OOD scores.
    directory = C.checkpoint_directory(args, spec, args.dataset, train, settings)
    C.save_trained(model, directory, spec, args.dataset, info)
    return dict(model=spec.label, spec=spec.as_dict(), family=spec.family, params=C.backbone_params(model),
                test_bits_per_dim=final, test_examples=len(test), curve_examples=len(curve_images),
                threads=torch.get_num_threads(), train=info, checkpoint=str(directory))


def crossing(curve: list[dict], target: float) -> float | None:
    """Seconds at which the curve first reaches ``target`` (interpolated), or None."""
    previous = None
    for point in curve:
        value = point.get("test_bits_per_dim")
        if value is None:
            continue
        if value <= target:
            if previous is None or previous[1] == value:
                return point["seconds"]
            (t0, v0), t1 = previous, point["seconds"]
            return t0 + (t1 - t0) * (v0 - target) / (v0 - value)
        previous = (point["seconds"], value)
    return None


def summarise(args, rows: list[dict]) -> dict:
    labels = [r["model"] for r in rows]
    try:  # a number: a figure measured elsewhere (another run's Glow)
        target, target_label = float(args.target), f"{float(args.target):g} bits/dim"
    except (TypeError, ValueError):
        target_label = args.target or next((lab for lab, r in zip(labels, rows) if r["family"] == "glow"), labels[0])
        if target_label not in labels:  # never lose a run's rows to a misspelt label
            print(f"--target {target_label!r} is no model of this run: the first model is the target",
                  file=sys.stderr)
            target_label = labels[0]
        target = rows[labels.index(target_label)]["test_bits_per_dim"]
    times = {r["model"]: crossing(r["train"]["history"], target) for r in rows}
    for r in rows:
        r["minutes_to_target"] = None if times[r["model"]] is None else round(times[r["model"]] / 60, 2)
    return dict(target_model=target_label, target_bits_per_dim=target)


def plot(args, rows: list[dict], summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4))
    for r in rows:
        points = [(p["seconds"] / 60, p["test_bits_per_dim"]) for p in r["train"]["history"]
                  if p.get("test_bits_per_dim") is not None]
        if points:
            axis.plot(*zip(*points), marker=".", label=f"{r['model'].split(':')[0]} ({r['test_bits_per_dim']:.3f})")
    axis.axhline(summary["target_bits_per_dim"], color="grey", linestyle="--", linewidth=1,
                 label=f"target: {summary['target_model'].split(':')[0]} final")
    top = max(r["test_bits_per_dim"] for r in rows) + 0.6
    axis.set_ylim(min(r["test_bits_per_dim"] for r in rows) - 0.1, top)
    axis.set_xlabel("training minutes")
    axis.set_ylabel(f"test bits/dim ({args.curve_limit} {args.dataset} images)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    C.save_figure(figure, C.results_path(args, suffix=".png"))


def main(argv=None) -> dict:
    args = parse_args(argv)
    C.setup(args)
    clock = C.timer()
    rows = C.run_jobs(args, argv, __file__, train_one, len(args.specs))
    if rows is None:  # one job of a --parallel run
        return {}
    summary = summarise(args, rows)
    payload = dict(dataset=args.dataset, runs=rows, summary=summary, parallel=args.parallel, every=args.every)
    plot(args, rows, summary)
    payload["plot"] = C.results_path(args, suffix=".png").name
    print(C.markdown_table(["model", "params", "final test bits/dim", "steps", f"minutes to {summary['target_bits_per_dim']:.3f}"],
                           [[r["model"], f"{r['params']:,}", f"{r['test_bits_per_dim']:.3f}", r["train"]["steps"],
                             r["minutes_to_target"] if r["minutes_to_target"] is not None else "not reached"]
                            for r in rows]))
    C.write_results(args, payload, clock())
    return payload


if __name__ == "__main__":
    main()
