#!/usr/bin/env bash
# slurm-suite.sh — the real-cluster tests of `diffnmf sweep --executor slurm` (run by CI
# through scripts/test-all.sh; needs root to install slurm-wlm + munge with apt if missing).
#
#  1. starts a one-node Slurm cluster (scripts/slurm-local.sh),
#  2. submits sweeps/smoke.yaml as a job array, polls until it and the chained aggregation
#     job finish, and checks every cell's result (opened), the stage-cache counts, the task
#     thread count and that the aggregation job ran after the array,
#  3. submits a slowed-down copy (a `sleep` setup line), scancels one running task, checks
#     that status reports it failed and that `--resume` resubmits exactly that cell and
#     leaves every finished cell untouched,
#  4. stops the cluster.
# Prints one PASS/FAIL line per check and exits non-zero if any check failed.
# Environment: DIFFNMF_BIN (binary to test; default: cargo build, debug profile),
# DIFFNMF_SLURM_DIR (cluster state dir), KEEP_CLUSTER=1 (leave the cluster running).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$(date +%s%N)
secs() { local ms=$(( ($(date +%s%N) - $1) / 1000000 )); echo "$((ms / 1000)).$(( (ms % 1000) / 100 ))s"; }
FAILS=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
check() { local what="$1"; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }

if [ -z "${DIFFNMF_BIN:-}" ]; then
  export CMAKE="${CMAKE:-$ROOT/scripts/cmake-shim.sh}"
  cargo build --bin diffnmf -q || { echo "FAIL: cargo build"; exit 1; }
  DIFFNMF_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/diffnmf"
fi
BIN=$(realpath "$DIFFNMF_BIN")
WORK=$(mktemp -d /tmp/diffnmf-slurm-suite.XXXXXX)

t=$(date +%s%N)
# 4 advertised CPUs: 4 one-CPU tasks at once on a 2-core CI machine (the cells are tiny)
if ! bash scripts/slurm-local.sh start --cpus 4 >/dev/null; then
  echo "FAIL: starting the Slurm cluster"; exit 1
fi
echo "[suite] cluster started in $(secs "$t")"
source "${DIFFNMF_SLURM_DIR:-/tmp/diffnmf-slurm}/env.sh"
cleanup() { [ "${KEEP_CLUSTER:-0}" = 1 ] || bash scripts/slurm-local.sh stop >/dev/null 2>&1; }
trap cleanup EXIT

# wait until none of the given job ids is pending/running (max $1 seconds)
wait_jobs() {
  local max="$1"; shift
  local ids; ids=$(IFS=,; echo "$*")
  local end=$(( $(date +%s) + max ))
  while squeue -h -j "$ids" -t PD,R,CG,CF,S 2>/dev/null | grep -q .; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.3
  done
}
task_states() { squeue -h -t all -j "$1" -o '%i|%T' | sort; }
jobs_line() { sed -n "${2}p" "$1/slurm/jobs.txt"; }

# ---------------------------------------------------------------- 1. smoke sweep as an array
A=$WORK/smoke
t=$(date +%s%N)
"$BIN" sweep sweeps/smoke.yaml --executor slurm --out "$A" >/dev/null 2>"$WORK/submit1.log"
check "sweep --executor slurm submits sweeps/smoke.yaml" test -s "$A/slurm/jobs.txt"
read -r ARR AGG _ < <(jobs_line "$A" 1)
check "array and aggregation job ids recorded ($ARR, $AGG)" test -n "${AGG:-}"
check "array + aggregation finish within 300 s" wait_jobs 300 "$ARR" "$AGG"
echo "[suite] smoke array of 8 cells + aggregation done in $(secs "$t")"
check "rendered script has --array=0-7%4" grep -qx '#SBATCH --array=0-7%4' "$A/slurm/array.sbatch"
n_ok=$(task_states "$ARR" | grep -c '|COMPLETED$')
check "all 8 array tasks COMPLETED ($n_ok)" test "$n_ok" = 8
"$BIN" status "$A" --verify > "$WORK/status1.txt"
check "status --verify: every cell done and its result.h5 opens" grep -q 'done 8, running 0, pending 0, failed 0 (of 8)' "$WORK/status1.txt"
check "cells.csv lists 8 done cells" test "$(grep -c ',done$' "$A/cells.csv")" = 8
check "every cell has metrics.csv and job.yaml" test "$(ls "$A"/cells/*/metrics.csv "$A"/cells/*/job.yaml | wc -l)" = 16
check "shared cache built 2 CNNs and 4 NNMF models" grep -q 'cnn=2 denoiser=4 nnmf=4' "$WORK/status1.txt"
check "tasks sized their pool from SLURM_CPUS_PER_TASK=1" grep -q 'with 1 threads' "$A/slurm/logs/${ARR}_0.out"
AGG_STATE=$(squeue -h -t all -j "$AGG" -o %T)
check "aggregation job ran (state $AGG_STATE, not cancelled/pending)" \
  bash -c "[[ '$AGG_STATE' == COMPLETED || '$AGG_STATE' == FAILED ]]"
