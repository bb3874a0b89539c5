"""HybridModel(head_input="hidden"): a head on the conditioners' pooled hidden units, read in the
same pass as the density; against the feature extractor, a hand computation, the fused inference
copy, a checkpoint, the estimator and the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hybridflow import freeze
from hybridflow.data import load_digits_data
from hybridflow.estimators import HybridFlowClassifier
from hybridflow.features import flow_features, hidden_width, recording_hidden_units
from hybridflow.hybrid import HybridModel
from hybridflow.training.checkpoint import load_model_parts, write_checkpoint

from tests.cli.runner import TINY as CLI_TINY, one_line_error, run

SHAPES = {
    "mixerflow_tiny": dict(input_shape=(1, 8, 8), patch_size=2, num_layers=2, hidden=16, steps=1),
    "glow_tiny": dict(input_shape=(1, 8, 8), num_steps=2, hidden=8),
}
LN2 = math.log(2)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _model(name: str, lam: float = 1.0, **overrides) -> HybridModel:
    torch.manual_seed(0)
    model = HybridModel(name, 10, lam=lam, head_input="hidden", **{**SHAPES[name], **overrides})
    model.train()
    model(_images(32, seed=99))  # ActNorm's data-dependent initialisation and BatchNorm statistics
    with torch.no_grad():
        model.head.weight.normal_(0, 0.05)
    return model.eval()


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_the_head_reads_what_flow_features_calls_hidden(name):
    model = _model(name)
    x = _images(12)
    with torch.no_grad():
        embedded = model.embed(x)
    assert embedded.shape == (12, model.num_features) == (12, hidden_width(model.backbone, "mean"))
    assert 2 * model.num_features == hidden_width(model.backbone)
    # the probes' "hidden" features hold each conditioner's mean, then its max: the head reads the means
    probe = flow_features(model, x, "hidden").reshape(12, -1, 2, SHAPES[name]["hidden"])[:, :, 0].reshape(12, -1)
    np.testing.assert_allclose(embedded.numpy(), probe, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(model.predict_logits(x), model.head(embedded))
        torch.testing.assert_close(model.predict_proba(x).sum(1), torch.ones(12))


def test_objective_matches_hand_computation():
    model, lam = _model("mixerflow_tiny", lam=2.5), 2.5
    x, y = _images(6), torch.tensor([0, 3, -1, 1, 1, 7])
    parts = model(x, y)
    with recording_hidden_units(model.backbone, 6, "mean") as units:  # eval mode: the same seeded noise
        _, log_prob = model.backbone.encode(x)
    bpd = -log_prob / (64 * LN2)
    logits = torch.cat(units, 1) @ model.head.weight.T + model.head.bias
    labelled = y >= 0
    ce = torch.where(labelled, F.cross_entropy(logits, y.clamp(min=0), reduction="none"), 0.0)
    torch.testing.assert_close(parts.logits, logits)
    torch.testing.assert_close(parts.bits_per_dim, bpd)
    torch.testing.assert_close(parts.total, (bpd + lam * ce / LN2).mean())


def test_the_classification_loss_trains_the_conditioners_through_their_hidden_units():
    model = _model("mixerflow_tiny").train()
    x, y = _images(16), torch.arange(16) % 10
    parts = model(x, y)
    (parts.cross_entropy.sum()).backward()
    # the last coupling's conditioner feeds the head directly: the gradient reaches its first layer
    last = [m for m in model.backbone.modules() if hasattr(m, "stem")][-1]
    assert last.stem.weight.grad is not None and last.stem.weight.grad.abs().max() > 0


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_the_inference_copy_reads_the_folded_conditioners(name):
    model = _model(name)
    x = _images(20, seed=3)
    fast = freeze(model)
    with torch.no_grad():
        torch.testing.assert_close(fast.embed(x), model.embed(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fast.predict_proba(x), model.predict_proba(x), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(fast.bits_per_dim(x), model.bits_per_dim(x), rtol=1e-5, atol=1e-5)
    if name == "mixerflow_tiny":
        from hybridflow.flows.inference.frozen import FoldedConditioner

        assert any(isinstance(m, FoldedConditioner) for m in fast.modules())  # the fused path ran, not the live one
        # no hook left behind: the next pass of the copy is the one fused call again
        assert not any(m.hidden_tap._forward_hooks for m in fast.modules() if isinstance(m, FoldedConditioner))


def test_bfloat16_conditioners_keep_the_head_close_to_float32():
    model = _model("mixerflow_tiny")
    x = _images(20, seed=4)
    with torch.no_grad():
        exact = model.predict_proba(x)
        model.backbone.set_conditioner_dtype("bfloat16")
        lowered, folded = model.predict_proba(x), freeze(model).predict_proba(x)
    assert (lowered - exact).abs().max() < 0.05 and (folded - exact).abs().max() < 0.05


def test_config_and_checkpoint_round_trip(tmp_path):
    model = _model("mixerflow_tiny")
    config = model.config()
    assert config["head_input"] == "hidden" and config["pooled"] is False
    write_checkpoint(tmp_path / "ck", model.state_dict(), config)
    _, saved, weights = load_model_parts(tmp_path / "ck")
    rebuilt = HybridModel.from_config(saved)
    rebuilt.load_state_dict(weights)
    x = _images(8)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval().predict_logits(x), model.predict_logits(x))
    older = {k: v for k, v in HybridModel("mixerflow_tiny", 10, pooled=True, **SHAPES["mixerflow_tiny"]).config().items()
             if k != "head_input"}  # a config written before head_input existed
    assert HybridModel.from_config(older).head_input == "pooled"
    assert HybridModel.complete_config(older) == HybridModel.from_config(older).config()


def test_explanations_differentiate_through_the_hidden_head():
    from hybridflow.explain import ClassLogits

    model = _model("mixerflow_tiny")
    u = (_images(3).float() + 0.5).requires_grad_(True)
    logits = ClassLogits(model)(u)
    assert logits.shape == (3, 10)
    logits[:, 2].sum().backward()
    assert u.grad is not None and u.grad.abs().sum() > 0


def test_mean_pooling_is_a_plain_average_over_the_rows():
    model = _model("mixerflow_tiny")
    first = [m for m in model.backbone.modules() if hasattr(m, "stem")][0]  # the first conditioner
    seen = []
    hook = first.head[1].register_forward_hook(lambda m, i, out: seen.append(out))
    with torch.no_grad(), recording_hidden_units(model.backbone, 5, "mean") as units:
        model.backbone.embed(_images(5))
    hook.remove()
    rows = seen[0].reshape(5, -1, seen[0].shape[-1])  # (batch, rows sharing the conditioner, hidden)
    torch.testing.assert_close(units[0], rows.mean(1))
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        with recording_hidden_units(model.backbone, 5, "max"):
            pass


def test_bad_head_inputs_are_named():
    with pytest.raises(ValueError, match="unknown head_input 'hiden'.*latent, pooled, hidden"):
        HybridModel("mixerflow_tiny", 10, head_input="hiden", **SHAPES["mixerflow_tiny"])
    with pytest.raises(ValueError, match="contradicts"):
        HybridModel("mixerflow_tiny", 10, pooled=True, head_input="hidden", **SHAPES["mixerflow_tiny"])
    with pytest.raises(ValueError, match="no MLP or convolutional coupling conditioner"):
        HybridModel("mixerflow_tiny_maf", 10, head_input="hidden", **SHAPES["mixerflow_tiny"])
    glow = HybridModel("glow_tiny", 10, head_input="hidden", invertible_backprop=True, **SHAPES["glow_tiny"]).train()
    with pytest.raises(ValueError, match="invertible_backprop"):
        glow(_images(4), torch.tensor([0, 1, 2, 3]))
    with torch.no_grad():  # evaluation needs no activations kept: it works
        assert glow.eval().predict(_images(4)).shape == (4,)


def test_estimator_with_a_hidden_head_learns_the_digits():
    train, test = load_digits_data(train=True), load_digits_data(train=False)
    clf = HybridFlowClassifier(backbone_kwargs=dict(patch_size=2, num_layers=1, hidden=16, steps=1), steps=150,
                               lr=1e-2, head_input="hidden", device="cpu", random_state=0)
    clf.fit(train.images.numpy(), train.labels.numpy())
    assert clf.model_.head_input == "hidden" and clf.get_params()["head_input"] == "hidden"
    assert clf.transform(test.images[:5].numpy()).shape == (5, clf.model_.num_features)
    assert clf.score(test.images.numpy(), test.labels.numpy()) > 0.8  # chance is 0.1
    again = HybridFlowClassifier.from_model(clf.model_, device="cpu")
    np.testing.assert_allclose(again.predict_proba(test.images[:16].numpy()),
                               clf.predict_proba(test.images[:16].numpy()), atol=1e-6)
    with pytest.raises(ValueError, match="head_input"):
        HybridFlowClassifier(head_input="hiden", steps=1).fit(train.images[:8].numpy(), train.labels[:8].numpy())


def test_train_command_stores_and_resumes_the_head_input(tmp_path):
    out = tmp_path / "run"
    run("train", "--steps", "2", "--out", out, "-q", "--head-input", "hidden", *CLI_TINY)
    assert json.loads((out / "run.json").read_text())["settings"]["head_input"] == "hidden"
    _, config, _ = load_model_parts(next((out / "checkpoints").iterdir()))
    assert config["head_input"] == "hidden"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt model's config is the checkpoint's: no "differs" warning
        resumed = json.loads(run("train", "--out", out, "--resume", "--steps", "3", "-q", "--json").stdout)
    assert resumed["steps"] == 3
    error = one_line_error(run("train", "--steps", "2", "--pooled", "--head-input", "hidden", "--out",
                               tmp_path / "x", *CLI_TINY, code=2))
    assert "contradict" in error
