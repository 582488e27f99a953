#!/usr/bin/env bash
# CI: a real one-node SLURM (scripts/slurm_local.sh), a 3-seed smoke sweep submitted through
# hydra-submitit-launcher (launcher=slurm_local), then every record checked. Time-bounded at every
# step; the daemons are stopped from a trap whatever happens. Exit 0 only if all 3 records say success.
#   scripts/ci_slurm.sh            (as root; installs Debian's slurm + munge when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SWEEP_TIMEOUT=${CI_SLURM_SWEEP_TIMEOUT:-900}

fail() { echo "ci_slurm: FAILED: $*" >&2; exit 1; }
[[ -x $PY ]] || fail "no python at $PY (run 'make setup' or set PYTHON=)"
[[ $(id -u) == 0 ]] || fail "needs root (apt-get install and the daemons); run it as root in CI"

export SLURM_LOCAL_DIR
SLURM_LOCAL_DIR=$(mktemp -d /tmp/lowrank-slurm-ci.XXXXXX)
# two free consecutive ports (controller, slurmd), so a busy 6817 never breaks CI
SLURM_LOCAL_PORT=$("$PY" - <<'EOF'
import random, socket
for _ in range(200):
    p = random.randrange(20000, 40000)
    try:
        for q in (p, p + 1):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass
EOF
)
export SLURM_LOCAL_PORT
[[ -n $SLURM_LOCAL_PORT ]] || fail "no free port pair found"
RESULTS=$SLURM_LOCAL_DIR/results

cleanup() {
  local rc=$?
  timeout 120 scripts/slurm_local.sh down || echo "ci_slurm: warning: 'slurm_local.sh down' failed" >&2
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "ci_slurm: install (if needed)"
timeout 1200 scripts/slurm_local.sh install || fail "installing slurm/munge failed or timed out"
echo "ci_slurm: up (state in $SLURM_LOCAL_DIR, port $SLURM_LOCAL_PORT)"
timeout 180 scripts/slurm_local.sh up || fail "the local cluster did not come up (logs above)"
# shellcheck disable=SC1091
source "$SLURM_LOCAL_DIR/env.sh"

echo "ci_slurm: 3-seed smoke sweep through launcher=slurm_local (timeout ${SWEEP_TIMEOUT}s)"
start=$SECONDS
set +e
OMP_NUM_THREADS=1 timeout "$SWEEP_TIMEOUT" "$PY" run.py -m launcher=slurm_local experiment=rm_table1_glue_smoke \
  task=glue/rte arm=rm_lora_r4 seed=1,2,3 \
  "paths.results_dir=$RESULTS" "hydra.sweep.dir=$RESULTS/hydra/ci_slurm"
rc=$?
set -e
echo "ci_slurm: sweep exited $rc after $((SECONDS - start)) s"
if ((rc != 0)); then
  echo "ci_slurm: job logs:" >&2
  tail -n 30 "$RESULTS"/hydra/ci_slurm/.submitit/*/*.{out,err} >&2 2>/dev/null || true
  squeue >&2 || true
  [[ $rc == 124 ]] && fail "the sweep did not finish in ${SWEEP_TIMEOUT}s"
  fail "the sweep exited $rc"
fi

# outputs, not exit codes: every seed has a success record with metrics
"$PY" - "$RESULTS/runs" <<'EOF' || fail "records check failed"
import json, pathlib, sys
recs = [json.loads(p.read_text()) for p in pathlib.Path(sys.argv[1]).glob("*.json")]
ok = {r["seed"]: r for r in recs if r.get("status") == "success" and r.get("metrics", {}).get("final")}
for r in sorted(recs, key=lambda r: r.get("seed", -1)):
    print(f"  record {r.get('run_id')} seed {r.get('seed')}: {r.get('status')} {r.get('metrics', {}).get('final')}")
if sorted(ok) != [1, 2, 3]:
    sys.exit(f"ci_slurm: expected success records for seeds 1, 2, 3, got {sorted(ok)} of {len(recs)} records")
if len({r["group_id"] for r in ok.values()}) != 1:
    sys.exit("ci_slurm: the 3 seeds do not share one group_id")
print("ci_slurm: 3/3 records written, status success")
EOF
echo "ci_slurm: OK"