check "aggregation job ran after every cell finished (its status line)" \
  grep -q 'done 8, running 0, pending 0, failed 0 (of 8)' "$A/slurm/logs/aggregate_${AGG}.out"

# ---------------------------------------------------------------- 2. scancel one task, --resume
B=$WORK/slow
cat > "$WORK/slow.yaml" <<EOF
name: slow_smoke
base: $ROOT/jobs/smoke.yaml
axes:
  nnmf.k: [4, 8]
  attack.eps: [0.5, 3.0]
seeds: [1, 2]
slurm:
  time: "00:10:00"
  cpus_per_task: 1
  mem: 1G
  parallelism: 4
  setup: ["sleep 4"]
EOF
t=$(date +%s%N)
"$BIN" sweep "$WORK/slow.yaml" --executor slurm --out "$B" >/dev/null 2>"$WORK/submit2.log"
read -r ARR2 AGG2 _ < <(jobs_line "$B" 1)
victim=""
for _ in $(seq 1 200); do
  victim=$(squeue -h -j "$ARR2" -t R -o '%i' | head -1)
  [ -n "$victim" ] && break
  sleep 0.2
done
check "a task of the slow array is running ($victim)" test -n "$victim"
task=${victim#*_}
cell_index=$(sed -n "$((task + 1))p" "$B/slurm/order.txt")
scancel "$victim"
echo "[suite] cancelled task $victim (cell $cell_index)"
check "slow array finishes within 300 s" wait_jobs 300 "$ARR2" "$AGG2"
check "the cancelled task is CANCELLED" bash -c "squeue -h -t all -j '$victim' -o %T | grep -q CANCELLED"
"$BIN" status "$B" > "$WORK/status2.txt"
check "status: 7 done, 1 failed" grep -q 'done 7, running 0, pending 0, failed 1 (of 8)' "$WORK/status2.txt"
vid=$(sed -n "$((cell_index + 2))p" "$B/cells.csv" | cut -d, -f1)
check "status names the cancelled cell $vid as failed" grep -q "^$vid *failed *CANCELLED" "$WORK/status2.txt"
stat -c '%n %Y.%y' "$B"/cells/*/result.h5 | sort > "$WORK/mtimes-before.txt"
"$BIN" sweep "$WORK/slow.yaml" --executor slurm --out "$B" --resume >/dev/null 2>"$WORK/submit3.log"
check "--resume wrote resume-1.txt with exactly the cancelled cell" \
  bash -c "[ \"\$(cat '$B/slurm/resume-1.txt')\" = '$cell_index' ]"
check "--resume rendered a one-task array" grep -qx '#SBATCH --array=0-0%4' "$B/slurm/resume-1.sbatch"
read -r ARR3 AGG3 _ < <(jobs_line "$B" 2)
check "resubmission finishes within 300 s" wait_jobs 300 "$ARR3" "$AGG3"
"$BIN" status "$B" --verify > "$WORK/status3.txt"
check "after --resume every cell is done and opens" grep -q 'done 8, running 0, pending 0, failed 0 (of 8)' "$WORK/status3.txt"
stat -c '%n %Y.%y' "$B"/cells/*/result.h5 | sort | grep -v "/$vid/" > "$WORK/mtimes-after.txt"
grep -v "/$vid/" "$WORK/mtimes-before.txt" > "$WORK/mtimes-before-others.txt"
check "no finished cell was recomputed (7 result.h5 mtimes unchanged)" \
  bash -c "[ \$(wc -l < '$WORK/mtimes-after.txt') = 7 ] && cmp -s '$WORK/mtimes-before-others.txt' '$WORK/mtimes-after.txt'"
check "the resumed array ran exactly one task" test "$(task_states "$ARR3" | wc -l)" = 1
echo "[suite] cancel + resume part done in $(secs "$t")"

echo "[suite] total $(secs "$T0"); work dir $WORK"
if [ "$FAILS" -gt 0 ]; then
  echo "slurm-suite: $FAILS check(s) FAILED (logs under $WORK)"; exit 1
fi
rm -rf "$WORK"
echo "slurm-suite: all checks PASSED"
