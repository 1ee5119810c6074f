#!/usr/bin/env bash
# Start N toolkit.train workers on this host as one MultiWorkerMirroredStrategy job.
#
#   scripts/launch_workers.sh N [toolkit.train flags...]
#   scripts/launch_workers.sh 2 --data_dir shards/ --model_dir runs/mw --batch_size 256
#
# Each worker gets its own TF_CONFIG (worker 0 is the chief) naming N free localhost ports, and
# writes its output to LOG_DIR/worker-<i>.log. The script waits for all of them. If one fails
# (non-zero exit, killed by a signal) it prints which one and the end of its log, stops the
# others and exits non-zero; a worker that stopped because it lost another (exit code 5) is not
# the one named when the lost worker's own end shows within 3 s. Running the same command again resumes every worker from the
# chief's last checkpoint in --model_dir.
#
# Environment:
#   LOG_DIR   where the worker logs go (default: a new directory under ${TMPDIR:-/tmp}; printed)
#   PYTHON    the interpreter (default: python3)
#   GRACE     seconds the surviving workers get after SIGTERM before SIGKILL (default: 10)
set -euo pipefail

usage() {
  echo "usage: $0 N [toolkit.train flags...]   (N >= 1 workers on this host)" >&2
  exit 2
}
[[ $# -ge 1 && $1 =~ ^[0-9]+$ && $1 -ge 1 ]] || usage
num_workers=$1
shift

PYTHON=${PYTHON:-python3}
GRACE=${GRACE:-10}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# the toolkit runs from this checkout even when it is not pip-installed; user paths stay relative
# to the caller's directory (no cd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
LOG_DIR=${LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/toolkit-workers-XXXXXX")}
mkdir -p "$LOG_DIR"

# N distinct free ports: bind them all at once so none is handed out twice
read -r -a ports <<<"$("$PYTHON" - "$num_workers" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("localhost", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)"

cluster=$("$PYTHON" -c 'import json, sys; print(json.dumps(["localhost:" + p for p in sys.argv[1:]]))' "${ports[@]}")

pids=()
running() {  # alive and not a zombie waiting to be reaped
  local state=""
  [[ -r /proc/$1/stat ]] && read -r _ _ state _ <"/proc/$1/stat" 2>/dev/null
  [[ -n $state && $state != Z ]]
}
stop_all() {
  local pid waited=0 alive
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  while ((waited < GRACE * 10)); do
    alive=0
    for pid in "${pids[@]}"; do running "$pid" && alive=1; done
    ((alive)) || break
    sleep 0.1
    waited=$((waited + 1))
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done  # gone when this script ends
}
trap 'echo "launch_workers: interrupted, stopping the workers" >&2; stop_all; exit 130' INT TERM

for ((i = 0; i < num_workers; i++)); do
  tf_config="{\"cluster\": {\"worker\": $cluster}, \"task\": {\"type\": \"worker\", \"index\": $i}}"
  TF_CONFIG=$tf_config "$PYTHON" -m toolkit.train "$@" >"$LOG_DIR/worker-$i.log" 2>&1 &
  pids+=($!)
done
echo "launch_workers: $num_workers workers on localhost ports ${ports[*]}, logs in $LOG_DIR"
for ((i = 0; i < num_workers; i++)); do
  echo "launch_workers: worker $i$( ((i == 0)) && echo ' (chief)') pid ${pids[$i]} log $LOG_DIR/worker-$i.log"
done
echo "launch_workers: follow the chief with: tail -f $LOG_DIR/worker-0.log"

remaining=$num_workers
declare -A done_rc=()
reap() {  # worker $1 has ended: record its exit status
  local rc=0
  wait "${pids[$1]}" 2>/dev/null || rc=$?  # (bash would also print its own "Killed" line)
  done_rc[$1]=$rc
  remaining=$((remaining - 1))
}
# toolkit.train's exit code when it lost another worker (toolkit.common.errors.ExitCode.WORKER_LOST): a consequence
LOST_PEER=5
find_cause() {  # worker $1 failed with LOST_PEER: set `cause` to the worker whose own failure it was,
  # if that one ends within 3 s (else $1); no subshell, so reap's bookkeeping stays in this shell
  local j t
  cause=$1
  for ((t = 0; t < 30; t++)); do
    for ((j = 0; j < num_workers; j++)); do
      if [[ -z ${done_rc[$j]:-} ]] && ! running "${pids[$j]}"; then reap "$j"; fi
      if [[ -n ${done_rc[$j]:-} ]] && ((done_rc[$j] != 0 && done_rc[$j] != LOST_PEER)); then
        cause=$j
        return
      fi
    done
    sleep 0.1
  done
}
while ((remaining > 0)); do
  for ((i = 0; i < num_workers; i++)); do
    [[ -n ${done_rc[$i]:-} ]] && continue
    running "${pids[$i]}" && continue
    reap "$i"
    rc=${done_rc[$i]}
    if ((rc == LOST_PEER)); then
      find_cause "$i"
      i=$cause
      rc=${done_rc[$i]}
    fi
    if ((rc != 0)); then
      if ((rc > 128)); then
        how="was killed by signal $(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128)))"
      else
        how="exited with code $rc"
      fi
      echo "launch_workers: FAILED: worker $i (pid ${pids[$i]}) $how; stopping the other workers." >&2
      echo "launch_workers: last lines of $LOG_DIR/worker-$i.log:" >&2
      tail -n 15 "$LOG_DIR/worker-$i.log" | sed 's/^/  | /' >&2
      stop_all
      echo "launch_workers: run the same command again to resume every worker from the last checkpoint." >&2
      exit $((rc > 128 ? 1 : rc))
    fi
  done
  ((remaining > 0)) && sleep 0.5
done
echo "launch_workers: all $num_workers workers finished; the chief's log ends with:"
tail -n 3 "$LOG_DIR/worker-0.log" | sed 's/^/  | /'
