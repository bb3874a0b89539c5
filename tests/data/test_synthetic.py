"""Tests for hybridflow.data.synthetic: the synthetic OOD sets."""

from __future__ import annotations

import pytest
import torch

from hybridflow.data import (
    SYNTHETIC_OOD,
    DataSpec,
    GlobalShuffle,
    ImageData,
    inverted_images,
    load_ood_data,
    noise_images,
    shuffled_images,
    synthetic_ood,
)


@pytest.fixture
def data() -> ImageData:
    images = torch.randint(0, 256, (6, 3, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return ImageData(images, [0, 1, 2, 0, 1, 2], ["a", "b", "c"])


def test_noise_shape_dtype_and_seed():
    noise = noise_images(5, (3, 4, 4), seed=7)
    assert noise.images.shape == (5, 3, 4, 4) and noise.images.dtype == torch.uint8
    assert noise.labels.tolist() == [-1] * 5
    assert torch.equal(noise.images, noise_images(5, (3, 4, 4), seed=7).images)
    assert not torch.equal(noise.images, noise_images(5, (3, 4, 4), seed=8).images)
    many = noise_images(200, (1, 8, 8), seed=0).images
    assert int(many.min()) == 0 and int(many.max()) == 255  # uniform over the whole range


def test_noise_uses_the_passed_generator_not_the_global_rng():
    state = torch.get_rng_state()
    a = noise_images(2, (1, 4, 4), generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.images, noise_images(2, (1, 4, 4), seed=3).images)
    generator = torch.Generator().manual_seed(3)
    first, second = noise_images(2, (1, 4, 4), generator=generator), noise_images(2, (1, 4, 4), generator=generator)
    assert not torch.equal(first.images, second.images)  # the generator advances


def test_inverted(data):
    inverted = inverted_images(data)
    assert inverted.images.dtype == torch.uint8 and torch.equal(inverted.images.int() + data.images.int(),
                                                                torch.full_like(data.images, 255).int())
    assert torch.equal(inverted.labels, data.labels) and inverted.classes == data.classes


def test_shuffled_is_one_seeded_global_permutation(data):
    shuffled = shuffled_images(data, seed=4)
    assert torch.equal(shuffled.images, GlobalShuffle((3, 4, 4), seed=4)(data.images))
    assert torch.equal(shuffled.images.flatten(1).sort().values, data.images.flatten(1).sort().values)
    assert not torch.equal(shuffled.images, data.images)
    assert torch.equal(shuffled_images(data, seed=4).images, shuffled.images)


def test_synthetic_ood_by_name(data):
    for name in SYNTHETIC_OOD:
        made = synthetic_ood(name, data, seed=1)
        assert made.image_shape == data.image_shape and len(made) == len(data) and made.images.dtype == torch.uint8
        assert torch.equal(made.images, synthetic_ood(name, data, seed=1).images)
    assert torch.equal(synthetic_ood("noise", data, seed=1).images, noise_images(6, (3, 4, 4), seed=1).images)
    with pytest.raises(ValueError, match="unknown synthetic set"):
        synthetic_ood("blur", data)


def test_load_ood_data_makes_or_loads():
    spec = DataSpec("digits", limit=20, seed=2, shuffle="global")
    in_test = spec.load(train=False)
    noise = load_ood_data("noise", spec, in_test)
    assert torch.equal(noise.images, noise_images(20, (1, 8, 8), seed=3).images)  # seeded by spec.seed + 1
    # a named dataset: its test split with the spec's subset, without the spec's shuffle
    other = load_ood_data("digits", spec, in_test)
    assert torch.equal(other.images, DataSpec("digits", limit=20, seed=2).load(train=False).images)
