"""Every path to a density gives the same bits/dim for the same images and evaluation seed: the
ordinary (live) path and the inference copy (``hybridflow.freeze``), float32 and float64, the
estimators (``HybridFlowClassifier.score_samples``, ``FlowDensity``), ``ood.log_likelihood`` and
``training.evaluate_model``.

Tolerances, per image, in bits/dim (documented in :func:`hybridflow.freeze` and the README):

- float32 conditioners: every path within :data:`FLOAT32_TOLERANCE` (1e-5) of the float64 function
  (measured: 1.6e-6 here, 8e-7 on the 10-minute MNIST checkpoints);
- bfloat16 conditioners: the ordinary path and the inference copy compute two bfloat16 roundings of
  the float32 function (the live path rounds the conditioner's weights and activations, the copy its
  BatchNorm-folded weights), so MixerFlow's two paths differ per image by up to
  :data:`BFLOAT16_COPY_TOLERANCE` on images like the training data (measured 2.5e-3 here, 8.6e-3 on
  the checkpoints; Glow's convolutional conditioners are not folded, so its copy is exact); either
  lies within :data:`BFLOAT16_FUNCTION_TOLERANCE` of the float32 function on such images (1.6e-2
  here). Unfamiliar images can lie further (0.06 and 0.17 measured), so compare bits/dim across
  models with float32 conditioners or a float64 copy. float64 runs the conditioners in float64
  (bfloat16 applies to float32 only): a float64 copy gives the float32 function.

``python -m tests.test_paths_agree`` measures the differences on the trained checkpoints under
``runs/bench`` (the figures quoted in ``freeze``'s docstring and the README).
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hybridflow import HybridModel, freeze
from hybridflow.backbones import bits_per_dim
from hybridflow.data import ImageData, load_digits_data
from hybridflow.estimators.inference import build_inference_model, model_outputs
from hybridflow.ood import FlowDensity, log_likelihood
from hybridflow.training import evaluate_model

#: Largest per-image difference, in bits/dim, between any two paths of a float32 model.
FLOAT32_TOLERANCE = 1e-5
#: Largest per-image difference, in bits/dim, between the ordinary and the inference path of a model
#: with bfloat16 conditioners, on images like its training data (see the module docstring).
BFLOAT16_COPY_TOLERANCE = 2e-2
#: Largest per-image difference, in bits/dim, between either bfloat16 path and the float32 function.
BFLOAT16_FUNCTION_TOLERANCE = 5e-2

TINY = {
    "mixerflow": dict(backbone="mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, num_layers=2, hidden=16),
    "glow": dict(backbone="glow_tiny", input_shape=(1, 8, 8), num_steps=2, hidden=16),
}


def per_image_bits(model: HybridModel, images: torch.Tensor) -> dict[str, np.ndarray]:
    """bits/dim of ``images`` by every path, float64 numpy arrays keyed by path name."""
    d = model.num_dims
    model = model.eval()
    with torch.no_grad():
        paths = {
            "ordinary": model.bits_per_dim(images),
            "freeze": freeze(model).bits_per_dim(images),
            "float64": copy.deepcopy(model).double().bits_per_dim(images),
            "freeze_float64": freeze(model, dtype=torch.float64).bits_per_dim(images),
            "hybrid.inference_copy": model.inference_copy().bits_per_dim(images),
            "backbone": model.backbone.bits_per_dim(images),
        }
    out = {k: v.double().cpu().numpy() for k, v in paths.items()}
    to_bits = lambda log_p: -np.asarray(log_p, dtype=np.float64) / (d * math.log(2))  # noqa: E731
    out["ood.log_likelihood"] = to_bits(log_likelihood(model.backbone, images))
    out["FlowDensity.bpd"] = -FlowDensity.from_model(model.backbone, scorer="bpd").score_samples(images)
    for dtype in ("float32", "float64"):
        copy_ = build_inference_model(model, "cpu", dtype)
        out[f"estimator.{dtype}"] = to_bits(model_outputs(copy_, images, log_prob=True)["log_prob"])
    return out


def float32_function(model: HybridModel) -> HybridModel:
    """A copy of ``model`` whose conditioners run in float32 (the function bfloat16 approximates)."""
    twin = copy.deepcopy(model)
    twin.backbone.set_conditioner_dtype("float32")
    return twin


def _trained(kind: str, conditioner_dtype: str, data: ImageData) -> HybridModel:
    """A tiny model with some training behind it (its BatchNorm statistics and ActNorms are not at init)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run outside conftest's one-thread fixture
    try:
        return _train_briefly(kind, conditioner_dtype, data)
    finally:
        torch.set_num_threads(threads)


def _train_briefly(kind: str, conditioner_dtype: str, data: ImageData) -> HybridModel:
    torch.manual_seed(0)
    options = dict(TINY[kind], conditioner_dtype=conditioner_dtype)
    model = HybridModel(options.pop("backbone"), 10, **options)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for step in range(30):
        batch = torch.randint(len(data), (64,), generator=generator)
        loss = model(data.images[batch], data.labels[batch], generator=generator).total
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits() -> tuple[ImageData, ImageData]:
    data = load_digits_data(train=True)
    return data, load_digits_data(train=False).subset(np.arange(128))


@pytest.fixture(scope="module", params=["mixerflow", "glow"])
def float32_model(request, digits) -> HybridModel:
    return _trained(request.param, "float32", digits[0])


def test_every_path_gives_the_same_bits_per_dim_in_float32(float32_model, digits):
    images = digits[1].images
    bits = per_image_bits(float32_model, images)
    reference = bits["float64"]
    assert np.isfinite(reference).all() and 0.5 < reference.mean() < 12
    for name, values in bits.items():
        assert np.abs(values - reference).max() <= FLOAT32_TOLERANCE, name


