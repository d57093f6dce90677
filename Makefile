# pgha: `make up` (empty checkout -> running cluster), `make test` (-> passing suite).
VENV   ?= .venv
PYTHON ?= python3
PGHA   := $(VENV)/bin/pgha
SPEC   ?=

.PHONY: up down status test unit integration test-images images-trixie images-bookworm lint venv engine browser prometheus bench-cli images bench bench-failover bench-upgrade bench-major bench-backup bench-soak clean server server-stop audit bench-audit docs docs-build

# `make up` also starts (or keeps) the Prefect server, work pool, deployments and worker, so CLI
# runs show in the UI; PGHA_NO_SERVER=1 keeps the ephemeral API instead. Idempotent: a second
# `make up` with nothing changed only checks.
up: venv engine          ## server (unless PGHA_NO_SERVER=1) + build what is missing + bring the cluster up (SPEC=file.yaml optional)
	$(if $(filter-out 0,$(PGHA_NO_SERVER)),,$(PGHA) server start)
	$(PGHA) up $(if $(SPEC),--spec $(SPEC))

down: venv               ## remove the containers (data volumes kept); the server stays unless STOP_SERVER=1
	$(PGHA) down $(if $(SPEC),--spec $(SPEC))
	$(if $(filter 1,$(STOP_SERVER)),$(PGHA) server stop)

status: venv
	$(PGHA) status $(if $(SPEC),--spec $(SPEC))

# Everything the CI runs. First, side by side (`make -j`, each target's output kept together): the
# lint, the unit tests, the docs build, the images of two Debian suites and the host's packages;
# then the integration suite. On a cached machine the second group is a few checks; on a fresh
# one it is most of the build time, now overlapped instead of in a row.
test:
	$(MAKE) --no-print-directory -j6 --output-sync=target lint unit docs-build images-trixie images-bookworm browser
	$(MAKE) --no-print-directory integration

lint: venv
	$(VENV)/bin/ruff check cli flows tasks stack tests benchmarks

unit: venv prometheus
	$(VENV)/bin/pytest tests/unit -q

# The documentation site (MkDocs + Material): references are generated from the code at build
# time (docs/hooks/generate.py); --strict turns a broken link, anchor or missing page into a failure.
docs-build: venv         ## build the docs site into build/site (strict: fails on any warning)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict  # not -q: it hides the warnings strict counts, and passes

docs: venv               ## build and serve the docs on http://127.0.0.1:$${PGHA_DOCS_PORT:-8000}
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --strict -a 127.0.0.1:$${PGHA_DOCS_PORT:-8000}

IT_WORKERS ?= 2
# A test runs once and must pass. Only tests marked `timing_sensitive` (they assert a ceiling on a
# write gap or an alert's delay, which a 2-core machine running two files at once can stretch)
# run once more after a failure (IT_RERUNS times), listed under "rerun test summary info" with
# their first failure printed at the end (tests/integration/conftest.py).
IT_RERUNS ?= 1
integration: venv engine browser prometheus test-images  ## files run side by side on $(IT_WORKERS) workers (scopes and ports never shared)
	IT_RERUNS=$(IT_RERUNS) $(VENV)/bin/pytest tests/integration -q -m integration -n $(IT_WORKERS) --dist loadfile --no-loadscope-reorder --durations=40 -rfER

test-images: images-trixie images-bookworm  ## every image the integration suite uses, built once before the workers start

# One chain per Debian base, so `make -j` builds the two suites side by side without two builds
# of one base: trixie (PostgreSQL 17's node image, the lab host image on it, the S3 test server)
# and bookworm (PostgreSQL 15's node images, the control image, whose python must match the host's).
images-trixie: venv engine
	$(PGHA) images build --spec tests/integration/specs/pg17.yaml
	$(PGHA) lab image
	$(VENV)/bin/python -m tests.support.s3_image

images-bookworm: venv engine
	$(PGHA) images build --spec tests/integration/specs/pg15.yaml
	$(PGHA) images build --spec tests/integration/specs/pg15.yaml --updates security
	$(VENV)/bin/python -c 'from tasks.control_image import ensure_control_image as e; print(*e()[1] or ["control image present"])'

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

browser:                 ## make sure /usr/bin/chromium is there for the UI test (installs Debian's package as root)
	bash stack/ensure-browser.sh

prometheus:              ## make sure promtool and prometheus are there (rules tests, the scrape test; Debian's package as root)
	bash stack/ensure-prometheus.sh

engine:                  ## make sure a Docker engine answers (installs/starts it on Debian as root)
	bash stack/ensure-engine.sh

images: venv engine      ## build the node image if missing
	$(PGHA) images build $(if $(SPEC),--spec $(SPEC))

bench: venv engine       ## bootstrap benchmark: pgha up vs a raw docker run sequence
	$(VENV)/bin/python benchmarks/bootstrap.py

bench-failover: venv engine  ## switchover/graceful-stop/hard-kill drills, fast vs Patroni defaults
	$(VENV)/bin/python benchmarks/failover.py

server: venv engine      ## Prefect server + worker as supervised containers, work pool, deployments, alerts (UI 127.0.0.1:$${PGHA_SERVER_PORT:-4200})
	$(PGHA) server start

server-stop: venv        ## stop and remove the server's and worker's containers (their database volume is kept)
	$(PGHA) server stop

audit: venv              ## health audit of the cluster (exit 1 on a critical finding)
	$(PGHA) audit $(if $(SPEC),--spec $(SPEC))

bench-cli: venv engine   ## pgha status / audit / no-op up vs `patronictl list` (server and ephemeral)
	$(VENV)/bin/python benchmarks/cli.py

bench-audit: venv engine ## audit time vs `patronictl list`
	$(VENV)/bin/python benchmarks/audit.py

bench-upgrade: venv engine  ## rolling minor upgrade 15.18 -> 15.20 vs a naive restart-all (write gap, R/O pool)
	$(VENV)/bin/python benchmarks/upgrade.py

bench-major: venv engine    ## blue/green major upgrade 15 -> 17: cutover/rollback write gaps vs offline dump/restore (SCALE=50)
	$(VENV)/bin/python benchmarks/major_upgrade.py --scale $(or $(SCALE),50) --runs 3

bench-backup: venv engine   ## pgha full backup vs raw pg_basebackup (MB/s), verified-restore time (SCALE=1000)
	$(VENV)/bin/python benchmarks/backup.py --scale $(or $(SCALE),1000) --runs 3

bench-soak: venv engine     ## a month of schedules in an hour: growth per simulated day, failed runs, lost writes (MINUTES=60)
	$(VENV)/bin/python benchmarks/soak.py --minutes $(or $(MINUTES),60)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
