"""Invertible backprop: the same gradients as ordinary backprop (float64 to 1e-8, float32 and
bfloat16 conditioners to their drift), no stored activations, BatchNorm running statistics and
ActNorm initialisation untouched by the recomputation, clear refusals."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hybridflow.flows import ActNorm, AffineCoupling, FlowSequence, LULinear, invertible_backprop_forward
from hybridflow.flows.invertible_backprop import check_invertible_backprop
from tests.flow_checks import perturb


def toy(depth: int = 3, features: int = 6, hidden: int = 8, seed: int = 0, scale: float = 0.1) -> FlowSequence:
    """Blocks of (ActNorm, LU linear, affine coupling whose ResidualMLP has BatchNorms)."""
    torch.manual_seed(seed)
    blocks = [FlowSequence(ActNorm((1, features)), LULinear(features), AffineCoupling(features, "mlp", hidden=hidden))
              for _ in range(depth)]
    return perturb(FlowSequence(*blocks), scale=scale, generator=seed)


def loss_of(y: torch.Tensor, logdet: torch.Tensor) -> torch.Tensor:
    # touches every output element and the log-det, with different weights
    return (0.5 * y.square().flatten(1).sum(1) - logdet).mean() + 0.3 * y[..., 0].sum()


def grads(flow: FlowSequence, x: torch.Tensor, memory_free: bool) -> list[torch.Tensor]:
    x = x.clone().requires_grad_(True)
    y, logdet = invertible_backprop_forward(flow, x) if memory_free else flow(x)
    params = list(flow.parameters())
    found = torch.autograd.grad(loss_of(y, logdet), [x, *params], allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(found, [x, *params])]


def assert_all_close(a, b, atol, rtol=0.0):
    for i, (u, v) in enumerate(zip(a, b, strict=True)):
        torch.testing.assert_close(u, v, atol=atol, rtol=rtol, msg=lambda m: f"tensor {i}: {m}")


def batch_norm_buffers(flow: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in flow.state_dict().items() if "running" in k or "num_batches" in k}


def test_float64_gradients_equal_ordinary_backprop_from_the_first_call():
    """The first call (ActNorm initialisation) too: parameters, input, log-det and BatchNorm buffers."""
    ordinary = toy().double().train()
    memory_free = copy.deepcopy(ordinary)
    x = torch.randn(32, 5, 6, dtype=torch.float64) * 2 + 1
    for _ in range(3):  # the first call initialises the ActNorms; later ones update BatchNorm stats
        assert_all_close(grads(memory_free, x, True), grads(ordinary, x, False), atol=1e-8, rtol=1e-8)
        x = x * 0.9 + 0.1
    assert all(bool(m.initialized) for m in memory_free.modules() if isinstance(m, ActNorm))
    assert_all_close([p.detach() for p in memory_free.parameters()], [p.detach() for p in ordinary.parameters()],
                     atol=0)
    mine, theirs = batch_norm_buffers(memory_free), batch_norm_buffers(ordinary)
    assert mine.keys() == theirs.keys() and len(mine) > 0
    for key in mine:  # updated once per call, not twice: 3 calls
        torch.testing.assert_close(mine[key], theirs[key], atol=1e-12, rtol=0)
    assert all(int(v) == 3 for k, v in mine.items() if "num_batches" in k)


def test_outputs_equal_the_ordinary_forward_and_eval_mode_works():
    flow = toy().double().train()
    x = torch.randn(16, 4, 6, dtype=torch.float64, requires_grad=True)
    flow(x)  # initialise ActNorm
    y, logdet = invertible_backprop_forward(flow, x)
    y_ref, logdet_ref = flow(x)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(logdet, logdet_ref, atol=1e-12, rtol=0)
    flow.eval()  # BatchNorm on running statistics, in both passes
    assert_all_close(grads(flow, x.detach(), True), grads(flow, x.detach(), False), atol=1e-8, rtol=1e-8)


def saved_bytes(fn) -> int:
    """Bytes autograd saves for backward while ``fn`` runs (parameters included)."""
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]


def test_only_the_output_is_kept_whatever_the_depth():
    x = torch.randn(64, 4, 6)
    kept = {}
    for depth in (2, 8):
        flow = toy(depth=depth).train()
        flow(x)  # initialise ActNorm
        kept[depth] = (saved_bytes(lambda: invertible_backprop_forward(flow, x.requires_grad_(True))),
                       saved_bytes(lambda: flow(x.requires_grad_(True))))
    output = x.numel() * x.element_size()
    assert kept[2][0] == kept[8][0] == output  # the output only
    assert kept[8][1] > 3 * kept[2][1] > 3 * 10 * output  # ordinary backprop keeps every block's activations


def test_no_graph_means_the_plain_forward():
    flow = toy().train()
    x = torch.randn(8, 3, 6)
    flow(x)
    with torch.no_grad():
        y, logdet = invertible_backprop_forward(flow, x)
    assert not y.requires_grad and not logdet.requires_grad
    flow.requires_grad_(False)
    y, _ = invertible_backprop_forward(flow, x)
    assert y.grad_fn is None


def test_float32_drift_across_30_layers_is_small():
    """Reconstruction error across 30 blocks in float32, and the gradients it perturbs (a
    30-layer MixerFlow: tests/backbones/test_mixerflow.py)."""
    flow = toy(depth=30, features=8, hidden=16, scale=0.02).train()
    x = torch.randn(64, 6, 8)
    flow(x)
    with torch.no_grad():
        y, _ = flow(x)
        drift = (flow.inverse(y) - x).abs().max().item()
    assert drift < 1e-4
    a, b = grads(flow, x, True), grads(flow, x, False)
    flat_a, flat_b = torch.cat([g.flatten() for g in a]), torch.cat([g.flatten() for g in b])
    assert ((flat_a - flat_b).norm() / flat_b.norm()).item() < 1e-4


def test_bfloat16_conditioners_match_to_bfloat16_precision():
    """Measured: relative gradient error about 1e-3 on a 30-layer MixerFlow (see the module docstring)."""
    flow = toy(depth=8, features=8, hidden=16).train()
    for m in flow.modules():
        if hasattr(m, "compute_dtype"):
            m.compute_dtype = torch.bfloat16
    x = torch.randn(64, 6, 8)
    flow(x)
    a, b = grads(flow, x, True), grads(flow, x, False)
    flat_a, flat_b = torch.cat([g.flatten() for g in a]), torch.cat([g.flatten() for g in b])
    assert ((flat_a - flat_b).norm() / flat_b.norm()).item() < 2e-2


def test_parameter_gradients_reach_hooks_and_accumulate():
    """Gradients arrive through autograd (AccumulateGrad, as DDP's hooks need), twice means doubled."""
    flow = toy().train()
    x = torch.randn(8, 3, 6)
    flow(x)
    seen = []
    first = next(flow.parameters())
    first.register_hook(lambda g: seen.append(g.clone()))
    for _ in range(2):
        loss_of(*invertible_backprop_forward(flow, x)).backward()
    assert len(seen) == 2
    torch.testing.assert_close(first.grad, seen[0] + seen[1])


def test_refusals_name_the_problem():
    flow = toy().train()
    with pytest.raises(TypeError, match="FlowSequence"):
        invertible_backprop_forward(nn.Linear(2, 2), torch.randn(2, 2))
    with pytest.raises(TypeError, match="tensor"):
        invertible_backprop_forward(flow, [1.0])
    flow.flows[0].dropout = nn.Dropout(0.1)
    with pytest.raises(ValueError, match="dropout"):
        invertible_backprop_forward(flow, torch.randn(4, 3, 6))
    with pytest.raises(ValueError, match="True or False"):
        check_invertible_backprop("yes")


def test_second_order_gradients_are_refused():
    flow = toy().train()
    x = torch.randn(8, 3, 6, requires_grad=True)
    flow(x)
    (g,) = torch.autograd.grad(loss_of(*invertible_backprop_forward(flow, x)), x, create_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        g.sum().backward()


@pytest.mark.slow
def test_runs_under_torch_compile():
    """dynamo graph-breaks around the recomputing function and runs it eagerly (eager backend: the
    tracing is the question, not inductor)."""
    flow = toy().double().train()
    x = torch.randn(16, 3, 6, dtype=torch.float64)
    flow(x)
    reference = grads(flow, x, False)

    def memory_free_grads(x):
        return grads(flow, x, True)

    assert_all_close(torch.compile(memory_free_grads, backend="eager")(x), reference, atol=1e-8, rtol=1e-8)


# -- shared by the backbone tests (tests/backbones/test_mixerflow.py, test_glow.py) ------------------
def backbone_gradients_match(flow: nn.Module, steps: int = 3, batch: int = 8, atol: float = 1e-8) -> None:
    """Train float64 copies of ``flow`` with and without ``invertible_backprop`` side by side (same
    dequantisation noise, same SGD updates): every step's parameter and input gradients agree to
    ``atol`` (relative too), and so do the parameters and buffers (ActNorm flags, BatchNorm running
    statistics) after it. The loss reads the latent directly too, so the gradient of every
    latent element (Glow's factored-out halves included) is checked, not just the log-det's."""
    ordinary = copy.deepcopy(flow).double().train()
    ordinary.invertible_backprop = False
    memory_free = copy.deepcopy(ordinary)
    memory_free.invertible_backprop = True
    shape = ordinary.input_shape
    for step in range(steps):
        x = torch.randint(0, 256, (batch, *shape), generator=torch.Generator().manual_seed(step), dtype=torch.uint8)
        u = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(100 + step), dtype=torch.float64)
        found = []
        for model in (ordinary, memory_free):
            z, log_prob = model.encode(x, generator=torch.Generator().manual_seed(step))
            weights = torch.linspace(-1, 1, z[0].numel(), dtype=z.dtype).view_as(z[0])
            loss = -log_prob.mean() / z[0].numel() + (z * weights).sum() / batch
            params = list(model.parameters())
            g = torch.autograd.grad(loss, params, allow_unused=True)
            u_in = u.clone().requires_grad_(True)
            z_u, logdet_u = model(u_in)
            (g_u,) = torch.autograd.grad((z_u * weights).sum() - logdet_u.sum(), u_in)
            found.append([torch.zeros_like(p) if gp is None else gp for gp, p in zip(g, params)] + [g_u])
            with torch.no_grad():
                for p, gp in zip(params, found[-1]):
                    p.sub_(1e-3 * gp)
            if step == 0:  # leave the identity initialisation of the couplings
                perturb(model, 0.05, generator=0)
        assert_all_close(found[1], found[0], atol=atol, rtol=atol)
        assert_all_close(list(memory_free.state_dict().values()), list(ordinary.state_dict().values()),
                         atol=atol, rtol=atol)
