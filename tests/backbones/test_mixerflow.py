"""MixerFlow: its blocks, its couplings, and its registered configurations (the paper's Table 9
and the small CPU ones)."""

from __future__ import annotations

import math

import pytest
import torch

from hybridflow import create_backbone
from hybridflow.backbones.mixerflow import MixerFlow, MixerLayer, MixingFlow, Transpose
from hybridflow.cli.options import parse_options
from hybridflow.flows import (
    ActNorm, AffineCoupling, InvConv1x1, LULinear, RepatchedFlow, ShiftedFlow, resolve_conditioner_dtype,
)
from tests.backbones.cases import SMALL, make
from tests.flow_checks import perturb, randomize
from tests.flows.test_invertible_backprop import backbone_gradients_match


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


def test_paper_config_size():
    cifar = create_backbone("mixerflow_cifar10")
    assert cifar.input_shape == (3, 32, 32) and cifar.config["num_layers"] == 30
    assert 10e6 < cifar.num_params < 15e6  # the paper reports 11.34M


def test_every_shift_every_th_layer_is_a_shift_layer():
    flow = MixerFlow((1, 8, 8), patch_size=2, num_layers=4, hidden=8, steps=1, shift=1, shift_every=2)
    shifted = [m for m in flow.modules() if isinstance(m, ShiftedFlow)]
    assert len(shifted) == 2 and shifted[0].shift == (1, 1)
    assert not any(isinstance(m, ShiftedFlow)
                   for m in MixerFlow((1, 8, 8), patch_size=2, num_layers=4, hidden=8, steps=1, shift=None).modules())


def test_mixing_flow_acts_on_each_row_alone():
    """One batched step for all rows (no Python loop over them): a row's output depends on that row alone."""
    flow = randomize(MixingFlow(5, 4, hidden=8, steps=2), scale=0.2)
    x = torch.randn(2, 5, 4)
    changed = x.clone()
    changed[:, 3] += 1.0
    y, y_changed = flow(x)[0], flow(changed)[0]
    rows = [0, 1, 2, 4]
    # ActNorm is per element, so a row is its own function of that row: the others do not move
    assert torch.equal(y[:, rows], y_changed[:, rows]) and not torch.allclose(y[:, 3], y_changed[:, 3])


def test_mixing_flow_with_one_feature_is_actnorms_and_linear_blocks():
    flow = MixingFlow(3, 1, hidden=8, steps=2)
    assert [type(m) for m in flow.flows] == [ActNorm, LULinear, ActNorm, LULinear, ActNorm]


def test_mixer_layer_mixes_channels_then_patches_through_a_transpose():
    layer = MixerLayer(4, 6, hidden=8, steps=1)
    kinds = [type(m) for m in layer.flows]
    assert kinds == [MixingFlow, Transpose, MixingFlow, Transpose]
    assert layer.flows[0].flows[1].dim == 6 and layer.flows[2].flows[1].dim == 4  # rows, then columns


# -- invertible backprop (issue 17): the same training, without storing the layers' activations ----
@pytest.mark.parametrize("case", [c for c in SMALL if c.startswith("mixerflow")])
def test_invertible_backprop_gives_ordinary_gradients(case):
    backbone_gradients_match(make(case))


@pytest.mark.parametrize("name", ["mixerflow_tiny_spline", "mixerflow_tiny_maf", "mixerflow_tiny_kan"])
def test_invertible_backprop_with_every_coupling(name):
    """Splines to 1e-6: their inverse solves a quadratic (see test_glow's spline test)."""
    backbone_gradients_match(create_backbone(name, input_shape=(1, 8, 8), patch_size=2, num_layers=3, hidden=8,
                                             steps=1, shift_every=2), atol=1e-6 if "spline" in name else 1e-8)


def test_invertible_backprop_is_a_run_option():
    flow = create_backbone("mixerflow_tiny", invertible_backprop=True)
    assert flow.invertible_backprop and "invertible_backprop" not in flow.config
    assert not create_backbone("mixerflow_tiny").invertible_backprop
    assert parse_options(("invertible_backprop=true",)) == {"invertible_backprop": True}  # the CLI's -o
    with pytest.raises(ValueError, match="invertible_backprop"):
        create_backbone("mixerflow_tiny", invertible_backprop="yes")


@pytest.mark.slow
def test_invertible_backprop_drift_across_30_layers_in_float32():
    """Measured: the input rebuilt to ~2e-5 and the gradients to ~1.5e-6 relative (perturbed weights,
    scale 0.02; after 30 training steps on 3x32x32 the rebuilt input is off by 8e-6 and the
    gradients by 4e-6)."""
    torch.manual_seed(0)
    flow = create_backbone("mixerflow_tiny", input_shape=(3, 16, 16), num_layers=30, hidden=16, steps=2).train()
    u = torch.rand(32, 3, 16, 16)
    flow(u)  # ActNorm initialisation
    perturb(flow, 0.02, generator=0)
    with torch.no_grad():
        z, _ = flow(u)
        assert (flow.inverse(z) - u).abs().max() < 1e-4

    def gradient(memory_free: bool) -> torch.Tensor:
        flow.invertible_backprop = memory_free
        u_in = u.clone().requires_grad_(True)
        z, logdet = flow(u_in)
        loss = (0.5 * z.square().flatten(1).sum(1) - logdet).mean()
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, [u_in, *flow.parameters()])])

    a, b = gradient(True), gradient(False)
    assert ((a - b).norm() / b.norm()) < 2e-5


