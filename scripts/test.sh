#!/usr/bin/env bash
# README command (b): install everything the tests need, then run the whole test suite with pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k sas -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/setup-azure-cli.sh   # the real Azure CLI parser checks every az call of deploy/ (own venv)
echo "test.sh: static checks: ruff (everything) and mypy --strict (shared/)" >&2
.venv/bin/ruff check --quiet .
.venv/bin/mypy --no-error-summary
set +e
# Three workers: most tests wait on sockets, leases and partner latency, not on the CPU (2 cores here),
# so the suite takes about half as long. Pass -n 0 to run in one process.
.venv/bin/python -m pytest -n 3 "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "test.sh: pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$code"
