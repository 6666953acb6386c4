# Qwen2 Lab. `make lab` sets up and opens the notebooks; `make test` sets up and runs every test (what CI runs).
# Everything lives in .venv; TORCH chooses the torch build (README, "Real models, GPUs, 72B": a CUDA one for a GPU).

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# make lab JUPYTER_ARGS="--no-browser --port 8899"   (headless, on a server: see README, "Two commands")
JUPYTER_ARGS ?=
# make test TESTS=tests/test_loading.py              (a subset; set on the command line only, never from the environment)
TESTS = tests notebooks
# Debian's packages for the browser test: the browser, its driver, and fonts that draw Chinese
BROWSER_PACKAGES := chromium chromium-driver fonts-noto-cjk
# Jupyter refuses to run as root without this flag (containers, cloud GPU machines)
ALLOW_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)

export HF_HUB_DISABLE_TELEMETRY := 1

# Where the nbval run of `make test` saves the notebooks it executed, for `make site` to show (notebooks/conftest.py)
EXECUTED := $(CURDIR)/build/executed

.PHONY: setup lab demo test lint browser bench tiny site clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)          # first, so nothing below pulls another build; TORCH may carry --index-url
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

lab: setup          ## the main experience: JupyterLab on the repository, opening notebook 00, bundled model by default
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" \
	  --LabApp.default_url=/lab/tree/notebooks/00_welcome.ipynb $(ALLOW_ROOT) $(JUPYTER_ARGS)

demo: setup         ## the web demo (Gradio) on http://127.0.0.1:7860
	$(PY) demo/app.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Installs what is missing when it can (as root, with apt-get); otherwise says what the browser test will do. Never
# fails: without a browser the browser test skips and everything else runs.
browser:            ## Debian's chromium, chromedriver and CJK fonts for the browser test (CI runs as root)
	@have_browser() { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }; \
	have_cjk() { command -v fc-list >/dev/null && [ -n "$$(fc-list :lang=zh family)" ]; }; \
	if have_browser && have_cjk; then \
	  echo "browser test: chromium, chromedriver and a CJK font are installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "browser test: installing $(BROWSER_PACKAGES) with apt-get"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES) >/dev/null; } \
	    || echo "browser test: apt-get could not install them; the browser test will be skipped"; \
	elif have_browser; then \
	  echo "browser test: no CJK font (fontconfig finds none for zh): Chinese will draw as boxes in the browser test;" \
	    "install Debian's fonts-noto-cjk as root (sudo make browser)"; \
	else \
	  echo "browser test: chromium and chromedriver are missing and cannot be installed here (that needs Debian's apt-get, as" \
	    "root: sudo make browser): the browser test will be skipped, everything else runs"; \
	fi

# After the whole notebooks folder ran under nbval, the site is built from what that run executed (each notebook
# runs once), so CI builds the site and it cannot rot.
test: setup browser lint
	HF_HUB_OFFLINE=1 QWEN2_LAB_EXECUTED=$(EXECUTED) $(PY) -m pytest $(TESTS) --nbval-lax \
	  --sanitize-with notebooks/sanitize.cfg -p no:cacheprovider
	$(if $(filter notebooks,$(TESTS)),$(MAKE) --no-print-directory site)

site: setup         ## the notebooks, executed, as a static web site in build/site/ (index.html; GitHub Pages publishes it)
	HF_HUB_OFFLINE=1 $(PY) site/build.py --executed $(EXECUTED)

bench: setup
	$(PY) bench/trace_speed.py

tiny: setup         ## rebuild the bundled checkpoints
	$(PY) -m qwen2_lab.tiny.make

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info build
