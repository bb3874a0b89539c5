"""The evaluation fast path (autograd off, eval mode): folded BatchNorms, fused oneDNN kernels and
cached LU weights must compute the same function as the ordinary path, and must notice every way
the parameters can change."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.flow_checks import randomize
from hybridflow import create_backbone
from hybridflow.flows import ActNorm, AffineCoupling, ConvConditioner, InvConv1x1, LULinear, ResidualMLP
from hybridflow.flows.fused import ParameterCache, fused_kernels_available, linear, linear_add
from hybridflow.train import make_adam


def both_paths(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The module's output with autograd on (the ordinary path) and off (the fast path)."""
    slow = module(x)
    with torch.no_grad():
        fast = module(x)
    return slow, fast


def first(out):
    return out[0] if isinstance(out, tuple) else out


def randomized_mlp(num_blocks: int, input_bound: float | None = 5.0, seed: int = 0) -> ResidualMLP:
    mlp = ResidualMLP(4, 6, hidden=16, num_blocks=num_blocks, input_bound=input_bound)
    randomize(mlp, scale=0.3, seed=seed)
    with torch.no_grad():  # far from the identity, so a wrong fold cannot hide
        for norm in mlp.modules():
            if isinstance(norm, nn.BatchNorm1d):
                norm.weight.normal_(1.0, 0.5)
                norm.bias.normal_(0.0, 0.5)
    return mlp


# -- the kernels -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_linear_matches_f_linear(dtype):
    x = torch.randn(7, 5, 12)[..., ::2].to(dtype)  # non-contiguous on purpose
    weight, bias, other = torch.randn(4, 6).to(dtype), torch.randn(4).to(dtype), torch.randn(7, 5, 4).to(dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    expected = F.linear(x.float(), weight.float(), bias.float())
    with torch.no_grad():
        torch.testing.assert_close(linear(x, weight, bias).float(), expected, **tol)
        torch.testing.assert_close(linear(x, weight, bias, gelu=True).float(), F.gelu(expected), **tol)
        torch.testing.assert_close(linear_add(x, weight, bias, other).float(), expected + other.float(), **tol)
        torch.testing.assert_close(linear(x, weight).float(), F.linear(x.float(), weight.float()), **tol)


@pytest.mark.filterwarnings("ignore:TF32 acceleration")  # torch's own note from mkldnn.flags()
def test_switching_onednn_off_takes_the_ordinary_path():
    mlp = randomized_mlp(1)
    x = torch.randn(3, 10, 4)
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        assert not fused_kernels_available(x) and mlp.compute_inference(x) is None
        torch.testing.assert_close(mlp(x), mlp.compute(x))


def test_fused_linear_keeps_autograd_when_it_is_on():
    """With autograd on, the kernels fall back to F.linear: gradients reach every input."""
    x, weight, bias = (torch.randn(5, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True),
                       torch.randn(4, requires_grad=True))
    assert not fused_kernels_available(x)
    linear_add(x, weight, bias, linear(x, weight, bias, gelu=True)).sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (x, weight, bias))


# -- the folded conditioner -----------------------------------------------------------------------

@pytest.mark.parametrize("num_blocks", [0, 1, 2, 3])
@pytest.mark.parametrize("input_bound", [5.0, None])
def test_folded_mlp_is_the_same_function(num_blocks, input_bound):
    mlp = randomized_mlp(num_blocks, input_bound)
    x = torch.randn(3, 10, 4) * 3
    slow, fast = both_paths(mlp, x)
    assert fast.dtype == torch.float32 and fast.shape == (3, 10, 6)
    assert slow.abs().max() > 1.0  # a real, non-trivial output
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_folded_mlp_in_bfloat16_stays_near_the_float32_function():
    mlp = randomized_mlp(1)
    x = torch.randn(3, 10, 4)
    reference = mlp(x)
    mlp.compute_dtype = torch.bfloat16
    with torch.no_grad():
        fast = mlp(x)
    assert fast.dtype == torch.float32 and not torch.equal(fast, reference)
    torch.testing.assert_close(fast, reference, rtol=0.05, atol=0.05)


