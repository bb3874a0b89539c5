"""Scaling with image size (the paper's claim that MixerFlow's cost is linear in the number of
patches): time per image of a forward ``log_prob`` and of a training step, and parameters, for
3-channel images of 16, 32 and 64 px. MixerFlow keeps patch 4, so the number of patches grows
with the pixels (16, 64, 256); Glow keeps its levels and widths. All (model, size) pairs are timed
in turns within each repeat (medians over repeats), and a line is fitted to log(time per image)
against log(pixels): slope 1 is linear cost. Writes a table, the slopes and a log-log plot
(bench/results/scaling.png).

    python bench/scaling.py                          # 16, 32, 64 px, batch 32, 5 repeats
    python bench/scaling.py --sizes 16,32,64,128 --models mixerflow_tiny glow_tiny normflows_glow
    python bench/scaling.py --smoke

``--minutes`` caps the timing phase (repeats stop once it has passed).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

PATCH = 4


def parse_args(argv=None):
    p = C.base_parser(__doc__, models=["mixerflow_tiny", "glow_tiny"])
    p.add_argument("--sizes", default="16,32,64")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--timing-batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--iters", type=int, default=2)
    args = p.parse_args(argv)
    args = C.finish_args(args, argv, "scaling")
    if args.smoke:
        args.sizes, args.timing_batch, args.repeats, args.iters = "16,32", 2, 1, 1
    return args


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) on log(x)."""
    if len(xs) < 2:
        return None
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def plot(rows: list[dict], path: Path) -> None:
    figure, (ax_time, ax_params) = C.two_panel_figure()
    for model in dict.fromkeys(r["model"] for r in rows):
        group = sorted((r for r in rows if r["model"] == model), key=lambda r: r["pixels"])
        px = [r["pixels"] for r in group]
        line, = ax_time.plot(px, [1e3 * r["train_s_per_image"] for r in group], "o-", label=f"{model} train step")
        ax_time.plot(px, [1e3 * r["log_prob_s_per_image"] for r in group], "s--", color=line.get_color(),
                     label=f"{model} log_prob")
        ax_params.plot(px, [r["params"] for r in group], "o-", color=line.get_color(), label=model)
    ax_time.set(xscale="log", yscale="log", xlabel="pixels per channel (H x W)", ylabel="ms per image")
    ax_params.set(xscale="log", yscale="log", xlabel="pixels per channel (H x W)", ylabel="parameters")
    for ax in (ax_time, ax_params):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    C.save_figure(figure, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    C.setup(args)
    clock = C.timer()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    models, meta = {}, {}
    for spec in args.specs:
        for size in sizes:
            shape = (args.channels, size, size)
            spec_here = spec
            if spec.family == "mixerflow":  # keep the patch: the number of patches grows with the image
                spec_here = C.ModelSpec(spec.name, {"patch_size": PATCH, **spec.options}, spec.train, spec.text)
            torch.manual_seed(args.seed)
            model = C.build_model(spec_here, shape, smoke=args.smoke)
            pixels = torch.randint(0, 256, (args.timing_batch, *shape), dtype=torch.uint8)
            key = f"{spec.label}@{size}"
            models[key] = (model, pixels)
            patch = spec_here.options.get("patch_size") if spec.family == "mixerflow" else None
            meta[key] = dict(model=spec.label, family=spec.family, size=size, shape=list(shape), pixels=size * size,
                             n_patches=(size // patch) ** 2 if patch else None, params=C.backbone_params(model))
    C.log(args, f"timing {len(models)} (model, size) pairs in turns, {args.repeats} repeats")
    timings = C.interleaved_timings(models, repeats=args.repeats, iters=args.iters, max_seconds=60 * args.minutes)
    rows = [dict(meta[k], **timings[k]) for k in models]
    fits = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        group = sorted((r for r in rows if r["model"] == model), key=lambda r: r["pixels"])
        px = [r["pixels"] for r in group]
        fits[model] = dict(train_slope=slope(px, [r["train_s_per_image"] for r in group]),
                           log_prob_slope=slope(px, [r["log_prob_s_per_image"] for r in group]),
                           params_slope=slope(px, [r["params"] for r in group]),
                           train_ratio_largest_to_smallest=group[-1]["train_s_per_image"] / group[0]["train_s_per_image"],
                           pixel_ratio_largest_to_smallest=px[-1] / px[0])
    png = C.results_path(args, suffix=".png")
    plot(rows, png)
    print(C.markdown_table(["model", "size", "patches", "params", "train ms/img", "log_prob ms/img"],
                           [[r["model"], f"{r['size']}x{r['size']}", C.fmt(r["n_patches"]), C.fmt(r["params"]),
                             C.fmt(1e3 * r["train_s_per_image"], 3), C.fmt(1e3 * r["log_prob_s_per_image"], 3)]
                            for r in rows]))
    for model, fit in fits.items():
        print(f"{model}: slope of log time per image on log pixels: train {fit['train_slope']:.2f}, "
              f"log_prob {fit['log_prob_slope']:.2f}; params {fit['params_slope']:.2f}")
    payload = dict(rows=rows, fits=fits, sizes=sizes, channels=args.channels, batch=args.timing_batch,
                   mixerflow_patch=PATCH, plot=png.name)
    C.write_results(args, payload, clock())
    return payload


if __name__ == "__main__":
    main()
