VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# A second venv with the runtime dependencies at the lowest versions pyproject.toml admits.
LOWEST_VENV ?= .venv-lowest
LOWEST := constraints/lowest.txt
LOWEST_STAMP := $(LOWEST_VENV)/.installed-$(shell cat pyproject.toml $(LOWEST) | cksum | cut -d' ' -f1)

.PHONY: demo test test-fast test-lowest image-test lint typecheck pytest bench loadtest chaos clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

$(LOWEST_STAMP): pyproject.toml $(LOWEST)
	test -x $(LOWEST_VENV)/bin/python || python3 -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/pip install -q --upgrade pip
	$(LOWEST_VENV)/bin/pip install -q -c $(LOWEST) -e '.[test]'
	rm -f $(LOWEST_VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(PY) -m loadtest.simulate $(ARGS)

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m 'not server' -n 4 --dist loadfile

# The image check is a run of its own (make image-test): it needs podman, runc and debootstrap.
pytest: $(STAMP)
	$(VENV)/bin/pytest -q -m 'not image'

# The suite once more, on the oldest versions a user may have (docs/dependencies.md): the floors
# in pyproject.toml are a promise only while this passes.
test-lowest: $(LOWEST_STAMP)
	$(LOWEST_VENV)/bin/pip freeze --exclude-editable | grep -iE '^(redis|httpx|opentelemetry-(api|sdk)|tzdata)=='
	$(LOWEST_VENV)/bin/pytest -q -m 'not image'

# The Dockerfile built with podman on a stand-in Lambda base (kept in $$CPS_IMAGE_CACHE, by
# default ~/.cache/cps-limiter/image) and run as Lambda runs it (docs/deployment.md).
image-test: $(STAMP)
	$(VENV)/bin/pytest -q -m image tests/image

# Thousands of fault-injection schedules (tests/dialer/test_dialer_chaos.py): one fault at one
# boundary of a batch each, redelivered until nothing is left; CHAOS_SCHEDULES for each of its
# two workers (one honouring the idempotency key, the seed's). `make test` runs hundreds.
CHAOS_SCHEDULES ?= 2500
chaos: $(STAMP)
	CHAOS_SCHEDULES=$(CHAOS_SCHEDULES) $(VENV)/bin/pytest -q --timeout 7200 tests/dialer/test_dialer_chaos.py

bench: $(STAMP)
	$(PY) -m loadtest.bench

loadtest: $(STAMP)
	$(PY) -m loadtest.run $(ARGS)

clean:
	rm -rf $(VENV) $(LOWEST_VENV) .mypy_cache .pytest_cache .ruff_cache
