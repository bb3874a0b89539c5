"""CPU checks that the library makes every tensor on the right device and in the right dtype.

Without a GPU, :class:`~tests.devices.strict.StrayDevice` puts every tensor that library code
makes without naming a device on the ``meta`` device, while the model and its inputs stay on the
CPU: a tensor made on the default device and then met with the model's tensors fails here as it
fails on CUDA (the evaluation noise did). A float64 model must give float64 numbers with no step
through float32 (:class:`~tests.devices.strict.MixedPrecision`), for uint8 and float32 inputs alike.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import pytest
import torch

from hybridflow import TrainConfig, freeze, train
from hybridflow.estimators import HybridFlowClassifier
from hybridflow.explain import attribute
from hybridflow.flows import evaluation_noise
from hybridflow.ood import FlowDensity, create_scorer, log_likelihood
from hybridflow.probe import embed_images, timm_mixer_features
from hybridflow.training import evaluate_model, load_checkpoint, save_checkpoint
from tests.devices.conftest import KWARGS, backbone, hybrid
from tests.devices.strict import MixedPrecision, StrayDevice


@pytest.fixture(scope="module")
def models(digits) -> dict[str, Any]:
    data = digits[0]
    x, y = data.images[:16], data.labels[:16]
    return dict(x=x, y=y, data=data, val=digits[1], flow=backbone("mixerflow", x), glow=backbone("glow", x),
                model=hybrid(x, y))


def _train(m, tmp):
    fresh = copy.deepcopy(m["model"])
    config = TrainConfig(steps=2, batch_size=16, eval_every=1, device="cpu", out_dir=str(tmp), progress=False)
    return train(fresh, m["data"], config, val_data=m["val"]).metrics


#: Every public entry point that computes with a model, as ``(m, tmp_path) -> result``.
CALLS: dict[str, Callable[[dict, Any], Any]] = {
    "backbone.log_prob": lambda m, t: m["flow"].log_prob(m["x"]),
    "glow.log_prob": lambda m, t: m["glow"].log_prob(m["x"]),
    "backbone.train_mode_log_prob": lambda m, t: copy.deepcopy(m["flow"]).train().log_prob(m["x"]),
    "backbone.encode": lambda m, t: m["flow"].encode(m["x"])[0],
    "backbone.embed": lambda m, t: m["glow"].embed(m["x"], pooled=True),
    "backbone.sample": lambda m, t: m["flow"].sample(3),
    "glow.sample": lambda m, t: m["glow"].sample(3, generator=torch.Generator().manual_seed(0)),
    "freeze.log_prob": lambda m, t: freeze(m["flow"]).log_prob(m["x"]),
    "freeze_glow.log_prob": lambda m, t: freeze(m["glow"]).log_prob(m["x"]),
    "hybrid.loss": lambda m, t: m["model"](m["x"], m["y"]).total,
    "hybrid.loss_unlabelled": lambda m, t: m["model"](m["x"]).total,
    "hybrid.predict_proba": lambda m, t: m["model"].predict_proba(m["x"]),
    "hybrid.bits_per_dim": lambda m, t: m["model"].bits_per_dim(m["x"]),
    "ood.log_likelihood": lambda m, t: log_likelihood(m["glow"], m["x"]),
    **{f"scorer.{name}": (lambda name: lambda m, t: create_scorer(
        name, m["model"] if name in ("max_softmax", "entropy") else m["flow"],
        reference=m["glow"] if name == "likelihood_ratio" else None).fit(m["x"]).score(m["x"]))(name)
       for name in ("loglik", "bpd", "typicality", "complexity", "likelihood_ratio", "max_softmax", "entropy")},
    **{f"explain.{method}": (lambda method: lambda m, t: attribute(
        m["model"], m["x"][:2], method=method, n_steps=4, n_samples=2).values)(method)
       for method in ("ig", "saliency", "gradshap", "inputxgrad")},
    "explain.nll_blur": lambda m, t: attribute(m["flow"], m["x"][:2], target="nll", baseline="blur", n_steps=4).values,
    "explain.mean_baseline": lambda m, t: attribute(m["model"], m["x"][:2], baseline="mean", references=m["x"],
                                                    n_steps=4).values,
    "probe.embed_images": lambda m, t: embed_images(m["model"], m["x"], features="latent"),
    "evaluate_model": lambda m, t: evaluate_model(m["model"], m["val"])["bits_per_dim"],
    "checkpoint.save_load": lambda m, t: load_checkpoint(save_checkpoint(m["model"], t / "c")).log_prob(m["x"]),
}
#: These build and train models of their own (so they have no float64 form).
TRAINING_CALLS: dict[str, Callable[[dict, Any], Any]] = {
    "train_with_validation": _train,
    "classifier.fit_predict_proba": lambda m, t: HybridFlowClassifier(
        backbone_kwargs=KWARGS, steps=2, batch_size=16, device="cpu", random_state=0).fit(
        m["data"].images.numpy(), m["data"].labels.numpy()).predict_proba(m["x"].numpy()),
    "probe.timm_mixer_features": lambda m, t: timm_mixer_features(m["x"], m["y"], m["x"][:4], steps=2,
                                                                 device="cpu")[1],
    "flow_density.fit_score": lambda m, t: FlowDensity(
        backbone_kwargs=KWARGS, steps=2, batch_size=16, device="cpu", random_state=0).fit(
        m["data"].images).score_samples(m["x"]),
}


@pytest.mark.parametrize("call", [*CALLS, *TRAINING_CALLS])
def test_no_tensor_is_made_on_a_stray_device(models, call, tmp_path):
    fn = {**CALLS, **TRAINING_CALLS}[call]
    with StrayDevice():
        out = fn(models, tmp_path)
    if isinstance(out, torch.Tensor):
        assert out.device.type == "cpu"


def test_stray_device_catches_a_cpu_tensor_meeting_the_model():
    """The check itself: a tensor the library would make without a device does not reach the model."""
    with StrayDevice():
        inside = torch.zeros(3)  # made by a test: not library code, so left on the CPU
    assert inside.device.type == "cpu"
    with StrayDevice(), pytest.raises((RuntimeError, NotImplementedError)):
        torch.ones(2, device="cpu") + _library_zeros(2)


def _library_zeros(n: int) -> torch.Tensor:
    # Run a constructor from a frame whose file is the library's, as library code would.
    import hybridflow.backbones.density as density

    namespace: dict[str, Any] = {"torch": torch}
    exec(compile("def make(n):\n    return torch.zeros(n)\n", density.__file__, "exec"), namespace)
    return namespace["make"](n)


#: Outputs documented as float32 whatever the model (probe features are handed to scikit-learn as float32).
FLOAT32_OUTPUTS = {"probe.embed_images"}


@pytest.fixture(scope="module")
def models64(models) -> dict[str, Any]:
    m = dict(models)
    for key in ("flow", "glow", "model"):
        m[key] = copy.deepcopy(models[key]).double()
    return m


@pytest.mark.parametrize("inputs", ["uint8", "float32"])
@pytest.mark.parametrize("call", [c for c in CALLS if c != "checkpoint.save_load"])
def test_float64_model_gives_float64_numbers(models64, call, inputs, tmp_path):
    m = dict(models64)
    if inputs == "float32":
        m["x"] = m["x"].float()
    mode = MixedPrecision()
    with mode:
        out = CALLS[call](m, tmp_path)
    assert not mode.found, f"float32 met float64 in {sorted(set(mode.found))}"
    if isinstance(out, torch.Tensor) and out.is_floating_point():
        assert out.dtype == torch.float64
    elif isinstance(out, np.ndarray) and call not in FLOAT32_OUTPUTS:
        assert out.dtype == np.float64


def test_float64_dequantisation_is_not_rounded_to_float32(models64):
    flow, x = models64["flow"], models64["x"]
    u = flow.dequantize(x)
    exact = (x.double() + evaluation_noise(x, flow.eval_seed).double()) / 256
    assert u.dtype == torch.float64 and torch.equal(u, exact)


def test_float64_explanation_matches_float32(models, models64):
    a32 = attribute(models["model"], models["x"][:2], baseline="blur", n_steps=16)
    a64 = attribute(models64["model"], models["x"][:2], baseline="blur", n_steps=16)
    assert a64.values.dtype == torch.float64
    assert torch.allclose(a64.values.float(), a32.values, atol=1e-3)
    assert torch.allclose(a64.attributions, a32.attributions, atol=1e-2 * float(a32.attributions.abs().max()))
