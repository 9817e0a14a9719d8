#!/usr/bin/env bash
# Installs what the demo and the tests need, into the repository: .venv (Python, with the image-sync
# command in .venv/bin) and node_modules (Azurite).
# Safe to run again: it only installs what is missing or changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x .venv/bin/image-sync ]; then
  echo "setup: installing Python packages (requirements-dev.txt) and the image-sync command"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  # The operator CLI as .venv/bin/image-sync (editable: it runs this checkout's code).
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp"
fi
if [ ! -x node_modules/.bin/azurite ]; then
  echo "setup: installing Azurite (npm)"
  command -v npm >/dev/null 2>&1 || { echo "setup: npm not found: install Node.js 18 or newer" >&2; exit 2; }
  npm ci --no-audit --no-fund --loglevel=error
fi
# Chromium renders the contact sheet in the tests (tests/test_contact_sheet.py): headless, driven from the
# test, no extra Python package. Installed from the OS packages when this runs as root (CI, containers).
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Chromium (apt-get) for the contact-sheet test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: Chromium not found: the contact-sheet test needs it; install it with" \
         "'sudo apt-get install chromium' (Debian/Ubuntu) or put 'chromium' on PATH" >&2
  fi
fi
