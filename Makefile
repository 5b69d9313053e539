# make install | demo | check | test | lint | bench — each creates .venv first when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo check test lint bench bench-gpu bench-method bench-search clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing edgesearch and its dependencies into $(VENV) (torch is large: a few minutes the first time)"
	@$(BIN)/python -m pip install -q --upgrade pip >$(VENV)/pip.log 2>&1 || { tail -40 $(VENV)/pip.log; exit 1; }
	@$(BIN)/python -m pip install -q -e '.[dev]' >>$(VENV)/pip.log 2>&1 || { tail -40 $(VENV)/pip.log; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/edgesearch study run studies/quickstart.yaml
	$(BIN)/edgesearch study report quickstart --out reports/quickstart
	@echo "open the dashboard: $(BIN)/edgesearch dashboard   (then http://127.0.0.1:8080/dashboard)"

lint: install
	$(BIN)/ruff check edgesearch devtools tests benchmarks
	$(BIN)/ruff format --check edgesearch devtools tests benchmarks
	$(BIN)/mypy

# The loop between edits: lint, types and every test not marked slow (no training, no processes, none over
# about a second). The ten slowest are listed at the end, so that a slow newcomer shows.
check: lint
	$(BIN)/python -m pytest -m "not slow" -q --durations=10

# Everything, as CI runs it: in PYTEST_WORKERS processes (pytest-xdist), since most of the suite waits
# on worker processes and databases. Each test process then uses one math thread (tests/conftest.py).
PYTEST_WORKERS ?= 2
test: lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal

# Every benchmark at full size, one after the other (never in parallel: they time the same cores),
# results in benchmarks/results/*.json and the BENCHMARKS.md table printed at the end. PostgreSQL:
# $EDGESEARCH_BENCH_POSTGRES_URL, else a throwaway local cluster (.ci/start-postgres.sh).
BENCHMARKS := cli_startup trainer_overhead edge_cost checkpoint_cost end_to_end trial_overhead disk_use input_pipeline gpu coordination edge_correlation sliding_window native_resolution onnx_predict
bench: install
	@mkdir -p benchmarks/results
	@set -e; for name in $(BENCHMARKS); do \
		echo "== $$name"; start=$$(date +%s); \
		$(BIN)/python benchmarks/$$name.py --json benchmarks/results/$$name.json >/dev/null; \
		echo "   $$(( $$(date +%s) - start )) s"; \
	done
	@$(BIN)/python benchmarks/summary.py

# On a GPU box: the GPU benchmark with trials/hour at K workers per GPU and data.loader cpu vs device.
bench-gpu: install
	@mkdir -p benchmarks/results
	$(BIN)/python benchmarks/gpu.py --trials --compile --json benchmarks/results/gpu.json

# The method on real nuclei (benchmarks/method.py): 15 settings x 3 seeds x 20 epochs + the bare loop, about an hour
# on 2 CPU cores; not part of `make bench` or CI. Its section of BENCHMARKS.md quotes this run.
bench-method: install
	@mkdir -p benchmarks/results
	$(BIN)/python benchmarks/method.py --json benchmarks/results/method.json >/dev/null

# The search compared on the committed learning-curve table (benchmarks/curves/nuclei.jsonl): edgesearch's default
# against random search, Optuna's defaults, TPE + Hyperband and "one epoch, then the top K", 100 replays each at 1
# and 16 simulated workers, and the rules of choosing. Minutes on 2 CPU cores; no training. The table itself is
# recorded by benchmarks/curves/record.py (hours on a CPU: `python benchmarks/curves/record.py --jobs 2`).
bench-search: install
	@mkdir -p benchmarks/results
	$(BIN)/python benchmarks/search.py --json benchmarks/results/search.json >/dev/null
	@$(BIN)/python benchmarks/summary.py | grep -i "search\|choosing"

clean:
	rm -rf $(VENV) runs reports artifacts .pytest_cache .mypy_cache .ruff_cache
