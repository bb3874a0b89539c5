"""The flow-layer variants (spline, MAF, KAN couplings; NSF-Glow) against the layer protocol, plus
the known failure points: spline tails, inputs exactly on knots and bounds, extreme parameters,
MAF's autoregressive structure, and the registered configurations."""

from __future__ import annotations

import math

import pytest
import torch

from tests.flow_checks import randomize
# The generic layer checks, collected here again: they run on this module's ``layer_case``.
from tests.test_flows import (  # noqa: F401
    test_every_parameter_gets_a_gradient, test_inverse_of_forward_is_identity, test_logdet_matches_autograd_jacobian,
    test_state_dict_round_trip_gives_identical_output,
)
from hybridflow import create_backbone, list_backbones
from hybridflow.backbones.glow import Glow, glow_step
from hybridflow.backbones.mixerflow import MixerFlow
from hybridflow.flows import (
    MADE, AffineCoupling, KANConditioner, KANLayer, MAFLayer, SplineCoupling, b_spline_basis, conv_spline_coupling,
    create_coupling, list_couplings, rational_quadratic_spline,
)
from hybridflow.flows.spline import _knots

# name -> (factory, input shape, randomisation scale, input scale). The splines use tail_bound 1
# on N(0, 1) inputs so that both the interior and the identity tails are exercised; their
# randomisation stays moderate because slopes near 1e-6 make any float32 inverse ill-conditioned.
LAYERS = {
    "spline_mlp": (lambda: create_coupling("spline", 6, 8, num_bins=4, tail_bound=1.0), (2, 3, 6), 0.3, 1.0),
    "spline_mlp_odd": (lambda: create_coupling("spline", 5, 8, num_bins=3, tail_bound=1.0), (2, 2, 5), 0.5, 1.0),
    "spline_conv": (lambda: conv_spline_coupling(4, 8, num_bins=4, tail_bound=1.0), (2, 4, 2, 3), 0.15, 1.0),
    "glow_step_spline": (lambda: glow_step(4, 8, coupling="spline", num_bins=3), (2, 4, 2, 2), 0.15, 1.0),
    "maf": (lambda: MAFLayer(5, hidden=8), (2, 3, 5), 0.3, 1.0),
    "maf_by_name": (lambda: create_coupling("maf", 4, 8, num_hidden_layers=1), (2, 2, 4), 0.3, 1.0),
    "kan_coupling": (lambda: create_coupling("kan", 6, 8), (2, 3, 6), 0.3, 1.0),
    "kan_coupling_odd": (lambda: AffineCoupling(5, KANConditioner(2, 6, hidden=4, num_layers=3, grid_size=3)),
                         (2, 2, 5), 0.3, 1.0),
}