def test_folded_bfloat16_keeps_the_precision_of_small_inputs():
    """In bfloat16, the fast path must not be coarser than the ordinary (autocast) path: its error
    against float32 stays within a small multiple of the ordinary path's, for inputs near 0 too
    (a clamp folded as ``2 bound sigmoid - bound`` rounded them to about 0.02: 10x the error)."""
    mlp = randomized_mlp(1)
    x = torch.randn(8, 50, 4) * 0.05
    reference = mlp(x).detach()
    mlp.compute_dtype = torch.bfloat16
    ordinary = mlp(x).detach()
    with torch.no_grad():
        fast = mlp(x)
    ordinary_error, fast_error = (ordinary - reference).abs().mean(), (fast - reference).abs().mean()
    assert 0 < ordinary_error and fast_error < 2 * ordinary_error


def test_batchnorm_without_running_statistics_takes_the_ordinary_path():
    """A BatchNorm that normalises with the batch's own statistics cannot be folded."""
    mlp = randomized_mlp(1)
    mlp.blocks[0][0].track_running_stats = False
    mlp.blocks[0][0].running_mean = mlp.blocks[0][0].running_var = None
    x = torch.randn(4, 6, 4)
    with torch.no_grad():
        assert mlp.compute_inference(x) is None
    slow, fast = both_paths(mlp, x)
    torch.testing.assert_close(fast, slow)


def test_training_mode_never_uses_the_fast_path():
    mlp = randomized_mlp(1).train()
    x = torch.randn(4, 6, 4)
    with torch.no_grad():
        fast = mlp(x)  # batch statistics, as the ordinary training-mode function
    torch.testing.assert_close(fast, mlp.compute(x))


# -- every cached layer, and whole backbones -----------------------------------------------------------

LAYERS = {
    "actnorm": (lambda: ActNorm((5, 6)), (2, 5, 6)),
    "lu_linear": (lambda: LULinear(6, init="random"), (2, 5, 6)),
    "inv_conv_1x1": (lambda: InvConv1x1(4), (2, 4, 3, 3)),
    "affine_coupling": (lambda: AffineCoupling(6, ResidualMLP(3, 6, hidden=8)), (2, 4, 6)),
    "affine_coupling_odd": (lambda: AffineCoupling(7, ResidualMLP(3, 8, hidden=8)), (2, 4, 7)),
    "affine_coupling_channels": (lambda: AffineCoupling(5, ConvConditioner(2, 6, hidden=8), dim=1), (2, 5, 3, 3)),
}


@pytest.mark.parametrize("name", LAYERS)
def test_cached_layers_give_the_same_output_and_logdet(name):
    make, shape = LAYERS[name]
    layer = randomize(make(), scale=0.3)
    x = torch.randn(shape)
    (y_slow, ld_slow), (y_fast, ld_fast) = both_paths(layer, x)
    torch.testing.assert_close(y_fast, y_slow, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ld_fast, ld_slow, rtol=1e-5, atol=1e-5)
    assert ld_fast.shape == (shape[0],)
    with torch.no_grad():
        assert (layer.inverse(y_fast) - x).abs().max() < 1e-4


@pytest.mark.parametrize("name,overrides", [
    ("mixerflow_tiny", dict(input_shape=(1, 8, 8), patch_size=2)),
    ("mixerflow_tiny", dict(input_shape=(3, 8, 12), patch_size=4, num_blocks=2)),
    ("glow_tiny", dict(input_shape=(1, 8, 8), hidden=16)),
])
def test_backbone_log_prob_is_the_same_on_both_paths(name, overrides):
    flow = randomize(create_backbone(name, **overrides), scale=0.05)
    pixels = torch.randint(0, 256, (4, *flow.input_shape), dtype=torch.uint8)
    slow, fast = both_paths(flow.log_prob, pixels)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-3)
    with torch.no_grad():
        z, _ = flow(flow.dequantize(pixels))
        assert (flow.inverse(z) - flow.dequantize(pixels)).abs().max() < 1e-4


