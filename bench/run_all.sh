#!/usr/bin/env bash
# Regenerate every figure of BENCHMARKS.md, one benchmark after another, then render it.
#
#   bench/run_all.sh --minutes 10 --short-minutes 1   # what BENCHMARKS.md holds
#   bench/run_all.sh                       # full budget: --minutes 10 for every training run
#   bench/run_all.sh --minutes 3 quality density render      # some sections only
#   bench/run_all.sh --smoke               # seconds per benchmark; JSON to bench/results/smoke/
#   bench/run_all.sh tune                  # optional: the tuning sweeps on MNIST (density_tuning*.json)
#
# Sections (default: all but tune, in this order):
#   quality density permutations embeddings hybrid frontier ood scaling precision render.
# quality trains MIXER, GLOW, normflows' Glow and one MixerFlow variant for --minutes on MNIST,
# Fashion-MNIST and the CIFAR-10 subset, two at a time with one torch thread each (a 10-minute run
# is 10 minutes of one core), measuring test bits/dim along the way (time to quality). Every model
# it trains is saved under runs/bench/, where density, embeddings and ood find it (--reuse): one
# training run per (model, dataset) serves the density table, the probes and the OOD scores.
# --short-minutes (default: --minutes) is the budget of the 1-minute lambda sweep and semi-supervised
# runs of section 4 (hybrid also reruns the semi-supervised runs at --minutes); it caps scaling's timing.
# --permutation-minutes (default: --minutes) is the budget of the shuffled runs, two at a time on one
# thread each; their unshuffled baselines come from density when the budgets agree.
# At --minutes 10 on 2 cores: quality about 1.2 hours, permutations 45 minutes, the rest about 2 hours.
# Logs go to runs/bench/logs/.
#
# MIXER and GLOW (environment) are the MixerFlow and Glow specs of every section, default the
# specs tuned for the budget with the same tricks for both (bfloat16 conditioners, logit
# preprocessing; density_tuning*.json); normflows' Glow keeps the issue's reference settings
# (batch 128, Adam 1e-3). VARIANT is the MixerFlow variant of quality (width against depth).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
MINUTES=10
SHORT=
PERM=
THREADS=1
# Tuned for a 10-minute CPU budget on MNIST (bench/results/density_tuning*.json), then issue 20's
# winners: variational dequantisation for both, 3 channel-mixing steps per patch-mixing step for
# MixerFlow (bench/results/half_budget_mnist_jet.json). BENCHMARKS.md sections other than 11 were
# measured with the previous specs, MIXER and GLOW without those keys (each table names its spec).
# Then each model's best Adam: betas (0.9, 0.99), MixerFlow at 8e-3 (bench/results/time_to_quality_tuning*.json;
# our Glow's best rate is 4e-3 on MNIST and 3e-3 on Fashion-MNIST: 3e-3 is kept).
# conditioner_dtype=auto: bfloat16 where the CPU computes it natively, float32 on AVX2-only CPUs, where
# bfloat16 is emulated and about 4x slower (bench/precision.py, section 15); the earlier tables ran bfloat16.
MIXER=${MIXER:-"mixerflow_wide:dequantization=variational,steps=3,patch_steps=1,lr=8e-3,beta2=0.99,batch_size=64,conditioner_dtype=auto,preprocess=logit"}
GLOW=${GLOW:-"glow_tiny:lr=3e-3,beta2=0.99,conditioner_dtype=auto,preprocess=logit,dequantization=variational"}
VARIANT=${VARIANT:-"mixerflow_wide:num_layers=3,hidden=112,lr=6e-3,batch_size=64,conditioner_dtype=bfloat16,preprocess=logit"}
MIXER_HIDDEN=${MIXER/mixerflow_wide:/mixerflow_wide:head=hidden,}        # bench/hybrid_frontier.py's key
MIXER_HEAD=${MIXER/mixerflow_wide:/mixerflow_wide:head_input=hidden,}     # HybridModel's, for the others
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
  SECTIONS=(quality density permutations embeddings hybrid frontier ood scaling precision render)
fi

LOGS=runs/bench/logs
mkdir -p "$LOGS"
SHORT=${SHORT:-$MINUTES}
PERM=${PERM:-$MINUTES}
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
    quality)
      run time_to_quality ${EXTRA[@]+"${EXTRA[@]}"} --parallel 2 --minutes "$MINUTES" --dataset mnist \
        "${MODELS[@]}" "$VARIANT"
      for dataset in fashionmnist cifar10; do
        run time_to_quality ${EXTRA[@]+"${EXTRA[@]}"} --parallel 2 --minutes "$MINUTES" --dataset "$dataset" \
          --name "time_to_quality_$dataset" "${MODELS[@]}" "$VARIANT"
      done ;;
    # the models quality trained (--reuse); throughput timed in turns
    density) run density "${COMMON[@]}" --minutes "$MINUTES" --reuse "${MODELS[@]}" ;;
    # unshuffled baselines from density.json when the budgets agree, else rerun at the same budget
    permutations) run permutations ${EXTRA[@]+"${EXTRA[@]}"} --parallel 2 --minutes "$PERM" --models "$MIXER" "$GLOW" ;;
    # Fashion-MNIST and CIFAR-10 models from quality; then the README's main job over four flows
    embeddings) run embeddings "${COMMON[@]}" --minutes "$MINUTES" --reuse --probe-seeds 0,1 "${MODELS[@]}"
      run embedding_features --datasets digits --train-seeds 0,1,2,3 --threads "$THREADS" ${EXTRA[@]+"${EXTRA[@]}"} ;;
    hybrid|hybrid_tradeoff) run hybrid_tradeoff "${COMMON[@]}" --minutes "$SHORT" --models "$MIXER"
      # 100 labels at the full budget: the hidden-unit head with and without the unlabelled images,
      # the two-stage probe on quality's MNIST flow (--reuse), and the latent head beside them
      run hybrid_tradeoff ${EXTRA[@]+"${EXTRA[@]}"} --parallel 2 --minutes "$MINUTES" --reuse --lambdas "" \
        --labels 100 --probe --models "$MIXER_HEAD" --name hybrid_tradeoff_ssl100
      run hybrid_tradeoff "${COMMON[@]}" --minutes "$MINUTES" --reuse --lambdas "" --labels 100 --semi-runs semi \
        --models "$MIXER" --name hybrid_tradeoff_ssl100_latent ;;
    frontier) run hybrid_frontier ${EXTRA[@]+"${EXTRA[@]}"} --parallel 2 --minutes "$MINUTES" --dataset mnist \
      --runs "$MIXER_HIDDEN@1" "$GLOW@1" "$MIXER@1" timm_mixer:lr=2e-3
      run hybrid_frontier ${EXTRA[@]+"${EXTRA[@]}"} --parallel 2 --minutes "$MINUTES" --dataset fashionmnist \
        --runs "$MIXER_HIDDEN@1" "$GLOW@1" --name hybrid_frontier_fashionmnist ;;
    # MNIST / Fashion-MNIST models from quality; the likelihood ratio's reference: a patch flow per dataset
    ood) run ood "${COMMON[@]}" --minutes "$MINUTES" --reuse --test-limit 2000 "${MODELS[@]}" ;;
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
    precision) run precision --threads 1 --out "$RESULTS/precision.json" ;;   # bfloat16 against float32 here
    render) "$PYTHON" bench/render.py --results-dir "$RESULTS" --out "$OUT" ;;
    *) echo "unknown section $section (quality density permutations embeddings hybrid frontier ood scaling precision render tune)" >&2
       exit 2 ;;
  esac
done
