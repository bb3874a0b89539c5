"""Semi-supervised training with pseudo-labels on a translated view (TrainConfig.pseudo_labels,
TrainConfig.translate): what each step trains on, bit-exact resume, the settings' checks."""

from __future__ import annotations

import pytest
import torch

from hybridflow.data import ImageData, keep_labels
from hybridflow.factory import check_train_settings
from hybridflow.run_settings import TRAIN_DEFAULTS
from hybridflow.training import SettingsError, train
from hybridflow.training.pseudo_labels import align_to_uniform, apply_pseudo_labels, translate_batch
from tests.training.helpers import same_state, tiny_config, tiny_model


def semi(data: ImageData, labelled: int = 20) -> ImageData:
    return keep_labels(data, labelled / len(data), seed=0)


def test_translate_moves_each_image_by_its_own_seeded_offset():
    x = torch.zeros(16, 1, 8, 8, dtype=torch.uint8)
    x[:, :, 3:5, 3:5] = torch.arange(1, 17, dtype=torch.uint8).view(16, 1, 1, 1)
    moved = translate_batch(x, 2, seed=0, rank=0, step=3)
    offsets = set()
    for i in range(16):  # the square stays inside the frame: the move is a roll by some offset
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(moved[i], torch.roll(x[i], shifts=(-dy, -dx), dims=(1, 2)))]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 3  # images get their own offsets
    assert torch.equal(moved, translate_batch(x, 2, seed=0, rank=0, step=3))       # a function of the step
    assert not torch.equal(moved, translate_batch(x, 2, seed=0, rank=0, step=4))
    assert torch.equal(translate_batch(x, 0, 0, 0, 3), x)
    edge = torch.full((1, 1, 4, 4), 7, dtype=torch.uint8)  # uncovered pixels are the background 0
    shifted = [translate_batch(edge, 1, 0, 0, s) for s in range(20)]
    assert any((m == 0).any() for m in shifted) and all(set(m.unique().tolist()) <= {0, 7} for m in shifted)


def test_only_confident_unlabelled_images_get_the_guess(digits):
    model = tiny_model().eval()
    x, y = digits[0].images[:12], digits[0].labels[:12].clone()
    y[4:] = -1
    probabilities = model.predict_proba(x)
    threshold = float(probabilities[4:].max(dim=1).values.median().detach())
    out = apply_pseudo_labels(model, x, y, threshold)
    confident = probabilities.max(dim=1).values >= threshold
    expected = torch.where((y < 0) & confident, probabilities.argmax(dim=1), y)
    assert torch.equal(out, expected) and (out[4:] == -1).any() and (out[4:] >= 0).any()
    assert torch.equal(out[:4], y[:4]) and not model.training


def test_alignment_divides_each_class_by_its_shrunk_batch_mean():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.5, 0.1, 0.4], [0.8, 0.1, 0.1]])
    marginal = (probs.sum(0) + 1.0) / (4 + 3)  # shrunk towards 1/3 by K = 3 pseudo-rows
    by_hand = probs / marginal
    torch.testing.assert_close(align_to_uniform(probs), by_hand / by_hand.sum(1, keepdim=True))
    no_shrink = probs / probs.mean(0)
    torch.testing.assert_close(align_to_uniform(probs, prior_count=0), no_shrink / no_shrink.sum(1, keepdim=True))
    balanced = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    torch.testing.assert_close(align_to_uniform(balanced), balanced)  # equal classes already: unchanged
    # class 0 dominates the batch: every row's confidence in it drops, the others' rises
    aligned = align_to_uniform(probs)
    assert (aligned[:, 0] < probs[:, 0]).all() and (aligned[:, 1:] > probs[:, 1:]).all()


def test_aligned_guesses_pass_the_threshold_after_alignment(digits):
    model = tiny_model().eval()
    x, y = digits[0].images[:16], digits[0].labels[:16].clone()
    y[2:] = -1
    probs = model.predict_proba(x[2:])
    aligned = align_to_uniform(probs)
    threshold = float(aligned.max(dim=1).values.median().detach())
    out = apply_pseudo_labels(model, x, y, threshold, align=True)
    confidence, guess = aligned.max(dim=1)
    expected = torch.where(confidence >= threshold, guess, torch.full_like(guess, -1))
    assert torch.equal(out[2:], expected) and torch.equal(out[:2], y[:2]) and (expected >= 0).any()


