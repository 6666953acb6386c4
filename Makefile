# Qwen2 Lab. `make lab` sets up and opens the notebooks; `make test` sets up and runs every test (what CI runs).
# Everything lives in .venv; torch is the CPU build unless TORCH is changed (see README, "On a GPU").

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: setup lab demo test lint browser bench tiny clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"        # first, so nothing below pulls a multi-GB CUDA build
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

lab: setup          ## the main experience: JupyterLab on the guided notebooks, bundled model by default
	$(VENV)/bin/jupyter lab notebooks/00_welcome.ipynb

demo: setup         ## the web demo (Gradio) on http://127.0.0.1:7860
	$(PY) demo/app.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

browser:            ## Debian's chromium + chromedriver for the browser test (CI runs as root)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: setup browser lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests notebooks --nbval-lax --sanitize-with notebooks/sanitize.cfg -p no:cacheprovider

bench: setup
	$(PY) bench/trace_speed.py

tiny: setup         ## rebuild the bundled checkpoints
	$(PY) -m qwen2_lab.tiny.make

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
