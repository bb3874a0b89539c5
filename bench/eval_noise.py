"""How much a test-set bits/dim moves with the evaluation noise: one shared noise image for every
test image (the library before issue 15) against each image's own seeded noise (now), over
several evaluation seeds, on the full test set of one trained model per spec.

With one shared image the whole test set shares one draw, so the mean moves with the seed by that
draw's effect on every image at once; with independent per-image draws the seed-to-seed spread of
the mean falls to about the per-image noise error divided by sqrt(N), well below the mean's
standard error over images (SEM), which is the honest error bar of a test figure.

    python bench/eval_noise.py --datasets mnist --minutes 4 --seeds 5 \\
        --models "mixerflow_wide:lr=6e-3,batch_size=64,conditioner_dtype=bfloat16,preprocess=logit"
    python bench/eval_noise.py --smoke
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import torch  # noqa: E402

from hybridflow.backbones import log_prob_from_latent  # noqa: E402
from hybridflow.flows import NUM_BINS  # noqa: E402


def shared_noise_bits_per_dim(model, images: torch.Tensor, seed: int, batch_size: int) -> torch.Tensor:
    """Per-image bits/dim with ONE noise image, seeded with ``seed``, added to every image (the
    evaluation noise of the library before issue 15), through the same inference copy."""
    backbone = model.backbone
    noise = torch.rand((1, *backbone.input_shape), generator=torch.Generator().manual_seed(seed))
    out = []
    with torch.no_grad():
        for chunk in images.split(batch_size):
            u = (chunk.float() + noise) / NUM_BINS
            z, logdet = backbone(u)
            out.append(-log_prob_from_latent(z, logdet, backbone.num_dims).double() / (backbone.num_dims * math.log(2)))
    return torch.cat(out)


def own_noise_bits_per_dim(model, images: torch.Tensor, seed: int, batch_size: int) -> torch.Tensor:
    """Per-image bits/dim with each image's own seeded noise (``eval_seed = seed``)."""
    model.backbone.eval_seed = seed
    with torch.no_grad():
        return torch.cat([model.bits_per_dim(chunk).double() for chunk in images.split(batch_size)])


def study(model, images: torch.Tensor, seeds: int, batch_size: int) -> dict:
    fast = model.inference_copy()
    rows = {}
    for scheme, fn in (("shared", shared_noise_bits_per_dim), ("per_image", own_noise_bits_per_dim)):
        per_seed = [fn(fast, images, seed, batch_size) for seed in range(seeds)]
        means = [float(b.mean()) for b in per_seed]
        rows[scheme] = dict(means=means, mean=statistics.mean(means), seed_sd=statistics.stdev(means),
                            sem=float(per_seed[0].std() / len(images) ** 0.5))
    rows["moved_by"] = rows["per_image"]["mean"] - rows["shared"]["means"][0]  # against the old default seed 0
    return rows


def main(argv=None) -> dict:
    p = C.base_parser(__doc__, models=["mixerflow_wide:lr=6e-3,batch_size=64,conditioner_dtype=bfloat16,preprocess=logit"])
    p.add_argument("--datasets", default="mnist")
    p.add_argument("--seeds", type=int, default=5, help="evaluation seeds per scheme")
    args = C.finish_args(p.parse_args(argv), argv, "eval_noise")
    C.setup(args)
    clock = C.timer()
    runs = []
    for dataset in [d for d in args.datasets.split(",") if d]:
        train, test = C.load_data(args, dataset, train=True), C.load_data(args, dataset, train=False)
        for spec in args.specs:
            model, info = C.trained_model(args, spec, dataset, train)
            result = study(model, test.images, args.seeds, args.eval_batch)
            runs.append(dict(dataset=dataset, model=spec.label, test_examples=len(test), train=info, **result))
            C.log(args, f"  {dataset} {spec.label}: shared {result['shared']['mean']:.4f} "
                        f"(seed sd {result['shared']['seed_sd']:.4f}), per-image {result['per_image']['mean']:.4f} "
                        f"(seed sd {result['per_image']['seed_sd']:.5f}), SEM {result['per_image']['sem']:.4f}")
    print(table(runs))
    payload = dict(runs=runs, seeds=args.seeds)
    C.write_results(args, payload, clock())
    return payload


def table(runs: list[dict]) -> str:
    return C.markdown_table(
        ["dataset", "model", "test images", "shared noise: seed 0", "shared: mean (sd over seeds)",
         "per-image: mean (sd over seeds)", "SEM over images", "moved by (per-image mean - shared seed 0)"],
        [[r["dataset"], f"`{r['model']}`", C.fmt(r["test_examples"]), C.fmt(r["shared"]["means"][0], 4),
          f"{r['shared']['mean']:.4f} ({r['shared']['seed_sd']:.4f})",
          f"{r['per_image']['mean']:.4f} ({r['per_image']['seed_sd']:.5f})", C.fmt(r["per_image"]["sem"], 4),
          f"{r['moved_by']:+.4f}"] for r in runs], "llrrrrrr")


if __name__ == "__main__":
    main()
