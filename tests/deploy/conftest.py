"""Fixtures for the deploy script tests: the real Azure CLI parser, a fake `az` and a fake project.

The Azure CLI lives in its own venv (scripts/setup-azure-cli.sh; AZ_CLI_VENV overrides the place), and
so does the oldest version the scripts support (AZ_CLI_MIN_VENV, default .venv-azcli-min), whose
parser test_cli_floor.py uses. Without them these tests fail rather than skip: CI installs both, and a
deploy script whose az commands were never checked must not pass as green.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_harness import (  # noqa: E402
    ENV_FILE_TEXT,
    HERE,
    SETUP_HINT,
    FakeAz,
    assert_ok,
    az_cli_min_venv,
    az_cli_venv,
    make_project,
    parser_venv,
    run_script,
)


def venv_python(venv):
    python = venv / "bin" / "python"
    if not python.exists():
        pytest.fail(f"Azure CLI venv not found at {venv}: {SETUP_HINT}")
    probe = subprocess.run([str(python), "-c", "import azure.cli.core, jmespath"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"azure-cli is not importable from {python}: {SETUP_HINT}\n{probe.stderr}")
    return python


@pytest.fixture(scope="session")
def cli_python():
    return venv_python(parser_venv())


@pytest.fixture(scope="session")
def min_cli_python():
    return venv_python(az_cli_min_venv())


@pytest.fixture(scope="session")
def shellcheck_bin():
    found = shutil.which("shellcheck") or str(az_cli_venv() / "bin" / "shellcheck")
    if not Path(found).exists():
        pytest.fail(f"shellcheck not found on PATH or in {az_cli_venv()}/bin: {SETUP_HINT}")
    return found


@pytest.fixture(scope="session")
def parse_server(cli_python, tmp_path_factory):
    """The long-lived real-CLI parser of the pinned CLI; yields its socket path."""
    yield from serve_parser(cli_python, tmp_path_factory.mktemp("azparse"))


@pytest.fixture(scope="session")
def min_parse_server(min_cli_python, tmp_path_factory):
    """The same with the oldest CLI the scripts support (AZ_MIN_VERSION in deploy/lib.sh)."""
    yield from serve_parser(min_cli_python, tmp_path_factory.mktemp("azparse-min"))


def serve_parser(cli_python, base):
    config = base / "azure-config"
    config.mkdir()
    # A token-less logged-in profile: validators that need only a subscription id run on, any call
    # that needs a token stops with "az login" (counted as parsed), and the network is blocked anyway.
    (config / "azureProfile.json").write_text(json.dumps({
        "installationId": "11111111-1111-1111-1111-111111111111",
        "subscriptions": [{
            "id": "00000000-0000-0000-0000-000000000001", "name": "fake-subscription", "state": "Enabled",
            "user": {"name": "deployer@example.com", "type": "user"}, "isDefault": True,
            "tenantId": "00000000-0000-0000-0000-0000000000aa", "environmentName": "AzureCloud",
            "homeTenantId": "00000000-0000-0000-0000-0000000000aa", "managedByTenants": [],
        }],
    }))
    socket_path = base / "parse.sock"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(base),
        "AZURE_CONFIG_DIR": str(config),
        "AZURE_CORE_COLLECT_TELEMETRY": "0",
        "LANG": "C.UTF-8",
    }
    log = open(base / "server.log", "w+")
    proc = subprocess.Popen([str(cli_python), str(HERE / "azcli_parse_server.py"), str(socket_path)],
                            stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    started = time.monotonic()
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        log.seek(0)
        pytest.fail(f"parse server did not start: {line!r}\n{log.read()[-3000:]}")
    print(f"\nparse server ({cli_python.parent.parent.name}) ready in {time.monotonic() - started:.1f}s",
          file=sys.stderr)
    yield socket_path
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def make_fake_az(tmp_path, cli_python, parse_server):
    counter = iter(range(1000))

    def make():
        return FakeAz(tmp_path / f"az{next(counter)}", cli_python, parse_server)

    return make


@pytest.fixture(scope="session")
def flex_deployment(tmp_path_factory, cli_python, parse_server, env_file, project_dir):
    """Two deploys in a row on Flex Consumption into an empty fake subscription (shared: other tests
    start from a copy of its final state rather than deploying again)."""
    fake = FakeAz(tmp_path_factory.mktemp("flex"), cli_python, parse_server)
    first = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir)
    assert_ok(first)
    first_calls = fake.calls()
    fake.clear_log()
    second = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir)
    assert_ok(second)
    print(f"\nflex deploy: first run {first.seconds:.1f}s ({len(first_calls)} az calls), "
          f"second run {second.seconds:.1f}s ({len(fake.calls())} az calls)", file=sys.stderr)
    return {"fake": fake, "first": first, "second": second, "first_calls": first_calls,
            "second_calls": fake.calls(), "state": fake.state()}


@pytest.fixture(scope="session")
def project_dir(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("project") / "app")


@pytest.fixture(scope="session")
def env_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("envfile") / "deploy.env"
    path.write_text(ENV_FILE_TEXT)
    return path


