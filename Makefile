# mmqrec — `make demo` trains the quick profile end to end; `make test` runs the test suite.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmqrec-installed
DEMO_RUN ?= runs/demo
DEMO_USER ?= 1

.PHONY: install browser demo test clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) browser

# Debian's chromium renders the web page in the browser test (installed as root with apt-get;
# elsewhere the test skips with the reason).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
	       || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	            --no-install-recommends chromium >/dev/null 2>&1; }; } \
	  || echo "chromium could not be installed: the browser test will skip"; }

demo: $(STAMP)
	$(VENV)/bin/mmqrec run configs/ml-100k-mm.quick.yaml --out $(DEMO_RUN)
	$(VENV)/bin/mmqrec recommend $(DEMO_RUN) --user $(DEMO_USER) -k 10
	@echo "report: $(DEMO_RUN)/report/report.html"

test: $(STAMP) browser
	MMQREC_NO_PROGRESS=1 $(PY) -m pytest -q --timeout=900

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
