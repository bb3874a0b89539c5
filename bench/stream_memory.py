"""Peak memory of one pass over a 3x64x64 dataset streamed from the .npy layout, as it grows.

For each size a synthetic dataset (uint8 noise, random labels) is written with ``NpyWriter``, then
a fresh Python process reads every batch of one epoch once and reports its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and time. Readers:

* ``stream``: the training path, ``BatchSource(NpyImages(folder))`` driven by ``EpochBatches``
  (a random permutation; positioned reads, one batch held at a time);
* ``mmap``: the same batches indexed from ``np.load(images.npy, mmap_mode="r")``, for comparison:
  the pages a map touches stay resident in the process, so its RSS grows with the data read;
* in memory (today's ``ImageData``) would hold N x 12,288 bytes: the last column.

The files are deleted after each size (the largest, 200k images, is 2.5 GB).

    python bench/stream_memory.py                       # 10k, 25k, 50k, 100k, 200k images
    python bench/stream_memory.py --sizes 2000 5000     # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (3, 64, 64)


def write(folder: Path, n: int, chunk: int = 2048) -> None:
    import numpy as np

    from hybridflow.data import NpyWriter

    rng = np.random.default_rng(0)
    with NpyWriter(folder, n, SHAPE, classes=[str(k) for k in range(10)], source="synthetic") as writer:
        for start in range(0, n, chunk):
            b = min(chunk, n - start)
            writer.write(rng.integers(0, 256, (b, *SHAPE), dtype=np.uint8), rng.integers(0, 10, b))


def child(folder: str, reader: str, batch_size: int) -> None:
    """One pass over every batch of the epoch; prints a JSON line."""
    import numpy as np
    import torch

    from hybridflow.data import BatchSource, NpyImages
    from hybridflow.training import EpochBatches

    torch.set_num_threads(1)
    started = time.perf_counter()
    data = NpyImages(folder)
    plan = EpochBatches(len(data), batch_size, seed=0)
    checksum = 0
    if reader == "stream":
        stream = BatchSource(data).stream(plan, seed=0)
        for step in range(plan.batches_per_epoch):
            x, _ = stream.batch(step)
            checksum += int(x[:, 0, 0, 0].sum())
    else:
        images = np.load(Path(folder) / "images.npy", mmap_mode="r")
        for step in range(plan.batches_per_epoch):
            x = torch.from_numpy(images[np.sort(plan.indices(step).numpy())])
            checksum += int(x[:, 0, 0, 0].sum())
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    print(json.dumps(dict(reader=reader, n=len(data), batches=plan.batches_per_epoch, peak_rss_mb=round(peak_mb, 1),
                          seconds=round(seconds, 1), checksum=checksum)))


def measure(folder: Path, reader: str, batch_size: int) -> dict:
    command = [sys.executable, __file__, "--child", str(folder), "--reader", reader, "--batch-size", str(batch_size)]
    env_path = str(ROOT)
    proc = subprocess.run(command, capture_output=True, text=True, check=True,
                          env={**__import__("os").environ, "PYTHONPATH": env_path})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 25_000, 50_000, 100_000, 200_000])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--readers", nargs="+", default=["stream", "mmap"], choices=["stream", "mmap"])
    parser.add_argument("--workdir", default=None, help="Where the temporary datasets go (default: the temp dir).")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "stream_memory.json"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reader", default="stream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.reader, args.batch_size)
        return
    sys.path.insert(0, str(ROOT))
    rows = []
    print(f"{'images':>8} {'GB':>5} " + " ".join(f"{r + ' peak RSS MB':>19} {r + ' s':>9}" for r in args.readers)
          + f" {'in memory MB':>13}", flush=True)
    for n in args.sizes:
        workdir = Path(tempfile.mkdtemp(prefix="stream-memory-", dir=args.workdir))
        try:
            write(workdir / "set", n)
            row = dict(n=n, data_gb=round(n * 12288 / 1e9, 3), in_memory_mb=round(n * 12288 / 2**20, 1))
            for reader in args.readers:
                result = measure(workdir / "set", reader, args.batch_size)
                row[f"{reader}_peak_rss_mb"], row[f"{reader}_seconds"] = result["peak_rss_mb"], result["seconds"]
                row["batches"] = result["batches"]
        finally:
            shutil.rmtree(workdir, ignore_errors=True)  # never leave gigabytes behind
        rows.append(row)
        print(f"{n:>8} {row['data_gb']:>5} " + " ".join(f"{row[r + '_peak_rss_mb']:>19} {row[r + '_seconds']:>9}"
                                                        for r in args.readers) + f" {row['in_memory_mb']:>13}",
              flush=True)
    payload = dict(command=" ".join(sys.argv), machine=platform.platform(), image_shape=list(SHAPE),
                   batch_size=args.batch_size, rows=rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
