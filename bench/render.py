"""Render BENCHMARKS.md from the JSON the benchmarks wrote (bench/results/*.json).

Six sections (density, permutations, embeddings, hybrid trade-off, OOD, scaling), each with the
command, date and machine of its JSON, its tables, and a sentence generated from the numbers that
says whether the paper's claim holds here; where it does not, the likely reason comes from the
hand-written discussion of that section in ``bench/notes.md`` (``## density``, ``## permutations``,
... headings; written after reading the numbers), or, without one, a marked placeholder asks for it.
A missing JSON renders as "not yet run" with the command that produces it.

    python bench/render.py                                   # bench/results -> BENCHMARKS.md
    python bench/render.py --results-dir bench/results/smoke --out /tmp/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, ROOT, fmt, markdown_table  # noqa: E402

MATCH_TOL = 0.01  # bits/dim: "matches" in the paper's sense (it reports two decimals)
TARGET_MNIST = 1.6  # the aim for MixerFlow on MNIST at 10 minutes
NORMFLOWS_MNIST_10MIN = 2.36  # the issue's reference figure for normflows' Glow
PLACEHOLDER = "**Likely reason: _(to be written after the full run: budget, epochs seen, model sizes)_.**"
NOTES = Path(__file__).resolve().parent / "notes.md"
RUN_ALL = "bench/run_all.sh --minutes 10 --short-minutes 1"

SECTIONS = [
    ("density", "1. Density at a fixed CPU budget", "python bench/density.py"),
    ("permutations", "2. Permutations (global and local pixel shuffling)", "python bench/permutations.py"),
    ("embeddings", "3. Embeddings: linear probes on frozen latents", "python bench/embeddings.py --reuse"),
    ("hybrid_tradeoff", "4. Hybrid trade-off and semi-supervised learning", "python bench/hybrid_tradeoff.py"),
    ("ood", "5. Out-of-distribution detection", "python bench/ood.py --reuse"),
    ("scaling", "6. Scaling with image size", "python bench/scaling.py"),
    ("eval_noise", "7. Evaluation noise: one shared noise image against each image's own", "python bench/eval_noise.py"),
    ("memory_depth", "8. Training memory against depth: invertible backprop", "python bench/memory_depth.py"),
    ("stream_memory", "9. Streaming from disk: memory against dataset size", "python bench/stream_memory.py"),
    ("gpu_throughput", "10. GPU throughput", "python bench/throughput.py --device cuda --batch 64"),
    ("time_to_quality", "11. Time to quality: bits/dim against training minutes",
     "python bench/time_to_quality.py --minutes 10 --parallel 2"),
    ("hybrid_frontier", "12. The hybrid frontier at a fixed budget: accuracy against bits/dim",
     "python bench/hybrid_frontier.py --minutes 10 --parallel 2 --runs ..."),
    ("ood_reference", "13. Likelihood-ratio OOD: which reference model", "python bench/ood_reference.py"),
    ("calibration", "14. Calibration and the reject option of the shipped hybrid", "python bench/calibration.py"),
    ("precision", "15. bfloat16 against float32 conditioners, per CPU", "python bench/precision.py"),
]

#: Sections whose JSON carries its own provenance (not the training benchmarks' record format).
OWN_PROVENANCE = {"memory_depth", "stream_memory", "gpu_throughput", "ood_reference", "calibration", "precision"}


def load(results_dir: Path, name: str) -> dict | None:
    path = results_dir / f"{name}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def provenance(record: dict, training: bool = True) -> str:
    m = record.get("machine", {})
    git = record.get("git", {})
    settings = record.get("settings", {})
    # runs trained in parallel subprocesses (--parallel N) ran on one thread each, whatever the parent had
    threads = "1 torch thread per run" if record.get("parallel", 1) > 1 else f"{m.get('threads')} torch threads"
    cpu = m.get("cpu") if not m.get("capability") else (
        f"{m.get('cpu')}, {m['capability']}, {'native' if m.get('native_bfloat16') else 'emulated'} bfloat16")
    machine = (f"{m.get('nproc')} CPUs ({cpu}), {threads}, torch {m.get('torch')}, "
               f"Python {m.get('python')}, normflows {m.get('normflows') or 'absent'}; load average at the end "
               f"{m.get('loadavg')}")
    lines = [f"- Command: `{record.get('command')}`",
             f"- Date: {record.get('date')} (wall time {record.get('wall_seconds')} s); "
             f"commit {git.get('commit')}{' (uncommitted changes)' if git.get('dirty') else ''}",
             f"- Machine: {machine}",
             "- Evaluation noise: " + ("each test image its own seeded draw" if record.get("evaluation_noise")
                                       == "per_image" else "one noise image shared by every test image (before "
                                       "issue 15; section 7 measures how far per-image noise moves such figures)")]
    if training:
        lines.append(f"- Budget: {settings.get('minutes')} min per training run, batch {settings.get('batch_size')}, "
                     f"lr {settings.get('lr')}, warm-up {settings.get('warmup')} steps, {settings.get('schedule')} "
                     "schedule, Adam, gradient-norm clip " + str(settings.get("clip"))
                     + (f"; models not found for reuse {settings['fresh_minutes']} min"
                        if settings.get("reuse") and settings.get("fresh_minutes") is not None else "")
                     + (f"; likelihood-ratio references {settings['ref_minutes']} min"
                        if settings.get("ref_minutes") is not None else "")
                     + (". The spec's own keys (lr, batch_size) override these per model."
                        if any(":" in m for m in settings.get("models") or []) else ""))
    if record.get("smoke"):
        lines.append("- **Smoke run: tiny models, a few steps; not a measurement.**")
    return "\n".join(lines)


def _best(rows: list[dict], family: str, key: str = "test_bits_per_dim") -> dict | None:
    group = [r for r in rows if r.get("family") == family]
    return min(group, key=lambda r: r[key]) if group else None


# --------------------------------------------------------------------------- sections


def density(record: dict, reason: str = PLACEHOLDER) -> str:
    rows = record["runs"]
    out = [markdown_table(
        ["dataset", "model", "params", "test bits/dim", "test images", "steps", "epochs", "train img/s"],
        [[r["dataset"], f"`{r['model']}`", fmt(r["params"]), fmt(r["test_bits_per_dim"], 3), fmt(r["test_examples"]),
          fmt(r["train"]["steps"]), fmt(r["train"]["epochs"], 2), fmt(r["train"]["images_per_s"], 0)] for r in rows],
        "llrrrrrr")]
    timing = record.get("throughput") or {}
    if timing:
        shape = "x".join(str(s) for s in record.get("throughput_shape", []))
        out.append(f"\nThroughput on {shape} images, every model timed in turns (median of "
                   f"{next(iter(timing.values()))['repeats']} repeats, batch {next(iter(timing.values()))['batch']}); "
                   "ratios to normflows' Glow from the same run:\n")
        out.append(markdown_table(
            ["model", "params", "train img/s", "log_prob img/s", "train x normflows", "log_prob x normflows"],
            [[f"`{k}`", fmt(v.get("params")), fmt(v["train_img_s"], 0), fmt(v["log_prob_img_s"], 0),
              fmt(v.get("train_x_reference"), 2), fmt(v.get("log_prob_x_reference"), 2)] for k, v in timing.items()]))
    out.append("\n**Against the paper** (Tables 1, 2: MixerFlow matches or beats Glow):\n")
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        group = [r for r in rows if r["dataset"] == dataset]
        mixer, glow, ref = _best(group, "mixerflow"), _best(group, "glow"), _best(group, "normflows_glow")
        if mixer and glow:
            diff = mixer["test_bits_per_dim"] - glow["test_bits_per_dim"]
            verdict = ("agrees with the paper." if diff <= MATCH_TOL else f"**disagrees with the paper**. {reason}")
            relation = "lower than" if diff < -MATCH_TOL else ("within 0.01 of" if abs(diff) <= MATCH_TOL else "higher than")
            out.append(f"- {dataset}: MixerFlow (`{mixer['model']}`, {mixer['test_bits_per_dim']:.3f}) is {relation} "
                       f"our Glow (`{glow['model']}`, {glow['test_bits_per_dim']:.3f}; difference {diff:+.3f} bits/dim): "
                       f"{verdict} In the same budget MixerFlow saw {mixer['train']['epochs']:.2f} epochs and Glow "
                       f"{glow['train']['epochs']:.2f}.")
        if mixer and ref:
            diff = mixer["test_bits_per_dim"] - ref["test_bits_per_dim"]
            out.append(f"- {dataset}: against normflows' Glow ({ref['test_bits_per_dim']:.3f}, {ref['params']:,} params), "
                       f"MixerFlow is {'lower' if diff < 0 else 'higher'} by {abs(diff):.3f} bits/dim.")
        if dataset == "mnist" and mixer:
            hit = mixer["test_bits_per_dim"] <= TARGET_MNIST
            out.append(f"- MNIST target (MixerFlow at {TARGET_MNIST} bits/dim or below in the budget): "
                       f"{'reached' if hit else '**not reached**'} ({mixer['test_bits_per_dim']:.3f} with "
                       f"`{mixer['model']}`). For scale, normflows' Glow (L=2, K=8, 128 hidden, batch 128, Adam 1e-3) "
                       f"was measured at {NORMFLOWS_MNIST_10MIN} after 10 minutes when the issue was filed.")
    return "\n".join(out)


def tuning(records: list[dict]) -> str:
    """The tuning sweeps (``density_tuning*.json``) in one table, best first, with their commands."""
    rows = sorted((r for record in records for r in record["runs"]), key=lambda r: (r["dataset"], r["test_bits_per_dim"]))
    budgets = sorted({record.get("settings", {}).get("minutes") for record in records}, key=str)
    commands = "".join(f"\n- `{record.get('command')}` ({record.get('date')})" for record in records)
    return (f"Tuning sweeps for the budget ({', '.join(map(str, budgets))} min per run), from:{commands}\n\n"
            + markdown_table(["dataset", "spec", "params", "test bits/dim", "epochs", "train img/s"],
                             [[r["dataset"], f"`{r['model']}`", fmt(r["params"]), fmt(r["test_bits_per_dim"], 3),
                               fmt(r["train"]["epochs"], 2), fmt(r["train"]["images_per_s"], 0)] for r in rows],
                             "llrrrr"))


def permutations(record: dict, reason: str = PLACEHOLDER) -> str:
    changes = record["changes"]
    shuffles = record.get("shuffles", ["global", "local"])
    # training steps per run: a budget in minutes buys fewer steps on a busier (or slower) machine
    steps = {(r["dataset"], r["model"], r.get("shuffle", "none")): (r.get("train") or {}).get("steps")
             for r in record.get("runs", [])}

    def steps_of(c: dict) -> str:
        found = [steps.get((c["dataset"], c["model"], s)) for s in ("none", *shuffles)]
        return " / ".join(fmt(n) if n is not None else "-" for n in found)

    out = [markdown_table(
        ["dataset", "model", "params", "unshuffled", *[f"{s} shuffle" for s in shuffles], *[f"change ({s})" for s in shuffles],
         f"steps (unshuffled / {' / '.join(shuffles)})"],
        [[c["dataset"], f"`{c['model']}`", fmt(c["params"]), fmt(c["unshuffled"], 3),
          *[fmt(c.get(s), 3) for s in shuffles],
          *[f"{c[f'delta_{s}']:+.3f}" if f"delta_{s}" in c else "-" for s in shuffles], steps_of(c)] for c in changes],
        "llrr" + "r" * (2 * len(shuffles) + 1))]
    out.append(f"\nLocal shuffling permutes the patch order and the pixels inside {record.get('local_patch', 4)}x"
               f"{record.get('local_patch', 4)} patches; global shuffling permutes all pixels (the same permutation "
               "for every image). Change = shuffled minus unshuffled bits/dim.\n")
    out.append("**Against the paper** (Tables 4, 5: Glow degrades a lot, MixerFlow little):\n")
    for dataset in dict.fromkeys(c["dataset"] for c in changes):
        group = [c for c in changes if c["dataset"] == dataset]
        mixer = next((c for c in group if c["family"] == "mixerflow"), None)
        for other_family, other_name in (("glow", "our Glow"), ("normflows_glow", "normflows' Glow")):
            other = next((c for c in group if c["family"] == other_family), None)
            if not (mixer and other):
                continue
            for s in shuffles:
                key = f"delta_{s}"
                if key not in mixer or key not in other:
                    continue
                agrees = mixer[key] <= other[key] + MATCH_TOL
                out.append(f"- {dataset}, {s} shuffle: MixerFlow changes by {mixer[key]:+.3f}, {other_name} by "
                           f"{other[key]:+.3f} bits/dim: "
                           + ("agrees (MixerFlow degrades less, or within 0.01)." if agrees else f"**disagrees with the paper**. {reason}"))
    return "\n".join(out)


def _train_minutes(model: dict) -> float | None:
    seconds = model.get("train", {}).get("settings", {}).get("seconds")
    return None if seconds is None else seconds / 60


def embeddings(record: dict, reason: str = PLACEHOLDER) -> str:
    out = []
    for dataset, d in record["datasets"].items():
        feats = d["features"]
        out.append(f"**{dataset}**: probe trained on {d['probe_train']:,} images, tested on {d['probe_test']:,}; "
                   f"flows trained on {d['flow_train']:,} images.\n")
        out.append(markdown_table(
            ["features", "dim", "flow budget (min)", "flow epochs", "flow test bits/dim", "accuracy (%)", "log-loss",
             "accuracy vs raw (points)", "seeds"],
            [[f"`{name}`" if name != "raw pixels" else name, fmt(f["dim"]),
              fmt(_train_minutes(f["model"]), 1), fmt(f["model"].get("train", {}).get("epochs"), 2),
              fmt(f["model"].get("test_bits_per_dim"), 3),
              f"{100 * f['accuracy_mean']:.2f} ± {100 * f['accuracy_std']:.2f}",
              f"{f['log_loss_mean']:.4f} ± {f['log_loss_std']:.4f}",
              f"{100 * f['accuracy_minus_raw']:+.2f}", len(f["seeds"])] for name, f in feats.items()],
            "lrrrrrrrr"))
        out.append("")
    out.append("**Against the paper** (Table 7: MixerFlow's embeddings classify better, with lower log-loss, than "
               "Glow's; every flow should beat raw pixels):\n")
    for dataset, d in record["datasets"].items():
        feats = {n: f for n, f in d["features"].items() if n != "raw pixels"}
        fam = lambda f: f["model"].get("spec", {}).get("family")  # noqa: E731
        mixer = max((f for f in feats.values() if fam(f) == "mixerflow"), key=lambda f: f["accuracy_mean"], default=None)
        glow = max((f for f in feats.values() if fam(f) == "glow"), key=lambda f: f["accuracy_mean"], default=None)
        raw = d["features"]["raw pixels"]
        if mixer and glow:
            better = mixer["log_loss_mean"] < glow["log_loss_mean"]
            out.append(f"- {dataset}: MixerFlow {100 * mixer['accuracy_mean']:.2f}% / log-loss {mixer['log_loss_mean']:.4f}, "
                       f"Glow {100 * glow['accuracy_mean']:.2f}% / {glow['log_loss_mean']:.4f}: "
                       + ("agrees (lower log-loss for MixerFlow)." if better else f"**disagrees with the paper**. {reason}"))
        for f in feats.values():
            if f["accuracy_mean"] < raw["accuracy_mean"]:
                out.append(f"- {dataset}: `{f['name']}` probes *below* raw pixels ({100 * f['accuracy_minus_raw']:+.2f} "
                           f"points): these features are less linearly separable than the pixels. {reason}")
    return "\n".join(out)


def embedding_features(record: dict) -> str:
    """The README's main job (digits) over several trained flows: every feature set of each backbone."""
    lines = []
    for dataset, d in record["datasets"].items():
        summary = d.get("summary")
        if not summary:
            continue
        models = d.get("models", [])
        shown = "; ".join(f"{m['name']} {m.get('params', 0):,} params" for m in models)
        lines.append(f"**{dataset}** (the README's main job, `{record['command']}`, {record['date']}, "
                     f"{record['wall_seconds']:.0f} s): {len(d['train_seeds'])} flows per backbone (seeds "
                     f"{', '.join(map(str, d['train_seeds']))}), {models[0].get('steps', '?') if models else '?'} steps each "
                     f"({shown}); each flow's probe averaged over {len(d['seeds'])} probe seeds; "
                     f"{d['n_train']:,} train / {d['n_test']:,} test images (one test image = "
                     f"{100 / d['n_test']:.2f} points).\n")
        rows = sorted(summary.items(), key=lambda kv: -kv[1]["accuracy_mean"])
        lines.append(markdown_table(
            ["features", "dim", "accuracy (%), mean ± std over flows", "per flow", "log-loss"],
            [[name, fmt(r["dim"]), f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f}",
              " / ".join(f"{100 * a:.2f}" for a in r["accuracies"]),
              f"{r['log_loss_mean']:.4f} ± {r['log_loss_std']:.4f}"] for name, r in rows], "lrrrr"))
        lines.append("")
    return "\n".join(lines)


