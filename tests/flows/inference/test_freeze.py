"""The explicit inference path: ``freeze(model)`` computes the model's evaluation function from
weights it owns, and the live model always computes the ordinary path, so no way of changing the
weights can leave a stale answer behind (each route below went stale with the old version-counter
caches)."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from hybridflow import HybridModel, create_backbone, freeze
from hybridflow.flows import ActNorm, AffineCoupling, InvConv1x1, LULinear, ResidualMLP, is_inference_copy
from hybridflow.flows.inference import FoldedConditioner, FrozenActNorm, FrozenLinear
from hybridflow.training import make_adam
from tests.flow_checks import randomize

SMALL = dict(input_shape=(1, 8, 8), patch_size=2, hidden=16)
BACKBONES = {
    "mixerflow": ("mixerflow_tiny", SMALL),
    "mixerflow_3ch_two_blocks": ("mixerflow_tiny", dict(input_shape=(3, 8, 12), patch_size=4, num_blocks=2)),
    "mixerflow_logit": ("mixerflow_tiny", dict(SMALL, preprocess="logit")),
    "mixerflow_wide": ("mixerflow_wide", SMALL),
    "glow": ("glow_tiny", dict(input_shape=(1, 8, 8), hidden=16)),
    "mixerflow_spline": ("mixerflow_tiny_spline", SMALL),
    "mixerflow_kan": ("mixerflow_tiny_kan", SMALL),
    "mixerflow_maf": ("mixerflow_tiny_maf", SMALL),
}


def trained(name: str = "mixerflow", **extra) -> nn.Module:
    """A backbone after data-dependent initialisation, with non-trivial weights and BatchNorm statistics."""
    backbone, overrides = BACKBONES[name]
    torch.manual_seed(0)
    flow = create_backbone(backbone, **{**overrides, **extra}).train()
    flow.bits_per_dim(pixels(16, seed=5, shape=flow.input_shape))  # data-dependent init, BatchNorm statistics
    return randomize(flow, scale=0.02).eval()


def pixels(n: int = 6, seed: int = 1, shape=(1, 8, 8)) -> torch.Tensor:
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def ordinary(flow, x):
    """The live model's log-likelihood computed with autograd on (the ordinary path, always)."""
    with torch.enable_grad():
        return flow.log_prob(x).detach()


def no_grad(flow, x):
    with torch.no_grad():
        return flow.log_prob(x)


# -- the copy computes the model's function ----------------------------------------------------------

