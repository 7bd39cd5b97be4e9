# The README's two commands. Both create .venv on first use, install the pinned versions
# (requirements/constraints.txt) and are safe to rerun.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONSTRAINTS := requirements/constraints.txt
# The newest versions of every dependency (torch excepted: see TORCH), for `make test-latest`.
LATEST := .venv-latest
# Datumaro 1.13 pins opencv-python-headless<5, pandas~=2.3 and pillow~=12: it gets its own venv, used
# only by tests/test_release_formats.py to import a release's COCO folder (GASDB_DATUMARO_PYTHON).
DATUMARO := .venv-datumaro
DATUMARO_STAMP := $(DATUMARO)/.installed-stamp
DATUMARO_CONSTRAINTS := requirements/datumaro-constraints.txt
DEMO_DIR ?= demo-workspace
# On these machines torch==2.13.0 is a CPU build; it is named on every install so that `.[bench]`
# never pulls a CUDA wheel (the pinned install also has it in $(CONSTRAINTS)).
TORCH  ?= torch==2.13.0
PYTEST := -m pytest -n 2 --dist loadfile -q

.PHONY: demo test test-latest constraints install clean

install: $(STAMP)

# setuptools comes from the pins too, and builds the editable install without an isolated env
# (and the C median, gasdb_tools/_median8.c, when a C compiler is present: setup.py).
$(STAMP): setup.cfg setup.py pyproject.toml $(CONSTRAINTS) gasdb_tools/_median8.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) --upgrade pip setuptools
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) "$(TORCH)"
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) --no-build-isolation -e ".[bench,test]"
	touch $(STAMP)

$(DATUMARO_STAMP): $(DATUMARO_CONSTRAINTS)
	$(PYTHON) -m venv $(DATUMARO)
	$(DATUMARO)/bin/python -m pip install --quiet -c $(DATUMARO_CONSTRAINTS) datumaro
	touch $(DATUMARO_STAMP)

demo: $(STAMP)
	$(BIN)/gasdb demo $(DEMO_DIR) --force

test: $(STAMP) $(DATUMARO_STAMP)
	GASDB_DATUMARO_PYTHON=$(abspath $(DATUMARO))/bin/python $(BIN)/python $(PYTEST)

# Not part of the contract: the same suite against today's newest releases (upgraded on every run).
test-latest:
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip setuptools
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager --no-build-isolation \
		"$(TORCH)" -e ".[bench,test]"
	$(LATEST)/bin/python $(PYTEST)

# Re-pin to the newest versions, only when the suite passes with them (test-latest stops otherwise).
constraints: test-latest
	{ sed -n '/^#/p' $(CONSTRAINTS); $(LATEST)/bin/python -m pip freeze --all --exclude-editable | grep -v '^#'; } \
		> $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

clean:
	rm -rf $(VENV) $(LATEST) $(DATUMARO) $(DEMO_DIR) build *.egg-info gasdb_tools/_median8.*.so