def hybrid(record: dict, image: str | None, reason: str = PLACEHOLDER) -> str:
    sweep, semi = record["sweep"], record.get("semi_supervised", [])
    out = [f"{record.get('dataset', 'mnist')}, loss = bits/dim + lambda * CE / ln 2"
           + (" (lambda = 0: a pure flow, its head untrained, chance accuracy by design).\n" if sweep else
              "; a spec's `head_input` says what the linear head reads (default: the flattened latent; hidden: "
              "the conditioners' hidden units averaged over the rows that share them, from the same pass).\n")]
    if sweep:
        out.append(markdown_table(["model", "lambda", "test accuracy (%)", "test bits/dim", "test cross-entropy (nats)",
                                   "epochs"],
                                  [[f"`{r['model']}`", f"{r['lam']:g}", fmt(100 * r["test_accuracy"], 2),
                                    fmt(r["test_bits_per_dim"], 3), fmt(r["test_cross_entropy"], 4),
                                    fmt(r["train"]["epochs"], 2)] for r in sweep], "lrrrrr"))
    if image:
        out.append(f"\n![accuracy and bits/dim against lambda]({image})\n")
    if semi:
        share = record.get("settings", {}).get("labelled_share")
        out.append(f"Semi-supervised (lambda = {record.get('semi_lam')}): the labelled images plus the rest of the "
                   "training set unlabelled"
                   + (f" (the labelled images repeated to make {share:.0%} of each epoch)" if share else "")
                   + ", against the same model trained on the labelled images alone, same budget.\n")
        out.append(markdown_table(["model", "labels", "training set", "test accuracy (%)", "test bits/dim", "epochs"],
                                  [[f"`{r['model']}`", fmt(r["labels"]), r["setting"], fmt(100 * r["test_accuracy"], 2),
                                    fmt(r["test_bits_per_dim"], 3), fmt((r.get("train") or {}).get("epochs"), 2)] for r in semi],
                                  "lrlrrr"))
    header = len(out)
    out.append("\n**What the numbers say:**\n")
    for model in dict.fromkeys(r["model"] for r in sweep):
        group = sorted((r for r in sweep if r["model"] == model), key=lambda r: r["lam"])
        positive = [r for r in group if r["lam"] > 0]
        if len(positive) >= 2:
            lo, hi = positive[0], positive[-1]
            out.append(f"- `{model}`: from lambda {lo['lam']:g} to {hi['lam']:g} accuracy goes "
                       f"{100 * lo['test_accuracy']:.2f}% -> {100 * hi['test_accuracy']:.2f}% and bits/dim "
                       f"{lo['test_bits_per_dim']:.3f} -> {hi['test_bits_per_dim']:.3f}"
                       + (" (the expected trade-off)." if hi["test_bits_per_dim"] >= lo["test_bits_per_dim"]
                          and hi["test_accuracy"] >= lo["test_accuracy"]
                          else f" (not the expected monotone trade-off). {reason}"))
    for model, n in dict.fromkeys((r["model"], r["labels"]) for r in semi):
        pair = {r["setting"]: r for r in semi if r["labels"] == n and r["model"] == model}
        if {"semi-supervised", "labelled only"} <= set(pair):
            a, b = pair["semi-supervised"]["test_accuracy"], pair["labelled only"]["test_accuracy"]
            out.append(f"- `{model}`, {n} labels: {100 * a:.2f}% with the unlabelled images, {100 * b:.2f}% without: "
                       + ("the unlabelled images help." if a > b else f"**the unlabelled images do not help here**. {reason}"))
    if len(out) == header + 1:  # nothing to say: no sweep and no semi-supervised pair
        out.pop()
    return "\n".join(out)


