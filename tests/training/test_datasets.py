"""train() on a torch ``Dataset`` (map-style with PIL images, iterable) as on in-memory arrays."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset

from hybridflow.data import BatchSource
from hybridflow.training import train

from .helpers import same_state, tiny_config, tiny_model


class PilDigits(Dataset):
    """The training digits as a map-style dataset of (PIL image, label) pairs."""

    def __init__(self, data) -> None:
        self.images, self.labels = data.images, data.labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return Image.fromarray(self.images[i, 0].numpy(), mode="L"), int(self.labels[i])


class StreamedDigits(IterableDataset):
    """The training digits as an iterable dataset of (HWC array, label) pairs, without ``__len__``."""

    def __init__(self, data) -> None:
        self.images, self.labels = data.images, data.labels

    def __iter__(self):
        for epoch in range(100):
            for image, label in zip(self.images, self.labels):
                yield image.permute(1, 2, 0).numpy(), int(label)


def test_a_map_style_pil_dataset_trains_exactly_as_the_arrays(digits):
    train_data, _ = digits
    arrays = train(tiny_model(), train_data, tiny_config(steps=6)).model.state_dict()
    pil = train(tiny_model(), PilDigits(train_data), tiny_config(steps=6)).model.state_dict()
    same_state(arrays, pil, exact=True)


def test_workers_and_resume_keep_a_dataset_run_bit_exact(digits, tmp_path):
    train_data, _ = digits
    flat = dict(lr_schedule="constant")  # a 3-step run then 3 more: the same rates as one 6-step run
    whole = train(tiny_model(), PilDigits(train_data), tiny_config(steps=6, **flat)).model.state_dict()
    source = BatchSource(PilDigits(train_data), num_workers=1)
    train(tiny_model(), source, tiny_config(out_dir=tmp_path / "run", steps=3, **flat))
    later = tiny_config(out_dir=tmp_path / "run", steps=6, **flat)
    resumed = train(tiny_model(seed=5), source, later, resume=tmp_path / "run").model.state_dict()
    same_state(whole, resumed, exact=True)


def test_an_iterable_dataset_trains_for_the_steps_asked(digits):
    train_data, _ = digits
    result = train(tiny_model(), StreamedDigits(train_data), tiny_config(steps=4))
    assert result.steps == 4 and torch.isfinite(torch.tensor(result.metrics["bits_per_dim"]))


def test_an_iterable_dataset_without_steps_is_refused(digits):
    train_data, _ = digits
    with pytest.raises(ValueError, match="iterable dataset without __len__: set TrainConfig.steps"):
        train(tiny_model(), StreamedDigits(train_data), tiny_config(steps=None, epochs=1))


def test_a_dataset_of_the_wrong_image_shape_is_named(digits):
    train_data, _ = digits
    wide = tiny_model(input_shape=(1, 8, 16))
    with pytest.raises(ValueError, match="shape"):
        train(wide, PilDigits(train_data), tiny_config(steps=1))


def test_flips_are_seeded_by_the_step(digits):
    train_data, _ = digits
    runs = [train(tiny_model(), train_data, tiny_config(steps=4, flip=flip)).model.state_dict()
            for flip in (True, True, False)]
    same_state(runs[0], runs[1], exact=True)
    assert any(not torch.equal(runs[0][k], runs[2][k]) for k in runs[0])
