"""Bad images for the backbones and the hybrid model (clear errors naming the problem), images
that are odd but valid (the right numbers), and degenerate first training batches, which must not
poison ActNorm's data-dependent initialisation (issue 16, point 5)."""

from __future__ import annotations

import math

import pytest
import torch

from hybridflow.backbones import create_backbone
from tests.bad_inputs.conftest import MIXER, SHAPE, glow, mixerflow

GOOD = torch.randint(0, 256, (4, *SHAPE), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("images, error, words", [
    (torch.randint(0, 256, (2, 3, 8, 8)), ValueError, "expected 1 channel"),
    (torch.randint(0, 256, (2, 1, 16, 16)), ValueError, "expected images of size 8x8, got 16x16"),
    (torch.randint(0, 256, SHAPE), ValueError, "add a batch dimension"),
    (torch.full((2, *SHAPE), math.nan), ValueError, "NaN or infinite"),
    (torch.full((2, *SHAPE), math.inf), ValueError, "NaN or infinite"),
    (torch.rand(2, *SHAPE), ValueError, "fractional values"),
    (torch.full((2, *SHAPE), 256), ValueError, "0..255"),
    (torch.full((2, *SHAPE), -1), ValueError, "0..255"),
    (torch.zeros((0, *SHAPE), dtype=torch.long), ValueError, "empty input"),
    (GOOD > 100, TypeError, "dtype torch.bool"),
    (GOOD.to(torch.complex64), TypeError, "complex64"),
    (GOOD.tolist(), TypeError, "got list"),
])
@pytest.mark.parametrize("name", ["mixerflow", "glow", "hybrid"])
def test_bad_images_are_named(models, name, images, error, words):
    with pytest.raises(error, match=words):
        models[name].log_prob(images)


@pytest.mark.parametrize("convert", [
    lambda x: x.to(torch.uint8), lambda x: x.float(), lambda x: x.double(), lambda x: x.numpy(),
    lambda x: x.transpose(2, 3).contiguous().transpose(2, 3),  # non-contiguous
])
@pytest.mark.parametrize("name", ["mixerflow", "glow", "hybrid"])
def test_other_layouts_of_the_same_pixels_give_the_same_numbers(models, name, convert):
    expected = models[name].log_prob(GOOD)
    torch.testing.assert_close(models[name].log_prob(convert(GOOD)), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("labels, words", [
    (torch.tensor([0, 1, 2, 3]), "labels must lie in -1..2"),
    (torch.tensor([0, 1, 2, -2]), "labels must lie in -1..2"),
    (torch.tensor([0.0, 1.0, 2.0, 1.0]), "integer tensor"),
    (torch.tensor([0, 1]), "shape \\(4,\\)"),
])
def test_hybrid_labels_are_checked(models, labels, words):
    with pytest.raises(ValueError, match=words):
        models["hybrid"].loss(GOOD, labels)


@pytest.mark.parametrize("n, temperature, words", [
    (2, math.nan, "temperature must be a finite number"),
    (2, math.inf, "temperature must be a finite number"),
    (2, -1.0, "temperature"),
    (0, 1.0, "positive integer"),
    (2.5, 1.0, "positive integer"),
])
@pytest.mark.parametrize("name", ["mixerflow", "glow"])
def test_sample_refuses_what_would_give_grey_images(models, name, n, temperature, words):
    with pytest.raises(ValueError, match=words):
        models[name].sample(n, temperature=temperature)


@pytest.mark.parametrize("make, kwargs, words", [
    ("mixerflow_tiny", dict(input_shape=(8, 8)), "input_shape must be \\(channels, height, width\\)"),
    ("mixerflow_tiny", dict(input_shape=(1, -8, 8)), "positive height and width"),
    ("mixerflow_tiny", dict(input_shape=SHAPE, patch_size=3), "patch size \\(3, 3\\) must divide"),
    ("glow_tiny", dict(input_shape=SHAPE, num_levels=4), "divisible by 16"),
    ("mixerflow_tiny", dict(preprocess="zzz"), "preprocess must be one of"),
    ("mixerflow_tiny", dict(coupling="zzz"), "unknown coupling 'zzz'"),
    ("mixerflow_tiny", dict(conditioner_dtype="int8"), "conditioner_dtype"),
    ("mixerflow_tiny", dict(foo=1), "foo"),
])
def test_backbone_settings_are_named(make, kwargs, words):
    with pytest.raises(ValueError, match=words):
        create_backbone(make, **kwargs)


def test_create_backbone_names_a_badly_typed_option():
    with pytest.raises(ValueError, match="hidden='abc'.* integer"):
        create_backbone("mixerflow_tiny", input_shape=SHAPE, hidden="abc")


@pytest.mark.parametrize("name", ["mixerflow", "glow"])
def test_inverse_names_a_latent_of_the_wrong_shape(models, name):
    with pytest.raises(ValueError, match="shape"):
        models[name].inverse(torch.randn(2, 3, 8, 8))


def test_eval_seed_must_be_an_integer():
    flow = mixerflow().eval()
    with pytest.raises((TypeError, ValueError), match="eval_seed"):
        flow.eval_seed = math.nan


# -- point 5: a degenerate first training batch must not poison ActNorm ---------------------------------

BLANK_BATCHES = {
    "one blank image": torch.zeros(1, *SHAPE, dtype=torch.long),
    "one white image": torch.full((1, *SHAPE), 255),
    "a constant batch": torch.full((8, *SHAPE), 128),
    "one real image": GOOD[:1],
}


@pytest.mark.parametrize("batch", BLANK_BATCHES.values(), ids=list(BLANK_BATCHES))
@pytest.mark.parametrize("make", [mixerflow, glow, lambda: mixerflow(coupling="maf")], ids=["mixerflow", "glow",
                                                                                         "mixerflow-maf"])
def test_a_degenerate_first_training_batch_keeps_later_log_probs_finite_and_sane(make, batch):
    torch.manual_seed(0)
    flow = make().train()
    first = flow.log_prob(batch)  # initialises every ActNorm from this batch
    assert torch.isfinite(first).all()
    flow.eval()
    later = flow.bits_per_dim(GOOD)
    # before the fix: NaN (one image) or 1e5..1e7 bits/dim (a constant batch); an untrained flow
    # gives about 9-10 bits/dim on uniform random pixels
    assert torch.isfinite(later).all() and later.max() < 20, later


def test_eval_mode_skips_the_initialisation():
    flow = mixerflow().eval()
    flow.log_prob(torch.zeros(1, *SHAPE, dtype=torch.long))
    assert not any(bool(b) for name, b in flow.named_buffers() if name.endswith("initialized"))


def test_a_nan_reaching_actnorm_first_is_refused_not_stored():
    from hybridflow.flows import ActNorm

    norm = ActNorm((1, 1, 1)).train()
    with pytest.raises(ValueError, match="non-finite"):
        norm(torch.full((2, 1, 4, 4), math.nan))
    assert not bool(norm.initialized)
