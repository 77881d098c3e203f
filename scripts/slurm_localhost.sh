#!/bin/bash
# The SLURM launcher against a real SLURM: a one-node cluster on localhost
# (munged, slurmctld, slurmd), experiments/cluster/smoke_table.py submitted by
# `python -m sam_jax.reproduce launch --launcher=slurm`, each of its three array
# tasks preempted mid-run in a different way, then checks that every task
# resumed from its checkpoint and finished, that `collect` shows every run
# done, and that launching again submits nothing. Then one run as a task of 2
# processes (srun starts 2 trainers, which find each other through
# jax.distributed.initialize() and SLURM's environment), preempted the same
# way; one run whose node dies (slurmd and every process of the task SIGKILLed,
# slurmd started again), which SLURM requeues and which resumes from its last
# periodic checkpoint; and one run cancelled with scancel, which must stay
# cancelled and resume when launched again. The daemons are stopped at the
# end, also when something fails.
#
#   scripts/slurm_localhost.sh --python=.venv/bin/python \
#       [--scratch=/tmp/sam_slurm] [--transcript=FILE] [--install]
#
# Needs root (the daemons and jobs run as root here) and Debian's slurmctld,
# slurmd, slurm-client and munge (--install apt-gets them). Everything else
# (munge key, slurm.conf, daemon state and logs, the runs) lives in the scratch
# directory, wiped at the start: the script can be rerun. It takes about 20
# minutes on 2 CPU cores, more than half of them waiting: SLURM holds a requeued job for
# about 2 minutes before it may start again.
# Exit codes: 0 every check passed; 1 a daemon or a check failed; 2 bad input.

set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRATCH=/tmp/sam_slurm
PY="$REPO/.venv/bin/python"
TRANSCRIPT=""
INSTALL=0
MARKER=.sam_slurm_localhost  # the scratch directory is ours to wipe
CTLD_PORT=16817  # not SLURM's defaults, so a real cluster's daemons are left alone
SLURMD_PORT=16818
TABLE=experiments/cluster/smoke_table.py
PREEMPT_AT_STEP=300  # of 1200: a task is preempted once its log is past this step

COMMAND_LINE="$0 $*"
bad_input() { echo "error: $*" >&2; exit 2; }
for arg in "$@"; do
  case "$arg" in
    --scratch=*) SCRATCH="${arg#*=}" ;;
    --python=*) PY="${arg#*=}" ;;
    --transcript=*) TRANSCRIPT="${arg#*=}" ;;
    --install) INSTALL=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
    *) bad_input "unknown argument $arg (see --help)" ;;
  esac
