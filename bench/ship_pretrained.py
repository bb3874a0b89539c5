"""Turn a finished training run into a model shipped inside the package (``pretrained:<name>``).

Measures the run's model on the full test set of its dataset (bits/dim with the per-image
evaluation noise, and accuracy for a hybrid), saves its weights as a checkpoint folder under
``hybridflow/pretrained_weights/<name>/`` with the run's ``run.json`` (its data root removed: it
is this machine's) and writes the model card ``card.json`` that ``hybridflow pretrained`` prints.

    hybridflow train --recipe pretrained_mnist --data-root ../shared/data --out runs/pretrained_mnist
    python bench/ship_pretrained.py runs/pretrained_mnist mnist --recipe pretrained_mnist --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import torch

from hybridflow.data import DataSpec
from hybridflow.runs import RUN_FILE, load_model, write_run_file
from hybridflow.training import evaluate_model, save_checkpoint

WEIGHTS = Path(__file__).resolve().parents[1] / "hybridflow" / "pretrained_weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the run folder (or checkpoint) to ship")
    parser.add_argument("name", help="the name users load it by: pretrained:<name>")
    parser.add_argument("--recipe", required=True, help="the recipe that trained it (named in the card)")
    parser.add_argument("--data-root", default=None, help="where the test set lies")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, directory, run = load_model(args.run, device="cpu")
    spec = DataSpec.from_dict(run["data"], root=args.data_root)
    test = spec.load(train=False)
    figures = evaluate_model(model, test, batch_size=500, device="cpu")
    settings = run["settings"]
    hybrid = settings["lam"] > 0
    patches = run["data"].get("patches")  # a bag-of-patches reference: its figures are per test patch
    out = WEIGHTS / args.name
    if out.exists():
        shutil.rmtree(out)
    save_checkpoint(model.eval(), out)
    run["settings"]["data_root"], run["data"]["root"] = None, None
    write_run_file(out, run)
    card = dict(
        name=args.name, kind="hybrid" if hybrid else ("patch reference" if patches else "density"),
        backbone=run["backbone"], patches=patches,
        backbone_options=run["backbone_options"], dataset=spec.name, input_shape=list(model.input_shape),
        parameters=model.backbone.num_params, lam=settings["lam"], steps=settings["steps"],
        batch_size=settings["batch_size"], lr=settings["lr"],
        test_bits_per_dim=round(figures["bits_per_dim"], 4),
        test_accuracy=round(figures["accuracy"], 4) if hybrid else None, test_images=len(test),
        evaluation_noise="per_image", recipe=args.recipe,
        command=f"hybridflow train --recipe {args.recipe} --data-root DATA --out runs/{args.recipe}",
        shipped=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    for path in out.iterdir():  # checkpoints are written owner-only; shipped files are for everyone
        path.chmod(0o644)
    print(json.dumps(card, indent=1))
    assert (out / RUN_FILE).is_file()


if __name__ == "__main__":
    main()
