"""Every az command the scripts can run also passes the parser of the OLDEST Azure CLI they support
(AZ_MIN_VERSION in deploy/lib.sh, installed into .venv-azcli-min by scripts/setup-azure-cli.sh).

The other tests use the pinned CLI. Here the scenarios are chosen to reach every kind of call once:
all three plans, alerts on and off, drift repair (settings removed, roles removed, a rotated key, HTTPS
turned back on, Key Vault references refreshed), both teardown paths with a customer's images account,
and the dry run. To run the whole deploy suite against the floor CLI instead:
    DEPLOY_TESTS_CLI=floor scripts/test.sh tests/deploy
"""

import subprocess

import pytest
from deploy_harness import (
    FakeAz,
    ask_parser,
    assert_ok,
    az_min_version,
    command_of,
    dry_run_commands,
    is_mutating,
    run_script,
    with_temporary_files,
)

SUB = "00000000-0000-0000-0000-000000000001"
CUSTOMER_RG = "rg-customer"
ACCOUNT = "custimages"
ACCOUNT_ID = f"/subscriptions/{SUB}/resourceGroups/{CUSTOMER_RG}/providers/Microsoft.Storage/storageAccounts/{ACCOUNT}"


@pytest.fixture
def floor_az(tmp_path, min_cli_python, min_parse_server):
    counter = iter(range(100))

    def make():
        return FakeAz(tmp_path / f"floor{next(counter)}", min_cli_python, min_parse_server)

    return make


