# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when needed.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stl_mm-installed
PYTEST_ARGS ?= -q

.PHONY: install demo test

install: $(STAMP)

$(STAMP): requirements/constraints.txt requirements/runtime.txt requirements/tests.txt requirements/deploy.txt requirements/tools.txt setup.py tools/setup_env.sh
	VENV=$(VENV) bash tools/setup_env.sh
	touch $@

demo: $(STAMP)
	$(PY) tools/demo.py $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)
