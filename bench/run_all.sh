#!/usr/bin/env bash
# Regenerate every figure of BENCHMARKS.md, one benchmark after another, then render it.
#
#   bench/run_all.sh --minutes 10 --short-minutes 1 --permutation-minutes 3   # what BENCHMARKS.md holds
#   bench/run_all.sh                       # full budget: --minutes 10 for every training run, 2 threads
#   bench/run_all.sh --minutes 3 density permutations render      # some sections only
#   bench/run_all.sh --smoke               # seconds per benchmark; JSON to bench/results/smoke/
#   bench/run_all.sh tune                  # optional: the tuning sweeps on MNIST (density_tuning*.json)
#
# Sections (default: all but tune, in this order): density permutations embeddings hybrid ood scaling render.
# --minutes is the budget of the density runs, whose models embeddings and ood reuse (runs/bench/);
# --short-minutes (default: --minutes) that of every other training run: the CIFAR-10 models of
# embeddings, the lambda sweep and semi-supervised runs, the likelihood-ratio references of ood;
# it also caps scaling's timing.
# --permutation-minutes (default: --short-minutes) is the budget of the shuffled runs and their
# unshuffled baselines (taken from density when it equals --minutes).
# Permutations compare MixerFlow with our Glow. At --minutes 10 alone on 2 cores: about 7 hours;
# with --short-minutes 1 --permutation-minutes 3: about 3.5 hours. Logs go to runs/bench/logs/.
#
# MIXER and GLOW (environment) are the MixerFlow and Glow specs of every section, default the
# specs tuned below; normflows' Glow keeps the issue's reference settings (batch 128, Adam 1e-3).
# Density also trains MIXER_BEST and GLOW_BEST: the same models with what the third and fourth
# sweeps found for the budget, bfloat16 conditioners and logit preprocessing (density_tuning3/4.json).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
MINUTES=10
SHORT=
PERM=
THREADS=2
# Tuned for a 10-minute CPU budget on MNIST (bench/results/density_tuning.json).
MIXER=${MIXER:-"mixerflow_tiny:lr=4e-3,batch_size=64"}
GLOW=${GLOW:-"glow_tiny:lr=3e-3"}
MIXER_BEST=${MIXER_BEST:-"mixerflow_tiny:lr=6e-3,batch_size=64,conditioner_dtype=bfloat16,preprocess=logit"}
GLOW_BEST=${GLOW_BEST:-"glow_tiny:lr=3e-3,conditioner_dtype=bfloat16,preprocess=logit"}
EXTRA=()
SECTIONS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) MINUTES=$2; shift 2 ;;
    --short-minutes) SHORT=$2; shift 2 ;;
    --permutation-minutes) PERM=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --smoke) EXTRA+=(--smoke); shift ;;
    -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) SECTIONS+=("$1"); shift ;;
  esac
done
if [[ ${#SECTIONS[@]} -eq 0 ]]; then
  SECTIONS=(density permutations embeddings hybrid ood scaling render)
fi

LOGS=runs/bench/logs
mkdir -p "$LOGS"
SHORT=${SHORT:-$MINUTES}
PERM=${PERM:-$SHORT}
COMMON=(--threads "$THREADS" ${EXTRA[@]+"${EXTRA[@]}"})
MODELS=(--models "$MIXER" "$GLOW" normflows_glow)
RESULTS=bench/results
OUT=BENCHMARKS.md
if [[ ${#EXTRA[@]} -gt 0 ]]; then RESULTS=bench/results/smoke; OUT=bench/results/smoke/BENCHMARKS.md; fi

run() {
  local name=$1; shift
  echo "== $(date '+%F %T') $PYTHON bench/$name.py $*" | tee "$LOGS/$name.log"
  "$PYTHON" "bench/$name.py" "$@" 2>&1 | tee -a "$LOGS/$name.log"
}

for section in "${SECTIONS[@]}"; do
  case "$section" in
    density) run density "${COMMON[@]}" --minutes "$MINUTES" --models "$MIXER" "$GLOW" "$MIXER_BEST" "$GLOW_BEST" \
      normflows_glow ;;
    # unshuffled baselines from density.json when the budgets agree, else rerun at the same budget
    permutations) run permutations "${COMMON[@]}" --minutes "$PERM" --models "$MIXER" "$GLOW" ;;
    # Fashion-MNIST models from density; CIFAR-10 models trained for --short-minutes
    embeddings) run embeddings "${COMMON[@]}" --minutes "$MINUTES" --reuse --fresh-minutes "$SHORT" "${MODELS[@]}" ;;
    hybrid|hybrid_tradeoff) run hybrid_tradeoff "${COMMON[@]}" --minutes "$SHORT" --models "$MIXER" ;;
    # MNIST / Fashion-MNIST models from density; likelihood-ratio references for --short-minutes
    ood) run ood "${COMMON[@]}" --minutes "$MINUTES" --reuse --ref-minutes "$SHORT" "${MODELS[@]}" ;;
    scaling) run scaling "${COMMON[@]}" --minutes "$SHORT" ;;   # --minutes caps its timing phase
    tune)   # the two sweeps behind the tuned MIXER and GLOW specs, 4 minutes per run
      run density "${COMMON[@]}" --minutes 4 --datasets mnist --name density_tuning --timing-repeats 0 --models \
        mixerflow_tiny "mixerflow_tiny:lr=3e-3" "mixerflow_tiny:lr=2e-3,batch_size=64" \
        "mixerflow_tiny:patch_size=7,lr=2e-3" "mixerflow_tiny:num_layers=12,hidden=48,lr=2e-3" glow_tiny
      run density "${COMMON[@]}" --minutes 4 --datasets mnist --name density_tuning2 --timing-repeats 0 --models \
        "mixerflow_tiny:lr=5e-3" "mixerflow_tiny:lr=4e-3,batch_size=64" "glow_tiny:lr=3e-3"
      run density "${COMMON[@]}" --minutes 4 --datasets mnist --name density_tuning3 --timing-repeats 0 --models \
        "mixerflow_tiny:lr=4e-3,batch_size=64,conditioner_dtype=bfloat16" \
        "mixerflow_tiny:lr=6e-3,batch_size=64,conditioner_dtype=bfloat16" "mixerflow_tiny:lr=4e-3,batch_size=64"
      run density "${COMMON[@]}" --minutes 4 --datasets mnist --name density_tuning4 --timing-repeats 0 --models \
        "mixerflow_tiny:lr=8e-3,batch_size=64,conditioner_dtype=bfloat16" \
        "mixerflow_tiny:lr=6e-3,batch_size=64,conditioner_dtype=bfloat16,preprocess=logit" \
        "mixerflow_tiny:lr=1.2e-2,batch_size=64,conditioner_dtype=bfloat16" ;;
    render) "$PYTHON" bench/render.py --results-dir "$RESULTS" --out "$OUT" ;;
    *) echo "unknown section $section (density permutations embeddings hybrid ood scaling render tune)" >&2; exit 2 ;;
  esac
done
