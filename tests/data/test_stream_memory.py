"""Streaming from the .npy layout holds one batch at a time: the peak RSS of a pass over every
batch does not grow with the dataset (BENCHMARKS.md section 9 measures 10k to 200k images)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hybridflow.data import NpyWriter

SHAPE = (3, 64, 64)  # 12,288 bytes an image

PASS = textwrap.dedent("""
    import json, resource, sys
    import torch
    from hybridflow.data import BatchSource, NpyImages
    from hybridflow.training import EpochBatches
    torch.set_num_threads(1)
    data = NpyImages(sys.argv[1])
    plan = EpochBatches(len(data), 64, seed=0)
    stream = BatchSource(data).stream(plan, seed=0)
    total = sum(int(stream.batch(step)[0].shape[0]) for step in range(plan.batches_per_epoch))
    print(json.dumps(dict(images=total, peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
""")


def _peak_of_one_pass(folder) -> dict:
    out = subprocess.run([sys.executable, "-c", PASS, str(folder)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _write(folder, n: int) -> None:
    rng = np.random.default_rng(0)
    with NpyWriter(folder, n, SHAPE, classes=[str(k) for k in range(10)], source="synthetic") as writer:
        for start in range(0, n, 2048):
            b = min(2048, n - start)
            writer.write(rng.integers(0, 256, (b, *SHAPE), dtype=np.uint8), rng.integers(0, 10, b))


@pytest.mark.slow
def test_peak_memory_of_a_pass_stays_flat_as_the_dataset_grows(tmp_path):
    small, large = 2_000, 12_000  # 25 MB and 147 MB of pixels
    _write(tmp_path / "small", small)
    _write(tmp_path / "large", large)
    a, b = _peak_of_one_pass(tmp_path / "small"), _peak_of_one_pass(tmp_path / "large")
    assert (a["images"], b["images"]) == (small // 64 * 64, large // 64 * 64)  # every full batch was read
    grown = b["peak_mb"] - a["peak_mb"]
    data_grown = (large - small) * np.prod(SHAPE) / 2**20  # 117 MB more pixels
    assert grown < 0.1 * data_grown, f"peak RSS grew by {grown:.1f} MB for {data_grown:.0f} MB more data"
