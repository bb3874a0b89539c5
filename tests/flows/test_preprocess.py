"""From integer pixels to the flow's input: validation, dequantisation (training and evaluation
noise), quantisation, and the preprocessing flows (centring, logit)."""

from __future__ import annotations

import math

import pytest
import torch

from hybridflow.flows import Centre, Logit, check_pixels, dequantize, evaluation_noise, make_preprocess, quantize


def _pixels(n=8, shape=(1, 6, 6), seed=0):
    return torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_dequantisation_and_quantisation():
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    u = dequantize(pixels, generator=torch.Generator().manual_seed(0))
    assert u.min() >= 0 and u.max() < 1
    assert torch.equal(quantize(u), pixels)
    assert torch.equal(u, dequantize(pixels, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(dequantize(pixels, noise="midpoint")[0, 0, 0, :2], torch.tensor([0.5, 1.5]) / 256)


def test_dequantize_with_evaluation_noise_uses_the_seeded_per_image_noise():
    x = _pixels()
    expected = (x.float() + evaluation_noise(x, seed=3)) / 256
    assert torch.equal(dequantize(x, noise="evaluation", seed=3), expected)
    assert torch.equal(quantize(expected), x)
    with pytest.raises(ValueError, match="noise must be"):
        dequantize(x, noise="gaussian")


# -- evaluation noise: deterministic, batch-independent, each image its own --------------------
def test_evaluation_noise_is_deterministic_and_in_the_unit_interval():
    x = _pixels()
    noise = evaluation_noise(x, seed=0)
    assert noise.shape == x.shape and noise.dtype == torch.float32
    assert noise.min() >= 0 and noise.max() < 1
    assert torch.equal(noise, evaluation_noise(x.clone(), seed=0))


def test_evaluation_noise_does_not_depend_on_the_batch():
    x = _pixels(6)
    noise = evaluation_noise(x, seed=1)
    assert torch.equal(evaluation_noise(x.flip(0), seed=1).flip(0), noise)  # batch order
    assert torch.equal(evaluation_noise(x[2:3], seed=1)[0], noise[2])       # alone
    others = torch.cat([_pixels(3, seed=9), x[4:5]])
    assert torch.equal(evaluation_noise(others, seed=1)[-1], noise[4])      # other neighbours


def test_each_image_gets_its_own_noise():
    x = _pixels(16)
    noise = evaluation_noise(x, seed=0).flatten(1)
    # no two different images share a noise image, and their noises are uncorrelated
    assert len({tuple(row.tolist()) for row in noise}) == 16
    correlation = torch.corrcoef(noise)
    off_diagonal = correlation[~torch.eye(16, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 0.5  # 36 values each: |r| of independent draws stays well below
    # the same image twice gets the same noise (it is a function of the image and the seed)
    twice = torch.cat([x[:1], x[:1]])
    first, second = evaluation_noise(twice, seed=0)
    assert torch.equal(first, second)
    # an image that differs from another in one pixel gets unrelated noise
    changed = x[:1].clone()
    changed[0, 0, 0, 0] ^= 1
    assert torch.isclose(evaluation_noise(changed, seed=0)[0], evaluation_noise(x[:1], seed=0)[0]).float().mean() < 0.05


def test_evaluation_noise_is_uniform():
    noise = evaluation_noise(_pixels(400, shape=(1, 8, 8)), seed=0).double()
    n = noise.numel()  # 25,600 draws: standard errors 0.0018 (mean) and 0.0005 (variance)
    assert abs(noise.mean().item() - 0.5) < 4 * math.sqrt(1 / 12 / n)
    assert abs(noise.var().item() - 1 / 12) < 4 * math.sqrt(1 / 180 / n)
    counts = torch.histc(noise, bins=10, min=0, max=1)
    assert (counts - n / 10).abs().max() < 5 * math.sqrt(n / 10)


def test_different_seeds_give_different_noise():
    x = _pixels()
    noises = [evaluation_noise(x, seed=k) for k in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert torch.isclose(noises[i], noises[j]).float().mean() < 0.01  # unrelated draws


def test_evaluation_noise_is_the_same_for_float64_pixels():
    x = _pixels(shape=(3, 4, 4))
    noise = evaluation_noise(x, seed=2)
    assert torch.equal(evaluation_noise(x.double(), seed=2), noise)
    assert torch.equal(evaluation_noise(x.long(), seed=2), noise)


# -- the preprocessing flows ---------------------------------------------------------------------
@pytest.mark.parametrize("noise", ["uniform", "evaluation", "midpoint"])
def test_dequantize_in_float64_is_not_rounded_through_float32(noise):
    x = torch.randint(0, 256, (3, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    u32 = dequantize(x, noise=noise, generator=torch.Generator().manual_seed(5))
    u64 = dequantize(x, noise=noise, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    # the same noise values (drawn in float32) whatever the dtype; the sum formed in float64
    draw = u32 * 256 - x  # the float32 noise, to float32 rounding
    assert u64.dtype == torch.float64 and u32.dtype == torch.float32
    assert torch.allclose(u64 * 256 - x.double(), draw.double(), atol=2e-5)
    if noise != "midpoint":
        exact = (x.double() + (evaluation_noise(x) if noise == "evaluation"
                               else torch.rand(x.shape, generator=torch.Generator().manual_seed(5))).double()) / 256
        assert torch.equal(u64, exact)


def test_noise_is_drawn_on_the_cpu_whatever_the_default_device():
    """Under ``torch.set_default_device("cuda")`` (here: ``meta``, which has no data) the noise is
    still drawn on the CPU with its CPU generator and lands on the requested device."""
    x = torch.randint(0, 256, (2, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    expected = evaluation_noise(x, seed=3)
    with torch.device("meta"):
        noise = evaluation_noise(x, seed=3)
        u = dequantize(x, noise="uniform", generator=torch.Generator().manual_seed(1))
        on_meta = dequantize(x, noise="evaluation", seed=3, device="meta")
    assert noise.device.type == "cpu" and torch.equal(noise, expected)
    assert u.device.type == "cpu" and torch.equal(u, dequantize(x, generator=torch.Generator().manual_seed(1)))
    assert on_meta.device.type == "meta" and on_meta.dtype == torch.float32


def test_dequantize_refuses_a_dtype_that_is_not_floating():
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype"):
        dequantize(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), dtype=torch.int32)


def test_logit_log_det_by_hand():
    u = torch.full((1, 1, 1, 1), 0.5)
    y, logdet = Logit(alpha=0.05)(u)
    # s = 0.5, dy/du = (1 - 2 alpha) / (s (1 - s)) = 0.9 / 0.25
    assert abs(y.item()) < 1e-7 and abs(logdet.item() - math.log(0.9 / 0.25)) < 1e-6


def test_make_preprocess_by_name():
    assert isinstance(make_preprocess("centre"), Centre) and isinstance(make_preprocess("logit"), Logit)
    y, logdet = make_preprocess("centre")(torch.full((2, 1, 2, 2), 0.25))
    assert torch.equal(y, torch.full((2, 1, 2, 2), -0.25)) and torch.equal(logdet, torch.zeros(2))
    with pytest.raises(ValueError, match="preprocess must be one of"):
        make_preprocess("tanh")


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(1, 3, 4, 4), "channel"),
        (torch.zeros(3, 4, 4), "batch dimension"),
        (torch.zeros(2, 1, 5, 4), "size"),
        (torch.zeros(0, 1, 4, 4), "empty"),
        (torch.full((1, 1, 4, 4), float("nan")), "NaN"),
        (torch.full((1, 1, 4, 4), 0.5), "integer"),
        (torch.full((1, 1, 4, 4), 300), "0..255"),
        (torch.full((1, 1, 4, 4), -1), "0..255"),
    ],
)
def test_check_pixels_names_the_problem(bad, message):
    with pytest.raises(ValueError, match=message):
        check_pixels(bad, (1, 4, 4))


def test_check_pixels_accepts_integer_arrays_and_returns_float():
    x = check_pixels(_pixels(2, shape=(1, 4, 4)).numpy(), (1, 4, 4))
    assert x.dtype == torch.float32 and x.shape == (2, 1, 4, 4)
    with pytest.raises(TypeError, match="dtype"):
        check_pixels(torch.zeros(1, 1, 4, 4, dtype=torch.bool), (1, 4, 4))
