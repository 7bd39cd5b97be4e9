# The README's two commands. Both create .venv on first use and are safe to rerun.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DIR ?= demo-workspace
# On these machines torch==2.13.0 is a CPU build; pin it first so `.[bench]` never pulls CUDA wheels.
TORCH  ?= torch==2.13.0

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[bench,test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gasdb demo $(DEMO_DIR) --force

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