def _input(shape, scale, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


@pytest.fixture(params=sorted(LAYERS))
def layer_case(request):
    make, shape, param_scale, input_scale = LAYERS[request.param]
    torch.manual_seed(0)
    return make, randomize(make().double(), scale=param_scale), _input(shape, input_scale)


@pytest.mark.parametrize("name", ["spline", "maf", "kan"])
def test_coupling_is_identity_at_initialisation(name):
    x = torch.randn(5, 3, 8) * 2
    y, logdet = create_coupling(name, 8, 16)(x)
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(logdet, torch.zeros(5), atol=1e-5, rtol=0)


# -- the spline's edge cases --------------------------------------------------------------------
def _spline_params(shape, num_bins, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(*shape, 3 * num_bins - 1, generator=g, dtype=torch.float64) * scale
    return p[..., :num_bins], p[..., num_bins:2 * num_bins], p[..., 2 * num_bins:]


def test_spline_tails_are_the_identity():
    x = torch.tensor([-50.0, -3.0001, 3.0001, 7.0, 1e6], dtype=torch.float64)
    params = _spline_params(x.shape, 5, scale=3.0)
    for inverse in (False, True):
        y, logdet = rational_quadratic_spline(x, *params, inverse=inverse, tail_bound=3.0)
        assert torch.equal(y, x) and torch.equal(logdet, torch.zeros_like(x))


def test_spline_gradients_stay_finite_in_the_tails_and_at_the_bounds():
    x = torch.tensor([-9.0, -2.0, 0.0, 2.0, 9.0], dtype=torch.float64, requires_grad=True)
    params = [p.requires_grad_() for p in _spline_params(x.shape, 4, scale=2.0)]
    y, logdet = rational_quadratic_spline(x, *params, tail_bound=2.0)
    (y.sum() + logdet.sum()).backward()
    assert all(torch.isfinite(t.grad).all() for t in [x, *params])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spline_at_every_knot_and_at_both_bounds(dtype):
    num_bins, bound = 6, 2.0
    widths, heights, derivs = (p.to(dtype) for p in _spline_params((3,), num_bins, scale=2.0))
    knots_x = _knots(widths, 1e-3, bound)          # (3, K + 1), including ±bound exactly
    knots_y = _knots(heights, 1e-3, bound)
    expand = lambda p: p[:, None, :].expand(3, num_bins + 1, p.shape[-1])  # noqa: E731
    params = (expand(widths), expand(heights), expand(derivs))
    tol = dict(atol=1e-5 if dtype == torch.float32 else 1e-12, rtol=0)
    y, logdet = rational_quadratic_spline(knots_x, *params, tail_bound=bound)
    torch.testing.assert_close(y, knots_y, **tol)
    # the derivative at a knot is the knot's derivative: 1 at the bounds, softplus(...) inside
    assert torch.isfinite(logdet).all()
    torch.testing.assert_close(logdet[:, [0, -1]], torch.zeros(3, 2, dtype=dtype), **tol)
    x, inv_logdet = rational_quadratic_spline(knots_y, *params, inverse=True, tail_bound=bound)
    torch.testing.assert_close(x, knots_x, **tol)
    torch.testing.assert_close(inv_logdet, -logdet, atol=10 * tol["atol"], rtol=0)
    assert x.min() >= -bound and x.max() <= bound


def test_spline_inverse_with_extreme_parameters_has_no_nan():
    # huge logits push bins and derivatives to their floors and ceilings: the discriminant of
    # the inverse's quadratic then rounds below zero in float32 unless clamped
    num_bins, bound = 8, 3.0
    y = torch.cat([torch.linspace(-bound, bound, 4001), torch.tensor([-bound, bound, 0.0])])
    for seed in range(3):
        params = [p.float() for p in _spline_params(y.shape, num_bins, scale=50.0, seed=seed)]
        x, logdet = rational_quadratic_spline(y, *params, inverse=True, tail_bound=bound)
        assert torch.isfinite(x).all() and torch.isfinite(logdet).all()
        assert x.min() >= -bound and x.max() <= bound
        y_back, _ = rational_quadratic_spline(x.double(), *(p.double() for p in params), tail_bound=bound)
        # the inverse may be ill-conditioned (slopes of 1e-3 against 1e3), so check in y-space
        assert (y_back - y.double()).abs().max() < 1e-2


def test_spline_rejects_impossible_bin_floors():
    with pytest.raises(ValueError, match="minimum bin"):
        create_coupling("spline", 4, 8, num_bins=10, min_bin_width=0.2)


# -- MAF ------------------------------------------------------------------------------------------
def test_maf_jacobian_is_lower_triangular():
    layer = randomize(MAFLayer(6, hidden=12).double(), scale=0.3)
    x = torch.randn(1, 6, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v)[0], x)[0, :, 0, :]
    assert torch.equal(torch.triu(jac, diagonal=1), torch.zeros_like(jac))
    assert (torch.diagonal(jac) > 0).all() and torch.tril(jac, -1).abs().sum() > 0


def test_made_output_i_ignores_inputs_from_i_on():
    made = randomize(MADE(5, hidden=7, num_hidden_layers=3, outputs_per_feature=3), scale=0.5)
    x = torch.randn(4, 5)
    for i in range(5):
        changed = x.clone()
        changed[:, i:] = torch.randn(4, 5 - i)
        before, after = made(x).view(4, 3, 5), made(changed).view(4, 3, 5)
        assert torch.equal(before[..., : i + 1], after[..., : i + 1])


# -- KAN ------------------------------------------------------------------------------------------
def test_b_spline_bases_partition_unity_inside_and_vanish_outside():
    layer = KANLayer(1, 1, grid_size=4, grid_range=(-1.0, 1.0))
    inside = torch.linspace(-1, 1 - 1e-6, 50, dtype=torch.float64)
    bases = b_spline_basis(inside, layer.knots.double(), 3)
    torch.testing.assert_close(bases.sum(-1), torch.ones(50, dtype=torch.float64))
    assert (bases >= 0).all()
    far = torch.tensor([-10.0, 10.0])
    assert torch.equal(b_spline_basis(far, layer.knots, 3), torch.zeros(2, 7))


def test_kan_layer_outside_the_grid_is_the_silu_branch():
    layer = KANLayer(2, 3)
    x = torch.tensor([[-20.0, 30.0]])
    expected = torch.nn.functional.silu(x) @ layer.base_weight.T
    torch.testing.assert_close(layer(x), expected)


# -- backbones and registry ---------------------------------------------------------------------
@pytest.mark.parametrize("coupling", ["affine", "spline", "maf", "kan"])
def test_mixerflow_with_each_coupling_inverts(coupling):
    torch.manual_seed(0)
    flow = MixerFlow((1, 8, 8), patch_size=2, num_layers=2, hidden=8, steps=1, shift_every=2, coupling=coupling)
    flow = randomize(flow, scale=0.1)
    u = torch.rand(3, 1, 8, 8)
    z, logdet = flow(u)
    assert torch.isfinite(z).all() and torch.isfinite(logdet).all()
    assert (flow.inverse(z) - u).abs().max() < 1e-4
    assert flow.config["coupling"] == coupling


def test_registry_lists_the_variants():
    names = set(list_backbones())
    expected = {f"mixerflow_mnist_{c}" for c in ("mlp", "kan", "spline", "maf")}
    expected |= {f"mixerflow_tiny_{c}" for c in ("spline", "maf", "kan")} | {"nsf_glow_cifar10", "nsf_glow_tiny"}
    assert expected <= names
    assert {"affine", "spline", "maf", "kan"} <= set(list_couplings())


@pytest.mark.parametrize("name, coupling", [("mixerflow_mnist_mlp", "affine"), ("mixerflow_mnist_kan", "kan"),
                                            ("mixerflow_mnist_spline", "spline"), ("mixerflow_mnist_maf", "maf"),
                                            ("mixerflow_tiny_kan", "kan")])
def test_variant_configs_take_overrides(name, coupling):
    flow = create_backbone(name, input_shape=(1, 8, 8), patch_size=2, num_layers=1, hidden=8).eval()
    assert flow.config["coupling"] == coupling and flow.input_shape == (1, 8, 8)
    x = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    assert torch.isfinite(flow.bits_per_dim(x)).all()


def test_mnist_variant_has_table_8_depth():
    config = create_backbone("mixerflow_mnist_spline").config
    assert (config["num_layers"], config["hidden"], config["linear"], config["shift"]) == (30, 64, "RLU", None)


def test_nsf_glow_tiny_inverts_and_counts_bits():
    torch.manual_seed(0)
    flow = create_backbone("nsf_glow_tiny", input_shape=(1, 8, 8), num_steps=2, hidden=8)
    assert isinstance(flow, Glow) and flow.config["coupling"] == "spline"
    assert any(isinstance(m, SplineCoupling) for m in flow.modules())
    flow = randomize(flow, scale=0.1)
    u = torch.rand(3, 1, 8, 8)
    z, logdet = flow(u)
    assert (flow.inverse(z) - u).abs().max() < 1e-4
    bpd = flow.bits_per_dim(torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8))
    assert torch.isfinite(bpd).all() and bpd.min() > 0


