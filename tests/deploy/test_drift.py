"""A deploy after something changed - in deploy.env or by hand in Azure - puts exactly that right, and a
run after it changes nothing again."""

import pytest
from deploy_harness import assert_ok, command_of, is_mutating, parse_failures, run_script

APP = "imgsync-test"


@pytest.fixture
def deployed(flex_deployment, make_fake_az):
    """A fresh fake Azure holding a copy of the finished flex deployment."""
    fake = make_fake_az()
    fake.copy_state_from(flex_deployment["fake"])
    return fake


def redeploy(fake, env_file, project_dir, **extra_env):
    fake.clear_log()
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir,
                        secrets=False, extra_env=extra_env)
    assert_ok(result)
    assert not parse_failures(fake.calls())
    return result, [c for c in fake.calls() if is_mutating(c)]


def edit_state(fake, change):
    state = fake.state()
    change(state)
    fake.write_state(state)


def settings_written(call):
    """The settings an 'appsettings set' wrote: the deploy passes them in a JSON file (--settings @file)."""
    import json

    (document,) = call["params"]["settings"]
    return json.loads(document)


def test_a_setting_cleared_in_deploy_env_is_removed_from_the_app(deployed, env_file, project_dir):
    _, changes = redeploy(deployed, env_file, project_dir, IMAGE_PATH_PATTERN="{item_id}_{color_id}_{sort}.{ext}")
    # every settings change restarts the app: its Key Vault references are refreshed and checked after
    assert [command_of(c) for c in changes] == ["functionapp config appsettings set", "rest"]
    assert deployed.state()["apps"][APP]["settings"]["IMAGE_PATH_PATTERN"] == "{item_id}_{color_id}_{sort}.{ext}"

    result, changes = redeploy(deployed, env_file, project_dir)  # the env file does not set it
    assert [(command_of(c), c["params"].get("setting_names")) for c in changes] == [
        ("functionapp config appsettings delete", ["IMAGE_PATH_PATTERN"]), ("rest", None)]
    settings = deployed.state()["apps"][APP]["settings"]
    assert "IMAGE_PATH_PATTERN" not in settings
    assert "FUNCTIONS_EXTENSION_VERSION" in settings, "the host's own settings are not the deploy's to remove"
    assert "removing IMAGE_PATH_PATTERN" in result.stderr

    _, changes = redeploy(deployed, env_file, project_dir)
    assert changes == []


def test_a_setting_changed_by_hand_is_written_back(deployed, env_file, project_dir):
    edit_state(deployed, lambda s: s["apps"][APP]["settings"].update(LOG_LEVEL="DEBUG", PRODUCT_SYNC_QUEUE="x"))
    _, changes = redeploy(deployed, env_file, project_dir)
    write, refresh = changes
    assert settings_written(write) == {"LOG_LEVEL": "INFO", "PRODUCT_SYNC_QUEUE": "image-sync-products"}
    assert command_of(refresh) == "rest" and refresh["params"]["url"].endswith("/refresh?api-version=2022-03-01")


def test_a_rotated_blobs_extension_key_recreates_the_webhook_subscription(deployed, env_file, project_dir):
    edit_state(deployed, lambda s: s["apps"][APP].update(blobs_key="rotated-blobs-key"))
    result, changes = redeploy(deployed, env_file, project_dir)
    assert [(command_of(c), c["params"]["event_subscription_name"]) for c in changes] == [
        ("eventgrid system-topic event-subscription create", f"{APP}-blob-created")]
    sub = deployed.state()["event_subscriptions"][f"stproductimgtest-events/{APP}-blob-created"]
    assert sub["destination"]["endpointUrl"].endswith("&code=rotated-blobs-key")
    for call in deployed.calls():
        assert "rotated-blobs-key" not in " ".join(call["argv"])
    assert "rotated-blobs-key" not in result.stdout + result.stderr
    _, changes = redeploy(deployed, env_file, project_dir)
    assert changes == []