def ood(record: dict, reason: str = PLACEHOLDER) -> str:
    out = []
    runs = record["runs"]
    for r in runs:
        out.append(f"**{r['direction']}**, `{r['model']}` (test bits/dim: in {r['test_bits_per_dim_in']:.3f}, out "
                   f"{r['test_bits_per_dim_out']:.3f}; {r['n_in']:,} / {r['n_out']:,} images; latent head accuracy "
                   f"{100 * r['head_test_accuracy']:.1f}%)\n")
        out.append(markdown_table(["scorer", "AUROC", "AUPR-in", "AUPR-out", "FPR95-in", "FPR95-out"],
                                  [[name, fmt(m["auroc"], 3), fmt(m["aupr_in"], 3), fmt(m["aupr_out"], 3),
                                    # results written before the rename hold the in-positive one as "fpr95"
                                    fmt(m.get("fpr_at_95_tpr_in", m.get("fpr95")), 3), fmt(m.get("fpr_at_95_tpr_out"), 3)]
                                   for name, m in r["metrics"].items()]))
        out.append("")
    out.append("Inliers are the positive class; AUROC 0.5 is chance, below 0.5 the scorer ranks the outliers as more "
               "typical. Max-softmax and entropy use a logistic-regression head on the frozen latent.\n")
    out.append("**Against the literature** (Nalisnick et al. 2019: a Fashion-MNIST flow rates MNIST as more likely; "
               "typicality, likelihood ratios and input complexity repair it):\n")
    for r in runs:
        lik = r["metrics"].get("loglik", {}).get("auroc")
        best_name, best = max(r["metrics"].items(), key=lambda kv: kv[1]["auroc"])
        if r["in_dataset"] == "fashionmnist" and lik is not None:
            out.append(f"- {r['direction']}, `{r['model']}`: log-likelihood AUROC {lik:.3f} "
                       + ("(below 0.5: the known failure reproduces)" if lik < 0.5
                          else f"(**above 0.5: the known failure does not reproduce here**; {reason})")
                       + f"; best scorer {best_name} ({best['auroc']:.3f}).")
        else:
            out.append(f"- {r['direction']}, `{r['model']}`: log-likelihood AUROC {fmt(lik, 3)}; best scorer "
                       f"{best_name} ({best['auroc']:.3f}).")
    return "\n".join(out)


