"""The coupling conditioners: the soft clamp, the input bound, the registry that builds them by
name, and bfloat16 computation that leaves a coupling exact."""

from __future__ import annotations

import pytest
import torch

from hybridflow.flows import (
    INPUT_BOUND, AffineCoupling, ConvConditioner, KANConditioner, ResidualMLP, create_conditioner, list_conditioners,
    soft_clamp,
)
from tests.flow_checks import jacobian_logdet, randomize


def test_soft_clamp_is_bound_times_tanh():
    raw = torch.cat([torch.linspace(-60, 60, 2001), torch.tensor([0.0, 1e-6, -1e-6])]).double()
    for bound in (1.0, 3.0, 5.0):
        torch.testing.assert_close(soft_clamp(raw, bound), bound * torch.tanh(raw / bound), rtol=0, atol=1e-12)
        single = soft_clamp(raw.float(), bound)
        torch.testing.assert_close(single, bound * torch.tanh(raw.float() / bound), rtol=0, atol=2e-6)
        assert single.abs().max() <= bound and soft_clamp(torch.zeros(3), bound).eq(0).all()


@pytest.mark.parametrize("name, cls", [("mlp", ResidualMLP), ("conv", ConvConditioner), ("kan", KANConditioner)])
def test_conditioners_by_name(name, cls):
    assert {"mlp", "conv", "kan"} <= set(list_conditioners())
    net = create_conditioner(name, 2, 6, hidden=8)
    assert type(net) is cls
    x = torch.randn(3, 2, 4, 4) if name == "conv" else torch.randn(3, 5, 2)
    out = net(x)
    expected = (3, 6, 4, 4) if name == "conv" else (3, 5, 6)
    assert out.shape == expected and torch.equal(out, torch.zeros(expected))  # zero-initialised output


def test_unknown_conditioner_is_named():
    with pytest.raises(ValueError, match="unknown conditioner 'resnet'; known: .*mlp"):
        create_conditioner("resnet", 2, 4)


@pytest.mark.parametrize("make", [lambda: ResidualMLP(3, 4, hidden=8), lambda: KANConditioner(3, 4, hidden=8),
                                  lambda: ConvConditioner(3, 4, hidden=8)])
def test_conditioners_see_their_input_through_the_input_bound(make):
    net = randomize(make(), scale=0.3)
    x = torch.randn(5, 3, 2, 2) if isinstance(net, ConvConditioner) else torch.randn(5, 3)
    x = x * 100  # far outside the range any training run shows
    bounded = net(x)
    net.input_bound = None
    torch.testing.assert_close(bounded, net(soft_clamp(x, INPUT_BOUND)), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(net(x), bounded)  # unbounded, the outliers reach the network


def _bf16_coupling():
    torch.manual_seed(0)
    coupling = AffineCoupling(6, ResidualMLP(3, 6, hidden=16))
    return randomize(coupling, scale=0.3)


def test_bfloat16_conditioner_keeps_a_coupling_exact():
    coupling = _bf16_coupling()
    x = torch.randn(5, 7, 6, generator=torch.Generator().manual_seed(0))
    y32, logdet32 = coupling(x)
    coupling.conditioner.compute_dtype = torch.bfloat16
    y, logdet = coupling(x)
    assert y.dtype == torch.float32 and logdet.dtype == torch.float32
    # it really ran in bfloat16 (the output moved) but stays close to the float32 function
    assert not torch.equal(y, y32)
    torch.testing.assert_close(y, y32, rtol=0.02, atol=0.02)  # bfloat16 keeps 8 bits: 0.4% steps
    # the conditioner is a function of the untouched half, so the inverse is exact ...
    assert (coupling.inverse(y) - x).abs().max() < 1e-5
    # ... and the log-det is the exact log-det of the function computed
    small = torch.randn(2, 1, 6, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(coupling(small)[1], jacobian_logdet(coupling, small), rtol=0, atol=1e-3)
