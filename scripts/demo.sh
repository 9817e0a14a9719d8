#!/usr/bin/env bash
# README command (a): install, start Azurite + local partner sandboxes, seed sample images, run a full sync.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m devtools.demo "$@"