def scaling(record: dict, image: str | None, reason: str = PLACEHOLDER) -> str:
    rows, fits = record["rows"], record["fits"]
    out = [f"{record.get('channels', 3)}-channel images, batch {record.get('batch')}; MixerFlow keeps patch "
           f"{record.get('mixerflow_patch', 4)}, so its number of patches grows with the pixels. Medians of "
           "interleaved repeats.\n",
           markdown_table(["model", "size", "patches", "params", "train step ms/image", "log_prob ms/image"],
                          [[f"`{r['model']}`", f"{r['size']}x{r['size']}", fmt(r.get("n_patches")), fmt(r["params"]),
                            fmt(1e3 * r["train_s_per_image"], 3), fmt(1e3 * r["log_prob_s_per_image"], 3)] for r in rows]),
           "\nSlopes of log(time per image) and log(parameters) against log(pixels) (1 = linear):\n",
           markdown_table(["model", "train-step slope", "log_prob slope", "params slope", "train time ratio, largest / smallest"],
                          [[f"`{m}`", fmt(f["train_slope"], 2), fmt(f["log_prob_slope"], 2), fmt(f["params_slope"], 2),
                            f"{f['train_ratio_largest_to_smallest']:.1f}x for {f['pixel_ratio_largest_to_smallest']:.0f}x pixels"]
                           for m, f in fits.items()])]
    if image:
        out.append(f"\n![time per image and parameters against image size, log-log]({image})\n")
    out.append("**Against the paper** (cost linear in the number of patches):\n")
    for model, f in fits.items():
        if f["train_slope"] is None:
            continue
        if "mixerflow" in model:
            s = f["train_slope"]
            verdict = ("agrees (close to linear)." if 0.8 <= s <= 1.2 else
                       "sub-linear at these sizes (fixed per-call costs dominate small images); not a contradiction."
                       if s < 0.8 else f"**super-linear: disagrees with the paper**. {reason}")
            out.append(f"- `{model}`: train-step time per image grows with slope {s:.2f} "
                       f"(log_prob {f['log_prob_slope']:.2f}) against pixels: {verdict}")
        else:
            out.append(f"- `{model}`: slope {f['train_slope']:.2f} (log_prob {f['log_prob_slope']:.2f}).")
    return "\n".join(out)


