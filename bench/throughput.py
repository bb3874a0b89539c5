"""Throughput of the flows: train-step images/s, log_prob images/s, peak memory, parameters.

Every (model, shape) pair runs in a fresh subprocess (so peak memory is its own), all in one run;
the table gives ratios to normflows' Glow at a similar parameter count. Timings are medians of
repeated measurements: this machine is shared and noisy, compare ratios, not absolute numbers.

    python bench/throughput.py                         # defaults: 2 threads, batch 128
    python bench/throughput.py --models mixerflow_tiny,glow_tiny --shapes 1x28x28 --repeats 3
    python bench/throughput.py --smoke                 # seconds: tiny batch, one repeat
    python bench/throughput.py --conditioner-dtypes float32,bfloat16   # also mixed-precision rows
    python bench/throughput.py --rounds 3              # every model 3 times, in turns: median rates
    python bench/throughput.py --compiled              # also rows with torch.compile'd couplings
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _comparators  # noqa: E402
from hybridflow.training import make_adam  # noqa: E402

REFERENCE = "normflows_glow"
DEFAULT_MODELS = ["mixerflow_tiny", "mixerflow_wide", "glow_tiny", REFERENCE]
VARIANT_PATTERNS = ["mixerflow_tiny_*", "nsf_glow_tiny"]


COMPILED = "+compiled"


def _build(name: str, shape: tuple[int, int, int]):
    """``name`` is a backbone, ``name:bfloat16`` the same with bfloat16 conditioners, or the
    reference. A ``+compiled`` suffix is left to :func:`measure` (see ``--compiled``)."""
    if name == REFERENCE:
        return _comparators.NormflowsGlow(shape)
    import hybridflow

    name, _, dtype = name.removesuffix(COMPILED).partition(":")
    return hybridflow.create_backbone(name, input_shape=shape, conditioner_dtype=dtype or "float32")


def _loss(model, pixels: torch.Tensor) -> torch.Tensor:
    """Mean bits/dim with uniform dequantisation, for our backbones and the comparator alike."""
    if hasattr(model, "bits_per_dim"):
        return model.bits_per_dim(pixels).mean()
    u = (pixels.float() + torch.rand(pixels.shape)) / 256 - 0.5
    d = math.prod(pixels.shape[1:])
    return (-model.log_prob(u) / (d * math.log(2)) + 8).mean()


def _timed(fn, repeats: int, iters: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds per call over ``repeats`` groups of ``iters`` calls,
    after one warm-up. CPU seconds are the steadier figure on a shared machine."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(iters):
            fn()
        walls.append((time.perf_counter() - start) / iters)
        cpus.append((time.process_time() - cpu) / iters)
    return statistics.median(walls), statistics.median(cpus)


def train_setup(name: str, shape: tuple[int, int, int], batch: int, device: str = "cpu"):
    """``(model, pixels, train_step)``: a model in training mode, initialised on a fixed random batch,
    and one optimiser step on that batch (the same fused Adam and clipping for every model)."""
    torch.manual_seed(0)
    model = _build(name, shape).to(device)
    pixels = torch.randint(0, 256, (batch, *shape), dtype=torch.uint8).to(device)
    optimiser = make_adam(model.parameters(), lr=1e-3)
    model.train()
    _loss(model, pixels)  # data-dependent initialisation outside the timing

    def train_step() -> None:
        optimiser.zero_grad(set_to_none=True)
        _loss(model, pixels).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimiser.step()
        _sync(device)

    return model, pixels, train_step


def measure(name: str, shape: tuple[int, int, int], batch: int, repeats: int, iters: int, device: str) -> dict:
    model, pixels, train_step = train_setup(name, shape, batch, device)

    def score():
        with torch.no_grad():
            _loss(scored, pixels)
        _sync(device)

    flops = _forward_flops_per_image(model, pixels[:4])
    rss_before = _peak_rss_mb()
    if name.endswith(COMPILED):  # after the FLOP count, which runs eagerly; compiling is not timed
        model.set_compiled_couplings()
        train_step()
    train_s, train_cpu = _timed(train_step, repeats, iters)
    model.eval()
    # Our backbones score through their explicit inference copy (hybridflow.freeze): the fused
    # evaluation path; normflows' Glow has none and scores as it is.
    scored = model.inference_copy() if hasattr(model, "inference_copy") else model
    score_s, score_cpu = _timed(score, repeats, iters)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _peak_rss_mb())
    return dict(model=name, shape="x".join(map(str, shape)), params=sum(p.numel() for p in model.parameters()),
                train_img_s=batch / train_s, log_prob_img_s=batch / score_s,
                train_img_per_cpu_s=batch / train_cpu, log_prob_img_per_cpu_s=batch / score_cpu, peak_mem_mb=peak,
                forward_mflops_per_image=flops / 1e6,
                peak_mem_growth_mb=peak - rss_before if device != "cuda" else peak, batch=batch,
                threads=torch.get_num_threads(), device=device)


def _forward_flops_per_image(model, pixels: torch.Tensor) -> float:
    """Matmul and convolution FLOPs of one ``log_prob`` pass per image (torch's FLOP counter):
    the work a model must do whatever the implementation, so speed ratios can be read against it.
    Counted with autograd on, on the ordinary path: the fused inference kernels have no FLOP
    formula the counter knows."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        _loss(model, pixels)
    return counter.get_total_flops() / len(pixels)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _run_worker(args, name: str, shape: str) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", name, "--shapes", shape, "--batch", str(args.batch),
           "--repeats", str(args.repeats), "--iters", str(args.iters), "--threads", str(args.threads),
           "--device", args.device]
    # OpenMP's wait policy is left to the caller: the default (spinning) suits a quiet machine
    # (MixerFlow's log_prob: 3449 img/s at 2 threads, against 1530 with OMP_WAIT_POLICY=PASSIVE,
    # which wakes sleeping threads for each of its many mid-sized ops); PASSIVE is kinder to other
    # jobs on a busy one (spinning threads made 2 threads up to 10x slower under load).
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"  {name} {shape}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def format_table(rows: list[dict], runs: list[dict] | None = None) -> str:
    """Markdown table; ratios are to normflows' Glow on the same input, by wall clock and by
    process CPU time (the latter is steadier when other work shares the machine). Given the
    ``runs`` of several rounds, two more columns give the wall-clock ratio of each round to the
    reference's in the same round: median and range, the figures to judge a target by."""
    spread = runs is not None and len({r.get("round", 0) for r in runs}) > 1
    lines = ["| model | input | params | forward MFLOP/image | train img/s | log_prob img/s | peak RSS MB "
             "| train x nf (wall / cpu) | log_prob x nf (wall / cpu) |"
             + (" train x nf per round | log_prob x nf per round |" if spread else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if spread else "")]
    for shape in dict.fromkeys(r["shape"] for r in rows):
        group = [r for r in rows if r["shape"] == shape]
        ref = next((r for r in group if r["model"] == REFERENCE), None)
        for r in group:
            tr = lp = "-"
            if ref:
                tr = (f"{r['train_img_s'] / ref['train_img_s']:.2f} / "
                      f"{r['train_img_per_cpu_s'] / ref['train_img_per_cpu_s']:.2f}")
                lp = (f"{r['log_prob_img_s'] / ref['log_prob_img_s']:.2f} / "
                      f"{r['log_prob_img_per_cpu_s'] / ref['log_prob_img_per_cpu_s']:.2f}")
            line = (f"| {r['model']} | {shape} | {r['params']:,} | {r.get('forward_mflops_per_image', 0):.1f} | "
                    f"{r['train_img_s']:.0f} | {r['log_prob_img_s']:.0f} | {r['peak_mem_mb']:.0f} | {tr} | {lp} |")
            if spread:
                line += "".join(f" {_spread(ratios)} |" for ratios in round_ratios(runs, r["model"], shape))
            lines.append(line)
    return "\n".join(lines)


