# mmqrec — `make demo` trains the quick profile end to end; `make test` runs the test suite.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmqrec-installed
DEMO_RUN ?= runs/demo
DEMO_USER ?= 1

.PHONY: install demo test clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mmqrec run configs/ml-100k-mm.quick.yaml --out $(DEMO_RUN)
	$(VENV)/bin/mmqrec recommend $(DEMO_RUN) --user $(DEMO_USER) -k 10
	@echo "report: $(DEMO_RUN)/report/report.html"

test: $(STAMP)
	MMQREC_NO_PROGRESS=1 $(PY) -m pytest -q --timeout=900

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
