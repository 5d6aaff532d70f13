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
ENGINE ?= single
STORE_OUTCOMES ?=
ifndef CUTOFF
CUTOFF := $(shell date -u +%Y-%m-%dT%H:%M:%S)
endif
SCHEDULER ?=
MLFLOW_PORT ?= 5000
PG_PORT ?= 5433
SCALE_TICKETS ?= 5000000
REPLAY_TICK ?= 1h

.PHONY: help install data train report test test-data test-reliability lint bench mlflow-ui clean serve serve-bench loadtest audit-data bench-real \
	postgres mlflow-server bench-scale watch replay bench-watch

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

train: $(STAMP) ## train on DATA (default: demo history); SOURCE=servicenow|mapping (MAPPING=file); ENGINE=dask [SCHEDULER=tcp://host:8786]; STORE_OUTCOMES=1 [CUTOFF=date] adds the ticket store's outcomes known by the cut-off
ifeq ($(STORE_OUTCOMES),1)
	$(BIN)/escalation-risk db export --before "$(CUTOFF)" --output data/store_events.parquet
endif
	$(BIN)/escalation-risk train $(if $(DATA),--data $(DATA)) $(if $(SOURCE),--source $(SOURCE)) $(if $(MAPPING),--mapping $(MAPPING)) \
		--engine $(ENGINE) $(if $(SCHEDULER),--scheduler $(SCHEDULER)) \
		$(if $(filter 1,$(STORE_OUTCOMES)),--extra-data data/store_events.parquet --cutoff "$(CUTOFF)")

report: $(STAMP) ## ops leads' report (HTML + JSON/CSV) of MODEL (default models/current) into reports/<version>/
	$(BIN)/escalation-risk report $(if $(MODEL),--model-path $(MODEL))

# Browser tests render the report in Debian's chromium; installed here when missing (CI runs as root).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq chromium) || \
		echo "could not install chromium: browser tests will skip"; \
	else echo "chromium missing and not root: browser tests will skip (apt-get install chromium)"; fi

audit-data: $(STAMP) ## leakage audit of an export (default: the ServiceNow log at SERVICENOW_PATH)
	$(BIN)/escalation-risk audit-data --data $(or $(DATA),$(SERVICENOW_PATH)) $(if $(MAPPING),--mapping $(MAPPING),--source $(or $(SOURCE),servicenow))

bench-real: $(STAMP) ## real-data benchmark on the ServiceNow log (both labels, out of time; minutes)
	$(BIN)/python bench/real_servicenow.py --data $(SERVICENOW_PATH)

test: $(STAMP) postgres | $(CHROMIUM) ## run the test suite (code, data and model tests on small generated data)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-reliability: $(STAMP) ## heavy reliability runs: load and 20 model rollouts under gunicorn (minutes)
	$(BIN)/python -m pytest -m reliability tests/reliability $(PYTEST_ARGS)

postgres: ## install PostgreSQL from Debian's packages when missing (as root; tests needing it skip otherwise)
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "PostgreSQL is not installed: run 'sudo apt-get install postgresql' (its tests will skip)"; fi

mlflow-server: $(STAMP) postgres ## shared MLflow server on PostgreSQL (.mlflow-server/; MLFLOW_PORT=5000, PG_PORT=5433, loopback)
	$(BIN)/python -m training.tracking_server --dir $(CURDIR)/.mlflow-server --port $(MLFLOW_PORT) --pg-port $(PG_PORT)

lint: $(STAMP) ## ruff check (CI runs it)
	$(BIN)/ruff check features bundle training serving cli tests bench

bench: $(STAMP) ## benchmarks: text-feature ablation, then training on 1,000,000 generated tickets (minutes)
	$(BIN)/python bench/text_ablation.py
	$(BIN)/python bench/train_bench.py

bench-scale: $(STAMP) ## single process vs Dask LocalCluster on SCALE_TICKETS=5000000 generated tickets (long; see docs/scaling.md)
	$(BIN)/python bench/scale_bench.py --tickets $(SCALE_TICKETS)

serve: $(STAMP) ## scoring service on http://127.0.0.1:8080 with the queue watcher beside it (ESCALATION_RISK_WATCH=off: without)
	@test -e models/current || $(MAKE) train
	$(BIN)/escalation-risk serve

watch: $(STAMP) ## the queue watcher alone: re-score open tickets every 5 min, raise and deliver alerts
	@test -e models/current || $(MAKE) train
	$(BIN)/escalation-risk watch

replay: $(STAMP) ## replay backtest on the demo test period: model vs SLA timer vs supervisor request (REPLAY_TICK=1h; SOURCE=servicenow MODEL=dir UNTIL=date)
	@test -n "$(SOURCE)" || test -e models/current || $(MAKE) train
	$(BIN)/escalation-risk replay --tick $(REPLAY_TICK) $(if $(SOURCE),--source $(SOURCE)) $(if $(DATA),--data $(DATA)) \
		$(if $(MODEL),--model $(MODEL)) $(if $(UNTIL),--until $(UNTIL))

bench-watch: $(STAMP) ## benchmarks: one watch tick over 100,000 open tickets, and replay speed (minutes)
	@test -e models/current || $(MAKE) train
	$(BIN)/python bench/watch_bench.py
	$(BIN)/python bench/replay_bench.py

serve-bench: $(STAMP) ## serving benchmark: this service vs mlflow models serve vs a hello-world floor
	@test -e models/current || $(MAKE) train
	$(BIN)/python bench/serve_bench.py

loadtest: $(STAMP) ## load run under gunicorn: 30,000 requests at concurrency 16; errors, latency, memory
	@test -e models/current || $(MAKE) train
	$(BIN)/python bench/load_bench.py

mlflow-ui: $(STAMP) ## browse runs and registered models at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean: ## remove generated data, models, MLflow store and caches (keeps .venv)
	rm -rf data mlflow.db mlruns mlartifacts reports .pytest_cache
	find models -mindepth 1 ! -name README.md -exec rm -rf {} +
