#!/usr/bin/env bash
# Issue 11's open GPU measurements, each bounded, in the order they matter (docs/PERFORMANCE.md,
# "Known limits"). Usage on a 1-GPU machine:  bash scripts/gpu_checks.sh OUT_DIR [STEPS...]
#   steps: probe (first compile of a process), runner (CUDA-graph runner == eager runner),
#          methods (each kind of method compiled vs eager; ROWS="model:method ..." to choose),
#          bench (graph rows), e2e (goal 3), sweep (goal 5)
# No pipe after a timed command: a killed bench's inductor workers would hold the pipe open.
# Timeouts send SIGABRT (PYTHONFAULTHANDLER prints every thread's stack: where a compile hangs) and
# then SIGKILL: the runner takes SIGTERM as "stop at the next step", which a compile never reaches.
set -u
export PYTHONFAULTHANDLER=1 PYTHONUNBUFFERED=1
out=${1:?usage: gpu_checks.sh OUT_DIR [runner bench e2e sweep]}
shift
steps=${*:-probe runner bench e2e sweep}
mkdir -p "$out"
py=${PYTHON:-python3}
data=${DATA:-../shared/data/glue}

T="timeout -s ABRT -k 10"
for step in $steps; do
  case $step in
    probe)  # the fixed cost of a process's first compile, CPU kernel and GPU kernel (fresh caches)
      P='import sys,time,torch; d=sys.argv[1]; t=time.perf_counter(); torch.compile(lambda x: x.sin()+1)(torch.randn(4, device=d)); print(d, "first compile", round(time.perf_counter()-t, 1), "s")'
      for d in cpu cuda; do
        TORCHINDUCTOR_CACHE_DIR=/tmp/gc_probe_$d $T 150 $py -c "$P" $d >"$out/probe_$d.log" 2>&1
      done
      ;;
    runner)  # the runner's CUDA-graph path (compiled layers) with rm_lora's hooks vs eager: same loss curve?
      r="model=tiny_deberta task=glue/rte task.data_dir=$data method=rm_lora train.max_steps=60 train.epochs=1"
      $T 240 $py run.py $r train.compile=true paths.results_dir=/tmp/gc_graphs >"$out/runner_graphs.log" 2>&1
      $T 60 $py run.py $r train.compile=false paths.results_dir=/tmp/gc_eager >"$out/runner_eager.log" 2>&1
      $py - "$out" <<'PY'
import glob, json, sys
rows = {k: json.load(open(glob.glob(f"/tmp/gc_{k}/runs/*.json")[0])) for k in ("graphs", "eager")}
curves = {k: [(h["train_loss"], h["train_reg"]) for h in r["metrics"]["history"]] for k, r in rows.items()}
print("fast_path:", rows["graphs"]["env"]["fast_path"])
print("graphs:", curves["graphs"], "\neager: ", curves["eager"])
json.dump(curves, open(f"{sys.argv[1]}/runner_curves.json", "w"), indent=1)
PY
      ;;
    methods)  # every kind of method hook through the compiled layers (CUDA graphs) vs eager, 3 x 20 steps
      ada="method.init_r=4 method.target_r=2 method.tinit=5 method.tfinal=5 method.deltaT=1"
      for row in ${ROWS:-tiny_deberta:ft tiny_deberta:adalora tiny_deberta:sora tiny_deberta:ft_qv tiny_gpt2:prefix tiny_gpt2:adapter_h tiny_gpt2:loda_plus tiny_gpt2:rm_lora}; do
        model=${row%%:*} method=${row#*:}
        extra=$([[ $method == adalora ]] && echo "$ada" || true)
        r="model=$model task=glue/rte task.data_dir=$data method=$method +task.max_train_samples=640 train.epochs=3 train.checkpoint=false $extra"
        for c in true false; do
          echo "== $row compile=$c" >>"$out/methods_runs.log"
          $T 150 $py run.py $r train.compile=$c paths.results_dir=/tmp/gc_m/$row/$c >>"$out/methods_runs.log" 2>&1
        done
      done
      $py - "$out" <<'PY'
import glob, json, sys
rows = {}
for path in sorted(glob.glob("/tmp/gc_m/*/*/runs/*.json")):
    row, c = path.split("/")[3:5]
    rec = json.load(open(path))
    rows.setdefault(row, {})[c] = ([h["train_loss"] for h in rec["metrics"]["history"]], rec["env"]["fast_path"].get("compiled"), rec["timing"]["wall_s"])
for row, r in rows.items():
    print(row, "compiled:", r.get("true"), "\n", " " * len(row), "eager:   ", r.get("false"))
json.dump(rows, open(f"{sys.argv[1]}/methods.json", "w"), indent=1)
PY
      ;;
    bench)  # goals 1, 2, 6 under the runner's compiled layers, both workloads; 3 rotated rounds (rows
      # move by up to 10 % between rounds: ratios come from each row's fastest round)
      $T 280 $py scripts/bench.py --workload deberta --steps 20 --warmup 8 --no-parts --repeats 3 \
        --rows peft_lora,lora@blocks,r_lora@blocks,gm_lora@blocks,rm_lora@blocks \
        --rows-log "$out/rows.jsonl" --out "$out/bench_deberta.json" >"$out/bench_deberta.log" 2>&1
      $T 280 $py scripts/bench.py --workload gpt2 --steps 20 --warmup 8 --no-parts --repeats 3 \
        --rows peft_lora,lora@blocks,rm_lora@blocks,loda@blocks,loda_plain@blocks \
        --rows-log "$out/rows.jsonl" --out "$out/bench_gpt2.json" >"$out/bench_gpt2.log" 2>&1
      ;;
    e2e)  # goal 3: CoLA 3 epochs, PEFT eager vs our runner compiled, cold then warm cache
      $T 560 $py scripts/bench_e2e.py --data-dir "$data" --runner-overrides "train.compile=true" \
        --reuse-cache --budget-s 540 --work /tmp/gc_e2e --out "$out/e2e.json" >"$out/e2e.log" 2>&1
      ;;
    sweep)  # goal 5: MiniLM-sized runs, one at a time vs 4 at a time
      ov="model=minilm_l6 task=glue/rte task.data_dir=$data arm=lora_r8 train.epochs=1 ${MINILM:-}"
      $T 300 $py scripts/bench_sweep.py --runs 12 --jobs 4 --jobs 8 --timeout 120 --overrides "$ov" \
        --workdir /tmp/gc_sweep --out "$out/sweep.json" >"$out/sweep.log" 2>&1
      ;;
    *) echo "unknown step $step (probe, runner, methods, bench, e2e, sweep)" >&2; exit 2 ;;
  esac
  echo "== $step done (rc $?)"
done