@pytest.mark.parametrize("name", BACKBONES)
def test_inference_copy_gives_the_ordinary_numbers(name):
    flow = trained(name)
    x = pixels(shape=flow.input_shape)
    fast = freeze(flow)
    assert is_inference_copy(fast) and not is_inference_copy(flow) and type(fast) is type(flow)
    expected = ordinary(flow, x)
    torch.testing.assert_close(no_grad(fast, x), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    with torch.inference_mode():
        torch.testing.assert_close(fast.log_prob(x), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    torch.testing.assert_close(fast.embed(x), flow.embed(x).detach(), rtol=1e-5, atol=1e-5)
    # and it inverts: samples and reconstructions come from the copy too
    with torch.no_grad():
        u = fast.dequantize(x)
        assert (fast.inverse(fast(u)[0]) - u).abs().max() < 1e-4


def test_inference_copy_replaces_every_precomputable_layer_and_owns_its_weights():
    flow = trained("mixerflow")
    fast = freeze(flow)
    kinds = {type(m) for m in fast.modules()}
    assert {FrozenLinear, FrozenActNorm, FoldedConditioner} <= kinds
    assert not kinds & {LULinear, InvConv1x1, ActNorm, ResidualMLP}
    assert not any(p.requires_grad for p in fast.parameters()) and not fast.training
    live = {t.data_ptr() for t in (*flow.parameters(), *flow.buffers())}
    assert not live & {t.data_ptr() for t in (*fast.parameters(), *fast.buffers())}


def test_bfloat16_conditioners_stay_within_the_documented_tolerance():
    """The folded bfloat16 path rounds in another order than autocast: per image within 1e-2
    bits/dim of the ordinary bfloat16 path (measured: up to about 6e-3)."""
    flow = trained("mixerflow", conditioner_dtype="bfloat16")
    x = pixels(32)
    fast = freeze(flow)
    with torch.no_grad():
        gap = (fast.bits_per_dim(x) - flow.bits_per_dim(x)).abs().max()
    assert gap < 1e-2


def test_hybrid_model_copy_predicts_like_the_model():
    model = HybridModel("mixerflow_tiny", num_classes=3, **SMALL)
    model.train()(pixels(16, seed=5))
    randomize(model, scale=0.05).eval()
    x = pixels()
    fast = model.inference_copy()
    assert isinstance(fast, HybridModel) and is_inference_copy(fast)
    with torch.no_grad():
        torch.testing.assert_close(fast.predict_proba(x), model.predict_proba(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(no_grad(fast, x), ordinary(model, x), rtol=1e-5, atol=1e-3)


def test_inference_copy_keeps_input_gradients():
    """Attributions differentiate in the input: the copy's kernels step aside under autograd."""
    flow = trained()
    fast = freeze(flow)
    u = flow.dequantize(pixels()).requires_grad_(True)
    z, logdet = fast(u)
    (z.pow(2).sum() - logdet.sum()).backward()
    u_ref = u.detach().clone().requires_grad_(True)
    z, logdet = flow(u_ref)
    (z.pow(2).sum() - logdet.sum()).backward()
    torch.testing.assert_close(u.grad, u_ref.grad, rtol=1e-4, atol=1e-4)


def test_inference_copy_moves_dtype_and_pickles():
    flow = trained()
    x = pixels()
    fast = freeze(flow)
    as_double = copy.deepcopy(fast).double()
    torch.testing.assert_close(no_grad(as_double, x), ordinary(flow.double(), x).double(), rtol=1e-5, atol=1e-3)
    again = pickle.loads(pickle.dumps(fast))
    torch.testing.assert_close(no_grad(again, x), no_grad(fast, x), rtol=0, atol=0)


def test_copy_answers_for_the_weights_it_was_made_from():
    flow = trained()
    x = pixels()
    fast = freeze(flow)
    before = no_grad(fast, x)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    torch.testing.assert_close(no_grad(fast, x), before, rtol=0, atol=0)  # owns its weights
    assert (ordinary(flow, x) - before).abs().max() > 1e-2
    torch.testing.assert_close(no_grad(freeze(flow), x), ordinary(flow, x), rtol=1e-5, atol=1e-3)


# -- the live model never answers for old weights ---------------------------------------------------

def assert_live(flow, x, before):
    """No-grad evaluation equals the ordinary path and moved away from ``before``."""
    fast = no_grad(flow, x)
    torch.testing.assert_close(fast, ordinary(flow, x), rtol=1e-5, atol=1e-5 * fast.abs().max().item())
    assert (fast - before).abs().max() > 1e-2


def test_vector_to_parameters_is_seen():
    flow, x = trained(), pixels()
    before = no_grad(flow, x)
    vector = nn.utils.parameters_to_vector(flow.parameters())
    nn.utils.vector_to_parameters(vector + 0.02 * torch.randn_like(vector), flow.parameters())
    assert_live(flow, x, before)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_a_fused_optimiser_step_after_a_no_grad_evaluation_is_seen(mode):
    flow, x = trained(), pixels()
    before = no_grad(flow, x)
    optimiser = make_adam(flow.parameters(), lr=1e-2)
    flow.train(mode == "train")
    (-flow.log_prob(x).mean()).backward()
    optimiser.step()
    assert_live(flow.eval(), x, before)


def test_functional_call_uses_the_given_parameters():
    flow, x = trained(), pixels()
    before = no_grad(flow, x)
    params = {k: v.detach() + 0.02 * torch.randn_like(v) for k, v in flow.named_parameters()}
    with torch.no_grad():
        fast = torch.func.functional_call(flow, params, (flow.dequantize(x),))[1]
    slow = torch.func.functional_call(flow, params, (flow.dequantize(x),))[1].detach()
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-3)
    unchanged = flow(flow.dequantize(x))[1].detach()
    assert (fast - unchanged).abs().max() > 1e-2 and (no_grad(flow, x) - before).abs().max() == 0


def test_replacing_a_parameter_with_setattr_is_seen():
    flow, x = trained(), pixels()
    before = no_grad(flow, x)
    linear = next(m for m in flow.modules() if isinstance(m, LULinear) and not isinstance(m, InvConv1x1))
    linear.bias = nn.Parameter(linear.bias.detach() + 0.5)
    mlp = next(m for m in flow.modules() if isinstance(m, ResidualMLP))
    mlp.head[2].weight = nn.Parameter(torch.randn_like(mlp.head[2].weight) * 0.1)
    assert_live(flow, x, before)


def test_data_edits_are_seen():
    flow, x = trained(), pixels()
    before = no_grad(flow, x)
    for module in flow.modules():
        if isinstance(module, (ActNorm, AffineCoupling)):
            for p in module.parameters():
                p.data = p.data + 0.02 * torch.randn_like(p.data)
    assert_live(flow, x, before)


def test_forward_hooks_inside_conditioners_fire_under_no_grad():
    flow, x = trained(), pixels()
    calls = []
    mlp = next(m for m in flow.modules() if isinstance(m, ResidualMLP))
    mlp.stem.register_forward_hook(lambda module, inputs, output: calls.append(output.shape))
    no_grad(flow, x)
    assert calls


# -- compiling -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_inference_copy_compiles():
    """torch.compile of the copy's log_prob (the oneDNN op gives way to F.linear inside it)."""
    flow = trained()
    fast = freeze(flow)
    x = pixels()
    u = fast.dequantize(x)
    compiled = torch.compile(fast, dynamic=False)
    with torch.no_grad():
        z, logdet = compiled(u)
        z_ref, logdet_ref = fast(u)
    torch.testing.assert_close(logdet, logdet_ref, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(z, z_ref, rtol=1e-4, atol=1e-4)


def test_a_bare_layer_is_frozen_into_its_own_frozen_form():
    linear, norm = LULinear(4, init="random"), ActNorm((3, 4))
    assert isinstance(freeze(linear), FrozenLinear) and isinstance(freeze(norm), FrozenActNorm)
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(freeze(linear)(x)[0], linear(x)[0].detach(), rtol=1e-5, atol=1e-6)
    assert is_inference_copy(freeze(norm))


def test_a_bfloat16_copy_moves_to_float64_and_computes_the_float64_function():
    """Autocast lowers float32 only: a float64 model computes its conditioners in float64, and so
    must its inference copy, whether frozen in float64 or frozen first and moved after."""
    flow = trained("mixerflow", conditioner_dtype="bfloat16")
    x = pixels()
    expected = ordinary(copy.deepcopy(flow).double(), x)
    torch.testing.assert_close(no_grad(freeze(flow, dtype=torch.float64), x), expected, rtol=1e-9, atol=1e-6)
    # folded in float32, then moved: float32's precision, but no bfloat16 step and no dtype clash
    torch.testing.assert_close(no_grad(freeze(flow).double(), x), expected, rtol=1e-6, atol=1e-6)


def test_a_float64_copy_is_folded_in_float64():
    flow = trained("mixerflow")
    x = pixels()
    torch.testing.assert_close(no_grad(freeze(flow, dtype=torch.float64), x), ordinary(flow.double(), x),
                               rtol=1e-10, atol=1e-9)


def test_a_copy_refuses_training_and_marks_every_module():
    model = HybridModel("mixerflow_tiny", num_classes=3, **SMALL)
    fast = freeze(model)
    assert all(is_inference_copy(m) for m in fast.modules())
    with pytest.raises(ValueError, match="inference copy"):
        fast.train()
    with pytest.raises(ValueError, match="inference copy"):
        fast.backbone.train()
    fast.eval()  # evaluation mode stays allowed


def test_only_the_exact_layer_types_are_replaced():
    """A subclass may compute another function: it keeps its live form."""

    class ScaledMLP(ResidualMLP):
        def compute(self, x):
            return 2 * super().compute(x)

    mlp = randomize(ScaledMLP(4, 6, hidden=8), scale=0.3).eval()
    seq = nn.Sequential(mlp)
    fast = freeze(seq)
    assert isinstance(fast[0], ScaledMLP)
    x = torch.randn(3, 4)
    torch.testing.assert_close(fast(x), mlp(x).detach())


def test_hooks_are_not_copied():
    flow = trained()
    calls = []
    flow.body.register_forward_hook(lambda *args: calls.append(1))
    no_grad(freeze(flow), pixels())
    assert calls == []
