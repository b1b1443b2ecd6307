# `make demo` and `make test` work on a fresh clone: they create .venv and install everything first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of torch; an unpinned torch would pull gigabytes of CUDA wheels.
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test install benchmarks clean browser

install: $(STAMP)

# The review page's browser test drives Debian's headless Chromium (Playwright's own browser download is
# not reachable from the machines we test on); apt-get needs root, so it runs as root or through sudo.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# Every extra (setup.cfg: train, pipeline, search, eval) and the test tools; `pip install .` alone is the core.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[all,test]'
	# --no-deps: perch-hoplite declares notebook, librosa, kagglehub... that its database code (all the tests use) never imports
	$(PY) -m pip install --quiet --no-deps perch-hoplite==1.0.2
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m demo.run_demo --out demo_out

test: $(STAMP) browser
	# the linter and the formatter's check first (pyproject.toml, [tool.ruff]): seconds, and they name the line
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	# two workers: most of the suite's time is single-threaded interpreter start-up (importing transformers)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n 2 --dist worksteal tests

benchmarks: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
