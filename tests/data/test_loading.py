"""BatchSource: the loop's batches from ImageData, map-style and iterable Datasets, with workers,
exact resume, rank sharding, flips and clear errors. The two-process (gloo) check of the rank split
is in test_loading_distributed.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset

from hybridflow.data import BatchSource, ImageData, StepBatchSampler, as_batch_source, flip_batch
from hybridflow.training import EpochBatches


def numbered(n: int = 40, shape=(3, 4, 5)) -> ImageData:
    """Images whose every pixel holds the image's index: a batch says which examples it read."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, *shape).contiguous()
    return ImageData(images, torch.arange(n) % 4)


class PilDataset(Dataset):
    """A map-style dataset of PIL images, as torchvision's datasets without a transform give."""

    def __init__(self, data: ImageData) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return Image.fromarray(self.data.images[i].permute(1, 2, 0).numpy()), int(self.data.labels[i])


class Counting(IterableDataset):
    """Yields images numbered 0..n-1 as HWC arrays, in order, every pass."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        for i in range(self.n):
            yield np.full((4, 5, 3), i, dtype=np.uint8), i % 4


def ids(x: torch.Tensor) -> list[int]:
    return x[:, 0, 0, 0].tolist()


def test_imagedata_pil_and_tensor_datasets_read_the_plans_batches_with_and_without_workers():
    data = numbered()
    plan = EpochBatches(len(data), 8, seed=5)
    sources = [BatchSource(data), BatchSource(data.to_dataset()), BatchSource(PilDataset(data), num_workers=2),
               BatchSource(data, num_workers=1)]
    streams = [s.stream(plan, seed=5, stop=12) for s in sources]
    for step in range(12):  # 2.4 epochs: each epoch a new permutation
        idx = plan.indices(step)
        for stream in streams:
            x, y = stream.batch(step)
            assert x.dtype == torch.uint8 and y.dtype == torch.int64
            assert ids(x) == idx.tolist() and torch.equal(y, data.labels[idx])


def test_a_stream_started_at_a_step_continues_exactly_and_jumps_restart():
    data = numbered()
    plan = EpochBatches(len(data), 8, seed=1)
    full = BatchSource(data.to_dataset(), num_workers=2).stream(plan, seed=1)
    reference = [ids(full.batch(s)[0]) for s in range(10)]
    resumed = BatchSource(data.to_dataset(), num_workers=2).stream(plan, seed=1, start=6)
    assert [ids(resumed.batch(s)[0]) for s in range(6, 10)] == reference[6:]
    assert ids(resumed.batch(2)[0]) == reference[2]  # backwards: a new pass from there
    assert ids(resumed.batch(3)[0]) == reference[3]
    first = resumed.batch(3)
    assert resumed.batch(3)[0] is first[0]  # the same step again (ActNorm init, then the update): held


def test_stream_leaves_the_global_rngs_alone():
    before = torch.get_rng_state()
    stream = BatchSource(numbered().to_dataset(), num_workers=1).stream(EpochBatches(40, 8, 0), seed=0)
    for step in range(3):
        stream.batch(step)
    assert torch.equal(before, torch.get_rng_state())


def test_iterable_dataset_streams_in_order_shards_by_rank_skips_on_resume_and_restarts():
    source = BatchSource(Counting(10))
    assert source.iterable and source.num_examples is None and source.image_shape == (3, 4, 5)
    plan = EpochBatches(100, 3, seed=0)  # only batch_size counts for an iterable
    stream = source.stream(plan, seed=0)
    # 10 items, batches of 3 (the last partial one dropped), then a new pass.
    assert [ids(stream.batch(s)[0]) for s in range(4)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 1, 2]]
    rank1 = source.stream(plan, seed=0, rank=1, world_size=2)
    assert [ids(rank1.batch(s)[0]) for s in range(2)] == [[1, 3, 5], [1, 3, 5]]  # 5 items a pass: 1 batch
    resumed = source.stream(plan, seed=0, start=2)  # skips 2 * 3 items by counting
    assert ids(resumed.batch(2)[0]) == [6, 7, 8]
    with pytest.raises(ValueError, match="fewer than batch_size"):
        source.stream(EpochBatches(100, 11, 0), seed=0).batch(0)


def test_flips_mirror_about_half_the_images_deterministically_from_the_step():
    n = 400
    images = torch.arange(5, dtype=torch.uint8).view(1, 1, 1, 5).expand(n, 3, 4, 5).contiguous()
    data = ImageData(images, None)
    plan = EpochBatches(n, 200, seed=0)
    x = BatchSource(data, flip=True).stream(plan, seed=3).batch(1)[0]
    flipped = x[:, :, :, 0] == 4
    assert torch.equal(x[flipped.all(-1).all(-1)], images[:1].flip(-1).expand(int(flipped.all(-1).all(-1).sum()), 3, 4, 5))
    assert 70 <= int(flipped[:, 0, 0].sum()) <= 130  # Binomial(200, 1/2): 6+ sd either side
    again = BatchSource(data.to_dataset(), flip=True).stream(plan, seed=3, start=1).batch(1)[0]
    assert torch.equal(x, again)  # resumed or through a DataLoader: the same flips
    other = BatchSource(data, flip=True).stream(plan, seed=3).batch(2)[0]
    assert not torch.equal(x[:, :, :, 0] == 4, other[:, :, :, 0] == 4)
    assert torch.equal(flip_batch(images[:8], 0, 0, 0), flip_batch(images[:8], 0, 0, 0))


def test_check_model_and_labels_beyond_the_models_classes_are_refused():
    data = numbered()
    source = BatchSource(data.to_dataset())
    with pytest.raises(ValueError, match=r"shape \(3, 4, 5\), the model expects \(3, 8, 8\)"):
        source.check_model((3, 8, 8), 4)
    with pytest.raises(ValueError, match="label 3 but the model has only 2 classes"):
        BatchSource(data).check_model((3, 4, 5), 2)
    stream = source.stream(EpochBatches(40, 8, 0), seed=0, num_classes=3)
    with pytest.raises(ValueError, match=r"step 0 holds label 3 but the model has only 3 classes"):
        stream.batch(0)


class NoLength(Dataset):
    def __getitem__(self, i):
        return np.zeros((4, 4), dtype=np.uint8), 0


class Floats(Dataset):
    def __len__(self):
        return 3

    def __getitem__(self, i):
        return torch.rand(3, 4, 4), 0


class Empty(Dataset):
    def __len__(self):
        return 0


def test_bad_datasets_are_refused_up_front():
    with pytest.raises(TypeError, match="no __len__"):
        BatchSource(NoLength())
    with pytest.raises(TypeError, match="dataset Floats: first item: image is a torch.float32 tensor"):
        BatchSource(Floats())
    with pytest.raises(ValueError, match="empty"):
        BatchSource(Empty())
    with pytest.raises(ValueError, match="yielded no items"):
        BatchSource(Counting(0))
    with pytest.raises(TypeError, match="ImageData or a torch.utils.data.Dataset"):
        BatchSource(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="num_workers"):
        BatchSource(numbered(), num_workers=-1)


def test_loader_options_pinned_memory_on_cuda_only_and_as_batch_source_passes_a_source_through():
    source = BatchSource(numbered().to_dataset(), num_workers=1)
    assert as_batch_source(source) is source
    stream = source.stream(EpochBatches(40, 8, 0), seed=0)
    stream.batch(0)
    assert stream._loader.pin_memory is False and stream._loader.persistent_workers is True
    assert list(StepBatchSampler(EpochBatches(40, 8, 0), 4, 6)) == [EpochBatches(40, 8, 0).indices(s).tolist()
                                                                      for s in (4, 5)]


def test_labels_come_from_memory_a_dataset_or_are_refused_for_a_stream():
    data = numbered()
    assert BatchSource(data).labels() is data.labels
    assert torch.equal(BatchSource(PilDataset(data)).labels(), data.labels)  # item by item: no attribute
    with pytest.raises(ValueError, match="iterable dataset Counting.*labelled_per_batch needs a map-style"):
        BatchSource(Counting(8)).labels()
