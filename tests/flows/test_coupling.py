"""Couplings: the ``Coupling`` base (the split, the conditioner built by name), the affine
coupling, and the registry of couplings by name."""

from __future__ import annotations

import pytest
import torch

from hybridflow.flows import (
    AffineCoupling, ConvConditioner, Coupling, KANConditioner, ResidualMLP, SplineCoupling, create_coupling,
    list_couplings,
)
from tests.flow_checks import randomize


def test_coupling_is_identity_at_initialisation():
    coupling = create_coupling("affine", 8, 16)
    x = torch.randn(5, 3, 8)
    y, logdet = coupling(x)
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(5))


@pytest.mark.parametrize("name", ["spline", "maf", "kan"])
def test_every_registered_coupling_is_identity_at_initialisation(name):
    x = torch.randn(5, 3, 8) * 2
    y, logdet = create_coupling(name, 8, 16)(x)
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(logdet, torch.zeros(5), atol=1e-5, rtol=0)


def test_coupling_scale_is_bounded():
    coupling = AffineCoupling(4, ResidualMLP(2, 4, hidden=8), scale_bound=3.0)
    with torch.no_grad():
        coupling.conditioner.head[-1].bias.fill_(1e4)  # an absurd conditioner output
    y, logdet = coupling.eval()(torch.ones(2, 1, 4))
    assert torch.isfinite(y).all() and torch.all(logdet <= 2 * 3.0 + 1e-4)
    assert torch.isfinite(coupling.inverse(y)).all()


# -- the Coupling base ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, cls, dim, options",
    [("mlp", ResidualMLP, -1, dict(num_blocks=2)), ("conv", ConvConditioner, 1, {}),
     ("kan", KANConditioner, -1, dict(num_layers=3, grid_size=3))],
)
def test_conditioner_built_by_name(name, cls, dim, options):
    coupling = AffineCoupling(7, name, dim=dim, hidden=8, **options)
    assert type(coupling.conditioner) is cls and coupling.split == (3, 4)
    x = torch.randn(2, 7, 3, 3) if dim == 1 else torch.randn(2, 5, 7)
    # the conditioner maps the 3 conditioning features to a shift and a log-scale for each of the other 4
    assert coupling.conditioner(coupling.split_input(x)[0]).shape[dim] == 2 * 4
    if name == "mlp":
        assert len(coupling.conditioner.blocks) == 2 and coupling.conditioner.stem.out_features == 8
    if name == "kan":
        assert len(coupling.conditioner.layers) == 3


def test_a_spline_coupling_builds_its_conditioner_for_its_parameter_count():
    coupling = SplineCoupling(6, "mlp", num_bins=4, hidden=8)
    assert coupling.params_per_feature == 3 * 4 - 1
    assert coupling.conditioner.head[-1].out_features == 3 * (3 * 4 - 1)


def test_conditioner_options_are_refused_with_a_built_module():
    with pytest.raises(ValueError, match="need a conditioner name"):
        AffineCoupling(6, ResidualMLP(3, 6, hidden=8), num_blocks=2)
    with pytest.raises(ValueError, match="unknown conditioner"):
        AffineCoupling(6, "transformer")


@pytest.mark.parametrize("features, dim", [(5, -1), (7, -1), (3, 1), (2, -1)])
def test_odd_and_channel_splits(features, dim):
    torch.manual_seed(0)
    coupling = randomize(AffineCoupling(features, "conv" if dim == 1 else "mlp", dim=dim, hidden=8), scale=0.3)
    n_a = features // 2
    assert coupling.split == (n_a, features - n_a)
    x = torch.randn(3, features, 2, 2) if dim == 1 else torch.randn(3, 4, features)
    y, logdet = coupling(x)
    assert y.shape == x.shape and logdet.shape == (3,)
    assert torch.equal(y.narrow(dim, 0, n_a), x.narrow(dim, 0, n_a))  # the conditioning part passes unchanged
    assert not torch.allclose(y.narrow(dim, n_a, features - n_a), x.narrow(dim, n_a, features - n_a))
    assert (coupling.inverse(y) - x).abs().max() < 1e-5


def test_a_coupling_needs_two_features():
    with pytest.raises(ValueError, match="at least 2 features"):
        AffineCoupling(1, "mlp")


def test_the_base_splits_and_joins():
    base = Coupling(5, torch.nn.Identity())
    x = torch.arange(10.0).view(2, 5)
    x_a, x_b = base.split_input(x)
    assert x_a.shape == (2, 2) and x_b.shape == (2, 3)
    assert torch.equal(base.join(x_a, x_b), x)


# -- the registry ---------------------------------------------------------------------------------
def test_couplings_by_name():
    assert {"affine", "spline", "maf", "kan"} <= set(list_couplings())
    assert isinstance(create_coupling("affine", 6, 8), AffineCoupling)
    assert isinstance(create_coupling("spline", 6, 8), SplineCoupling)
    with pytest.raises(ValueError, match="unknown coupling 'glow'"):
        create_coupling("glow", 6, 8)
