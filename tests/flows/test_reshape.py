"""Patchify (image <-> mixer-matrix), Glow's squeeze and the MixerFlow shift layer."""

from __future__ import annotations

import pytest
import torch

from hybridflow.backbones.mixerflow import MixerLayer
from hybridflow.flows import Patchify, ShiftedFlow, Squeeze, patchify, unpatchify
from tests.flow_checks import randomize


def test_patchify_layout_is_row_major_patches_of_height_width_channel():
    image = torch.arange(2 * 4 * 6).view(1, 2, 4, 6)  # (C, H, W) = (2, 4, 6)
    m = patchify(image, (2, 3))
    assert m.shape == (1, 4, 12)
    # the second patch (top row, right) starts at pixel (0, 3); values run (ph, pw, C)
    assert m[0, 1, :4].tolist() == [int(image[0, c, 0, w]) for w in (3, 4) for c in (0, 1)]
    assert torch.equal(unpatchify(m, (2, 4, 6), (2, 3)), image)
    assert torch.equal(Patchify((2, 4, 6), (2, 3))(image.float())[0], m.float())


def test_squeeze_moves_each_2x2_block_into_channels():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y, logdet = Squeeze()(x)
    assert y.shape == (1, 4, 2, 2) and torch.equal(logdet, torch.zeros(1))
    assert y[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]  # the top-left 2x2 block


def test_shift_layer_keeps_the_frame():
    inner = randomize(MixerLayer(4, 4, hidden=8, steps=1))
    shift = ShiftedFlow(inner, (1, 6, 6), patch_size=2, shift=1).eval()
    image = torch.randn(2, 1, 6, 6)
    patches = Patchify((1, 6, 6), 2)
    out = patches.inverse(shift(patches(image)[0])[0])
    frame = torch.ones(6, 6, dtype=torch.bool)
    frame[1:5, 1:5] = False
    assert torch.equal(out[:, :, frame], image[:, :, frame])
    assert not torch.allclose(out[:, :, ~frame], image[:, :, ~frame])


@pytest.mark.parametrize("shift", [0, 2, (1, 3)])
def test_shift_must_lie_inside_the_patch(shift):
    with pytest.raises(ValueError, match="shift"):
        ShiftedFlow(MixerLayer(4, 4, hidden=8, steps=1), (1, 6, 6), patch_size=2, shift=shift)


def test_shift_layer_needs_two_by_two_patches():
    with pytest.raises(ValueError, match="at least 2x2 patches"):
        ShiftedFlow(MixerLayer(2, 4, hidden=8, steps=1), (1, 2, 6), patch_size=2, shift=1)
