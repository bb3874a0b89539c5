"""LU / RLU linear blocks and Glow's invertible 1x1 convolution."""

from __future__ import annotations

import pytest
import torch

from hybridflow.flows import InvConv1x1, LULinear
from tests.flow_checks import randomize


def test_lu_and_rlu_initialisation():
    x = torch.randn(3, 7)
    assert torch.equal(LULinear(7)(x)[0], x)
    torch.testing.assert_close(LULinear(7, permutation="reverse")(x)[0], x.flip(-1))


def test_weight_times_inverse_weight_is_the_identity():
    layer = randomize(LULinear(6, init="random").double(), scale=0.3)
    torch.testing.assert_close(layer.weight() @ layer.inverse_weight(), torch.eye(6, dtype=torch.float64))
    # log|det W| is the sum of the log-diagonal: no determinant is ever computed
    torch.testing.assert_close(torch.linalg.slogdet(layer.weight())[1], layer.log_diag.sum())


def test_random_init_is_a_rotation():
    torch.manual_seed(0)
    conv = InvConv1x1(5)
    weight = conv.weight()
    torch.testing.assert_close(weight @ weight.T, torch.eye(5), atol=1e-5, rtol=0)
    _, logdet = conv(torch.randn(2, 5, 3, 3))
    torch.testing.assert_close(logdet, torch.zeros(2), atol=1e-5, rtol=0)


def test_inv_conv_is_one_linear_map_over_the_channels():
    conv = randomize(InvConv1x1(3), scale=0.2)
    x = torch.randn(2, 3, 4, 5)
    by_conv2d = torch.nn.functional.conv2d(x, conv.weight()[:, :, None, None])
    torch.testing.assert_close(conv(x)[0], by_conv2d, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("options, message",
                         [(dict(permutation="random"), "permutation"), (dict(init="zeros"), "init")])
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        LULinear(4, **options)
