# Azure Event Grid on your laptop -- everyday commands. `make` (or `make help`) lists them.
#
# Two ways to run the example system, on the same ports (so never both at once):
#   make up / make down      the docker compose stack (broker, subscribers, MailHog)
#   make run / make stop     the same services as local processes from .venv, logs in .run/
# `make publish N=3` publishes to whichever of the two is running.

PY ?= .venv/bin/python
VENV ?= .venv
N ?= 1
ARGS ?=
COMPOSE ?= docker compose
RUN_DIR := .run

# Host ports; compose reads the same variables (see docker-compose.yml).
BROKER_HOST_PORT ?= 5000
ORDER_PROCESSOR_HOST_PORT ?= 5001
EMAIL_SERVICE_HOST_PORT ?= 5002
MAILHOG_HOST_PORT ?= 8025
export BROKER_HOST_PORT ORDER_PROCESSOR_HOST_PORT EMAIL_SERVICE_HOST_PORT MAILHOG_HOST_PORT

# Test folders that exist (a fresh clone has no empty folders; pytest fails on a missing path).
TESTS := $(wildcard tests/unit tests/integration tests/e2e)

.DEFAULT_GOAL := help
.PHONY: help install up down logs publish run stop status test test-unit test-integration test-e2e demo-retry bench lint clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[1m%-17s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "  Variables: N=events for publish (default 1), ARGS=more publisher options (e.g. ARGS='--schema cloudevents'),"
	@echo "             PY=python to use (default .venv/bin/python),"
	@echo "             BROKER_HOST_PORT ORDER_PROCESSOR_HOST_PORT EMAIL_SERVICE_HOST_PORT MAILHOG_HOST_PORT"

# The stamp makes a second `make install` a no-op until a requirements file changes.
$(VENV)/.installed: requirements/broker.txt requirements/subscriber.txt requirements/publisher.txt requirements/dev.txt
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	@touch $@

install: $(VENV)/.installed ## Create .venv and install every pinned dependency (fast when done)
	@echo "$(VENV) is ready: $(PY)"

# ---- the compose stack --------------------------------------------------------------------------

up: ## Build and start the compose stack, wait until every service is healthy
	$(COMPOSE) up --build --detach --wait --wait-timeout 180
	@echo
	@echo "  broker (dashboard, API)  http://127.0.0.1:$(BROKER_HOST_PORT)/"
	@echo "  order processor          http://127.0.0.1:$(ORDER_PROCESSOR_HOST_PORT)/orders"
	@echo "  email service            http://127.0.0.1:$(EMAIL_SERVICE_HOST_PORT)/mails"
	@echo "  mail catcher             http://127.0.0.1:$(MAILHOG_HOST_PORT)/"
	@echo "  publish an order:        make publish N=1"

down: ## Stop the compose stack (data volumes are kept; `docker compose down -v` forgets them)
	$(COMPOSE) down

logs: ## Follow the compose stack's logs
	$(COMPOSE) logs --follow --tail 100

# Compose when its broker is running, else the local broker of `make run`. `--no-deps` so a run
# never recreates a service of the stack it publishes to.
publish: ## Publish N NewOrder events (N=1) with the Azure SDK publisher, to `make up` or `make run`
	@if [ -n "$$($(COMPOSE) ps --status running --quiet broker 2>/dev/null)" ]; then \
		echo "publishing $(N) event(s) to the compose stack"; \
		$(COMPOSE) run --rm --no-deps --build publisher --count $(N) $(ARGS); \
	elif [ -f $(RUN_DIR)/broker.pid ] && kill -0 "$$(cat $(RUN_DIR)/broker.pid)" 2>/dev/null; then \
		echo "publishing $(N) event(s) to the local broker"; \
		$(PY) -m publisher --count $(N) --endpoint http://127.0.0.1:$(BROKER_HOST_PORT)/api/events $(ARGS); \
	else \
		echo "Nothing to publish to: start the stack with 'make up' (docker) or 'make run' (local)." >&2; exit 1; \
	fi

# ---- the same services as local processes ----------------------------------------------------

# $(call start,name,port,health path,command): start one local process unless it runs already, then
# wait (bounded: 20 s) until it answers on loopback; on failure show its log and stop.
define start
	@if [ -f $(RUN_DIR)/$(1).pid ] && kill -0 "$$(cat $(RUN_DIR)/$(1).pid)" 2>/dev/null; then \
		echo "  $(1) already running (pid $$(cat $(RUN_DIR)/$(1).pid))"; \
	else \
		setsid $(4) >>$(RUN_DIR)/$(1).log 2>&1 </dev/null & echo $$! >$(RUN_DIR)/$(1).pid; \
		ok=; for i in $$(seq 100); do \
			if $(PY) -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$(2)$(3)', timeout=1)" 2>/dev/null; then ok=1; break; fi; \
			kill -0 "$$(cat $(RUN_DIR)/$(1).pid)" 2>/dev/null || break; sleep 0.2; \
		done; \
		if [ -z "$$ok" ]; then \
			echo "  $(1) did not come up on 127.0.0.1:$(2); last lines of $(RUN_DIR)/$(1).log:" >&2; \
			tail -n 20 $(RUN_DIR)/$(1).log >&2; exit 1; \
		fi; \
		echo "  $(1)  http://127.0.0.1:$(2)/  (pid $$(cat $(RUN_DIR)/$(1).pid), log $(RUN_DIR)/$(1).log)"; \
	fi
endef

# The same settings compose gives the containers, with loopback addresses and ./data/ for state.
run: export BROKER_HOST = 127.0.0.1
run: export BROKER_PORT = $(BROKER_HOST_PORT)
run: export BROKER_CONFIG = config/broker.local.json
run: export BROKER_DATA_DIR = data/broker
run: export BROKER_PUBLIC_URL = http://127.0.0.1:$(BROKER_HOST_PORT)
run: export ORDER_PROCESSOR_HOST = 127.0.0.1
run: export ORDER_PROCESSOR_PORT = $(ORDER_PROCESSOR_HOST_PORT)
run: export ORDER_PROCESSOR_DATA_DIR = data/order_processor
run: export EMAIL_SERVICE_HOST = 127.0.0.1
run: export EMAIL_SERVICE_PORT = $(EMAIL_SERVICE_HOST_PORT)
run: export EMAIL_SERVICE_DATA_DIR = data/email_service
run: export SMTP_HOST = 127.0.0.1
run: export SMTP_PORT = 1025

# The catcher first (email_service mails through it), the broker last: the subscriptions in
# config/broker.local.json then pass their validation handshake at once.
run: $(PY) ## Run broker, subscribers and a mail catcher as local processes (pids and logs in .run/)
	@mkdir -p $(RUN_DIR)
	$(call start,mailcatcher,$(MAILHOG_HOST_PORT),/api/v2/messages,$(PY) mailhog/local_catcher.py --smtp 127.0.0.1:1025 --http 127.0.0.1:$(MAILHOG_HOST_PORT))
	$(call start,order_processor,$(ORDER_PROCESSOR_HOST_PORT),/healthz,$(PY) -m order_processor)
	$(call start,email_service,$(EMAIL_SERVICE_HOST_PORT),/healthz,$(PY) -m email_service)
	$(call start,broker,$(BROKER_HOST_PORT),/readyz,$(PY) -m broker)
	@echo "  publish: make publish N=1   mail: http://127.0.0.1:$(MAILHOG_HOST_PORT)/   stop: make stop"

stop: ## Stop the local processes started by `make run`
	@for pidfile in $(RUN_DIR)/*.pid; do \
		[ -f "$$pidfile" ] || continue; pid=$$(cat "$$pidfile"); name=$$(basename "$$pidfile" .pid); \
		if kill -0 "$$pid" 2>/dev/null; then \
			kill -TERM -- "-$$pid" 2>/dev/null || kill -TERM "$$pid"; \
			for i in $$(seq 50); do kill -0 "$$pid" 2>/dev/null || break; sleep 0.1; done; \
			kill -0 "$$pid" 2>/dev/null && kill -KILL -- "-$$pid" 2>/dev/null; \
			echo "  stopped $$name (pid $$pid)"; \
		fi; \
		rm -f "$$pidfile"; \
	done

status: ## Show what is running: compose services and local processes
	@$(COMPOSE) ps 2>/dev/null || true
	@for pidfile in $(RUN_DIR)/*.pid; do [ -f "$$pidfile" ] || continue; \
		pid=$$(cat "$$pidfile"); kill -0 "$$pid" 2>/dev/null && echo "  local $$(basename $$pidfile .pid): pid $$pid"; done; true

# ---- checks -----------------------------------------------------------------------------------

test: $(PY) ## Run every test tier: unit, integration, e2e (the e2e tier builds the compose stack)
	$(PY) -m pytest $(TESTS)

test-unit: $(PY) ## Unit tests only (seconds, no network)
	$(PY) -m pytest tests/unit

test-integration: $(PY) ## Integration tests: real processes on loopback, ephemeral ports
	$(PY) -m pytest tests/integration

test-e2e: $(PY) ## End-to-end tests against the compose stack (needs a Docker engine)
	$(PY) -m pytest tests/e2e

bench: $(PY) ## Benchmark broker vs prototype baseline vs raw-HTTP ceiling on loopback (~7 min); SCENARIOS=..., BENCH_ARGS=--quick
	$(PY) -m bench $(SCENARIOS) $(BENCH_ARGS)

demo-retry: $(PY) ## Watch Azure's retry schedule and dead-lettering, compressed into seconds (local processes)
	$(PY) -m demo.retry

lint: $(PY) ## Lint with ruff (when installed in the venv)
	@if $(PY) -m ruff --version >/dev/null 2>&1; then $(PY) -m ruff check .; \
	else echo "ruff is not installed in $(VENV): $(PY) -m pip install ruff" >&2; exit 1; fi

clean: stop ## Stop local processes; remove .run/, local data/ and caches (not .venv, not docker volumes)
	rm -rf $(RUN_DIR) data .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +

# `make test` etc. on a fresh clone install first; an explicit PY=... outside the venv is used as is.
$(VENV)/bin/python:
	$(MAKE) install
