# `make run` and `make test` set up .venv on first use (CPU torch pinned: no CUDA wheels pulled).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build on disk here; on a GPU machine: make setup TORCH=torch==2.13.0 with a CUDA index
TORCH ?= torch==2.13.0

.PHONY: help setup run test test-fast lint fmt smoke tables clean bench
help:      ## list targets
	@grep -E '^[a-z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "%-10s %s\n",$$1,$$2}'

setup: $(VENV)/.installed  ## create .venv with pinned dependencies (+ Java for METEOR / PTB tokenizer)

$(VENV)/.installed: pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	bash scripts/install_java.sh
	touch $@

run: setup  ## the default experiment: RM-LoRA on the synthetic FNN task (< 60 s on 2 CPU cores)
	$(BIN)/python run.py

test: setup  ## every CPU test, end-to-end runs included (a few minutes)
	$(BIN)/python -m pytest -q -m "not gpu"

test-fast: setup  ## the fast unit tests only (plain `pytest` does the same)
	$(BIN)/python -m pytest -q

smoke: setup  ## tiny DeBERTa on real CoLA TSVs, every method
	$(BIN)/python run.py -m experiment=glue_smoke method=ft,lora,r_lora,gm_lora,rm_lora

BENCH ?= --workload tiny --repeats 3
bench: setup  ## step-time benchmark (docs/PERFORMANCE.md); GPU: make bench BENCH="--workload deberta --workload gpt2 --repeats 3"
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python scripts/bench.py $(BENCH)

lint: setup  ## ruff, check only
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

fmt: setup
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

clean:  ## remove results and caches (keeps .venv)
	rm -rf results/runs results/hydra .pytest_cache .ruff_cache