def round_ratios(runs: list[dict], model: str, shape: str) -> tuple[list[float], list[float]]:
    """Per round, ``model``'s train and log_prob images/s over the reference's in the same round.

    Example:
        >>> runs = [dict(model=m, shape="s", round=i, train_img_s=t, log_prob_img_s=2 * t)
        ...         for i, (a, b) in enumerate([(3, 1), (4, 2)]) for m, t in (("x", a), (REFERENCE, b))]
        >>> round_ratios(runs, "x", "s")
        ([3.0, 2.0], [3.0, 2.0])
    """
    by_round = {(r["model"], r.get("round", 0)): r for r in runs if r["shape"] == shape}
    pairs = [(by_round[(model, k)], by_round[(REFERENCE, k)]) for (name, k) in by_round
             if name == model and (REFERENCE, k) in by_round]
    return ([a["train_img_s"] / b["train_img_s"] for a, b in pairs],
            [a["log_prob_img_s"] / b["log_prob_img_s"] for a, b in pairs])


def _spread(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})" if ratios else "-"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None,
                        help="comma-separated backbone names (default: the tiny configs, mixerflow_wide, "
                             "the coupling variants and normflows' Glow)")
    parser.add_argument("--shapes", default="1x28x28,3x32x32")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--conditioner-dtypes", default="float32",
                        help="comma-separated conditioner precisions to measure our backbones in "
                             "(float32, bfloat16); rows in bfloat16 are named <model>:bfloat16")
    parser.add_argument("--compiled", action="store_true",
                        help="also measure our backbones with compiled couplings (set_compiled_couplings), "
                             "rows named <model>+compiled; the compile itself is not timed")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every model this many times, in turns, and report medians "
                             "(steadier ratios on a shared machine)")
    parser.add_argument("--json", default="bench/results/throughput.json")
    parser.add_argument("--smoke", action="store_true", help="tiny batch, one repeat: checks the script runs")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        shape = tuple(int(s) for s in args.shapes.split("x"))
        print(json.dumps(measure(args.worker, shape, args.batch, args.repeats, args.iters, args.device)))
        return []
    if args.smoke:
        args.batch, args.repeats, args.iters, args.rounds = 4, 1, 1, 1
    models = args.models.split(",") if args.models else _default_models()
    dtypes = args.conditioner_dtypes.split(",")
    models = [m for m in models if m == REFERENCE or "float32" in dtypes] + [
        f"{m}:{dtype}" for dtype in dtypes if dtype != "float32"
        for m in models if m != REFERENCE and _supports(m, dtype)]
    if args.compiled:
        models += [m + COMPILED for m in models if m != REFERENCE and _supports(m.partition(":")[0], compiled=True)]
    if not _comparators.normflows_available():
        models = [m for m in models if m != REFERENCE]
        print("normflows is not installed (pip install -e '.[bench]'): no reference column", file=sys.stderr)
    runs = []
    for round_index in range(args.rounds):
        for shape in args.shapes.split(","):
            for name in models:
                row = _run_worker(args, name, shape)
                if row:
                    runs.append(dict(row, round=round_index))
                    print(f"  round {round_index + 1}/{args.rounds}  {name:24s} {shape:8s} train "
                          f"{row['train_img_s']:8.0f} img/s   log_prob {row['log_prob_img_s']:8.0f} img/s",
                          file=sys.stderr)
    rows = median_rows(runs)
    print(format_table(rows, runs))
    if args.json and not args.smoke:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(dict(rows=rows, runs=runs, argv=sys.argv[1:], time=time.ctime(),
                                                   torch=torch.__version__, cpu_count=os.cpu_count()), indent=1))
    return rows


