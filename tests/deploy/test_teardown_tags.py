"""Teardown deletes only what the deploy created - the resource group only when the deploy created it
(its tag), otherwise each resource carrying the deploy's tag - and says what it leaves."""

import pytest
from deploy_harness import assert_ok, command_of, is_mutating, parse_failures, run_script

SUB = "/subscriptions/00000000-0000-0000-0000-000000000001"
RG = "rg-imgsync-test"
APP = "imgsync-test"


def customer_account(name, rg=RG):
    return {"name": name, "resourceGroup": rg, "location": "westeurope", "tags": {"owner": "finance"}}


@pytest.fixture(scope="module")
def existing_group_deployment(tmp_path_factory, cli_python, parse_server, env_file, project_dir):
    """The deploy into a resource group somebody else created, holding one of their storage accounts."""
    from deploy_harness import FakeAz

    fake = FakeAz(tmp_path_factory.mktemp("existing-group"), cli_python, parse_server)
    fake.write_state({
        "groups": {RG: {"id": f"{SUB}/resourceGroups/{RG}", "name": RG, "location": "westeurope", "tags": {}}},
        "accounts": {"financedata": customer_account("financedata")},
    })
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir,
                        "--alert-email", "ops@example.com")
    assert_ok(result)
    assert "group create" not in [command_of(c) for c in fake.calls()]
    return fake


@pytest.fixture
def deployed_into_existing_group(existing_group_deployment, make_fake_az):
    fake = make_fake_az()
    fake.copy_state_from(existing_group_deployment)
    return fake


def test_a_group_the_deploy_did_not_create_keeps_everything_else(deployed_into_existing_group, env_file):
    fake = deployed_into_existing_group
    fake.clear_log()
    down = run_script("teardown.sh", fake, "--env-file", env_file, "--yes", secrets=False)
    assert_ok(down)
    calls = fake.calls()
    assert not parse_failures(calls)
    commands = [command_of(c) for c in calls if is_mutating(c)]
    assert "group delete" not in commands
    state = fake.state()
    assert RG in state["groups"], "the group stays"
    assert list(state["accounts"]) == ["financedata"], "their account stays, the deploy's two go"
    assert state["apps"] == {} and state["plans"] == {} and state["topics"] == {} and state["arm"] == {}
    assert list(state["deleted_vaults"]) and state["vaults"] == {}
    # dependants before what they depend on
    deleted = [c["argv"][c["argv"].index("--ids") + 1].rsplit("/", 2)[1] for c in calls
               if command_of(c) == "resource delete"]
    assert deleted.index("scheduledQueryRules") < deleted.index("actionGroups")
    assert deleted.index("sites") < deleted.index("serverfarms")
    assert deleted.index("components") < deleted.index("workspaces")
    left = down.stderr.split("Left in place:", 1)[1]
    assert f"resource group {RG} (it existed before the deploy), with: financedata" in left
    assert "with all its images" in down.stderr, "the images account it created goes: it says so"


def test_a_group_the_deploy_created_goes_but_strangers_in_it_are_named(flex_deployment, make_fake_az, env_file):
    fake = make_fake_az()
    fake.copy_state_from(flex_deployment["fake"])
    state = fake.state()
    state["accounts"]["financedata"] = customer_account("financedata")
    fake.write_state(state)
    down = run_script("teardown.sh", fake, "--env-file", env_file, "--yes", secrets=False)
    assert_ok(down)
    assert "also holds resources the deploy did not create; they are deleted with it: financedata" in down.stderr
    assert [command_of(c) for c in fake.calls() if is_mutating(c)] == ["group delete", "rest"]  # + the custom role


def test_confirmation_names_what_it_asks_for(deployed_into_existing_group, env_file):
    fake = deployed_into_existing_group
    fake.clear_log()
    down = run_script("teardown.sh", fake, "--env-file", env_file, secrets=False)
    assert down.returncode != 0 and "--yes" in down.stderr
    assert [c for c in fake.calls() if is_mutating(c)] == []


def test_purge_without_the_subscription_right_stops_before_deleting(flex_deployment, make_fake_az, env_file):
    fake = make_fake_az()
    fake.copy_state_from(flex_deployment["fake"])
    state = fake.state()
    state["permissions"] = {f"{SUB}/resourceGroups/{RG}": [{"actions": ["*"], "notActions": []}]}
    fake.write_state(state)
    down = run_script("teardown.sh", fake, "--env-file", env_file, "--yes", "--purge-key-vault", secrets=False)
    assert down.returncode != 0
    assert "Microsoft.KeyVault/locations/deletedVaults/purge/action on subscription" in down.stderr
    assert [c for c in fake.calls() if is_mutating(c)] == []
    assert RG in fake.state()["groups"]