def test_hybrid_training_with_invertible_backprop_matches():
    """Through HybridModel and train(): the same weights after a few steps, in float32."""
    from hybridflow import TrainConfig, train
    from hybridflow.data import ImageData
    from hybridflow.factory import build_model

    images = torch.randint(0, 256, (48, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    data = ImageData(images, torch.randint(0, 3, (48,), generator=torch.Generator().manual_seed(1)))
    options = dict(patch_size=2, num_layers=2, hidden=8, steps=1)
    models = [build_model("mixerflow_tiny", (1, 8, 8), 3, 1.0, dict(options, invertible_backprop=flag))
              for flag in (False, True)]
    for model in models:
        train(model, data, TrainConfig(steps=3, batch_size=16, progress=False, seed=0, device="cpu"))
    assert models[1].backbone.invertible_backprop
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# -- issue 20's options: Jet's coupling design and a patch schedule ------------------------------
def test_jet_options_build_what_they_say():
    flow = MixerFlow((1, 8, 8), patch_size=2, num_layers=2, hidden=8, steps=3, patch_steps=1, shift=None,
                     linear="permute", scale="sigmoid2")
    channel, _, patch, _ = flow.body.flows[2].flows
    assert sum(isinstance(m, AffineCoupling) for m in channel.modules()) == 3
    assert sum(isinstance(m, AffineCoupling) for m in patch.modules()) == 1
    assert not any(isinstance(m, LULinear) and not isinstance(m, InvConv1x1) for m in flow.modules())
    assert all(m.scale == "sigmoid2" for m in flow.modules() if isinstance(m, AffineCoupling))
    assert (flow.config["patch_steps"], flow.config["linear"], flow.config["scale"]) == (1, "permute", "sigmoid2")
    rebuilt = MixerFlow((1, 8, 8), **flow.config)  # the config rebuilds the same model
    rebuilt.load_state_dict(flow.state_dict())
    u = torch.rand(2, 1, 8, 8)
    assert torch.equal(rebuilt(u)[0], flow(u)[0])


def test_new_options_stay_out_of_the_config_unless_used():
    config = MixerFlow((1, 8, 8), patch_size=2, num_layers=2, hidden=8, steps=1).config
    assert "patch_steps" not in config and "patch_sizes" not in config and "scale" not in config


def test_sigmoid2_scale_grows_at_most_twofold():
    coupling = AffineCoupling(4, "mlp", hidden=8, scale="sigmoid2")
    raw = torch.tensor([-50.0, -1.0, 0.0, 1.0, 50.0])
    log_scale = coupling.log_scale_of(raw)
    expected = torch.log(2 * torch.sigmoid(raw))
    torch.testing.assert_close(log_scale[1:], expected[1:])
    assert log_scale[2] == 0 and log_scale[-1] <= math.log(2) + 1e-6 and torch.isfinite(log_scale).all()
    with pytest.raises(ValueError, match="scale must be one of"):
        AffineCoupling(4, "mlp", hidden=8, scale="exp")


def test_patch_schedule_runs_layers_on_other_patches():
    flow = MixerFlow((1, 8, 8), patch_size=2, num_layers=4, hidden=8, steps=1, shift=None, patch_sizes=[2, 4])
    repatched = [m for m in flow.modules() if isinstance(m, RepatchedFlow)]
    assert len(repatched) == 2 and all(m.inner_patch == (4, 4) for m in repatched)
    assert flow.config["patch_sizes"] == [[2, 2], [4, 4]]
    u = torch.rand(3, 1, 8, 8)
    flow = randomize(flow, scale=0.1)
    z, _ = flow(u)
    assert (flow.inverse(z) - u).abs().max() < 1e-4


@pytest.mark.parametrize("bad, match", [([3], "must divide"), ([], "non-empty"), (4, "non-empty"),
                                        ([8], "nothing to mix")])
def test_bad_patch_schedules_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        MixerFlow((1, 8, 8), patch_size=2, num_layers=2, hidden=8, steps=1, patch_sizes=bad)


def test_bad_linear_and_patch_steps_are_refused():
    with pytest.raises(ValueError, match="linear must be one of"):
        MixerFlow((1, 8, 8), patch_size=2, num_layers=2, hidden=8, steps=1, linear="QR")
    with pytest.raises(ValueError, match="patch_steps"):
        MixerFlow((1, 8, 8), patch_size=2, num_layers=2, hidden=8, steps=1, patch_steps=0)


def test_the_registered_cpu_default_trains_inverts_and_rebuilds_from_its_config():
    flow = create_backbone("mixerflow_cpu")  # bfloat16 conditioners only where the hardware has them
    assert flow.dequantizer is not None and flow.conditioner_dtype == resolve_conditioner_dtype("auto")
    x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    loss = flow.train().bits_per_dim(x).mean()
    loss.backward()
    assert torch.isfinite(loss) and flow.dequantizer.steps[0][-1].weight.grad.abs().sum() > 0
    flow.eval()
    u = torch.rand(2, 1, 28, 28)
    assert (flow.inverse(flow(u)[0]) - u).abs().max() < 5e-3  # bfloat16 conditioners: about 1e-3
    rebuilt = MixerFlow((1, 28, 28), **flow.config)
    rebuilt.load_state_dict(flow.state_dict())
    torch.testing.assert_close(rebuilt.eval().bits_per_dim(x), flow.bits_per_dim(x), atol=0, rtol=0)
