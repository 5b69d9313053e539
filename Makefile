# make install | demo | test | lint — each creates .venv first when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean

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
	$(BIN)/ruff check edgesearch tests
	$(BIN)/ruff format --check edgesearch tests
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs reports artifacts .pytest_cache .mypy_cache .ruff_cache