# --------------------------------------------------------------------------- document


def eval_noise(record: dict) -> str:
    """The test bits/dim of each model under both evaluation noises, over several seeds."""
    rows = [[r["dataset"], f"`{r['model']}`", f"{r['test_examples']:,}", f"{r['shared']['means'][0]:.4f}",
             f"{r['shared']['mean']:.4f} ({r['shared']['seed_sd']:.4f})",
             f"{r['per_image']['mean']:.4f} ({r['per_image']['seed_sd']:.5f})", f"{r['per_image']['sem']:.4f}",
             f"{r['moved_by']:+.4f}"] for r in record["runs"]]
    header = ("| dataset | model | test images | shared noise, seed 0 (the old default) | shared: mean (sd over "
              f"{record['seeds']} seeds) | per-image: mean (sd over seeds) | SEM over images | moved by |")
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|"] + ["| " + " | ".join(r) + " |" for r in rows]
    worst = max(record["runs"], key=lambda r: r["shared"]["seed_sd"] / max(r["per_image"]["sem"], 1e-12))
    lines += ["", f"With one shared noise image the test-set mean moved with the seed by up to "
                  f"{max(r['shared']['seed_sd'] for r in record['runs']):.4f} bits/dim (sd over seeds; "
                  f"{worst['shared']['seed_sd'] / worst['per_image']['sem']:.1f}x the SEM for `{worst['model']}`); "
                  f"with per-image noise by at most {max(r['per_image']['seed_sd'] for r in record['runs']):.5f}. "
                  f"'Moved by' is the per-image mean minus the old default figure (shared noise, seed 0): the "
                  "amount by which figures measured before issue 15 move."]
    return "\n".join(lines)


