# The clinic's two everyday commands: `make run` and `make test`. Each installs what it needs.
.PHONY: run test test-containers bench lint clean

PYTHON := .venv/bin/python

run:
	@scripts/bootstrap.sh run
	@$(PYTHON) scripts/run_local.py

# The unit, integration and end-to-end tests, then the clinic built and run in containers.
test:
	@scripts/bootstrap.sh test
	@$(PYTHON) -m pytest
	@$(MAKE) --no-print-directory test-containers

# The images built from deploy/ (Debian packages only, no registry needed), the compose file started
# with them and one patient driven through; the Kubernetes manifests checked offline.
test-containers:
	@scripts/bootstrap.sh containers
	@$(PYTHON) -m pytest tests/containers

bench:
	@scripts/bootstrap.sh bench
	@$(PYTHON) benchmarks/ceilings.py
	@$(PYTHON) benchmarks/booking.py
	@$(PYTHON) benchmarks/vitals.py
	@$(PYTHON) benchmarks/notification_latency.py
	@$(PYTHON) benchmarks/consumers.py
	@$(PYTHON) benchmarks/relay.py

lint:
	@scripts/bootstrap.sh run
	@.venv/bin/ruff check .

clean:
	rm -rf .venv var
