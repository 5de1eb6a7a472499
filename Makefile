# Fresh-machine entry points. `make test` and `make demo` set everything up first (fast when done).
PY := .venv/bin/python
STAMP := .venv/.streamrecon-setup

.PHONY: setup test test-slow test-browser lint demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml tools/setup.sh
	bash tools/setup.sh

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

# The Rerun web viewer in Debian's chromium via Playwright (~1.5 min); screenshots in
# outputs/test-artifacts/browser/ (or $$RECON_TEST_ARTIFACTS/browser/)
test-browser: setup
	$(PY) -m pytest -q -m browser tests/browser

demo: setup
	.venv/bin/recon demo

lint: setup
	.venv/bin/ruff check .
	.venv/bin/lint-imports

clean:
	rm -rf .venv build *.egg-info
