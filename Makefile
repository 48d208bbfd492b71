# The two commands of the README: `make run` (web + Celery workers + beat, and the AMQP intake consumer when
# AMQP_URL is set: scripts/consume-records.sh) and `make test`.
# Both create .venv and install the pinned requirements on first use (again whenever they change).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REQS := requirements/base.txt requirements/prod.txt requirements/dev.txt
STAMP := $(VENV)/.installed-$(shell cat $(REQS) | sha256sum | cut -c1-16)
PORT ?= 8000

.PHONY: setup run test lint bench superuser

$(STAMP): $(REQS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements/dev.txt
	@rm -f $(VENV)/.installed-*; touch $@

setup: $(STAMP)

# PUBLIC_URL follows PORT unless set: the sandbox Bitrix24 (/sandbox/, on with DEBUG) lives on that address.
RUN_ENV = DEBUG=$${DEBUG:-1} PUBLIC_URL=$${PUBLIC_URL:-http://127.0.0.1:$(PORT)}

run: setup
	$(RUN_ENV) $(BIN)/python manage.py migrate --noinput
	@$(RUN_ENV) $(BIN)/python manage.py sandbox_url 2>/dev/null || true
	PATH="$(CURDIR)/$(BIN):$$PATH" $(RUN_ENV) PORT=$(PORT) $(BIN)/honcho -f Procfile start

test: setup
	sh scripts/ensure-chromium.sh
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff, the import contract (floors, pyproject.toml [tool.importlinter]) and the type checker.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

bench: setup
	sh scripts/ensure-wrk.sh
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

superuser: setup
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py createsuperuser