# -- the caches notice every change ------------------------------------------------------------------

def trained_flow() -> nn.Module:
    flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, hidden=16)
    flow(torch.rand(16, 1, 8, 8))  # data-dependent initialisation
    return randomize(flow, scale=0.05)


def fast_log_prob(flow, pixels):
    with torch.no_grad():
        return flow.log_prob(pixels)


def assert_fresh(flow, pixels, stale):
    """The fast path agrees with the ordinary one and has moved away from ``stale``."""
    fast = fast_log_prob(flow, pixels)
    torch.testing.assert_close(fast, flow.log_prob(pixels), rtol=1e-4, atol=1e-3)
    assert (fast - stale).abs().max() > 1e-2


@pytest.fixture
def pixels():
    return torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_caches_follow_a_fused_optimiser_step(pixels, mode):
    """Fused Adam writes without bumping tensor versions: the caches must still notice."""
    flow = trained_flow()
    stale = fast_log_prob(flow, pixels)
    optimiser = make_adam(flow.parameters(), lr=1e-2)
    flow.train(mode == "train")
    (-flow.log_prob(pixels).mean()).backward()
    versions = [p._version for p in flow.parameters()]
    optimiser.step()
    if getattr(optimiser, "defaults", {}).get("fused"):
        assert [p._version for p in flow.parameters()] == versions  # the trap this guards against
    assert_fresh(flow.eval(), pixels, stale)


def test_caches_follow_an_ema_update(pixels):
    """timm's EMA (train.py's ema_decay) updates a copy that never runs with autograd on."""
    from timm.utils import ModelEmaV3

    flow = trained_flow()
    ema = ModelEmaV3(flow, decay=0.5)
    stale = fast_log_prob(ema.module.eval(), pixels)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ema.update(flow, step=100)
    assert_fresh(ema.module.eval(), pixels, stale)


def test_caches_follow_in_place_edits_and_loads(pixels):
    flow = trained_flow()
    stale = fast_log_prob(flow, pixels)
    with torch.no_grad():  # an edit in evaluation mode, no train() call
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    assert_fresh(flow, pixels, stale)

    other = randomize(trained_flow(), scale=0.05, seed=3)
    stale = fast_log_prob(flow, pixels)
    flow.load_state_dict(other.state_dict())
    assert_fresh(flow, pixels, stale)

    stale = fast_log_prob(flow, pixels)
    flow.load_state_dict(trained_flow().state_dict(), assign=True)
    assert_fresh(flow, pixels, stale)


def test_caches_follow_a_dtype_change(pixels):
    flow = trained_flow()
    fast_log_prob(flow, pixels)
    as_double = copy.deepcopy(flow).double()
    assert next(as_double.parameters()).dtype == torch.float64
    torch.testing.assert_close(fast_log_prob(as_double, pixels), as_double.log_prob(pixels), rtol=1e-9, atol=1e-6)


def test_pickles_and_copies_leave_the_caches_behind(pixels):
    flow = trained_flow()
    before = len(pickle.dumps(flow))
    expected = fast_log_prob(flow, pixels)  # fills every cache
    assert len(pickle.dumps(flow)) == before
    for clone in (pickle.loads(pickle.dumps(flow)), copy.deepcopy(flow)):
        torch.testing.assert_close(fast_log_prob(clone, pixels), expected)


def test_parameter_cache_rebuilds_on_a_version_bump_and_on_clear():
    layer = nn.Linear(2, 2)
    cache, builds = ParameterCache(), []

    def build():
        builds.append(1)
        return layer.weight.detach().clone()

    cache.get(layer, build)
    cache.get(layer, build)
    assert len(builds) == 1
    with torch.no_grad():
        layer.bias.add_(1.0)
    cache.get(layer, build)
    cache.invalidate()
    cache.get(layer, build)
    cache.clear()
    cache.get(layer, build)
    assert len(builds) == 4