done
[[ "$SCRATCH" == /* && "$SCRATCH" != / ]] || bad_input "--scratch=$SCRATCH must be an absolute path"
[[ $EUID -eq 0 ]] || bad_input "run as root: slurmd and munged run as root here"
if [[ -e "$SCRATCH" && ! -e "$SCRATCH/$MARKER" && -n "$(ls -A "$SCRATCH")" ]]; then
  bad_input "refusing to wipe $SCRATCH: not made by this script (no $MARKER); pick another --scratch"
fi
[[ -x "$PY" ]] || bad_input "--python=$PY is not an executable (give the repository's venv python)"
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
PYDIR="$(dirname "$PY")"
# The run commands call `python` (registry.Run.argv): the job's PATH starts at PYDIR.
[[ -x "$PYDIR/python" ]] || bad_input "$PYDIR has no 'python', which the run commands call"
if [[ -n "$TRANSCRIPT" ]]; then
  mkdir -p "$(dirname "$TRANSCRIPT")" && : > "$TRANSCRIPT" || bad_input "cannot write --transcript=$TRANSCRIPT"
  exec > >(tee -a "$TRANSCRIPT") 2>&1
fi

START=$(date +%s)
stamp() { local s=$(( $(date +%s) - START )); printf '[+%02d:%02d]' $((s / 60)) $((s % 60)); }
say() { echo "$(stamp) $*"; }
# Shows a command, then runs it with its output indented.
run() { echo "$(stamp) \$ $*"; "$@" 2>&1 | sed 's/^/    /'; return "${PIPESTATUS[0]}"; }
# A daemon forks and may keep its stdout: no pipe, its own file instead.
run_daemon() {  # name, then the command
  local name="$1"; shift
  echo "$(stamp) \$ $*"; "$@" < /dev/null > "$SCRATCH/log/$name.stdout" 2>&1
}
FAILURES=0
CHECKS=0
check() {  # description, then a command that succeeds when the check passes
  local what="$1"; shift
  CHECKS=$((CHECKS + 1))
  if "$@"; then echo "$(stamp) CHECK PASS: $what"; else echo "$(stamp) CHECK FAIL: $what"; FAILURES=$((FAILURES + 1)); fi
}
die() { echo "$(stamp) FAILED: $*"; exit 1; }

echo "# $COMMAND_LINE"
echo "# on $(hostname), $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo ", with uncommitted changes")
echo "# repository $REPO (commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$DIRTY), python $PY"
echo "# $(nproc) CPU cores, $(uname -sr), $(. /etc/os-release && echo "$PRETTY_NAME")"

# ---------------------------------------------------------------- packages
if (( INSTALL )); then
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null || die "apt-get install failed"
fi
for tool in munged mungekey munge unmunge slurmctld slurmd sbatch squeue scontrol scancel sinfo; do
  command -v "$tool" >/dev/null || die "$tool is not installed (Debian: apt-get install slurmctld slurmd slurm-client munge, or --install)"
done
say "SLURM $(slurmd -V | cut -d' ' -f2), munge $(munged -V | cut -d' ' -f1 | cut -d- -f2)"

# ---------------------------------------------------------------- teardown
pid_alive() {  # pidfile, expected command name: that daemon of ours is running
  [[ -f "$1" ]] && local pid && pid=$(cat "$1") && [[ "$(cat /proc/"$pid"/comm 2>/dev/null)" == "$2" ]]
}
stop_daemon() {  # pidfile, name
  pid_alive "$1" "$2" || return 0
  local pid; pid=$(cat "$1")
  kill "$pid"
  for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || { say "stopped $2 (pid $pid)"; return 0; }; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null; say "killed $2 (pid $pid): it ignored SIGTERM for 10 s"
}
teardown() {
  # Every job of this private cluster (its own conf and ports) is ours.
  local jobs
  if pid_alive "$SCRATCH/slurmctld.pid" slurmctld \
      && jobs=$(SLURM_CONF="$SCRATCH/slurm.conf" squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ') \
      && [[ -n "$jobs" ]]; then
    say "cancelling the jobs still queued: $jobs"
    SLURM_CONF="$SCRATCH/slurm.conf" scancel $jobs
    for _ in $(seq 40); do
      [[ -z "$(SLURM_CONF="$SCRATCH/slurm.conf" squeue -h 2>/dev/null)" ]] && break; sleep 1
    done
  fi
  stop_daemon "$SCRATCH/slurmd.pid" slurmd
  stop_daemon "$SCRATCH/slurmctld.pid" slurmctld
  stop_daemon "$SCRATCH/munge/run/munged.pid" munged
}
# A previous run that died leaves its daemons: stop them before wiping.
teardown
trap 'say "tearing down"; teardown; say "wall clock $(( $(date +%s) - START )) s"' EXIT
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"/{state,spool,log,munge/key,munge/run} && touch "$SCRATCH/$MARKER"
# munged refuses a key others can read and a socket directory others cannot enter.
chmod 755 "$SCRATCH" "$SCRATCH/munge" "$SCRATCH/munge/run"
chmod 700 "$SCRATCH/munge/key"

# ---------------------------------------------------------------- munge
MUNGE_SOCKET="$SCRATCH/munge/run/munge.socket.2"
run mungekey --create --keyfile="$SCRATCH/munge/key/munge.key" || die "mungekey failed"
run_daemon munged munged --socket="$MUNGE_SOCKET" --key-file="$SCRATCH/munge/key/munge.key" \
  --log-file="$SCRATCH/munge/munged.log" --pid-file="$SCRATCH/munge/run/munged.pid" \
  --seed-file="$SCRATCH/munge/key/munged.seed" \
  || { cat "$SCRATCH/log/munged.stdout"; tail -n 20 "$SCRATCH/munge/munged.log"
       die "munged did not start (its output and log above)"; }
munge -S "$MUNGE_SOCKET" -n | unmunge -S "$MUNGE_SOCKET" | grep -q 'STATUS: *Success' \
  || die "munge -n | unmunge failed: munged cannot sign credentials"
say "munged up: a credential round-trips through $MUNGE_SOCKET"

# ---------------------------------------------------------------- slurm
export SLURM_CONF="$SCRATCH/slurm.conf"
CPUS=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -n 1)
cat > "$SLURM_CONF" <<EOF
# One node (this machine, as "localhost"), one partition; no cgroups, no accounting database.
ClusterName=samlocal
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$SCRATCH/state
SlurmdSpoolDir=$SCRATCH/spool
SlurmctldPidFile=$SCRATCH/slurmctld.pid
SlurmdPidFile=$SCRATCH/slurmd.pid
SlurmctldLogFile=$SCRATCH/log/slurmctld.log
SlurmdLogFile=$SCRATCH/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# sacct needs slurmdbd; every job end (requeues included) goes to this file instead.
JobCompType=jobcomp/filetxt
JobCompLoc=$SCRATCH/log/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
# No RequeueExit: the generated sbatch script must requeue exit 75 itself.
KillWait=30
# Finished jobs stay visible to scontrol for the checks below.
MinJobAge=3600
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
say "slurm.conf ($SLURM_CONF):"
grep -v '^#' "$SLURM_CONF" | sed 's/^/    /'
start_slurm_daemon() {  # name, then its command
  local name="$1"; shift
  run_daemon "$name" "$@"
  for _ in $(seq 20); do pid_alive "$SCRATCH/$name.pid" "$name" && return 0; sleep 0.5; done
  echo "$(stamp) $name is not running; its output and the last lines of its log:"
  cat "$SCRATCH/log/$name.stdout" "$SCRATCH/log/$name.log" 2>/dev/null | tail -n 30 | sed 's/^/    /'
  die "$name did not start"
}
start_slurm_daemon slurmctld slurmctld -f "$SLURM_CONF"
start_slurm_daemon slurmd slurmd -f "$SLURM_CONF" -N localhost
for _ in $(seq 30); do
  [[ "$(sinfo -h -n localhost -o %t 2>/dev/null)" == idle ]] && break; sleep 1
done
run sinfo
[[ "$(sinfo -h -n localhost -o %t)" == idle ]] || {
  tail -n 20 "$SCRATCH/log/slurmctld.log"; tail -n 20 "$SCRATCH/log/slurmd.log"
  die "node localhost did not become idle (daemon logs above)"; }

# ---------------------------------------------------------------- submit
cd "$REPO" || die "cannot cd to $REPO"
ROOT="$SCRATCH/runs"
# The environment a job gets is this one (sbatch's default --export=ALL).
export PYTHONUNBUFFERED=1
run "$PY" -m sam_jax.reproduce plan --table="$TABLE" --root="$ROOT" || die "plan failed"
SUBMIT_OUT="$SCRATCH/submit.out"
run "$PY" -m sam_jax.reproduce launch --table="$TABLE" --root="$ROOT" --launcher=slurm \
  --gpus_per_node=0 --partition=debug --time=00:30:00 \
  --setup="export PATH=$PYDIR:\$PATH" | tee "$SUBMIT_OUT"
JOB=$(sed -n 's/.*Submitted batch job \([0-9]*\).*/\1/p' "$SUBMIT_OUT")
[[ -n "$JOB" ]] || die "sbatch submitted nothing"
SBATCH_FILE="$ROOT/slurm/cluster_smoke.sbatch"
say "the generated script, $SBATCH_FILE:"
sed 's/^/    /' "$SBATCH_FILE"
check "the script asks for no GPU (--gpus_per_node=0)" bash -c "! grep -q -- '--gpus' '$SBATCH_FILE'"
check "one array task per run (--array=0-2)" grep -q -- '^#SBATCH --array=0-2$' "$SBATCH_FILE"
NUM_TASKS=$(wc -l < "$ROOT/slurm/cluster_smoke.commands.tsv")
check "the commands file has $NUM_TASKS = 3 lines" test "$NUM_TASKS" -eq 3

# ---------------------------------------------------------------- watch and preempt
LOGS="$ROOT/slurm"
log_of() { echo "$LOGS/sam-cluster_smoke_${JOB}_$1.out"; }
last_step() { grep -o '^step [0-9]*' "$(log_of "$1")" 2>/dev/null | tail -n 1 | cut -d' ' -f2; }
LAST_QUEUE=""
show_queue() {  # prints the array's states when they change
  local queue; queue=$(squeue -h -j "$JOB" -o '%i %T %r' 2>/dev/null | sort | tr '\n' ';')
  if [[ "$queue" != "$LAST_QUEUE" ]]; then
    say "squeue: ${queue:-empty}"
    LAST_QUEUE="$queue"
  fi
}
task_state() { scontrol show job "${JOB}_$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -n 1 | cut -d= -f2; }
wait_until_past_step() {  # task: waits until its log is past PREEMPT_AT_STEP
  local deadline=$(( $(date +%s) + 600 ))
  while (( $(date +%s) < deadline )); do
    show_queue
    local state; state=$(task_state "$1")
    [[ "$state" == COMPLETED || "$state" == FAILED ]] && die "task $1 ended ($state) before it could be preempted"
    local step; step=$(last_step "$1")
    if [[ "$state" == RUNNING && -n "$step" ]] && (( step >= PREEMPT_AT_STEP )); then
      say "task $1 is running, its log at step $step"
      return 0
    fi
    sleep 1
  done
  die "task $1 did not pass step $PREEMPT_AT_STEP within 10 minutes"
}

say "preemption 1: SIGTERM to task 0's batch shell, as SLURM's time-limit warning (--signal=B:TERM@300) sends it"
wait_until_past_step 0
run scancel --batch --signal=TERM "${JOB}_0"
say "preemption 2: scontrol requeue of task 1, SLURM's own requeue (SIGTERM to every process, SIGKILL after KillWait=30 s)"
wait_until_past_step 1
run scontrol requeue "${JOB}_1"
say "preemption 3: SIGTERM to task 2's job step only (scancel --signal=TERM): the run gets it, not the batch shell"
wait_until_past_step 2
run scancel --signal=TERM "${JOB}_2"

wait_until_job_left_queue() {
  local deadline=$(( $(date +%s) + 1500 ))
  while [[ -n "$(squeue -h -j "$JOB" 2>/dev/null)" ]] && (( $(date +%s) < deadline )); do
    show_queue; sleep 2
  done
  show_queue
  [[ -z "$(squeue -h -j "$JOB")" ]] || die "job $JOB still queued after 25 minutes"
  say "every task of job $JOB has left the queue"
}
wait_until_job_left_queue

# ---------------------------------------------------------------- checks
trained_1200_steps() {  # workdir
  "$PY" -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["steps"] != 1200)' \
    "$1/results.json" 2>/dev/null
}
check_task() {  # task, workdir: requeued once, resumed where it saved, finished
  local task="$1" workdir="$2" info state restarts exit_code log saved resumed
  info=$(scontrol show job "${JOB}_$task")
  state=$(grep -o 'JobState=[A-Z_]*' <<<"$info" | head -n 1)
  restarts=$(grep -o 'Restarts=[0-9]*' <<<"$info")
  exit_code=$(grep -o ' ExitCode=[0-9:]*' <<<"$info" | tr -d ' ')
  say "task $task: $state $restarts $exit_code"
  check "task $task completed with exit code 0" test "$state $exit_code" = "JobState=COMPLETED ExitCode=0:0"
  check "task $task was requeued once" test "$restarts" = "Restarts=1"
  log=$(log_of "$task")
  say "task $task, key lines of $log:"
  grep -E '^(starting|resuming|stopped|final|already|preempted|slurmstepd|srun|scontrol|scancel)' "$log" | sed 's/^/    /'
  saved=$(sed -n 's/.*checkpoint saved at step \([0-9]*\).*/\1/p' "$log" | head -n 1)
  resumed=$(sed -n 's/^resuming at step \([0-9]*\)\/.*/\1/p' "$log" | head -n 1)
  check "task $task saved a checkpoint on SIGTERM past step $PREEMPT_AT_STEP (step ${saved:-none})" \
    test "${saved:-0}" -ge "$PREEMPT_AT_STEP"
  check "task $task resumed at the step it saved (${resumed:-none} = ${saved:-none})" \
    test -n "$resumed" -a "$resumed" = "${saved:-x}"
  check "task $task: status.json says done" grep -q '"state": "done"' "$workdir/status.json"
  check "task $task: results.json after all 1200 steps" trained_1200_steps "$workdir"
  # Task 1 is requeued by SLURM; the script getting to its line too shows its
  # batch shell was not stuck until SLURM's SIGKILL (KillWait) while the run saved.
  if [[ "$task" == 1 ]]; then
    check "task $task: the sbatch script saw exit 75 and left the requeue to SLURM" \
      grep -q "^preempted: not requeued here, SLURM is ending ${JOB}_$task" "$log"
  else
    check "task $task: the sbatch script saw exit 75 and requeued" \
      grep -q "^preempted: requeueing ${JOB}_$task" "$log"
  fi
}
for task in 0 1 2; do
  check_task "$task" "$(sed -n "$((task + 1))p" "$ROOT/slurm/cluster_smoke.commands.tsv" | cut -f1)"
done
say "jobcomp log, the array's tasks (a line each time a task ended, requeues included):"
awk -v job="$JOB" '$0 ~ "ArrayJobId=" job " " {
    line = ""
    for (i = 1; i <= NF; i++) if ($i ~ /^(JobId|ArrayTaskId|JobState|StartTime|EndTime|ExitCode)=/) line = line " " $i
    print "   " line }' "$SCRATCH/log/jobcomp.log"

COLLECT_OUT="$SCRATCH/collect.out"
run "$PY" -m sam_jax.reproduce collect --table="$TABLE" --root="$ROOT" | tee "$COLLECT_OUT"
check "collect: every run done" grep -q 'Runs: 3 (done 3)$' "$COLLECT_OUT"
RELAUNCH_OUT="$SCRATCH/relaunch.out"
run "$PY" -m sam_jax.reproduce launch --table="$TABLE" --root="$ROOT" --launcher=slurm \
  --gpus_per_node=0 --partition=debug | tee "$RELAUNCH_OUT"
check "launching again submits nothing" grep -q 'all 3 runs finished; nothing to submit' "$RELAUNCH_OUT"

# ---------------------------------------------------------------- 2 processes
say "a task of 2 processes (--tasks_per_node=2, as for several GPUs or nodes): srun starts"
say "2 trainers; jax.distributed.initialize() finds the coordinator and each rank in"
say "SLURM's environment; gloo carries the collectives between the CPU processes"
ARRAY_JOB=$JOB
ROOT="$SCRATCH/runs_2proc"
LOGS="$ROOT/slurm"
run "$PY" -m sam_jax.reproduce launch --table="$TABLE" --rows=sgd --root="$ROOT" \
  --launcher=slurm --gpus_per_node=0 --partition=debug --time=00:30:00 --tasks_per_node=2 \
  --setup="export PATH=$PYDIR:\$PATH" | tee "$SUBMIT_OUT"
JOB=$(sed -n 's/.*Submitted batch job \([0-9]*\).*/\1/p' "$SUBMIT_OUT")
[[ -n "$JOB" ]] || die "sbatch submitted nothing"
LAST_QUEUE=""
check "the script asks for 2 tasks per node" grep -q -- '^#SBATCH --ntasks-per-node=2$' "$LOGS/cluster_smoke.sbatch"
check "the run's command has --distributed=yes" grep -q -- ' --distributed=yes' "$LOGS/cluster_smoke.commands.tsv"
say "preemption 4: SIGTERM to the batch shell of the 2-process task"
wait_until_past_step 0
run scancel --batch --signal=TERM "${JOB}_0"
wait_until_job_left_queue
check_task 0 "$(cut -f1 "$LOGS/cluster_smoke.commands.tsv")"
LOG=$(log_of 0)
check "2 processes, 1 CPU device each" grep -q '^starting step 0/1200 (30 epochs of 40 steps, 2 devices' "$LOG"
both_exited_75() {  # log: srun reports the 2 processes together or one by one
  grep -q '^srun: error: localhost: tasks 0-1: Exited with exit code 75' "$1" || {
    grep -q '^srun: error: localhost: task 0: Exited with exit code 75' "$1" &&
    grep -q '^srun: error: localhost: task 1: Exited with exit code 75' "$1"; }
}
check "srun saw both processes exit 75" both_exited_75 "$LOG"
saved_steps=$(sed -n 's/.*checkpoint saved at step \([0-9]*\).*/\1/p' "$LOG" | tr '\n' ' ')
check "both processes stopped at the same step (${saved_steps})" \
  test "$(wc -w <<<"$saved_steps") $(tr ' ' '\n' <<<"$saved_steps" | sort -u | grep -c .)" = "2 1"
COLLECT_OUT="$SCRATCH/collect_2proc.out"
run "$PY" -m sam_jax.reproduce collect --table="$TABLE" --rows=sgd --root="$ROOT" --format=summary \
  | tee "$COLLECT_OUT"
check "collect: the run done" grep -q 'Runs: 1 (done 1)$' "$COLLECT_OUT"

# ---------------------------------------------------------------- a node dies
say "a node dying mid-run: slurmd, the task's slurmstepd and every process of the task"
say "SIGKILLed at once, so nothing saves; then slurmd started again, as after a reboot"
ROOT="$SCRATCH/runs_node_death"
LOGS="$ROOT/slurm"
launch_sgd() {  # submits the SGD run under $ROOT; sets JOB
  run "$PY" -m sam_jax.reproduce launch --table="$TABLE" --rows=sgd --root="$ROOT" \
    --launcher=slurm --gpus_per_node=0 --partition=debug --time=00:30:00 \
    --setup="export PATH=$PYDIR:\$PATH" | tee "$SUBMIT_OUT"
  JOB=$(sed -n 's/.*Submitted batch job \([0-9]*\).*/\1/p' "$SUBMIT_OUT")
  [[ -n "$JOB" ]] || die "sbatch submitted nothing"
  LAST_QUEUE=""
}
resumed_from_a_periodic_checkpoint() {  # log, step the log had reached when killed
  local resumed; resumed=$(sed -n 's/^resuming at step \([0-9]*\)\/.*/\1/p' "$1" | head -n 1)
  say "resumed at step ${resumed:-none}; killed with the log at step $2"
  # Checkpoints every 200 steps; the log lags the run by under 50 steps.
  [[ -n "$resumed" ]] && (( resumed % 200 == 0 && resumed > $2 - 200 && resumed < $2 + 50 ))
}
launch_sgd
PREEMPT_AT_STEP=450  # past the checkpoint at step 400
wait_until_past_step 0
killed_at=$(last_step 0)
JOB_ID=$(squeue -h -j "${JOB}_0" -o %A)
TASK_PIDS=$(scontrol listpids "$JOB_ID" | awk 'NR > 1 {print $1}' | sort -u)
STEPD_PIDS=$(for pid in $TASK_PIDS; do
  parent=$(awk '/^PPid/ {print $2}' "/proc/$pid/status" 2>/dev/null)
  [[ "$(cat "/proc/$parent/comm" 2>/dev/null)" == slurmstepd ]] && echo "$parent"
done | sort -u)
say "the node's processes: slurmd $(cat "$SCRATCH/slurmd.pid"), slurmstepd" $STEPD_PIDS", the task's" $TASK_PIDS
run kill -9 "$(cat "$SCRATCH/slurmd.pid")" $STEPD_PIDS $TASK_PIDS
sleep 2
start_slurm_daemon slurmd slurmd -f "$SLURM_CONF" -N localhost
wait_until_job_left_queue
say "slurmctld.log on the task:"
grep -F "JobId=${JOB}_0($JOB_ID)" "$SCRATCH/log/slurmctld.log" | sed 's/^/    /'
check "slurmctld requeued the task itself (--requeue), due to node failure" \
  grep -q "requeue JobId=${JOB}_0($JOB_ID) due to node failure" "$SCRATCH/log/slurmctld.log"
LOG=$(log_of 0)
check "the task resumed from its last periodic checkpoint" resumed_from_a_periodic_checkpoint "$LOG" "$killed_at"
check "then finished: results.json after all 1200 steps" trained_1200_steps "$(cut -f1 "$LOGS/cluster_smoke.commands.tsv")"

# ---------------------------------------------------------------- scancel, launch again
say "scancel of a running task: the run gets SIGTERM, saves and exits 75, and the task"
say "stays cancelled (not requeued); launch again submits the unfinished run, which resumes"
ROOT="$SCRATCH/runs_cancelled"
LOGS="$ROOT/slurm"
launch_sgd
PREEMPT_AT_STEP=300
wait_until_past_step 0
run scancel "${JOB}_0"
wait_until_job_left_queue
CANCELLED_LOG=$(log_of 0)
info=$(scontrol show job "${JOB}_0")
say "task: $(grep -o 'JobState=[A-Z_]*' <<<"$info" | head -n 1) $(grep -o 'Restarts=[0-9]*' <<<"$info")"
check "the cancelled task stayed cancelled" grep -q 'JobState=CANCELLED' <<<"$info"
check "the sbatch script did not requeue it" \
  grep -q "^preempted: not requeued here, SLURM is ending ${JOB}_0" "$CANCELLED_LOG"
saved=$(sed -n 's/.*checkpoint saved at step \([0-9]*\).*/\1/p' "$CANCELLED_LOG" | head -n 1)
launch_sgd
check "launching again submitted the unfinished run" grep -q '# 1 of 1 runs' "$SUBMIT_OUT"
wait_until_job_left_queue
LOG=$(log_of 0)
say "key lines of $CANCELLED_LOG, then $LOG:"
grep -hE '^(starting|resuming|stopped|final|preempted|slurmstepd|srun)' "$CANCELLED_LOG" "$LOG" \
  | sed 's/^/    /'
resumed=$(sed -n 's/^resuming at step \([0-9]*\)\/.*/\1/p' "$LOG" | head -n 1)
check "the new job resumed at the step saved on scancel (${resumed:-none} = ${saved:-none})" \
  test -n "$resumed" -a "$resumed" = "${saved:-x}"
check "then finished: results.json after all 1200 steps" trained_1200_steps "$(cut -f1 "$LOGS/cluster_smoke.commands.tsv")"

if (( FAILURES )); then
  say "$FAILURES of $CHECKS checks failed"
  exit 1
fi
say "all $CHECKS checks passed"
