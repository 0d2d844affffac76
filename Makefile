# The clinic's two everyday commands: `make run` and `make test`. Each installs what it needs.
.PHONY: run test bench lint clean

PYTHON := .venv/bin/python

run:
	@scripts/bootstrap.sh run
	@$(PYTHON) scripts/run_local.py

test:
	@scripts/bootstrap.sh test
	@$(PYTHON) -m pytest

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
