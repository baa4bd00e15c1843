# The two set-up commands of README.md: `make demo` and `make test` (each creates .venv on first use).
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/gfldet demo

test: $(VENV)/.installed
	$(VPY) -m pytest -q tests

bench: $(VENV)/.installed
	$(VPY) bench/assign_losses.py
	$(VPY) bench/eval_breakdown.py

clean:
	rm -rf $(VENV) *.egg-info
