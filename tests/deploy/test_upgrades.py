"""A deployment made by an earlier version of the deploy is brought in line at its next run: host storage
and the Flex deployment container move from account keys to the identity, a Consumption/Premium app
moves from the polling trigger to Event Grid. And the Python version: 3.12 where asked, on any plan."""

import pytest
from deploy_harness import assert_ok, command_of, is_mutating, leaks, parse_failures, run_script

APP = "imgsync-test"


def deploy(fake, env_file, project_dir, *args, **extra_env):
    fake.clear_log()
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, *args,
                        extra_env=extra_env)
    assert_ok(result)
    calls = fake.calls()
    assert not parse_failures(calls) and not leaks(calls)
    return result, calls


def test_a_flex_app_on_account_keys_moves_to_its_identity(flex_deployment, make_fake_az, env_file, project_dir):
    """What the round-2 deploy left: a keyed AzureWebJobsStorage, deployment storage through a keyed
    DEPLOYMENT_STORAGE_CONNECTION_STRING, and no host roles."""
    fake = make_fake_az()
    fake.copy_state_from(flex_deployment["fake"])
    state = fake.state()
    app = state["apps"][APP]
    host = app["settings"].pop("AzureWebJobsStorage__accountName")
    account = state["accounts"][host]
    keyed = (f"DefaultEndpointsProtocol=https;EndpointSuffix=core.windows.net;AccountName={host};"
             f"AccountKey=fakeaccountkey{host}==")
    app["settings"].update(AzureWebJobsStorage=keyed, DEPLOYMENT_STORAGE_CONNECTION_STRING=keyed)
    app["deployment_auth"] = {"type": "StorageAccountConnectionString",
                              "storageAccountConnectionStringName": "DEPLOYMENT_STORAGE_CONNECTION_STRING"}
    principal = app["identity"]["principalId"]
    state["roles"] = [r for r in state["roles"] if not (r["principalId"] == principal and f"/{host}" in r["scope"])]
    fake.write_state(state)

    plan, _ = deploy(fake, env_file, project_dir, "--plan")
    assert "authentication: StorageAccountConnectionString -> SystemAssignedIdentity" in plan.stdout
    assert "- AzureWebJobsStorage (was <hidden: holds a key>)" in plan.stdout
    assert "- DEPLOYMENT_STORAGE_CONNECTION_STRING (was <hidden: holds a key>)" in plan.stdout
    assert "+ AzureWebJobsStorage__accountName = " + host in plan.stdout

    result, calls = deploy(fake, env_file, project_dir)
    changes = [command_of(c) for c in calls if is_mutating(c)]
    assert changes.index("role assignment create") < changes.index("functionapp deployment config set") \
        < changes.index("functionapp config appsettings delete"), "roles first, then the switch, then the keys go"
    after = fake.state()
    settings = after["apps"][APP]["settings"]
    assert settings["AzureWebJobsStorage__accountName"] == host
    assert "AzureWebJobsStorage" not in settings and "DEPLOYMENT_STORAGE_CONNECTION_STRING" not in settings
    assert after["apps"][APP]["deployment_auth"] == {"type": "SystemAssignedIdentity"}
    host_roles = {r["role"] for r in after["roles"] if r["principalId"] == principal and f"/{host}" in r["scope"]}
    assert {"Storage Blob Data Owner", "Storage Queue Data Contributor", "Storage Account Contributor",
            "Storage Table Data Contributor"} <= host_roles
    assert after["accounts"][host] == account, "the account itself, shared-key setting included, untouched"
    assert "Key Vault references: all 3 resolved" in result.stderr

    # the new code goes up through the identity now
    deploy(fake, env_file, project_dir, "--force-code-deploy")
    assert len(fake.state()["apps"][APP]["deployments"]) == 2


@pytest.mark.parametrize("plan", ["flex", "premium", "consumption"])
def test_python_312_on_every_plan_and_a_change_of_version(plan, make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    _, calls = deploy(fake, env_file, project_dir, "--hosting-plan", plan, "--python-version", "3.12")
    create = next(c for c in calls if command_of(c) == "functionapp create")
    assert create["params"]["runtime_version"] == "3.12"
    assert fake.state()["apps"][APP]["python"] == "3.12"

    result, calls = deploy(fake, env_file, project_dir, "--hosting-plan", plan)  # back to the default, 3.11
    change = "functionapp runtime config set" if plan == "flex" else "functionapp config set"
    assert [command_of(c) for c in calls if is_mutating(c)] == [change, "rest"]
    assert "Python version of imgsync-test: 3.12 -> 3.11" in result.stderr
    assert fake.state()["apps"][APP]["python"] == "3.11"
    _, calls = deploy(fake, env_file, project_dir, "--hosting-plan", plan)
    assert [c for c in calls if is_mutating(c)] == []
