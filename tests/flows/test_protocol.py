"""Every invertible layer of the registry (tests/flows/layers.py) against the protocol: exact inverse,
log-det equal to the autograd Jacobian's, gradients to every parameter, state round trip, and an
inference copy (``hybridflow.freeze``) that computes the live layer's evaluation function."""

from __future__ import annotations

import pytest
import torch

import hybridflow
from hybridflow.flows import FlowSequence, is_inference_copy
from tests.flow_checks import (
    jacobian_logdet, max_inverse_error, params_without_grad, randomize, state_roundtrip, trained_on,
)
from tests.flows.layers import LAYERS, layer_input


@pytest.fixture(params=sorted(LAYERS))
def layer_case(request):
    case = LAYERS[request.param]
    torch.manual_seed(0)
    return case.make, randomize(case.make().double(), scale=case.param_scale), layer_input(case)


def test_inverse_of_forward_is_identity(layer_case):
    make, flow, x = layer_case
    assert max_inverse_error(flow.float(), x.float()) < 1e-4


def test_logdet_matches_autograd_jacobian(layer_case):
    make, flow, x = layer_case
    y, logdet = flow(x)
    assert logdet.shape == (x.shape[0],)
    torch.testing.assert_close(logdet, jacobian_logdet(flow, x), atol=1e-3, rtol=1e-4)


def test_every_parameter_gets_a_gradient(layer_case):
    make, flow, x = layer_case
    y, logdet = flow(x)
    assert params_without_grad(flow, (y.pow(2).sum() - logdet.sum())) == []


def test_state_dict_round_trip_gives_identical_output(layer_case):
    make, flow, x = layer_case
    fresh = state_roundtrip(lambda: make().double(), flow)
    torch.testing.assert_close(fresh(x)[0], flow(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_inference_copy_computes_the_live_layer_in_eval_mode(name):
    """``freeze`` of the layer itself, and of a sequence holding it (so that a layer with a frozen
    form is replaced by it), gives the live layer's forward, log-det and inverse in float32."""
    case = LAYERS[name]
    torch.manual_seed(0)
    layer = trained_on(case.make(), layer_input(case, seed=2, dtype=torch.float32), scale=case.param_scale)
    x = layer_input(case, dtype=torch.float32)
    with torch.no_grad():
        y, logdet = layer(x)
        x_back = layer.inverse(y)
    tol = dict(rtol=1e-5, atol=1e-5)
    for frozen in (hybridflow.freeze(layer), hybridflow.freeze(FlowSequence(layer))):
        assert is_inference_copy(frozen) and not is_inference_copy(layer) and not frozen.training
        live_storage = {t.data_ptr() for t in (*layer.parameters(), *layer.buffers())}
        assert not live_storage & {t.data_ptr() for t in (*frozen.parameters(), *frozen.buffers())}
        with torch.no_grad():
            y_frozen, logdet_frozen = frozen(x)
            torch.testing.assert_close(y_frozen, y, **tol)
            torch.testing.assert_close(logdet_frozen, logdet, **tol)
            torch.testing.assert_close(frozen.inverse(y), x_back, **tol)
    assert layer.training is False  # freezing left the live layer alone