def memory_depth(record: dict) -> str:
    """Peak training-step memory and step time against depth, with and without invertible backprop."""
    st = record["settings"]
    lines = [f"- Command: `python bench/memory_depth.py` (wall time {record['wall_s']:.0f} s; {record['cpu_count']} "
             f"CPUs, {st['threads']} thread, device {st['device']}, load average {record['load_average'][0]:.1f})",
             f"- Setting: `{st['backbone']}` at {st['shape']}, batch {st['batch']}, hidden {st['hidden']}, "
             f"{st['steps_per_layer']} steps per layer (narrower than the paper's so that a CPU run fits); memory is "
             "the rise of peak memory during one training step, each setting in a fresh process; step time is CPU "
             f"time, both paths in turns in one process, median of {st['rounds']} rounds", "",
             "| layers | params | peak step memory, ordinary (MB) | with invertible_backprop (MB) | memory ratio "
             "| step CPU s, ordinary | with invertible_backprop | time ratio, median (range) | rebuilt input error |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    times = {t["depth"]: t for t in record["step_times"]}
    for depth in sorted(times):
        plain, inv = (next(m for m in record["memory"] if m["depth"] == depth and m["invertible_backprop"] is flag)
                      for flag in (False, True))
        t = times[depth]
        lines.append(f"| {depth} | {plain['params']:,} | {plain['peak_step_mb']:.0f} | {inv['peak_step_mb']:.0f} | "
                     f"{inv['peak_step_mb'] / plain['peak_step_mb']:.2f} | {t['step_cpu_s']:.2f} | "
                     f"{t['step_cpu_s_invertible']:.2f} | {t['time_ratio_median']:.2f} "
                     f"({min(t['time_ratios']):.2f}-{max(t['time_ratios']):.2f}) | {inv['reconstruction_error']:.1e} |")
    return "\n".join(lines)


def stream_memory(record: dict) -> str:
    """Peak RSS of one pass over an on-disk dataset as it grows, against a memory map."""
    c, h, w = record["image_shape"]
    lines = [f"- Command: `python {record['command']}` (each size in a fresh process, peak RSS from getrusage; "
             f"{c}x{h}x{w} uint8 images, batch {record['batch_size']}; {record['machine']})", "",
             "| images | data (GB) | BatchSource peak RSS (MB) | its time (s) | np.load(mmap) peak RSS (MB) | its time "
             "(s) | the data in memory (MB) |", "|---:|---:|---:|---:|---:|---:|---:|"]
    rows = record["rows"]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['data_gb']:.2f} | {r['stream_peak_rss_mb']:.1f} | {r['stream_seconds']:.1f} | "
                     f"{r['mmap_peak_rss_mb']:.1f} | {r['mmap_seconds']:.1f} | {r['in_memory_mb']:.0f} |")
    grow = rows[-1]["stream_peak_rss_mb"] - rows[0]["stream_peak_rss_mb"]
    lines += ["", f"From {rows[0]['n']:,} to {rows[-1]['n']:,} images the streaming reader's peak RSS grew by "
                  f"{grow:.1f} MB (the ~670 MB floor is torch and hybridflow imported); a memory map grew with the "
                  "data, because every page it touched stays counted in the process's RSS."]
    return "\n".join(lines)


def gpu_throughput(record: dict) -> str:
    """Train and log_prob images/s and peak GPU memory of each model (``bench/throughput.py --device cuda``)."""
    lines = [f"- Command: `python bench/throughput.py {' '.join(record.get('argv', []))}` ({record.get('time')}; "
             f"torch {record.get('torch')})", "",
             "| model | shape | params | batch | train img/s | log_prob img/s | peak GPU memory (MB) | device |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    lines += [f"| `{r['model']}` | {r['shape']} | {r['params']:,} | {r['batch']} | {r['train_img_s']:.0f} | "
              f"{r['log_prob_img_s']:.0f} | {r['peak_mem_mb']:.0f} | {r['device']} |" for r in record["rows"]]
    return "\n".join(lines)


