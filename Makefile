# Pip route (plain Debian/Ubuntu + Python 3.11, no ROS install). See README.md.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
OUT ?= outputs/demo

.PHONY: setup demo test test-fast colcon-check bench clean

setup:            ## create .venv, install pinned wheels, build messages, install ilrm_ros (idempotent)
	@bash pip_route/setup.sh

demo: setup       ## set up, then run the mapping node on the embedded sequence over DDS
	@$(VENV)/bin/ilrm-ros demo --out $(OUT)

test: setup       ## set up, then run the whole test suite
	@bash pip_route/run_tests.sh

test-fast: setup  ## tests without the slow ones
	@bash pip_route/run_tests.sh -m "not slow"

bench: setup      ## CPU benchmarks (JSON under outputs/bench)
	@mkdir -p outputs/bench
	@$(VENV)/bin/ilrm-ros bench model --config small --out outputs/bench/model.json
	@$(VENV)/bin/ilrm-ros bench render --out outputs/bench/render.json
	@$(VENV)/bin/ilrm-ros bench node --out outputs/bench/node.json

clean:
	rm -rf build install log outputs
