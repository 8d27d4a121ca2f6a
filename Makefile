# make test   install everything on a bare machine (.venv), then run the test suite
# make demo   start ComfyUI with this pack, queue an example workflow, write a video
# make pilot-demo   two local ComfyUI servers (tiny models), a 16-video pilot across both: out/pilot/report.html
# make test-comfy COMFYUI_DIR=/path/to/ComfyUI   the suite and the parity check against that ComfyUI,
#                                               in its own .venv-comfy-<version>

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.standin-installed

.PHONY: venv test parity demo pilot-demo clean-venv test-comfy

venv: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt dev/setup_env.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash dev/setup_env.sh
	touch $@

test: venv
	$(PY) -m pytest tests

parity: venv
	$(PY) tests/check_parity.py

clean-venv:
	rm -rf $(VENV)

demo: venv
	$(PY) dev/demo.py

pilot-demo: venv
	$(PY) dev/pilot_demo.py --out out/pilot

# Another ComfyUI (a checkout of any version): its own environment, then the same tests.
COMFY_VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' "$(COMFYUI_DIR)/comfyui_version.py" 2>/dev/null)
test-comfy:
	@[ -n "$(COMFYUI_DIR)" ] && [ -f "$(COMFYUI_DIR)/main.py" ] || { echo "usage: make test-comfy COMFYUI_DIR=/path/to/ComfyUI (the folder with main.py)"; exit 2; }
	$(MAKE) test parity VENV=.venv-comfy-$(or $(COMFY_VERSION),unknown) COMFYUI_DIR="$(COMFYUI_DIR)"
