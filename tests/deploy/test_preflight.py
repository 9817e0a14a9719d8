"""The preflight: Azure CLI version floor, the signed-in principal without Microsoft Graph, and the rights
the chosen options need - all checked before anything is created. Plus --dry-run without az at all."""

import os
import shutil
import subprocess
import sys

import pytest
from deploy_harness import (
    DEPLOY_DIR,
    SECRETS,
    assert_ok,
    az_min_version,
    command_of,
    dry_run_commands,
    is_mutating,
    parse_failures,
    run_script,
)

SUB = "/subscriptions/00000000-0000-0000-0000-000000000001"
RG = f"{SUB}/resourceGroups/rg-imgsync-test"
# Contributor as Azure defines it: everything but authorization writes and deletes (and a few more).
CONTRIBUTOR = [{"actions": ["*"], "notActions": [
    "Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write",
    "Microsoft.Authorization/elevateAccess/Action", "Microsoft.Blueprint/blueprintAssignments/write",
    "Microsoft.Blueprint/blueprintAssignments/delete", "Microsoft.Compute/galleries/share/action"]}]
OWNER = [{"actions": ["*"], "notActions": []}]


def mutating(fake):
    return [" ".join(c["argv"]) for c in fake.calls() if is_mutating(c)]


@pytest.mark.parametrize("script", ["deploy.sh", "teardown.sh"])
def test_an_azure_cli_older_than_the_floor_stops_everything(script, make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    fake.write_state({"cli_version": "2.71.0"})
    extra = ("--project-dir", project_dir) if script == "deploy.sh" else ("--yes",)
    result = run_script(script, fake, "--env-file", env_file, *extra)
    assert result.returncode != 0
    assert f"Azure CLI 2.71.0 is too old: version {az_min_version()} or newer is needed" in result.stderr
    assert [command_of(c) for c in fake.calls()] == ["version"], "nothing else may run on an old CLI"


def test_missing_rights_are_named_and_nothing_is_created(make_fake_az, env_file, project_dir):
    """Contributor on the subscription cannot create role assignments: the deploy says so up front
    instead of failing halfway with a half-built app."""
    fake = make_fake_az()
    fake.write_state({"permissions": {SUB: CONTRIBUTOR}})
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir)
    assert result.returncode != 0
    assert "missing rights this run needs; nothing was changed" in result.stderr
    assert "Microsoft.Authorization/roleAssignments/write on subscription 00000000-0000-0000-0000-000000000001" \
        in result.stderr
    assert "Microsoft.Storage/storageAccounts/write" not in result.stderr, "Contributor may create resources"
    assert mutating(fake) == []
    assert not parse_failures(fake.calls())


def test_key_vault_recovery_needs_a_subscription_scope_right(make_fake_az, env_file, project_dir):
    """Owner of the resource group only: enough for everything except finding a soft-deleted vault,
    which is a subscription-scope right - needed only while the vault does not exist."""
    fake = make_fake_az()
    providers = {ns: "Registered" for ns in ("Microsoft.Web", "Microsoft.Storage", "Microsoft.KeyVault",
                                             "Microsoft.EventGrid", "Microsoft.Insights",
                                             "Microsoft.OperationalInsights")}
    fake.write_state({"permissions": {RG: OWNER}, "providers": providers,
                      "groups": {"rg-imgsync-test": {"id": RG, "name": "rg-imgsync-test", "location": "westeurope",
                                                     "tags": {"image-sync-app": "imgsync-test"}}}})
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir)
    assert result.returncode != 0
    missing = result.stderr.split("nothing was changed:", 1)[1]
    assert "Microsoft.KeyVault/locations/deletedVaults/read on subscription" in missing
    assert "roleAssignments" not in missing and "resourceGroups/write" not in missing
    assert mutating(fake) == []


def test_a_resource_group_owner_can_redeploy(flex_deployment, make_fake_az, env_file, project_dir):
    """Once the vault exists, nothing needs rights beyond the resource group."""
    fake = make_fake_az()
    fake.copy_state_from(flex_deployment["fake"])
    state = fake.state()
    state["permissions"] = {RG: OWNER}
    fake.write_state(state)
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir)
    assert_ok(result)
    assert mutating(fake) == []


def test_providers_to_register_need_subscription_rights(make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    fake.write_state({"permissions": {SUB: [{"actions": ["*"], "notActions": ["*/register/action"]}]}})
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir)
    assert result.returncode != 0
    assert "Microsoft.OperationalInsights/register/action on subscription" in result.stderr
    assert mutating(fake) == []


def test_managed_identity_login_on_the_oldest_supported_cli(make_fake_az, env_file, project_dir):
    """The floor version itself is accepted. A managed identity has no Graph-resolvable name
    ('systemAssignedIdentity'): its object id comes from the token, and it gets the Key Vault role as a
    service principal."""
    fake = make_fake_az()
    identity = "44444444-4444-4444-4444-444444444444"
    fake.write_state({"cli_version": az_min_version(),
                      "login": {"name": "systemAssignedIdentity", "type": "servicePrincipal", "oid": identity}})
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir)
    assert_ok(result)
    calls = fake.calls()
    assert not [c for c in calls if command_of(c).startswith("ad ")]
    officer = next(r for r in fake.state()["roles"] if r["role"] == "Key Vault Secrets Officer")
    assert (officer["principalId"], officer["principalType"]) == (identity, "ServicePrincipal")


@pytest.mark.parametrize("plan", ["flex", "premium"])
def test_dry_run_works_without_az_installed(plan, tmp_path, env_file, project_dir):
    """No az anywhere on PATH: the dry run still prints the whole plan, and the rights it would check."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python3")
    for tool in ("bash", "cat", "sed", "awk", "grep", "tr", "cksum", "paste", "mktemp", "rm", "chmod", "dirname",
                 "mkdir"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    assert shutil.which("az", path=str(bin_dir)) is None
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "DEPLOY_BUILD_DIR": str(tmp_path / "build"), **SECRETS}
    result = subprocess.run(["bash", str(DEPLOY_DIR / "deploy.sh"), "--env-file", str(env_file), "--project-dir",
                             str(project_dir), "--hosting-plan", plan, "--dry-run", "--alert-email", "ops@example.com"],
                            capture_output=True, text=True, env=env)
    assert_ok(result)
    commands = dry_run_commands(result.stdout)
    names = [" ".join(c[:2]) for c in commands]
    assert names[0] == "provider register" and "functionapp create" in names and "group create" in names
    assert "Microsoft.Authorization/roleAssignments/write on subscription <subscription-id>" in result.stderr
    assert "Microsoft.Insights/actionGroups/write" in result.stderr
    for value in SECRETS.values():
        assert value not in result.stdout + result.stderr
    down = subprocess.run(["bash", str(DEPLOY_DIR / "teardown.sh"), "--env-file", str(env_file), "--dry-run"],
                          capture_output=True, text=True, env=env)
    assert_ok(down)
    assert ["group", "delete"] in [c[:2] for c in dry_run_commands(down.stdout)]


def test_an_images_account_missing_from_its_named_group_stops_before_anything_is_created(make_fake_az, env_file,
                                                                                      project_dir):
    fake = make_fake_az()
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir,
                        "--images-resource-group", "rg-customer")
    assert result.returncode != 0 and "not found in rg-customer" in result.stderr
    assert mutating(fake) == []
