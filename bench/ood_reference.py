"""Likelihood-ratio OOD (issue 20): which reference model makes ``log p(x) - log p_ref(x)`` work on
Fashion-MNIST -> MNIST, the classic case where the likelihood alone fails (Nalisnick et al. 2019).

The foreground model is the shipped ``pretrained:fashionmnist`` (mixerflow_wide, 1,500 steps of 64).
Each reference is trained for as many steps as the foreground (Ren et al. train the background
as long as the model), and scored on ``--limit`` test images of each set:

- ``patches``: a bag-of-patches flow (:class:`hybridflow.ood.PatchDensity`): mixerflow_tiny (4
  layers of width 64) on every 4x4 patch of the training images, 1,500 steps of 256 patches;
- ``perturbed``: Ren et al.'s background: the foreground's architecture on training images with
  20% of the pixels replaced by uniform noise (1,500 steps of 64, the foreground's schedule);
- ``cifar_grey``: a general-domain model (Schirrmeister et al. 2020): the foreground's
  architecture on the 4,000 CIFAR-10 training images in grey, resized to 28x28 (and mirrored).

Beside them: the likelihood, the PNG complexity correction (Serra et al. 2020) and typicality
(Nalisnick et al. 2019b) on single images and on batches of ``m`` images of one set, which is the
test that paper proposes. Trained references are cached in ``--cache`` (state dicts) and reused.

    python bench/ood_reference.py --references patches,perturbed,cifar_grey --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from hybridflow import create_backbone, load_pretrained  # noqa: E402
from hybridflow.data import DataSpec, ImageData  # noqa: E402
from hybridflow.hybrid import HybridModel  # noqa: E402
from hybridflow.ood import (  # noqa: E402
    PATCH_REFERENCE_OPTIONS, PatchDensity, Typicality, compressed_bits_per_dim, evaluate, log_likelihood, perturb,
)
from hybridflow.ood.likelihood import split_model  # noqa: E402
from hybridflow.training import TrainConfig, train  # noqa: E402
from hybridflow.data.patches import image_patches  # noqa: E402

FOREGROUND = dict(backbone="mixerflow_wide", conditioner_dtype="bfloat16", preprocess="logit")


def reference_data(kind: str, fashion: torch.Tensor, root: str) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """The training images of each reference and the shape its flow takes."""
    if kind == "patches":
        return image_patches(fashion, 4), (1, 4, 4)
    if kind == "perturbed":
        return perturb(fashion, 0.2, seed=1), (1, 28, 28)
    if kind == "cifar_grey":
        x = torch.from_numpy(np.load(Path(root) / "cifar10-train4000.npz")["x"]).permute(0, 3, 1, 2).float()
        grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        grey = F.interpolate(grey, size=(28, 28), mode="area")
        grey = torch.cat([grey, grey.flip(-1)])
        return grey.round().clamp(0, 255).to(torch.uint8), (1, 28, 28)
    raise ValueError(f"unknown reference {kind!r}: choose patches, perturbed or cifar_grey")


def build_reference(kind: str, shape: tuple[int, int, int]):
    if kind == "patches":
        return create_backbone("mixerflow_tiny", input_shape=shape, patch_size=2, **PATCH_REFERENCE_OPTIONS)
    options = {k: v for k, v in FOREGROUND.items() if k != "backbone"}
    return create_backbone(FOREGROUND["backbone"], input_shape=shape, **options)


def trained_reference(kind: str, fashion: torch.Tensor, args) -> tuple[torch.nn.Module, dict]:
    """Train (or load from ``--cache``) the reference ``kind``; ``(density over 28x28 images, info)``."""
    data, shape = reference_data(kind, fashion, args.data_root)
    batch = 256 if kind == "patches" else 64
    lr = 3e-3 if kind == "patches" else 6e-3
    flow = build_reference(kind, shape)
    path = Path(args.cache) / f"{kind}_{args.steps}.pt"
    info = dict(reference=kind, steps=args.steps, batch_size=batch, lr=lr, train_images=len(data),
                params=flow.num_params)
    if path.exists():
        flow.load_state_dict(torch.load(path, weights_only=True))
        info["cached"] = str(path)
    else:
        with torch.random.fork_rng(devices=[]):
            model = HybridModel(flow, num_classes=1, lam=0.0)
        model.head.requires_grad_(False)
        clock = C.timer()
        train(model, ImageData(data), TrainConfig(steps=args.steps, batch_size=batch, lr=lr, warmup_steps=100,
                                                  log_every=100, seed=2, progress=not args.quiet))
        info["train_seconds"] = round(clock())
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(flow.state_dict(), path)
    flow.eval()
    return (PatchDensity(flow, (1, 28, 28)) if kind == "patches" else flow), info


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--references", default="patches,perturbed,cifar_grey")
    p.add_argument("--steps", type=int, default=1500, help="training steps of each reference (the foreground's)")
    p.add_argument("--limit", type=int, default=2000, help="test images of each set")
    p.add_argument("--batches", default="1,2,5,10", help="typicality batch sizes m")
    p.add_argument("--data-root", default=C.default_data_root())
    p.add_argument("--cache", default=str(C.ROOT / "runs" / "bench" / "ood_reference"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--results-dir", default=str(C.RESULTS_DIR))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = C.timer()
    fashion = DataSpec("fashionmnist", root=args.data_root).load(train=True).images
    x_in = DataSpec("fashionmnist", root=args.data_root, limit=args.limit).load(train=False).images
    x_out = DataSpec("mnist", root=args.data_root, limit=args.limit).load(train=False).images
    foreground = split_model(load_pretrained("fashionmnist"))[0].eval()
    with torch.no_grad():
        fg_in, fg_out = log_likelihood(foreground, x_in), log_likelihood(foreground, x_out)
    rows = [dict(scorer="loglik", **evaluate(fg_in, fg_out))]
    dims = 28 * 28 * np.log(2)
    png_in, png_out = compressed_bits_per_dim(x_in), compressed_bits_per_dim(x_out)
    rows.append(dict(scorer="complexity", **evaluate(-(-fg_in / dims - png_in), -(-fg_out / dims - png_out))))
    typical = Typicality(foreground).fit(fashion[:args.limit])
    for m in [int(v) for v in args.batches.split(",")]:
        s_in = typical.score_batches(x_in, m, n_batches=args.limit, seed=0) if m > 1 else typical.score(x_in)
        s_out = typical.score_batches(x_out, m, n_batches=args.limit, seed=1) if m > 1 else typical.score(x_out)
        rows.append(dict(scorer=f"typicality (batches of {m})" if m > 1 else "typicality (one image)",
                         **evaluate(s_in, s_out)))
    references = []
    for kind in [k.strip() for k in args.references.split(",") if k.strip()]:
        reference, info = trained_reference(kind, fashion, args)
        with torch.no_grad():
            r_in, r_out = log_likelihood(reference, x_in), log_likelihood(reference, x_out)
        rows.append(dict(scorer=f"likelihood_ratio ({kind})", **evaluate(fg_in - r_in, fg_out - r_out)))
        references.append(dict(info, reference_bits_per_dim_in=float(-r_in.mean() / dims),
                               reference_bits_per_dim_out=float(-r_out.mean() / dims)))
        print(f"{kind}: AUROC {rows[-1]['auroc']:.3f}", file=sys.stderr, flush=True)
    print(C.markdown_table(["scorer", "AUROC", "AUPR-in", "AUPR-out", "FPR95-in", "FPR95-out"],
                           [[r["scorer"], *(f"{r[k]:.3f}" for k in ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr_in",
                                                                    "fpr_at_95_tpr_out"))] for r in rows]))
    record = dict(benchmark="ood_reference", command=" ".join(["python", "bench/ood_reference.py", *(argv or sys.argv[1:])]),
                  date=C._now(), wall_seconds=round(clock(), 1), machine=C.machine_info(args.threads), git=C._git(),
                  foreground="pretrained:fashionmnist", limit=args.limit, rows=rows, references=references)
    out = Path(args.results_dir) / "ood_reference.json"
    out.write_text(json.dumps(record, indent=1, default=C._json_default))
    print(f"wrote {out}", file=sys.stderr)
    return record


if __name__ == "__main__":
    main()
