"""The rational-quadratic spline and its coupling: the known failure points (tails, inputs exactly
on knots and bounds, extreme parameters, impossible bin floors)."""

from __future__ import annotations

import pytest
import torch

from hybridflow.flows import SplineCoupling, create_coupling, rational_quadratic_spline
from hybridflow.flows.spline import _knots


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


def test_spline_needs_a_bin():
    with pytest.raises(ValueError, match="num_bins must be positive"):
        SplineCoupling(4, "mlp", num_bins=0)


def test_spline_is_monotone_and_its_log_det_is_its_derivative():
    widths, heights, derivs = _spline_params((1,), 5, scale=2.0)
    # 2000 points: none falls exactly on a knot or on ±tail_bound (there autograd's dy/dx is 0)
    x = torch.linspace(-2.5, 2.5, 2000, dtype=torch.float64, requires_grad=True)
    params = [p.expand(2000, p.shape[-1]) for p in (widths, heights, derivs)]
    y, logdet = rational_quadratic_spline(x, *params, tail_bound=2.0)
    assert (y.diff() > 0).all()
    (slope,) = torch.autograd.grad(y.sum(), x)  # element-wise map: the Jacobian is diagonal
    torch.testing.assert_close(logdet.detach(), slope.log(), atol=1e-9, rtol=1e-9)
