# The two-command promise: `make run` and `make test` work on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test test-fast lint bench bench-crash clean dist browser-deps messages

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

# API, panel and dispatcher on 127.0.0.1:8000, SQLite in var/, a demo account printed
run: $(STAMP)
	mkdir -p var
	PARCELHOOK_DATABASE_URL=$${PARCELHOOK_DATABASE_URL:-sqlite:///var/parcelhook.db} \
	PARCELHOOK_KEY_FILE=$${PARCELHOOK_KEY_FILE:-var/parcelhook.key} \
	$(BIN)/parcelhook serve --host 127.0.0.1 --port 8000 --demo \
		--allow-private-targets --allow-http-targets

lint: $(STAMP)
	$(BIN)/ruff check src tests bench docs
	$(BIN)/ruff format --check src tests bench docs
	$(BIN)/mypy

# axe-core, which the panel's browser tests inject into every page (pinned by the lockfile)
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

browser-deps: node_modules/.package-lock.json

# the panel's catalogues: extract messages.pot from the templates and panel code, then merge
# it into each language's .po (translate the new entries; the .po files are the sources)
LOCALES := src/parcelhook/panel/locales
messages: $(STAMP)
	$(BIN)/pybabel extract -F $(LOCALES)/babel.cfg -k N_ --no-location --sort-output \
		--omit-header -o $(LOCALES)/messages.pot .
	$(BIN)/pybabel update -i $(LOCALES)/messages.pot -d $(LOCALES) -w 100 \
		--no-fuzzy-matching --ignore-obsolete --ignore-pot-creation-date

test: lint browser-deps
	$(BIN)/pytest $(PYTEST_ARGS)

# the unit tests alone, in seconds: no lint, no database, no sockets (and no conftest or
# plugin they do not need, which would import the whole server first)
test-fast: $(STAMP)
	$(BIN)/pytest tests/unit -q -p no:cacheprovider --confcutdir=tests/unit \
		-p no:schemathesis -p no:hypothesispytest -p no:anyio $(PYTEST_ARGS)

# the delivery benchmark (not a test); QUICK=1 for a run of under a minute
bench: $(STAMP)
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

# the crash-safety scenario with 10 SIGKILLs per engine instead of the suite's three
bench-crash: $(STAMP)
	$(BIN)/python -m bench.crash $(or $(KILLS),10)

# wheels and sdists of parcelhook and parcelhook-receiver (the receiver kit alone) in dist/
dist: $(STAMP)
	rm -rf dist build
	$(BIN)/python -m build --no-isolation --outdir dist .
	$(BIN)/python packages/receiver/build.py --outdir dist

clean:
	rm -rf $(VENV) var test-artifacts node_modules .mypy_cache .ruff_cache .pytest_cache dist build
