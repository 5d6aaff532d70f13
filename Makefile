# escalation-risk — run `make` or `make help` to see the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DATA ?=
TICKETS ?= 20000
PYTEST_ARGS ?=
SERVICENOW_PATH ?= ../shared/data/servicenow/incident_event_log.csv.gz

.PHONY: help install data train test test-data lint bench mlflow-ui clean

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with pinned dependencies

data: $(STAMP) ## generate the demo ticket history (TICKETS=20000) into data/demo/
	$(BIN)/escalation-risk generate-data --tickets $(TICKETS)

train: $(STAMP) ## train on DATA (default: demo history, generated if missing), log to MLflow, write models/
	$(BIN)/escalation-risk train $(if $(DATA),--data $(DATA))

test: $(STAMP) ## run the test suite (code, data and model tests on small generated data)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check
	$(BIN)/ruff check features training serving tests bench

bench: $(STAMP) ## benchmarks: text-feature ablation, then training on 1,000,000 generated tickets (minutes)
	$(BIN)/python bench/text_ablation.py
	$(BIN)/python bench/train_bench.py

mlflow-ui: $(STAMP) ## browse runs and registered models at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean: ## remove generated data, models, MLflow store and caches (keeps .venv)
	rm -rf data mlflow.db mlruns mlartifacts reports .pytest_cache
	find models -mindepth 1 ! -name README.md -exec rm -rf {} +
