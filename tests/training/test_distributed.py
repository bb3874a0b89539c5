"""Devices and the process group. Two processes under torchrun with gloo on the CPU end with
identical weights.

The worker (tests/training/ddp_worker.py) builds each rank's model from a different seed and
poisons one step's loss on rank 1 only, so this checks DDP's initial broadcast, the all-reduced
ActNorm initialisation, the agreed skip of a non-finite step, the averaged BatchNorm statistics,
sharded validation and that only rank 0 writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from tests.torchrun import run_two_ranks

from hybridflow.training import (
    DistributedContext, all_agree, all_reduce, average_buffers, load_checkpoint, resolve_device,
)

WORKER = Path(__file__).with_name("ddp_worker.py")

needs_distributed = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


def test_resolve_device_and_single_process_helpers():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    single = DistributedContext()
    assert not single.active and single.is_main
    cpu = torch.device("cpu")
    assert all_reduce([1.0, 2.5], single, cpu) == [1.0, 2.5]
    assert all_agree([True, False], single, cpu) == [True, False]
    net = torch.nn.BatchNorm1d(3)
    before = net.running_mean.clone()
    average_buffers([net], single)
    assert torch.equal(net.running_mean, before)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    run_two_ranks(WORKER, out)
    return out


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"ranks differ in {different[:5]}"


@needs_distributed
def test_both_ranks_end_with_identical_weights(ddp_run):
    _assert_identical(load_file(ddp_run / "rank0.safetensors"), load_file(ddp_run / "rank1.safetensors"))
    _assert_identical(load_file(ddp_run / "rank0-ema.safetensors"), load_file(ddp_run / "rank1-ema.safetensors"))


@needs_distributed
def test_ranks_agree_on_skipped_steps_and_metrics(ddp_run):
    reports = [json.loads((ddp_run / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in reports)
    for report in reports:
        assert report["metrics"]["steps"] == 6 and report["metrics"]["nonfinite_steps"] == 1
        assert report["global_rng_untouched"]
    strip = [[{k: v for k, v in e.items() if k != "images_per_s"} for e in r["history"]] for r in reports]
    assert strip[0] == strip[1]  # all-reduced logs, sharded validation covering the whole split
    val = [e for e in reports[0]["history"] if e["split"] == "val"]
    assert [e["step"] for e in val] == [3, 6] and val[-1]["num_examples"] == 269


@needs_distributed
def test_only_rank_zero_writes_and_its_checkpoint_holds_the_weights(ddp_run):
    run = ddp_run / "run"
    reports = [json.loads((ddp_run / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["checkpoint"] == str(run / "checkpoints" / "step-000000006")
    assert reports[1]["checkpoint"] is None
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "curves.png", "metrics.jsonl", "run.json"]
    assert json.loads((run / "run.json").read_text())["train_config"]["max_nonfinite"] == 3
    assert len((run / "metrics.jsonl").read_text().splitlines()) == len(reports[0]["history"])
    _assert_identical(load_checkpoint(run).state_dict(), load_file(ddp_run / "rank0.safetensors"))


@needs_distributed
def test_callbacks_run_in_rank_zero_only(ddp_run):
    calls = [json.loads((ddp_run / f"rank{r}.json").read_text())["callback_calls"] for r in (0, 1)]
    assert calls[1] == []
    assert calls[0] == ["start 2", "log train 2", "log val 3", "checkpoint step-000000003", "log train 4",
                        "log train 6", "log val 6", "checkpoint step-000000006", "end 6"]


@pytest.mark.parametrize("spec, words", [
    ("gpu", "unknown device 'gpu'"), ("", "unknown device ''"), ("cpu:1", "the CPU has no index"),
    ("meta", "unknown device 'meta'"), (3, "must be a string"),
])
def test_resolve_device_names_an_unknown_device(spec, words):
    from hybridflow.training.distributed import DeviceError

    with pytest.raises(DeviceError, match=words):
        resolve_device(spec)
    assert issubclass(DeviceError, ValueError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:7"])
def test_resolve_device_names_cuda_missing(spec):
    from hybridflow.training.distributed import DeviceError

    with pytest.raises(DeviceError, match=f"device '{spec}' asked for, but CUDA is not available"):
        resolve_device(spec)


def test_resolve_device_names_a_gpu_index_beyond_the_machine():
    from hybridflow.training.distributed import DeviceError

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    count = torch.cuda.device_count()
    with pytest.raises(DeviceError, match=f"has {count} CUDA device"):
        resolve_device(f"cuda:{count}")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
