"""Tests for hybridflow.data.permutations: pixel shuffles."""

from __future__ import annotations

import pytest
import torch

from hybridflow.data import GlobalShuffle, LocalShuffle, pixel_shuffle


def _images(c=3, h=8, w=12, n=4) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


@pytest.mark.parametrize("make", [lambda s: GlobalShuffle(s, seed=2), lambda s: LocalShuffle(s, patch_size=4, seed=2)])
def test_shuffles_are_invertible_permutations(make):
    x = _images()
    shuffle = make((3, 8, 12))
    y = shuffle(x)
    assert y.dtype == torch.uint8 and not torch.equal(y, x)
    assert torch.equal(y.flatten(1).sort().values, x.flatten(1).sort().values)
    assert torch.equal(shuffle.inverse(y), x)
    assert torch.equal(make((3, 8, 12))(x), y)  # seeded
    # The same position permutation for every channel: an RGB pixel moves as a whole.
    pos = torch.arange(96, dtype=torch.float32).reshape(1, 1, 8, 12).expand(1, 3, 8, 12)
    moved = shuffle(pos)
    assert torch.equal(moved[:, 0], moved[:, 2])
    with pytest.raises(ValueError, match="built for images"):
        shuffle(x[:, :1])


def test_local_shuffle_moves_whole_patches():
    p, h, w = 4, 8, 12
    x = torch.randperm(h * w).reshape(1, 1, h, w)  # distinct values: every pixel traceable
    shuffle = LocalShuffle((1, h, w), patch_size=p, seed=5)

    def patches(t):
        return t.reshape(h // p, p, w // p, p).permute(0, 2, 1, 3).reshape(-1, p * p)

    src, out = patches(x[0, 0]), patches(shuffle(x)[0, 0])
    assert torch.equal(out, src[shuffle.patch_permutation][:, shuffle.pixel_permutation])
    # Independently of the attributes: each output patch is one input patch, reordered by one shared order.
    owner = [int((src == out[k, 0]).any(1).nonzero()) for k in range(len(out))]
    assert sorted(owner) == list(range(len(src)))
    order = [(src[owner[0]] == v).nonzero().item() for v in out[0]]
    assert all(torch.equal(out[k], src[owner[k]][order]) for k in range(len(out)))
    with pytest.raises(ValueError, match="divide"):
        LocalShuffle((1, 8, 12), patch_size=5)


def test_pixel_shuffle_builds_the_named_shuffle():
    x = _images()
    assert pixel_shuffle(None, (3, 8, 12)) is None
    local = pixel_shuffle("local", (3, 8, 12), patch_size=4, seed=2)
    assert isinstance(local, LocalShuffle) and torch.equal(local(x), LocalShuffle((3, 8, 12), 4, seed=2)(x))
    glob = pixel_shuffle("global", (3, 8, 12), seed=2)
    assert isinstance(glob, GlobalShuffle) and torch.equal(glob(x), GlobalShuffle((3, 8, 12), seed=2)(x))
    with pytest.raises(ValueError, match="shuffle must be"):
        pixel_shuffle("pixels", (3, 8, 12))
