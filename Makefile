# Every target creates or reuses .venv itself, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-slow lint bench demo clean dashboard-picture

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,gateway,s3]'
	@touch $(STAMP)

# The S3 gateway on 127.0.0.1:9000, data in ./data; prints the endpoint, credentials, an aws command.
run: $(STAMP)
	$(PY) -m examples.object_store_gateway --host 127.0.0.1 --port 9000 --data-dir ./data

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

# The default profile is fast; test-slow runs the long hypothesis profile once, bounded, spread
# over the cores (its tests are a few long state machines, so work stealing balances them).
SLOW_ARGS := -m slow --hypothesis-profile=slow -n auto --dist worksteal

test: lint
	$(PY) -m pytest -q -m "not slow"
	$(PY) -m pytest -q $(SLOW_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q $(SLOW_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks

# The README's dashboard picture: a real Prometheus scrapes a process under load for a minute, then
# dashboards/plot.py draws the panels' query_range results in the dashboard's layout.
dashboard-picture: $(STAMP)
	tmp=$$(mktemp -d) && AIOCACHE_DASHBOARD_DATA=$$tmp/data.json AIOCACHE_DASHBOARD_SECONDS=60 \
	  $(PY) -m pytest -q -p no:cacheprovider tests/dashboards/test_prometheus.py -k real_prometheus \
	  && $(PY) -m dashboards.plot $$tmp/data.json --output dashboards/dashboard.png; \
	  status=$$?; rm -rf $$tmp; exit $$status

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
