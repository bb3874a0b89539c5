"""train() with TrainConfig.labelled_per_batch: what each step reads, bit-exact resume, the
objective's weights and the errors for data it cannot serve. Tiny models on a slice of the digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, IterableDataset

from hybridflow.data import ImageData, keep_labels
from hybridflow.training import train
from tests.training.helpers import same_state, tiny_config, tiny_model


def semi(data: ImageData, labelled: int = 20) -> ImageData:
    """``data`` with all but ``labelled`` labels hidden (-1), stratified as the recipes do."""
    out = keep_labels(data, labelled / len(data), seed=0)
    assert int((out.labels >= 0).sum()) == labelled
    return out


class Recording(Dataset):
    """A map-style dataset that records which indices each DataLoader batch read."""

    def __init__(self, data: ImageData) -> None:
        self.data, self.batches = data, []

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, indices):
        self.batches.append(list(indices))
        return [(self.data.images[i], int(self.data.labels[i])) for i in indices]

    def __getitem__(self, i):  # the first-item check and the label scan: not batches
        return self.data.images[i], int(self.data.labels[i])


def test_every_training_step_reads_k_labelled_images_each_once_per_cycle(digits):
    data = semi(digits[0])
    recording = Recording(data)
    train(tiny_model(), recording, tiny_config(steps=10, batch_size=16, labelled_per_batch=4))
    batches = recording.batches  # the ActNorm initialisation reuses step 0's batch: one read a step
    assert len(batches) == 10
    labels = data.labels
    assert all(labels[b[:4]].ge(0).all() and labels[b[4:]].eq(-1).all() for b in batches)
    drawn = [i for b in batches for i in b[:4]]  # 40 labelled draws: two full cycles over the 20
    pool = sorted(torch.nonzero(labels >= 0).flatten().tolist())
    assert sorted(drawn[:20]) == pool and sorted(drawn[20:]) == pool and drawn[:20] != drawn[20:]


def test_resume_with_labelled_per_batch_is_bit_exact(digits, tmp_path):
    data = semi(digits[0])
    config = dict(steps=6, batch_size=16, labelled_per_batch=4, checkpoint_every=3, keep_checkpoints=2,
                  warmup_steps=2)
    expected = train(tiny_model(), data, tiny_config(tmp_path / "reference", **config))
    run = tmp_path / "run"
    train(tiny_model(), data, tiny_config(run, **config))
    (run / "checkpoints" / "step-000000006" / "checkpoint.json").unlink()  # as if killed at step 6's write
    fresh = tiny_model(seed=5)
    torch.manual_seed(123)  # the global RNG must not matter
    result = train(fresh, data, tiny_config(run, **config), resume=run)
    same_state(fresh.state_dict(), expected.model.state_dict(), exact=True)
    strip = lambda history: [{k: v for k, v in e.items() if k != "images_per_s"} for e in history]  # noqa: E731
    assert strip(result.history) == strip(expected.history)


def test_the_loss_is_the_batch_mean_so_the_classifier_weighs_lam_k_over_b(digits):
    """Documented in TrainConfig: total = mean bpd + lam * (k / B) * mean labelled CE / ln 2."""
    data = semi(digits[0])
    model = tiny_model()
    x, y = data.images[:16].clone(), data.labels[:16].clone()
    idx = torch.nonzero(data.labels >= 0).flatten()[:4]
    x[:4], y[:4] = data.images[idx], data.labels[idx]
    y[4:] = -1
    model.train()
    with torch.no_grad():
        parts = model(x, y, generator=torch.Generator().manual_seed(0))
    labelled_ce = parts.cross_entropy[:4].mean()
    expected = parts.bits_per_dim.mean() + model.lam * (4 / 16) * labelled_ce / math.log(2)
    assert float(parts.total) == pytest.approx(float(expected), rel=1e-6)


class Stream(IterableDataset):
    def __init__(self, data: ImageData) -> None:
        self.data = data

    def __iter__(self):
        for image, label in zip(self.data.images, self.data.labels):
            yield image, int(label)


def test_data_that_cannot_fill_the_batches_is_refused_naming_the_setting(digits):
    data = semi(digits[0], labelled=20)
    with pytest.raises(ValueError, match="labelled_per_batch=24 but the training data holds only 20 labelled"):
        train(tiny_model(), data, tiny_config(batch_size=32, labelled_per_batch=24))
    with pytest.raises(ValueError, match="labelled_per_batch=4 needs unlabelled images"):
        train(tiny_model(), digits[0], tiny_config(batch_size=16, labelled_per_batch=4))
    with pytest.raises(ValueError, match="labelled_per_batch needs a map-style dataset"):
        train(tiny_model(), Stream(data), tiny_config(batch_size=16, labelled_per_batch=4))
    assert np.isfinite(train(tiny_model(), data, tiny_config(steps=2, batch_size=16, labelled_per_batch=4))
                       .metrics["bits_per_dim"])
