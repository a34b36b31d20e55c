# Everyday commands. `make run` starts the server on embedded defaults; `make test` runs
# every check CI runs (lint, format, types, migrations, the whole test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run contracts test lint typecheck format migrations-check pytest install install-dev coturn chromium pg-server media-tools ops-tools redis-sentinel scale-tools vendor-console worker beat bench bench-tools clean

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## The JavaScript SDK's own dependencies (clients/js/package-lock.json): its tests
## (tests/test_sdk_contract.py, tests/test_sdk_live.py) run its generator check, tsc and node --test.
clients/js/node_modules/.installed: clients/js/package.json clients/js/package-lock.json
	cd clients/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## The benchmark's Node tools (bench/socketio/package-lock.json): the socket.io relay (the seed's
## stack, with @socket.io/redis-adapter) and the Node load generator of bench/messaging.py;
## tests/test_bench_tools_live.py runs both against live targets.
bench/socketio/node_modules/.installed: bench/socketio/package.json bench/socketio/package-lock.json
	cd bench/socketio && npm ci --no-audit --no-fund --loglevel=error
	touch $@

bench-tools: bench/socketio/node_modules/.installed

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev node_modules/.installed clients/js/node_modules/.installed bench-tools

## coturn's turnserver (Debian package coturn): the calls tests start it as a real TURN relay.
coturn:
	@command -v turnserver >/dev/null 2>&1 || test -x /usr/bin/turnserver || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn >/dev/null; } || \
		{ echo "coturn is missing: install it (apt-get install coturn) for the calls relay tests"; exit 1; }

## Debian's Chromium (packages chromium, chromium-driver): the browser tests (tests/browser/) drive
## it through Playwright for Python (requirements-dev.txt); nothing downloads a browser.
chromium:
	@test -x /usr/bin/chromium || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
		{ echo "chromium is missing: install it (apt-get install chromium chromium-driver) for the browser tests"; exit 1; }

## Rebuild the web console's vendored browser modules (console/static/console/vendor/) from the
## locked npm packages; tests/test_console_vendor.py fails while the committed files are stale.
vendor-console: node_modules/.installed clients/js/node_modules/.installed
	node scripts/vendor_console.mjs

## PostgreSQL's server binaries (initdb, pg_ctl; Debian package postgresql): the connection-pool
## tests and bench/rest.py start a private cluster with a small max_connections (tests/pgcluster.py).
pg-server:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || \
		{ echo "PostgreSQL's server binaries are missing: install them (apt-get install postgresql)"; exit 1; }

## ffmpeg strips video/audio metadata (without it those uploads are refused); exiftool is the
## outside judge of the metadata tests (Debian packages ffmpeg, libimage-exiftool-perl);
## poppler-utils' pdftotext, pdfinfo, pdffonts and pdftoppm judge the generated PDFs (documents/tests/).
media-tools:
	@{ command -v ffmpeg && command -v ffprobe && command -v exiftool && command -v pdftotext && command -v pdffonts && command -v pdftoppm; } >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg libimage-exiftool-perl poppler-utils >/dev/null; } || \
		{ echo "ffmpeg/exiftool/poppler-utils are missing: install them (apt-get install ffmpeg libimage-exiftool-perl poppler-utils) for the upload metadata and PDF tests"; exit 1; }

## promtool (Debian package prometheus) and Debian's docker-compose: tests/test_deploy_files.py
## checks deploy/prometheus/ (config, alert rules and their unit tests, the metrics' lint) and
## docker-compose.yml with them.
ops-tools:
	@{ command -v promtool && command -v docker-compose; } >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus docker-compose >/dev/null; } || \
		{ echo "promtool/docker-compose are missing: install them (apt-get install prometheus docker-compose) for the deployment file checks"; exit 1; }

## Redis Sentinel (Debian package redis-sentinel; redis-server for the master and replica): the
## failover tests (core/tests/test_redis_roles.py, tests/test_sentinel_failover_live.py) and
## bench/failover.py start a master, a replica and three sentinels on free loopback ports.
redis-sentinel:
	@{ command -v redis-sentinel || test -x /usr/bin/redis-sentinel; } >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-sentinel >/dev/null; } || \
		{ echo "redis-sentinel is missing: install it (apt-get install redis-sentinel) for the Redis failover tests"; exit 1; }

## PgBouncer and HAProxy (Debian packages pgbouncer, haproxy): the scale-out tests
## (tests/test_pgbouncer_live.py, tests/test_haproxy_live.py) and bench/messaging.py --proxy haproxy
## start their own instances on loopback ports; the read replica test uses PostgreSQL's own
## pg_basebackup (pg-server).
scale-tools:
	@{ { command -v pgbouncer || test -x /usr/sbin/pgbouncer; } && { command -v haproxy || test -x /usr/sbin/haproxy; }; } >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer haproxy >/dev/null; } || \
		{ echo "pgbouncer/haproxy are missing: install them (apt-get install pgbouncer haproxy) for the scale-out tests"; exit 1; }

## Run the server on embedded defaults (SQLite, in-memory channel layer, eager Celery).
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py runserver $(HOST):$(PORT)

## Regenerate the contract files from the code (docs/openapi.yaml: drf-spectacular, validated;
## docs/asyncapi.yaml: from the frame models), then the JavaScript SDK's generated types from both.
## The tests fail while a committed contract differs from what the code generates.
contracts: $(VENV)/.dev clients/js/node_modules/.installed
	DJANGO_SETTINGS_MODULE=healthchat.settings.test $(PY) manage.py spectacular --validate --fail-on-warn --file docs/openapi.yaml
	DJANGO_SETTINGS_MODULE=healthchat.settings.test DATABASE_POOL_MAX_SIZE=0 $(PY) manage.py asyncapi --write
	cd clients/js && npm run --silent generate

## The whole test command (what CI runs).
test: install-dev coturn chromium pg-server media-tools ops-tools redis-sentinel scale-tools
	$(PY) scripts/check_services.py
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	DJANGO_SETTINGS_MODULE=healthchat.settings.test DATABASE_POOL_MAX_SIZE=0 $(PY) manage.py makemigrations --check --dry-run
	DJANGO_SETTINGS_MODULE=healthchat.settings.test DATABASE_POOL_MAX_SIZE=0 $(PY) manage.py asyncapi --check
	$(BIN)/pytest -n auto $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

typecheck: install-dev
	$(BIN)/mypy .

pytest: install-dev coturn chromium pg-server media-tools ops-tools redis-sentinel scale-tools
	$(BIN)/pytest -n auto $(PYTEST_ARGS)

worker: install
	$(BIN)/celery -A healthchat worker -l info

beat: install
	$(BIN)/celery -A healthchat beat -l info

clean:
	rm -rf $(VENV) node_modules clients/js/node_modules bench/socketio/node_modules db.sqlite3* var staticfiles
