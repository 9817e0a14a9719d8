"""Secret rotation through deploy.sh, teardown of a whole deployment, and a deploy after teardown."""

import pytest
from deploy_harness import SECRETS, assert_ok, command_of, is_mutating, parse_failures, run_script


@pytest.fixture
def deployed(flex_deployment):
    """A fake Azure holding the finished flex deployment; tests copy its state."""
    return flex_deployment["fake"]


def test_secrets_are_kept_when_no_value_is_given(deployed, make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    fake.copy_state_from(deployed)
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, secrets=False)
    assert_ok(result)
    assert [command_of(c) for c in fake.calls() if is_mutating(c)] == []
    assert "kept" in result.stderr


def test_one_new_secret_value_writes_one_new_version_and_nothing_else(deployed, make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    fake.copy_state_from(deployed)
    fake.watch(TRAEDE_APP_KEY="rotated-app-key-SECRET")
    refreshes_before = fake.state()["apps"]["imgsync-test"]["kv_refreshes"]
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, secrets=False,
                        extra_env={"TRAEDE_APP_KEY": "rotated-app-key-SECRET"})
    assert_ok(result)
    calls = fake.calls()
    assert not parse_failures(calls)
    # ... and the documented refresh of the Key Vault references, so the app reads the new version now
    # rather than within 24 hours
    mutating = [c for c in calls if is_mutating(c)]
    assert [command_of(c) for c in mutating] == ["keyvault secret set", "rest"]
    assert mutating[0]["params"]["name"] == "TRAEDE-APP-KEY"
    app = fake.state()["apps"]["imgsync-test"]
    assert mutating[1]["params"]["url"] == (
        f"{app['id']}/config/configreferences/appsettings/refresh?api-version=2022-03-01")
    assert app["kv_refreshes"] == refreshes_before + 1 and not app.get("restarts")
    assert "Key Vault references: all 3 resolved" in result.stderr
    vault = next(iter(fake.state()["vaults"]))
    assert fake.state()["secrets"][f"{vault}/TRAEDE-APP-KEY"] == [SECRETS["TRAEDE_APP_KEY"], "rotated-app-key-SECRET"]
    assert all("rotated-app-key-SECRET" not in " ".join(c["argv"]) for c in calls)


def test_first_deploy_without_a_secret_fails_clearly(make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, secrets=False,
                        extra_env={"WALLIE_PASSWORD": "x", "TRAEDE_ACCESS_TOKEN": "y"})
    assert result.returncode != 0
    assert "TRAEDE-APP-KEY" in result.stderr and "TRAEDE_APP_KEY" in result.stderr
    assert not any(command_of(c) == "functionapp create" for c in fake.calls())


def test_code_change_redeploys(deployed, make_fake_az, env_file, project_dir, tmp_path):
    import shutil

    changed = tmp_path / "app"
    shutil.copytree(project_dir, changed)
    (changed / "shared" / "__init__.py").write_text('"""changed"""\n')
    fake = make_fake_az()
    fake.copy_state_from(deployed)
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", changed)
    assert_ok(result)
    assert [command_of(c) for c in fake.calls() if is_mutating(c)] == [
        "functionapp deployment source config-zip", "tag update"]
    assert len(fake.state()["apps"]["imgsync-test"]["deployments"]) == 2


def test_teardown_deletes_the_group_and_a_later_deploy_recovers_the_vault(deployed, make_fake_az, env_file,
                                                                          project_dir):
    fake = make_fake_az()
    fake.copy_state_from(deployed)
    down = run_script("teardown.sh", fake, "--env-file", env_file, "--yes", secrets=False)
    assert_ok(down)
    assert not parse_failures(fake.calls())
    # the group, and then the custom role the deploy defined on its images account (no assignment is left)
    assert [command_of(c) for c in fake.calls() if is_mutating(c)] == ["group delete", "rest"]
    assert "/providers/Microsoft.Authorization/roleDefinitions/" in fake.calls()[-1]["params"]["url"]
    assert "images included" in down.stderr, "the images account created in the group goes with it: say so"
    state = fake.state()
    assert state["groups"] == {} and state["apps"] == {} and state["accounts"] == {}
    assert state["role_definitions"] == []
    assert len(state["deleted_vaults"]) == 1

    # Nothing left: a second teardown is a no-op, and with nothing to do it has no rights to check.
    fake.clear_log()
    again = run_script("teardown.sh", fake, "--env-file", env_file, "--yes", secrets=False)
    assert_ok(again)
    assert [c for c in fake.calls() if is_mutating(c)] == []
    assert "rest" not in [command_of(c) for c in fake.calls()]
    assert "nothing to delete" in again.stderr

    # Deploy again without secrets: the soft-deleted vault (and its secrets) comes back.
    fake.clear_log()
    up = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, secrets=False)
    assert_ok(up)
    commands = [command_of(c) for c in fake.calls()]
    assert "keyvault recover" in commands and "keyvault create" not in commands
    assert "keyvault secret set" not in commands


def test_teardown_purges_the_vault_on_request(deployed, make_fake_az, env_file):
    fake = make_fake_az()
    fake.copy_state_from(deployed)
    down = run_script("teardown.sh", fake, "--env-file", env_file, "--yes", "--purge-key-vault", secrets=False)
    assert_ok(down)
    assert [command_of(c) for c in fake.calls() if is_mutating(c)] == ["group delete", "rest", "keyvault purge"]
    assert fake.state()["deleted_vaults"] == {}


def test_teardown_asks_before_deleting(deployed, make_fake_az, env_file):
    fake = make_fake_az()
    fake.copy_state_from(deployed)
    down = run_script("teardown.sh", fake, "--env-file", env_file, secrets=False)
    assert down.returncode != 0 and "--yes" in down.stderr
    assert [c for c in fake.calls() if is_mutating(c)] == []
