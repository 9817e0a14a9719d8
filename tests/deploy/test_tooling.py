"""shellcheck on every shell script of the repo; the CLI setup script is idempotent (both CLIs)."""

import os
import subprocess

from deploy_harness import DEPLOY_DIR, REPO, az_cli_venv, az_min_version


def test_shellcheck_clean(shellcheck_bin):
    scripts = sorted(str(p) for p in [*DEPLOY_DIR.glob("*.sh"), *(REPO / "scripts").glob("*.sh"), REPO / ".ci" / "run"])
    assert len(scripts) >= 7
    result = subprocess.run([shellcheck_bin, "--external-sources", *scripts], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_setup_script_skips_when_installed(cli_python):
    env = dict(os.environ, AZ_CLI_VENV=str(az_cli_venv()))
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup-azure-cli.sh")], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "already in" in result.stdout
    assert f"azure-cli {az_min_version()} (the oldest supported) already in" in result.stdout