def time_to_quality(records: list[dict], images: list[str]) -> str:
    """Final test bits/dim and minutes to the target model's final figure, per model and dataset
    (one JSON per dataset: time_to_quality.json, time_to_quality_<dataset>.json)."""
    lines = []
    for rec in records:
        summary, parallel = rec["summary"], rec.get("parallel", 1)
        threads = "one torch thread each, two runs at a time" if parallel > 1 else "all threads, one run at a time"
        name = Path(rec["plot"]).stem if rec.get("plot") else rec["dataset"]  # the --name: which run this is
        lines += [f"**{name}**, {rec['dataset']}: target {summary['target_bits_per_dim']:.3f} bits/dim, the final figure of "
                  f"`{summary['target_model']}` ({threads}; curve on {rec['runs'][0]['curve_examples']:,} test "
                  f"images every {rec.get('every', 30):g} s of training, final figure on the full test set)", "",
                  "| model | params | test bits/dim at the end | steps | epochs | train img/s | minutes to target |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in rec["runs"]:
            t = r["train"]
            reached = "not reached" if r["minutes_to_target"] is None else f"{r['minutes_to_target']:.2f}"
            lines.append(f"| `{r['model']}` | {r['params']:,} | {r['test_bits_per_dim']:.3f} | {t['steps']:,} | "
                         f"{t['epochs']:.2f} | {t['images_per_s']:.0f} | {reached} |")
        lines.append("")
    lines += [f"![test bits/dim against training minutes]({image})" for image in images]
    return "\n".join(lines).rstrip()


def hybrid_frontier(record: dict, image: str | None, more: list[dict] = ()) -> str:
    """Accuracy and bits/dim of each hybrid run and the discriminative baseline, same budget; ``more``:
    the runs on other datasets (hybrid_frontier_<dataset>.json), a table each."""
    extra = [hybrid_frontier(r, None) for r in more]
    parallel, one_thread = record.get("parallel", 1), record["settings"].get("threads") == 1
    threads = ("one torch thread each, two runs at a time" if parallel > 1
               else "one torch thread" if one_thread else "all threads, one run at a time")
    load = record.get("machine", {}).get("loadavg")
    when = f"run {record.get('date', '?')[:16]}" + (f", load average at the end {load[0]:.2f}" if load else "")
    lines = [f"**{record['dataset']}** ({when}), every run {record['settings']['minutes']:g} minutes ({threads}); "
             "full test set. "
             "head: what the linear head reads (latent: the flattened latent, the library's HybridModel; hidden: "
             "the conditioners' hidden units pooled over the rows that share them, read in the same pass)."
             + (f" {record['note'][0].upper()}{record['note'][1:]}." if record.get("note") else ""), "",
             "| run | head | lambda | params | test accuracy (%) | test bits/dim | steps | epochs |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in record["runs"]:
        t = r["train"]
        lam = "-" if r["lam"] is None else f"{r['lam']:g}"
        bpd = "-" if r["test_bits_per_dim"] is None else f"{r['test_bits_per_dim']:.3f}"
        lines.append(f"| `{r['run']}` | {r['head']} | {lam} | {r['params']:,} | {100 * r['test_accuracy']:.2f} | "
                     f"{bpd} | {t['steps']:,} | {t['epochs']:.2f} |")
    lines += [line for text in extra for line in ("", text)]
    if image:
        lines += ["", f"![accuracy against bits/dim]({image})"]
    return "\n".join(lines)


def ood_reference(record: dict) -> str:
    """AUROC and FPRs of every scorer and reference on Fashion-MNIST -> MNIST."""
    m = record["machine"]
    lines = [f"- Command: `{record['command']}` ({record['date']}, wall time {record['wall_seconds']:.0f} s; "
             f"{m.get('nproc')} CPUs, {m.get('threads')} torch thread; commit {record['git'].get('commit', '?')[:7]})",
             f"- Foreground: `{record['foreground']}`; {record['limit']:,} test images of Fashion-MNIST (in) and of "
             "MNIST (out). Each reference trained for the foreground's 1,500 steps: "
             + "; ".join(f"{r['reference']} ({r['params']:,} params, {r['train_images']:,} training images, batch "
                         f"{r['batch_size']})" for r in record["references"]), "",
             "| scorer | AUROC | AUPR-in | AUPR-out | FPR@95%TPR, inliers positive | outliers positive |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['scorer']} | {r['auroc']:.3f} | {r['aupr_in']:.3f} | {r['aupr_out']:.3f} | "
              f"{r['fpr_at_95_tpr_in']:.3f} | {r['fpr_at_95_tpr_out']:.3f} |" for r in record["rows"]]
    return "\n".join(lines)


def calibration(record: dict) -> str:
    """Expected calibration error, whether the density flags the classifier's errors, and the reject option."""
    c, r, m = record["calibration"], record["reject"], record["machine"]
    lines = [f"- Command: `{record['command']}` ({record['date']}, wall time {record['wall_seconds']:.0f} s; "
             f"{m.get('nproc')} CPUs, {m.get('threads')} torch thread)", "",
             f"`{record['model']}` on the {c['test_images']:,} MNIST test images: accuracy {100 * c['accuracy']:.2f}%, "
             f"expected calibration error (15 bins) {c['ece_15_bins']:.4f}; {c['errors']} errors, "
             f"{c['confidently_wrong_p_gt_0_9']} of them with confidence above 0.9. Bits/dim of correct, wrong and "
             f"confidently wrong images: {c['bpd_correct']:.3f}, {c['bpd_wrong']:.3f}, {c['bpd_confidently_wrong']:.3f}; "
             f"AUROC of bits/dim at telling wrong from correct {c['auroc_bpd_wrong_vs_correct']:.3f} (confidently "
             f"wrong: {c['auroc_bpd_confidently_wrong_vs_correct']:.3f}).", "",
             f"`predict_or_reject`: threshold at the {r['quantile']:g} quantile of {r['calibration_images']:,} training "
             "images' scores; MNIST test (in) against the 10,000 Fashion-MNIST test images (out).", "",
             "| OOD score | MNIST kept | accuracy on kept | accuracy on all | Fashion-MNIST rejected | AUROC |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {name} | {100 * v['mnist_kept']:.2f}% | {100 * v['accuracy_kept']:.2f}% | {100 * v['accuracy_all']:.2f}% | "
              f"{100 * v['fashion_rejected']:.2f}% | {v['auroc_mnist_vs_fashion']:.3f} |" for name, v in r["scorers"].items()]
    return "\n".join(lines)


def precision(records: list[dict]) -> str:
    """Per CPU: seconds per training step with float32 and with bfloat16 conditioners, and their ratio."""
    lines = []
    for record in records:
        m = record["machine"]
        native = "native bfloat16" if m["native_bfloat16"] else "no bfloat16 units (emulated)"
        lines += [f"- Command: `{record['command']}` ({record['date']}, wall time {record['wall_seconds']:.0f} s; "
                  f"CPU {m['cpu']} ({m['capability']}, {native}), {m['nproc']} CPUs, {m['threads']} torch thread)", "",
                  "| model | batch | float32 step (s) | bfloat16 step (s) | bfloat16 / float32, median (range) "
                  "| log_prob: bfloat16 / float32 |",
                  "|---|---:|---:|---:|---:|---:|"]
        for row in record["rows"]:
            steps, scores = row["train_seconds"], row["log_prob_seconds"]
            ratios = [b / f for f, b in steps]
            lines.append(f"| {row['model']} | {row['batch']} | {statistics.median(f for f, _ in steps):.3f} "
                         f"| {statistics.median(b for _, b in steps):.3f} | {statistics.median(ratios):.2f} "
                         f"({min(ratios):.2f}-{max(ratios):.2f}) | {statistics.median(b / f for f, b in scores):.2f} |")
        lines.append("")
    return "\n".join(lines).rstrip()


def load_notes(path: Path = NOTES) -> dict[str, str]:
    """The hand-written discussion of each section: ``## <section>`` blocks of ``bench/notes.md``."""
    if not path.exists():
        return {}
    notes, current = {}, None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            notes[current] = ""
        elif current is not None:
            notes[current] += line + "\n"
    return {k: v.strip() for k, v in notes.items() if v.strip()}


def render(results_dir: Path, out_path: Path, notes_path: Path = NOTES) -> str:
    notes = load_notes(notes_path)
    def image(record: dict | None) -> str | None:
        if not record or not record.get("plot") or not (results_dir / record["plot"]).exists():
            return None
        return os.path.relpath(results_dir / record["plot"], out_path.parent)

    parts = ["# Benchmarks",
             "",
             "The paper's claims (MixerFlow, `../shared/paper`) measured at CPU scale, side by side with our Glow and "
             "normflows' Glow, on the real data in `../shared/data`. Every figure below is rendered from "
             f"`{os.path.relpath(results_dir, ROOT)}/*.json` by `python bench/render.py`; all of them are regenerated, "
             f"sequentially, by one command:",
             "",
             "```bash",
             RUN_ALL,
             "```",
             "",
             "The machine is shared with other jobs: absolute timings are noisy; compare the ratios measured within "
             "one run (every timing is a median of repeats, models timed in turns). Each section names its command, "
             "date and machine."]
    sources = {}
    for name, title, command in SECTIONS:
        record = load(results_dir, name)
        sources[name] = record
        parts += ["", f"## {title}", ""]
        if record is None:
            if name == "gpu_throughput":
                parts.append("_Not yet measured: no GPU has been lent to a session of this project so far. On a "
                             "CUDA machine run `python bench/throughput.py --device cuda --batch 64 --shapes 3x32x32 "
                             "--models mixerflow_cifar10,glow_cifar10 --json bench/results/gpu_throughput.json` "
                             "(train and log_prob images/s, peak GPU memory); the section then shows that file._")
            else:
                parts.append(f"_Not yet run: `{command}` (or `{RUN_ALL}`)._")
            continue
        if name not in OWN_PROVENANCE:
            parts += [provenance(record, training=name != "scaling"), ""]
        discussion = notes.get(name) if not record.get("smoke") else None  # notes describe the real run
        # where a result disagrees with the paper, the sentence points to the discussion
        reason = "(likely reason: see the discussion below)" if discussion else PLACEHOLDER
        try:
            if name == "density":
                parts.append(density(record, reason))
                sweeps = [load(results_dir, p.stem) for p in sorted(results_dir.glob("density_tuning*.json"))]
                if sweeps:
                    parts += ["", tuning(sweeps)]
            elif name == "permutations":
                parts.append(permutations(record, reason))
                for p in sorted(results_dir.glob("permutations_cpu_default*.json")):  # the newer default's models
                    more = load(results_dir, p.stem)
                    if more:
                        parts += ["", f"### {p.stem}", "", provenance(more), "", permutations(more, reason)]
            elif name == "embeddings":
                parts.append(embeddings(record, reason))
                digits = load(results_dir, "embeddings_features_digits")
                if digits and not digits.get("smoke"):
                    parts += ["", embedding_features(digits)]
            elif name == "hybrid_tradeoff":
                parts.append(hybrid(record, image(record), reason))
                for p in sorted(results_dir.glob("hybrid_tradeoff_*.json")):  # longer-budget runs beside it
                    more = load(results_dir, p.stem)
                    if more:
                        parts += ["", f"### {p.stem}", "", provenance(more), "", hybrid(more, image(more), reason)]
            elif name == "ood":
                parts.append(ood(record, reason))
                for p in sorted(results_dir.glob("ood_cpu_default*.json")):  # the newer default's models
                    more = load(results_dir, p.stem)
                    if more:
                        parts += ["", f"### {p.stem}", "", provenance(more), "", ood(more, reason)]
            elif name == "scaling":
                parts.append(scaling(record, image(record), reason))
            elif name == "eval_noise":
                parts.append(eval_noise(record))
            elif name == "memory_depth":
                parts.append(memory_depth(record))
            elif name == "stream_memory":
                parts.append(stream_memory(record))
            elif name == "gpu_throughput":
                parts.append(gpu_throughput(record))
            elif name == "calibration":
                parts.append(calibration(record))
            elif name == "precision":
                more = [load(results_dir, p.stem) for p in sorted(results_dir.glob("precision_*.json"))]
                parts.append(precision([record] + [r for r in more if r]))
            elif name == "ood_reference":
                parts.append(ood_reference(record))
            elif name == "hybrid_frontier":
                files = sorted(results_dir.glob("hybrid_frontier_*.json"))
                more = [r for r in (load(results_dir, p.stem) for p in files) if r]
                parts.append(hybrid_frontier(record, image(record), [r for r in more if not r.get("replot")]))
                for r in (r for r in more if r.get("replot") and image(r)):  # one plot over several files' runs
                    parts += ["", f"**{r['dataset']}, every run above in one plot** (`{r['command']}`; from "
                              + ", ".join(f"`{name}`" for name in r["replot"]) + ")", "",
                              f"![accuracy against bits/dim]({image(r)})"]
            elif name == "time_to_quality":
                more = [load(results_dir, p.stem) for p in sorted(results_dir.glob("time_to_quality_*.json"))]
                records = [record] + [r for r in more if r]
                parts.append(time_to_quality(records, [i for i in map(image, records) if i]))
        except (KeyError, TypeError, ValueError) as error:
            parts.append(f"_The JSON could not be rendered ({type(error).__name__}: {error}); rerun `{command}`._")
        if discussion:
            parts += ["", "**Discussion** (written by hand after reading the numbers above):", "", discussion]
    parts.append("")
    text = "\n".join(parts)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text)
    return text


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = p.parse_args(argv)
    text = render(Path(args.results_dir).resolve(), Path(args.out).resolve())
    print(f"wrote {args.out} ({len(text.splitlines())} lines)", file=sys.stderr)
    return text


if __name__ == "__main__":
    main()
