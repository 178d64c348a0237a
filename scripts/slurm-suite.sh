#!/usr/bin/env bash
# slurm-suite.sh — the real-cluster tests of `diffnmf sweep --executor slurm` (run by CI
# through scripts/test-all.sh; needs root to install slurm-wlm + munge with apt if missing).
#
#  1. starts a one-node Slurm cluster (scripts/slurm-local.sh),
#  2. submits sweeps/smoke.yaml as a job array (into a folder with a `%` in its name), polls
#     until it and the chained aggregation job finish, and checks every cell's result
#     (opened), the stage-cache counts, the task thread count and that the aggregation job
#     ran after the array; then a copy split into 3 arrays (max_array_size 3): one shared
#     aggregation job, the arrays chained under `parallelism`, every task completed,
#  3. submits a slowed-down copy (a `sleep` setup line), scancels one running task, checks
#     that status reports it failed and that `--resume` resubmits exactly that cell and
#     leaves every finished cell untouched,
#  4. gives a stalled task a 1-minute --time limit: status names it TIMEOUT, --resume
#     resubmits exactly it and it continues from its per-ε checkpoint,
#  5. sends SIGUSR2 (what --signal=B:USR2@<grace> sends before the limit) to a stalled
#     task: it requeues itself and finishes with metrics identical to an uninterrupted run,
#  6. stops the cluster.
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
# (a `%` in the folder: the --output pattern must write it `%%`)
A="$WORK/smoke_100%"
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
check "tasks sized their pool from SLURM_CPUS_PER_TASK=1 (log under the %-folder)" grep -q 'with 1 threads' "$A/slurm/logs/${ARR}_0.out"
AGG_STATE=$(squeue -h -t all -j "$AGG" -o %T)
check "aggregation job ran (state $AGG_STATE, not cancelled/pending)" \
  bash -c "[[ '$AGG_STATE' == COMPLETED || '$AGG_STATE' == FAILED ]]"
check "aggregation job ran after every cell finished (its status line)" \
  grep -q 'done 8, running 0, pending 0, failed 0 (of 8)' "$A/slurm/logs/aggregate_${AGG}.out"

# ---------------------------------------------------------------- 1b. arrays split at the array limit
MAS=$(scontrol show config | awk '$1 == "MaxArraySize" {print $3}')
"$BIN" sweep sweeps/smoke.yaml --dry-run --out "$WORK/dry" > "$WORK/dry.txt" 2>&1
check "the dry run reads MaxArraySize $MAS from scontrol" grep -q "at most $MAS per array: MaxArraySize of \`scontrol show config\`" "$WORK/dry.txt"
E=$WORK/parts
cat > "$WORK/parts.yaml" <<EOF
name: parts_smoke
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
  max_array_size: 3
EOF
t=$(date +%s%N)
"$BIN" sweep "$WORK/parts.yaml" --executor slurm --out "$E" >/dev/null 2>"$WORK/submit-parts.log"
check "8 cells at max_array_size 3 are submitted as 3 arrays" test "$(wc -l < "$E/slurm/jobs.txt")" = 3
read -r P1 PAGG _ < <(jobs_line "$E" 1)
read -r P2 _ < <(jobs_line "$E" 2)
read -r P3 _ < <(jobs_line "$E" 3)
check "the 3 arrays share one aggregation job ($PAGG)" test "$(awk '{print $2}' "$E/slurm/jobs.txt" | sort -u)" = "$PAGG"
check "the arrays have 3, 3 and 2 tasks" bash -c "grep -qx '#SBATCH --array=0-2%4' '$E/slurm/array.sbatch' && grep -qx '#SBATCH --array=0-2%4' '$E/slurm/array-part2.sbatch' && grep -qx '#SBATCH --array=0-1%4' '$E/slurm/array-part3.sbatch'"
check "the 3 arrays + aggregation finish within 300 s" wait_jobs 300 "$P1" "$P2" "$P3" "$PAGG"
n_ok=$( (task_states "$P1"; task_states "$P2"; task_states "$P3") | grep -c '|COMPLETED$')
check "all 8 tasks of the 3 arrays COMPLETED ($n_ok)" test "$n_ok" = 8
p1_end=$(squeue -h -t all -j "$P1" -o %e | sort | tail -1)
p2_start=$(squeue -h -t all -j "$P2" -o %S | sort | head -1)
check "array 2 started after array 1 ended (parallelism: afterany chain; $p1_end <= $p2_start)" \
  bash -c "[[ '$p2_start' > '$p1_end' || '$p2_start' == '$p1_end' ]]"
check "the aggregation job ran after all 3 arrays" \
  grep -q 'done 8, running 0, pending 0, failed 0 (of 8)' "$E/slurm/logs/aggregate_${PAGG}.out"
echo "[suite] 3-array submission done in $(secs "$t")"

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

# ---------------------------------------------------------------- 3. a --time limit, then --resume
# Task 0 stalls once (test-only fault switch) and is killed by its 1-minute time limit.
Cdir=$WORK/limit
cat > "$WORK/limit.yaml" <<EOF
name: limit_smoke
base: $ROOT/jobs/smoke.yaml
axes:
  nnmf.k: [4, 8]
slurm:
  time: "00:01:00"
  cpus_per_task: 1
  mem: 1G
  signal_grace: 0
  setup: ['if [ "\$SLURM_ARRAY_TASK_ID" = 0 ] && rm "$WORK/stall-once" 2>/dev/null; then export DIFFNMF_FAULT=stall:attack_base_eps3; fi']