def test_float64_paths_agree_to_float64_rounding(float32_model, digits):
    bits = per_image_bits(float32_model, digits[1].images)
    assert np.abs(bits["freeze_float64"] - bits["float64"]).max() <= 1e-10
    assert np.abs(bits["estimator.float64"] - bits["float64"]).max() <= 1e-10


def test_evaluate_model_is_the_mean_of_the_per_image_bits(float32_model, digits):
    val = digits[1]
    figures = evaluate_model(float32_model, val, batch_size=50)  # batches must not matter
    bits = per_image_bits(float32_model, val.images)
    assert abs(figures["bits_per_dim"] - bits["freeze"].mean()) <= 1e-9
    assert abs(figures["bits_per_dim"] - bits["float64"].mean()) <= FLOAT32_TOLERANCE


def test_estimator_scores_are_its_models_bits(digits):
    from hybridflow.estimators import HybridFlowClassifier

    data = digits[0]
    clf = HybridFlowClassifier(backbone_kwargs=dict(patch_size=2, num_layers=1, hidden=8), steps=5, batch_size=32,
                               device="cpu", random_state=0).fit(data.images.numpy(), data.labels.numpy())
    images = digits[1].images
    scores = bits_per_dim(torch.from_numpy(clf.score_samples(images.numpy())), 64).numpy()
    with torch.no_grad():
        ordinary = clf.model_.eval().bits_per_dim(images).double().numpy()
    assert np.abs(scores - ordinary).max() <= FLOAT32_TOLERANCE


def test_another_evaluation_seed_moves_every_path_alike(float32_model, digits):
    images = digits[1].images[:32]
    model = copy.deepcopy(float32_model)
    first = per_image_bits(model, images)
    model.eval_seed = 7
    second = per_image_bits(model, images)
    assert np.abs(second["float64"] - first["float64"]).max() > 1e-4  # the seed does move the figures
    for name in second:
        assert np.abs(second[name] - second["float64"]).max() <= FLOAT32_TOLERANCE, name


@pytest.mark.parametrize("kind", ["mixerflow", "glow"])
def test_bfloat16_conditioners_keep_every_path_within_the_documented_bound(kind, digits):
    model = _trained(kind, "bfloat16", digits[0])
    images = digits[1].images
    bits = per_image_bits(model, images)
    exact = per_image_bits(float32_function(model), images)["float64"]
    ordinary, fast = bits["ordinary"], bits["freeze"]
    assert np.abs(fast - ordinary).max() <= BFLOAT16_COPY_TOLERANCE
    assert np.abs(ordinary - exact).max() <= BFLOAT16_FUNCTION_TOLERANCE
    assert np.abs(fast - exact).max() <= BFLOAT16_FUNCTION_TOLERANCE
    assert abs(fast.mean() - ordinary.mean()) <= 3e-3  # a test-set figure moves far less than one image
    assert np.abs(ordinary - exact).max() > 1e-6  # bfloat16 really ran: the bound is not vacuous
    # the fused-path users (estimator in float32, OOD, FlowDensity) all see the inference copy's numbers
    for name in ("hybrid.inference_copy", "ood.log_likelihood", "FlowDensity.bpd", "estimator.float32"):
        assert np.abs(bits[name] - fast).max() <= FLOAT32_TOLERANCE, name
    # float64 runs the conditioners in float64: the float32 function, exactly as float64 computes it
    for name in ("float64", "freeze_float64", "estimator.float64"):
        assert np.abs(bits[name] - exact).max() <= 1e-9, name


# -- measurement -------------------------------------------------------------------------------
def _mnist_like(n: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """8x8 digits scaled into a 20x20 box centred in the image (MNIST's layout)."""
    digits = load_digits_data(train=False).images[:n].float()
    c, h, w = shape
    box = F.interpolate(digits, size=(h - 8, w - 8), mode="bilinear", align_corners=False)
    return F.pad(box, (4, 4, 4, 4)).round().clamp(0, 255).to(torch.uint8).expand(-1, c, -1, -1).contiguous()


def measure(root: str = "runs/bench", n: int = 256) -> None:
    """Print, for each trained checkpoint under ``root``, on ``n`` of the model's own samples and
    ``n`` MNIST-like digits, how far the paths lie apart in bits/dim: the largest per-image
    difference, the mean per-image difference and the difference of the means (a test-set figure)."""
    from hybridflow.training import load_checkpoint

    torch.manual_seed(0)
    for path in sorted(Path(root).glob("*/*/model")):
        model = load_checkpoint(path).eval()
        samples = model.backbone.sample(n, generator=torch.Generator().manual_seed(0))
        for label, images in (("samples", samples), ("digits", _mnist_like(n, model.input_shape))):
            bits = per_image_bits(model, images)
            bits["float32 function"] = per_image_bits(float32_function(model), images)["float64"]
            pairs = [("freeze", "ordinary"), ("ordinary", "float32 function"), ("freeze", "float32 function"),
                     ("float64", "float32 function"), ("ood.log_likelihood", "freeze"), ("estimator.float32", "freeze")]
            print(f"{path.parent.parent.name}/{path.parent.name.split('_')[0]} on {label} "
                  f"(mean {bits['ordinary'].mean():.4f} bits/dim)")
            for a, b in pairs:
                d = bits[a] - bits[b]
                print(f"    {a:>18s} - {b:<16s} max|d| {np.abs(d).max():.2e}  mean|d| {np.abs(d).mean():.2e}  "
                      f"|mean d| {abs(d.mean()):.2e}", flush=True)


if __name__ == "__main__":
    measure(*sys.argv[1:2], *(int(a) for a in sys.argv[2:3]))
