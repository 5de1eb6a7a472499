#!/usr/bin/env bash
# Set up streamrecon on a fresh Linux machine: system packages (libusb for open3d, chromium for the
# web-viewer test), a virtual environment in .venv,
# torch (the pinned CPU wheel unless a torch is already there), the package in editable mode.
# Re-running is cheap: nothing already installed is installed again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# open3d needs libusb-1.0 at import time.
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  echo "[setup] installing system library libusb-1.0-0 (needed by open3d)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if command -v apt-get >/dev/null; then
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libusb-1.0-0 >/dev/null
  else
    echo "[setup] error: libusb-1.0 is missing and apt-get is not available; install libusb-1.0 with your package manager" >&2
    exit 1
  fi
fi

# The web-viewer test (make test-browser) drives Debian's chromium with Playwright: no browser download.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if command -v apt-get >/dev/null; then
    echo "[setup] installing chromium (the browser of the web-viewer test)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
  else
    echo "[setup] warning: chromium is missing and apt-get is not available; make test-browser will skip" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  # A user who already has torch (e.g. a CUDA build) in the base interpreter keeps it.
  if "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] found torch in $PYTHON; creating .venv with system site-packages"
    "$PYTHON" -m venv --system-site-packages .venv
  else
    "$PYTHON" -m venv .venv
  fi
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing torch==2.13.0 (CPU wheel)"
  "${PIP[@]}" install torch==2.13.0
fi
echo "[setup] installing streamrecon and its dependencies"
"${PIP[@]}" install -e ".[dev]"
.venv/bin/python -c "import open3d, rerun, lightning, kornia, cv2, evo, trimesh, pycolmap, playwright" >/dev/null
touch .venv/.streamrecon-setup
echo "[setup] done: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