def test_the_floor_venv_is_the_floor(min_cli_python):
    out = subprocess.run([str(min_cli_python), "-c", "from azure.cli.core import __version__; print(__version__)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == az_min_version()


def run(fake, script, *args, **kwargs):
    fake.clear_log()
    result = run_script(script, fake, *args, **kwargs)
    assert_ok(result)
    calls = fake.calls()
    bad = [c for c in calls if c["parse"] != "ok" or c["rc"] not in (0, 3)]
    assert not bad, "\n".join(f"az {' '.join(c['argv'])}\n  {c.get('error')}" for c in bad)
    return result, calls


def test_flex_with_a_customer_account_alerts_drift_and_teardown(floor_az, env_file, project_dir):
    fake = floor_az()
    fake.write_state({
        "groups": {CUSTOMER_RG: {"id": f"/subscriptions/{SUB}/resourceGroups/{CUSTOMER_RG}", "name": CUSTOMER_RG,
                                 "location": "northeurope", "tags": {}}},
        "accounts": {ACCOUNT: {"name": ACCOUNT, "resourceGroup": CUSTOMER_RG, "location": "northeurope", "tags": {}}},
        "containers": {f"{ACCOUNT_ID.lower()}/product-images": {"publicAccess": None}},
    })
    args = ("--env-file", env_file, "--project-dir", project_dir, "--images-account", ACCOUNT)
    run(fake, "deploy.sh", *args, "--alert-email", "ops@example.com",
        extra_env={"IMAGE_PATH_PATTERN": "{item_id}/{name}"})

    state = fake.state()
    app = state["apps"]["imgsync-test"]
    app["httpsOnly"] = False
    app["blobs_key"] = "rotated-key"
    principal = app["identity"]["principalId"]
    state["roles"].append({"id": f"{ACCOUNT_ID}/providers/Microsoft.Authorization/roleAssignments/stale",
                           "principalId": principal, "principalType": "ServicePrincipal",
                           "role": "Storage Blob Data Owner", "roleDefinitionName": "Storage Blob Data Owner",
                           "scope": ACCOUNT_ID})
    fake.write_state(state)
    _, calls = run(fake, "deploy.sh", *args, secrets=False, extra_env={"TRAEDE_APP_KEY": "rotated-app-key"})
    changed = {command_of(c) for c in calls if is_mutating(c)}
    assert {"functionapp config appsettings delete", "resource update", "role assignment delete",
            "eventgrid system-topic event-subscription create", "resource delete", "keyvault secret set"} <= changed

    _, calls = run(fake, "teardown.sh", "--env-file", env_file, "--images-account", ACCOUNT, "--yes",
                   "--purge-key-vault", secrets=False)
    assert {"group delete", "keyvault purge", "role assignment delete", "storage container-rm delete",
            "resource delete"} <= {command_of(c) for c in calls}


def test_key_vault_reference_refresh(floor_az, env_file, project_dir):
    fake = floor_az()
    run(fake, "deploy.sh", "--env-file", env_file, "--project-dir", project_dir)
    _, calls = run(fake, "deploy.sh", "--env-file", env_file, "--project-dir", project_dir, secrets=False,
                   extra_env={"TRAEDE_APP_KEY": "rotated-app-key"})
    assert [command_of(c) for c in calls if is_mutating(c)] == ["keyvault secret set", "rest"]
    assert [c for c in calls if command_of(c) == "rest" and "/configreferences/appsettings?" in c["params"]["url"]]


@pytest.mark.parametrize("plan", ["consumption", "premium"])
def test_polling_plans_in_a_group_the_deploy_did_not_create(plan, floor_az, env_file, project_dir):
    fake = floor_az()
    fake.write_state({"groups": {"rg-imgsync-test": {"id": f"/subscriptions/{SUB}/resourceGroups/rg-imgsync-test",
                                                     "name": "rg-imgsync-test", "location": "westeurope",
                                                     "tags": {}}}})
    run(fake, "deploy.sh", "--env-file", env_file, "--project-dir", project_dir, "--hosting-plan", plan)
    _, calls = run(fake, "teardown.sh", "--env-file", env_file, "--yes", secrets=False)
    assert "group delete" not in [command_of(c) for c in calls]
    assert fake.state()["apps"] == {}


def test_dry_run_commands(floor_az, min_parse_server, env_file, project_dir, tmp_path):
    fake = floor_az()
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, "--dry-run",
                        "--alert-email", "ops@example.com")
    assert_ok(result)
    commands = dry_run_commands(result.stdout)
    down = run_script("teardown.sh", fake, "--env-file", env_file, "--images-resource-group", CUSTOMER_RG,
                      "--purge-key-vault", "--dry-run", secrets=False)
    assert_ok(down)
    commands += dry_run_commands(down.stdout)
    for argv in commands:
        argv = with_temporary_files(argv, tmp_path)
        reply = ask_parser(min_parse_server, argv)
        assert reply["status"] == "ok", f"az {' '.join(argv)}\n{reply['stderr']}"


def test_round_3_calls(floor_az, env_file, project_dir):
    """The calls #23 added: --plan's reads, Python version changes on both kinds of plan, the switch of
    a Flex deployment container to the identity, removing the BlobCreated subscription for the polling
    opt-in, and the reference statuses."""
    fake = floor_az()
    args = ("--env-file", env_file, "--project-dir", project_dir)
    run(fake, "deploy.sh", *args, "--python-version", "3.12")
    state = fake.state()
    app = state["apps"]["imgsync-test"]
    app["deployment_auth"] = {"type": "StorageAccountConnectionString",
                              "storageAccountConnectionStringName": "DEPLOYMENT_STORAGE_CONNECTION_STRING"}
    fake.write_state(state)
    _, calls = run(fake, "deploy.sh", *args, "--plan")
    assert not [c for c in calls if is_mutating(c)]
    _, calls = run(fake, "deploy.sh", *args)
    changed = {command_of(c) for c in calls if is_mutating(c)}
    assert {"functionapp runtime config set", "functionapp deployment config set", "rest"} <= changed

    premium = floor_az()
    run(premium, "deploy.sh", *args, "--hosting-plan", "premium")
    _, calls = run(premium, "deploy.sh", *args, "--hosting-plan", "premium", "--python-version", "3.12",
                   extra_env={"BLOB_TRIGGER_SOURCE": "LogsAndContainerScan"})
    changed = {command_of(c) for c in calls if is_mutating(c)}
    assert {"functionapp config set", "eventgrid system-topic event-subscription delete"} <= changed


def test_images_role_calls(floor_az, env_file, project_dir):
    """The custom role on the images (#27): defined, reused, put back after a change by hand, swapped for
    the owner opt-in, and deleted by teardown - every call through the oldest supported parser."""
    fake = floor_az()
    args = ("--env-file", env_file, "--project-dir", project_dir)
    _, calls = run(fake, "deploy.sh", *args)
    assert "role definition create" in [command_of(c) for c in calls]
    state = fake.state()
    state["role_definitions"][0]["permissions"][0]["dataActions"].append(
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete")
    fake.write_state(state)
    _, calls = run(fake, "deploy.sh", *args, secrets=False)
    assert [command_of(c) for c in calls if is_mutating(c)] == ["role definition update"]
    _, calls = run(fake, "deploy.sh", *args, "--images-data-role", "owner", secrets=False)
    assert {"role assignment create", "role assignment delete"} <= {command_of(c) for c in calls if is_mutating(c)}
    _, calls = run(fake, "teardown.sh", "--env-file", env_file, "--yes", secrets=False)
    assert fake.state()["role_definitions"] == []
