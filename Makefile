# The two commands of the quick start: `make demo` and `make test`.
.PHONY: demo test lint unit bench lab clean

demo:  ## a local cluster on loopback: etcd + 3 agents, election, jobs, failover
	scripts/bootstrap demo
	.venv/bin/picluster demo

test:  ## every test: lint, pytest (real etcd, real agents), flash images, Molecule in Docker
	scripts/bootstrap test
	scripts/test

unit:  ## quick: unit tests only
	.venv/bin/pytest -q tests/unit

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

bench:  ## benchmarks (see docs/BENCHMARKS.md)
	.venv/bin/python bench/failover.py

lab:  ## a 3-container cluster provisioned by site.yml, to try by hand
	scripts/lab

clean:
	rm -rf .venv build dist *.egg-info .pytest_cache .ruff_cache