@pytest.mark.parametrize("change", ["container", "no-api-filter", "endpoint"])
def test_an_event_subscription_changed_by_hand_is_put_right(change, deployed, env_file, project_dir):
    key = f"stproductimgtest-events/{APP}-blob-created"

    def edit(state):
        sub = state["event_subscriptions"][key]
        if change == "container":
            sub["filter"]["subjectBeginsWith"] = "/blobServices/default/containers/old-images/"
        elif change == "no-api-filter":
            sub["filter"]["advancedFilters"] = []
        else:
            deleted = state["event_subscriptions"][f"stproductimgtest-events/{APP}-blob-deleted"]
            deleted["destination"]["resourceId"] = deleted["destination"]["resourceId"].replace(
                "image_deleted", "nightly_sync")

    edit_state(deployed, edit)
    _, changes = redeploy(deployed, env_file, project_dir)
    expected = f"{APP}-blob-deleted" if change == "endpoint" else f"{APP}-blob-created"
    assert [c["params"]["event_subscription_name"] for c in changes] == [expected]
    subs = deployed.state()["event_subscriptions"]
    assert subs[key]["filter"]["subjectBeginsWith"] == "/blobServices/default/containers/product-images/"
    assert subs[key]["filter"]["advancedFilters"][0]["key"] == "data.api"
    assert subs[f"stproductimgtest-events/{APP}-blob-deleted"]["destination"]["resourceId"].endswith(
        "/functions/image_deleted")


def test_roles_are_put_right(deployed, env_file, project_dir):
    """A missing role comes back, a managed role the app should not have goes, a role somebody else gave
    the app for their own reasons (not one of the deploy's roles) stays."""
    state = deployed.state()
    principal = state["apps"][APP]["identity"]["principalId"]
    account = next(r["scope"] for r in state["roles"] if r["role"] == "Storage Blob Delegator")
    removed = next(r for r in state["roles"] if r["principalId"] == principal and r["scope"].endswith("image-sync-state"))

    def edit(s):
        s["roles"] = [r for r in s["roles"] if r["id"] != removed["id"]]
        for role, rid in (("Storage Blob Data Owner", "stale"), ("Reader", "theirs")):
            s["roles"].append({"id": f"{account}/providers/Microsoft.Authorization/roleAssignments/{rid}",
                               "principalId": principal, "principalType": "ServicePrincipal", "role": role,
                               "roleDefinitionName": role, "scope": account})

    edit_state(deployed, edit)
    _, changes = redeploy(deployed, env_file, project_dir)
    assert [command_of(c) for c in changes] == ["role assignment create", "role assignment delete", "rest"]
    assert changes[0]["params"]["scope"] == removed["scope"]
    assert changes[1]["params"]["ids"] == [f"{account}/providers/Microsoft.Authorization/roleAssignments/stale"]
    roles = {(r["role"], r["scope"]) for r in deployed.state()["roles"] if r["principalId"] == principal}
    assert ("Reader", account) in roles and ("Storage Blob Data Owner", account) not in roles
    assert (removed["role"], removed["scope"]) in roles
    _, changes = redeploy(deployed, env_file, project_dir)
    assert changes == []


def test_https_only_turned_off_by_hand_is_turned_on_again(deployed, env_file, project_dir):
    """With 'az resource update' (one property of the site), not 'az functionapp update --set', which
    writes the whole site configuration back and is refused on Flex Consumption for some settings."""
    edit_state(deployed, lambda s: s["apps"][APP].update(httpsOnly=False))
    _, changes = redeploy(deployed, env_file, project_dir)
    (update,) = changes
    assert command_of(update) == "resource update"
    assert update["params"]["resource_ids"] == [deployed.state()["apps"][APP]["id"]]
    assert update["argv"][update["argv"].index("--set") + 1] == "properties.httpsOnly=true"
    assert deployed.state()["apps"][APP]["httpsOnly"] is True


def test_application_insights_deleted_by_hand_comes_back(deployed, env_file, project_dir):
    def edit(state):
        component = next(k for k, r in state["arm"].items() if r["type"] == "Microsoft.Insights/components")
        del state["arm"][component]

    edit_state(deployed, edit)
    _, changes = redeploy(deployed, env_file, project_dir)
    assert [command_of(c) for c in changes] == ["resource create", "functionapp config appsettings set", "rest"]
    component = next(r for r in deployed.state()["arm"].values() if r["type"] == "Microsoft.Insights/components")
    settings = deployed.state()["apps"][APP]["settings"]
    assert settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == component["properties"]["ConnectionString"]