def test_the_loop_aligns_the_guesses_when_asked(digits, monkeypatch):
    import hybridflow.training.loop as loop

    calls = []
    original = loop.apply_pseudo_labels

    def recording(model, x, y, threshold, align=False):
        calls.append(align)
        return original(model, x, y, threshold, align=align)

    monkeypatch.setattr(loop, "apply_pseudo_labels", recording)
    train(tiny_model(), semi(digits[0]), tiny_config(steps=3, batch_size=32, pseudo_labels=0.5, align_pseudo_labels=True))
    assert len(calls) >= 2 and all(calls)  # every step (but one that initialises the ActNorms) aligns


def test_each_step_trains_on_the_guesses_and_the_moved_images(digits, monkeypatch):
    """The loss of a step is the hybrid loss of the translated batch with the guessed labels."""
    seen = []
    original = type(tiny_model()).forward

    def recording(self, x, y=None, generator=None):
        if torch.is_grad_enabled():  # the training steps, not the ActNorm initialisation or an evaluation
            seen.append((x.clone(), y.clone()))
        return original(self, x, y, generator)

    monkeypatch.setattr(type(tiny_model()), "forward", recording)
    data = semi(digits[0])
    train(tiny_model(), data, tiny_config(steps=3, batch_size=32, pseudo_labels=1e-6, translate=1))
    assert len(seen) == 3
    x_last, y_last = seen[-1]
    assert (y_last >= 0).all()  # threshold ~0: every unlabelled image got a guess
    assert not any(torch.equal(x_last, data.images[i:i + 32]) for i in range(0, 256, 32))


@pytest.mark.parametrize("align", [False, True])
def test_resume_with_pseudo_labels_is_bit_exact(digits, tmp_path, align):
    data = semi(digits[0])
    config = dict(steps=6, batch_size=16, checkpoint_every=3, keep_checkpoints=2, pseudo_labels=0.2, translate=1,
                  align_pseudo_labels=align)
    expected = train(tiny_model(), data, tiny_config(tmp_path / "reference", **config))
    run = tmp_path / "run"
    train(tiny_model(), data, tiny_config(run, **config))
    (run / "checkpoints" / "step-000000006" / "checkpoint.json").unlink()  # as if killed at step 6's write
    fresh = tiny_model(seed=5)
    torch.manual_seed(123)
    train(fresh, data, tiny_config(run, **config), resume=run)
    same_state(fresh.state_dict(), expected.model.state_dict(), exact=True)


@pytest.mark.parametrize("bad, match", [(dict(pseudo_labels=0.0), "pseudo_labels"),
                                        (dict(pseudo_labels=1.5), "pseudo_labels"),
                                        (dict(pseudo_labels=float("nan")), "pseudo_labels"),
                                        (dict(translate=-1), "translate"), (dict(translate=1.5), "translate"),
                                        (dict(pseudo_labels=0.9, align_pseudo_labels=1), "align_pseudo_labels"),
                                        (dict(align_pseudo_labels=True), "set pseudo_labels")])
def test_bad_settings_are_named(bad, match):
    with pytest.raises(SettingsError, match=match):
        tiny_config(**bad)


def test_pseudo_labels_need_a_head(digits):
    with pytest.raises(ValueError, match="lam > 0"):
        train(tiny_model(lam=0.0), semi(digits[0]), tiny_config(pseudo_labels=0.9))
    with pytest.raises(SettingsError, match="lam > 0"):
        check_train_settings({**TRAIN_DEFAULTS, "lam": 0.0, "pseudo_labels": 0.9})


def test_the_estimator_takes_them_through_train_kwargs(digits):
    from hybridflow import HybridFlowClassifier

    data = semi(digits[0], labelled=40)
    X = data.images.flatten(1).numpy()  # 8-bit pixels
    y = data.labels.numpy()
    clf = HybridFlowClassifier(backbone_kwargs=dict(patch_size=2, num_layers=1, hidden=8), steps=4, batch_size=32,
                               image_shape=(1, 8, 8), head_input="hidden", random_state=0, num_threads=1,
                               train_kwargs=dict(pseudo_labels=0.5, align_pseudo_labels=True, translate=1,
                                                 labelled_per_batch=8))
    clf.fit(X, y)
    assert clf.predict_proba(X[:5]).shape == (5, 10)