RATES = ("train_img_s", "log_prob_img_s", "train_img_per_cpu_s", "log_prob_img_per_cpu_s")


def median_rows(runs: list[dict]) -> list[dict]:
    """One row per (model, shape): the median of each rate over the rounds, the largest peak memory.

    Rounds run every model once, in turn, so a slow spell of the shared machine hits all models
    of a round rather than one model's every measurement.

    Example:
        >>> runs = [dict(model="m", shape="1x2x2", train_img_s=r, log_prob_img_s=r, train_img_per_cpu_s=r,
        ...              log_prob_img_per_cpu_s=r, peak_mem_mb=r, round=i) for i, r in enumerate([1, 5, 3])]
        >>> row = median_rows(runs)[0]
        >>> row["train_img_s"], row["peak_mem_mb"], row["rounds"]
        (3, 5, 3)
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["model"], run["shape"]), []).append(run)
    rows = []
    for group in groups.values():
        row = {k: v for k, v in group[0].items() if k != "round"}
        row.update({k: statistics.median(r[k] for r in group) for k in RATES})
        row["peak_mem_mb"] = max(r["peak_mem_mb"] for r in group)
        row["rounds"] = len(group)
        rows.append(row)
    return rows


def _supports(name: str, dtype: str = "float32", compiled: bool = False) -> bool:
    """Whether backbone ``name`` takes these options (MAF has no bfloat16 or compiled couplings)."""
    import hybridflow

    try:
        hybridflow.create_backbone(name, conditioner_dtype=dtype, compile_couplings=compiled)
    except ValueError as error:
        print(f"  {name}{COMPILED if compiled else ''}: {error}; left out", file=sys.stderr)
        return False
    return True


def _default_models() -> list[str]:
    import hybridflow

    variants = [n for p in VARIANT_PATTERNS for n in hybridflow.list_backbones(p)]
    return DEFAULT_MODELS[:-1] + variants + [REFERENCE]


if __name__ == "__main__":
    main()