def test_glow_default_is_unchanged_and_bad_couplings_are_named():
    glow = Glow((1, 8, 8), num_levels=1, num_steps=1, hidden=4)
    assert "coupling" not in glow.config
    assert not any(isinstance(m, SplineCoupling) for m in glow.modules())
    with pytest.raises(ValueError, match="coupling"):
        Glow((1, 8, 8), num_levels=1, num_steps=1, hidden=4, coupling="maf")
    with pytest.raises(ValueError, match="num_bins"):
        create_backbone("glow_tiny", num_bins=4)


def test_identity_spline_mixerflow_gives_the_gaussian_bits_by_hand():
    # zero-initialised couplings and identity linear blocks: z = u - 0.5 after ActNorm is skipped
    flow = MixerFlow((1, 4, 4), patch_size=2, num_layers=1, hidden=4, steps=1, coupling="spline").eval()
    x = torch.full((1, 1, 4, 4), 128, dtype=torch.uint8)
    for m in flow.modules():
        if hasattr(m, "initialized"):
            m.initialized.fill_(True)  # ActNorm left at the identity
    z, log_prob = flow.encode(x, noise="midpoint")
    centred = (128.5 / 256) - 0.5
    expected = 16 * (-0.5 * centred ** 2 - 0.5 * math.log(2 * math.pi)) - 16 * math.log(256)
    assert abs(log_prob.item() - expected) < 1e-4
