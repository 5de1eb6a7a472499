# Fresh-machine entry points. `make test` and `make demo` set everything up first (fast when done).
PY := .venv/bin/python
STAMP := .venv/.streamrecon-setup

.PHONY: setup test test-slow lint demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml tools/setup.sh
	bash tools/setup.sh

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

demo: setup
	.venv/bin/recon demo

lint: setup
	.venv/bin/ruff check .

clean:
	rm -rf .venv build *.egg-info