EOF
touch "$WORK/stall-once"
t=$(date +%s%N)
"$BIN" sweep "$WORK/limit.yaml" --executor slurm --out "$Cdir" >/dev/null 2>"$WORK/submit4.log"
read -r ARR4 _ < <(jobs_line "$Cdir" 1)
check "time-limit array finishes within 300 s" wait_jobs 300 "$ARR4"
check "the stalled task hit its time limit (TIMEOUT)" bash -c "squeue -h -t all -j '${ARR4}_0' -o %T | grep -q TIMEOUT"
tcell=$(sed -n 1p "$Cdir/slurm/order.txt")
tid=$(sed -n "$((tcell + 2))p" "$Cdir/cells.csv" | cut -d, -f1)
"$BIN" status "$Cdir" > "$WORK/status4.txt"
check "status names the timed-out cell $tid as failed with Slurm's TIMEOUT" grep -q "^$tid *failed *TIMEOUT" "$WORK/status4.txt"
check "status: 1 done, 1 failed" grep -q 'done 1, running 0, pending 0, failed 1 (of 2)' "$WORK/status4.txt"
check "the timed-out cell recorded the signal in error.txt" grep -q 'interrupted by SIGTERM during stage `attack_base_eps3`' "$Cdir/cells/$tid/error.txt"
check "the timed-out cell left no claim" test ! -e "$Cdir/cells/$tid/running"
"$BIN" sweep "$WORK/limit.yaml" --executor slurm --out "$Cdir" --resume >/dev/null 2>"$WORK/submit5.log"
check "--resume resubmitted exactly the timed-out cell" bash -c "[ \"\$(cat '$Cdir/slurm/resume-1.txt')\" = '$tcell' ]"
read -r ARR5 _ < <(jobs_line "$Cdir" 2)
check "resubmission finishes within 300 s" wait_jobs 300 "$ARR5"
"$BIN" status "$Cdir" --verify > "$WORK/status5.txt"
check "after --resume both cells are done" grep -q 'done 2, running 0, pending 0, failed 0 (of 2)' "$WORK/status5.txt"
check "the resumed cell continued from its checkpoint" grep -q '\[checkpoint\] continuing the evaluation at ε index 2 of 3' "$Cdir/slurm/logs/${ARR5}_0.out"
echo "[suite] time limit + resume part done in $(secs "$t")"

# ---------------------------------------------------------------- 4. SIGUSR2 (time limit near): requeued, identical results
Ddir=$WORK/usr2
cat > "$WORK/usr2.yaml" <<EOF
name: usr2_smoke
base: $ROOT/jobs/smoke.yaml
slurm:
  time: "00:10:00"
  cpus_per_task: 1
  mem: 1G
  setup: ['if rm "$WORK/stall-once" 2>/dev/null; then export DIFFNMF_FAULT=stall:attack_base_eps3; fi']
EOF
touch "$WORK/stall-once"
t=$(date +%s%N)
"$BIN" sweep "$WORK/usr2.yaml" --executor slurm --out "$Ddir" >/dev/null 2>"$WORK/submit6.log"
read -r ARR6 _ < <(jobs_line "$Ddir" 1)
for _ in $(seq 1 600); do
  grep -qs 'stalling at stage' "$Ddir/slurm/logs/${ARR6}_0.out" && break
  sleep 0.2
done
check "the USR2 task reached its stall" grep -qs 'stalling at stage' "$Ddir/slurm/logs/${ARR6}_0.out"
scancel --batch --signal=USR2 "${ARR6}_0"
check "the signalled task is requeued and finishes within 300 s" wait_jobs 300 "$ARR6"
check "the task ran twice (requeued by the cell itself)" bash -c "scontrol show job '${ARR6}_0' 2>/dev/null | grep -q 'Restarts=1' || sacct -n -j '${ARR6}_0' 2>/dev/null | grep -q REQUEUED || grep -qs '\[checkpoint\] continuing' '$Ddir/slurm/logs/${ARR6}_0.out'"
check "the requeued task continued from its checkpoint" grep -qs '\[checkpoint\] continuing the evaluation at ε index 2 of 3' "$Ddir/slurm/logs/${ARR6}_0.out"
"$BIN" status "$Ddir" --verify > "$WORK/status6.txt"
check "the requeued cell is done" grep -q 'done 1, running 0, pending 0, failed 0 (of 1)' "$WORK/status6.txt"
SLURM_CPUS_PER_TASK=1 "$BIN" sweep "$WORK/usr2.yaml" --out "$WORK/usr2-local" --threads 1 >/dev/null 2>&1
check "requeued results equal an uninterrupted run's (metrics.csv byte for byte)" \
  cmp -s "$(ls "$Ddir"/cells/*/metrics.csv)" "$(ls "$WORK"/usr2-local/cells/*/metrics.csv)"
echo "[suite] USR2 requeue part done in $(secs "$t")"

echo "[suite] total $(secs "$T0"); work dir $WORK"
if [ "$FAILS" -gt 0 ]; then
  echo "slurm-suite: $FAILS check(s) FAILED (logs under $WORK)"; exit 1
fi
rm -rf "$WORK"
echo "slurm-suite: all checks PASSED"
