# pgha: `make up` (empty checkout -> running cluster), `make test` (-> passing suite).
VENV   ?= .venv
PYTHON ?= python3
PGHA   := $(VENV)/bin/pgha
SPEC   ?=

.PHONY: up down status test unit integration lint venv engine images bench bench-failover bench-upgrade bench-major bench-backup clean server server-stop audit bench-audit

up: venv engine          ## build what is missing and bring the cluster up (SPEC=file.yaml optional)
	$(PGHA) up $(if $(SPEC),--spec $(SPEC))

down: venv               ## remove the containers (data volumes kept)
	$(PGHA) down $(if $(SPEC),--spec $(SPEC))

status: venv
	$(PGHA) status $(if $(SPEC),--spec $(SPEC))

test: lint unit integration   ## everything the CI runs

lint: venv
	$(VENV)/bin/ruff check cli flows tasks stack tests benchmarks

unit: venv
	$(VENV)/bin/pytest tests/unit -q

integration: venv engine
	$(VENV)/bin/pytest tests/integration -q -m integration

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

engine:                  ## make sure a Docker engine answers (installs/starts it on Debian as root)
	bash stack/ensure-engine.sh

images: venv engine      ## build the node image if missing
	$(PGHA) images build $(if $(SPEC),--spec $(SPEC))

bench: venv engine       ## bootstrap benchmark: pgha up vs a raw docker run sequence
	$(VENV)/bin/python benchmarks/bootstrap.py

bench-failover: venv engine  ## switchover/graceful-stop/hard-kill drills, fast vs Patroni defaults
	$(VENV)/bin/python benchmarks/failover.py

server: venv engine      ## Prefect server + work pool + deployments + alerts + worker (UI 127.0.0.1:$${PGHA_SERVER_PORT:-4200})
	$(PGHA) server start

server-stop: venv        ## stop the worker and server that `make server` started
	$(PGHA) server stop

audit: venv              ## health audit of the cluster (exit 1 on a critical finding)
	$(PGHA) audit $(if $(SPEC),--spec $(SPEC))

bench-audit: venv engine ## audit time vs `patronictl list`
	$(VENV)/bin/python benchmarks/audit.py

bench-upgrade: venv engine  ## rolling minor upgrade 15.18 -> 15.20 vs a naive restart-all (write gap, R/O pool)
	$(VENV)/bin/python benchmarks/upgrade.py

bench-major: venv engine    ## blue/green major upgrade 15 -> 17: cutover/rollback write gaps vs offline dump/restore (SCALE=50)
	$(VENV)/bin/python benchmarks/major_upgrade.py --scale $(or $(SCALE),50) --runs 3

bench-backup: venv engine   ## pgha full backup vs raw pg_basebackup (MB/s), verified-restore time (SCALE=1000)
	$(VENV)/bin/python benchmarks/backup.py --scale $(or $(SCALE),1000) --runs 3

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
