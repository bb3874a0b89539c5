#!/usr/bin/env bash
# Regenerate every figure of BENCHMARKS.md, one benchmark after another, then render it.
#
#   bench/run_all.sh                       # full budget: --minutes 10 per training run, 2 threads
#   bench/run_all.sh --minutes 3 density permutations render      # some sections only
#   bench/run_all.sh --smoke               # seconds per benchmark; JSON to bench/results/smoke/
#   bench/run_all.sh tune                  # optional: a MixerFlow tuning sweep on MNIST (density_tuning.json)
#
# Sections (default: all but tune, in this order): density permutations embeddings hybrid ood scaling render.
# At --minutes 10 on 2 shared cores: 37 training runs of 10 minutes plus evaluation, probes and
# scoring, about 8 hours (density ~1 h, permutations ~2 h, embeddings ~1.5 h, hybrid ~1.8 h,
# ood ~1.5 h, scaling ~5 min). Logs go to runs/bench/logs/. Trained models are kept in
# runs/bench/ and reused by embeddings and ood (same specs and settings as density).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
MINUTES=10
THREADS=2
EXTRA=()
SECTIONS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) MINUTES=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --smoke) EXTRA+=(--smoke); shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) SECTIONS+=("$1"); shift ;;
  esac
done
if [[ ${#SECTIONS[@]} -eq 0 ]]; then
  SECTIONS=(density permutations embeddings hybrid ood scaling render)
fi

LOGS=runs/bench/logs
mkdir -p "$LOGS"
COMMON=(--minutes "$MINUTES" --threads "$THREADS" ${EXTRA[@]+"${EXTRA[@]}"})
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
    density) run density "${COMMON[@]}" ;;
    permutations) run permutations "${COMMON[@]}" ;;       # unshuffled numbers from density.json
    embeddings) run embeddings "${COMMON[@]}" --reuse ;;   # Fashion-MNIST models from density
    hybrid|hybrid_tradeoff) run hybrid_tradeoff "${COMMON[@]}" ;;
    ood) run ood "${COMMON[@]}" --reuse ;;                 # MNIST / Fashion-MNIST models from density
    scaling) run scaling "${COMMON[@]}" ;;                 # --minutes caps its timing phase
    tune)
      run density "${COMMON[@]}" --datasets mnist --name density_tuning --timing-repeats 0 --models \
        "mixerflow_tiny" "mixerflow_tiny:lr=2e-3" "mixerflow_tiny:lr=2e-3,batch_size=64" \
        "mixerflow_tiny:num_layers=12,hidden=48,lr=2e-3" "mixerflow_tiny:num_layers=6,hidden=96,lr=2e-3" ;;
    render) "$PYTHON" bench/render.py --results-dir "$RESULTS" --out "$OUT" ;;
    *) echo "unknown section $section (density permutations embeddings hybrid ood scaling render tune)" >&2; exit 2 ;;
  esac
done
