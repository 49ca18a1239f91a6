# ModelDeck: `make run` starts the console, `make test` runs the whole test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/modeldeck
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: install install-dev run test lint bench clean

# `make run` needs only the runtime packages; `make test`/`make bench` add the dev extras.
$(VENV)/.installed-runtime: pyproject.toml
	bash scripts/install.sh $(VENV) .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed-runtime
	bash scripts/install.sh $(VENV) '.[dev]'
	touch $@

install: $(VENV)/.installed-runtime

install-dev: $(VENV)/.installed-dev

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py bootstrap_demo
	$(PY) manage.py run_console

test: install-dev
	bash scripts/ensure_services.sh
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) SECRET_KEY=modeldeck-test \
	MODELDECK_DATA_DIR=$(CURDIR)/var/test DJANGO_ALLOW_ASYNC_UNSAFE=true \
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .

# Each bench creates (and drops) its own PostgreSQL database; the gateway bench wants an empty
# Redis database (BENCH_REDIS_URL), which it flushes when done.
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/7

bench: install-dev
	bash scripts/ensure_services.sh
	$(PY) bench/console_pages.py
	$(PY) bench/deploy_sync.py
	REDIS_URL=$(BENCH_REDIS_URL) $(PY) bench/gateway.py
	BENCH_REDIS_URL=$(BENCH_REDIS_URL) $(PY) bench/autoscale.py

clean:
	rm -rf $(VENV) var modeldeck.sqlite3
