# make test   install everything on a bare machine (.venv), then run the test suite
# make demo   start ComfyUI with this pack, queue an example workflow, write a video
# COMFYUI_DIR=/path/to/ComfyUI make test   runs the same tests against your own checkout

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.standin-installed

.PHONY: venv test parity demo clean-venv

venv: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt tools/setup_env.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash tools/setup_env.sh
	touch $@

test: venv
	$(PY) -m pytest tests

parity: venv
	$(PY) tests/check_parity.py

clean-venv:
	rm -rf $(VENV)

demo: venv
	$(PY) tools/demo.py
