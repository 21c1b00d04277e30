# rnnlab: `make help` lists the targets. Everything runs inside .venv, made by `make install`.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
RNNLAB := $(VENV)/bin/rnnlab
UV := $(VENV)/bin/uv
TRACKING_URI ?= sqlite:///mlruns/mlflow.db
HOST ?= 127.0.0.1
PORT ?= 5000
EXP ?= cells_vs_tasks
SWEEP ?= sentiment_cells
WORKERS ?= 1
STUDY_STORAGE ?= sqlite:///mlruns/optuna.db
# `make server` needs a PostgreSQL URL, e.g. the one `make postgres` prints.
DB ?=
ARTIFACTS ?= mlruns/artifacts
POSTGRES_DIR ?= /tmp/rnnlab-postgres
SLURM_DIR ?= /tmp/rnnlab-slurm

.DEFAULT_GOAL := help
.PHONY: help install data train sweep dashboard postgres slurm server paper report reproduced ui docs docs-build test lint style bench lock clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install: $(VENV)/.installed data ## create .venv, install pinned dependencies, prepare the data, build the native ops
	@TF_CPP_MIN_LOG_LEVEL=2 $(PYTHON) -m rnnlab.recurrence.native  # last: its one line says on or off, and why

# Bytecode compiled at install time: where PYTHONDONTWRITEBYTECODE is set (as on these
# machines and CI) every process would otherwise compile what it imports, about 3× slower
# (MLflow 7 s instead of 2.5 s, TensorFlow 27 s instead of 8 s on a loaded 2-core machine).
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check "uv>=0.5"
	$(UV) pip install --python $(PYTHON) --constraint constraints.txt --compile-bytecode --editable ".[dev,docs]"
	touch $@

data: $(VENV)/.installed ## fetch and build the embedded datasets (idempotent)
	$(RNNLAB) prepare

train: ## train the default experiment (sentiment × LSTM) and record it in MLflow
	$(RNNLAB) train $(ARGS)

sweep: ## run or resume sweeps/$(SWEEP).yaml (WORKERS=2 uses both cores, ARGS=overrides)
	$(RNNLAB) sweep sweeps/$(SWEEP).yaml --workers $(WORKERS) $(ARGS)

dashboard: ## optuna-dashboard on the sweeps' storage, http://$(HOST):8080
	$(VENV)/bin/optuna-dashboard $(STUDY_STORAGE) --host $(HOST) --port 8080

postgres: ## start a local PostgreSQL on 127.0.0.1 with a password (data in POSTGRES_DIR) and print its URL
	@scripts/local_postgres.sh start $(POSTGRES_DIR) --password

slurm: ## start a single-node SLURM cluster on this machine (root; data in SLURM_DIR); export what it prints
	@echo "export SLURM_CONF=$$(scripts/local_slurm.sh start $(SLURM_DIR))"

server: ## MLflow tracking server on PostgreSQL (DB=postgresql+psycopg://...), artifacts in ARTIFACTS
	@test -n "$(DB)" || { echo "make server needs DB=postgresql+psycopg://...; make postgres prints one"; exit 2; }
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server --backend-store-uri $(DB) \
		--artifacts-destination $(ARTIFACTS) --host $(HOST) --port $(PORT)

paper: ## run every configuration of experiment EXP (resumable, WORKERS=2 uses both cores), then report
	$(RNNLAB) paper $(EXP) --workers $(WORKERS) $(ARGS)

report: ## tables and figures of experiment EXP in reports/EXP/
	$(RNNLAB) report $(EXP) $(ARGS)

reproduced: ## docs/results/reproduced.md: every report's published claims, judged, with their cost
	$(PYTHON) -m rnnlab.reports.reproduced reports docs/results/claims docs/results/reproduced.md

ui: ## open the MLflow dashboards on http://$(HOST):$(PORT)
	@echo "open http://$(HOST):$(PORT)/#/experiments?workflowType=machine_learning (MLflow's Model training view)"
	$(VENV)/bin/mlflow ui --backend-store-uri $(TRACKING_URI) --host $(HOST) --port $(PORT) --workers 1

docs: ## serve the documentation site (docs/) on http://$(HOST):8000, rebuilt as pages change
	$(VENV)/bin/mkdocs serve --dev-addr $(HOST):8000

# CI builds the site strictly: a broken link, a missing page or a page left out of the nav fails it.
docs-build:
	$(VENV)/bin/mkdocs build --strict --site-dir site

test: ## run the test suite
	$(PYTHON) -m pytest --rootdir=. -c pyproject.toml $(PYTEST_ARGS)

lint: ## check style and types without changing files
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

style: ## fix style in place
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

bench: ## speed against bare Keras and PyTorch; sweeps, stores, system metrics and own-data loading at scale
	$(PYTHON) -c "import torch, xlstm" 2>/dev/null || $(PYTHON) -m pip install -q -e ".[bench]" -c constraints.txt \
		|| echo "PyTorch or xlstm did not install: PyTorch's column stays empty, the reference check stops"
	$(PYTHON) benchmarks/recurrence_speed.py
	$(PYTHON) benchmarks/recurrence_speed.py --cells modern --tasks none
	$(PYTHON) benchmarks/reference_check.py
	command -v valgrind >/dev/null && $(PYTHON) benchmarks/scan_instructions.py \
		|| echo "scan_instructions skipped: valgrind is missing (apt-get install valgrind) or cannot run this CPU's code (valgrind 3.19 stops at AVX-512)"
	$(PYTHON) benchmarks/fused_instructions.py
	$(PYTHON) benchmarks/throughput.py
	$(PYTHON) benchmarks/translation_step_cost.py
	$(PYTHON) benchmarks/paper_workers.py
	$(PYTHON) benchmarks/sweep_pruning.py
	$(PYTHON) benchmarks/sweep_early_stopping.py
	$(PYTHON) benchmarks/system_metrics_cost.py
	$(PYTHON) benchmarks/own_data_load.py
	url=$$(scripts/local_postgres.sh start $(POSTGRES_DIR)) && \
		$(PYTHON) benchmarks/store_scale.py --postgres $$url && \
		$(PYTHON) benchmarks/sweep_scale.py --postgres $$url

lock: ## re-pin every dependency into constraints.txt
	$(UV) pip compile --universal --extra dev --extra docs pyproject.toml -o constraints.txt

clean: ## remove the virtualenv, prepared data and Hydra outputs (keeps mlruns/)
	rm -rf $(VENV) data outputs multirun site src/rnnlab/recurrence/native/build
