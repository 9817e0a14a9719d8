"""--plan reads the subscription and prints, per resource, what a deploy would create, change (setting by
setting, secret values hidden), delete or leave alone - and writes nothing: the fake sees no call that
changes anything."""

import re

import pytest
from deploy_harness import SECRETS, assert_ok, is_mutating, leaks, parse_failures, run_script

APP = "imgsync-test"


def plan(fake, env_file, project_dir, *args, secrets=True, **extra_env):
    fake.clear_log()
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, "--plan", *args,
                        secrets=secrets, extra_env=extra_env)
    assert_ok(result)
    calls = fake.calls()
    assert [" ".join(c["argv"]) for c in calls if is_mutating(c)] == [], "a plan writes nothing"
    assert not parse_failures(calls) and not leaks(calls)
    assert all(c["rc"] in (0, 3) for c in calls), [c for c in calls if c["rc"] not in (0, 3)]
    return result


def entries(stdout):
    """{resource: (action, [detail lines])} from the plan's listing."""
    found, current = {}, None
    for line in stdout.splitlines():
        match = re.match(r"^  (create|change|delete|unchanged)\s+(.*)$", line)
        if match:
            current = match.group(2)
            found[current] = (match.group(1), [])
        elif current and line.startswith("             "):
            found[current][1].append(line.strip())
    return found


def test_a_plan_of_an_empty_subscription_creates_everything(make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    result = plan(fake, env_file, project_dir)
    found = entries(result.stdout)
    assert result.stdout.startswith(f"Plan: what deploy/deploy.sh would do to {APP} (flex plan)")
    assert "nothing was changed" in result.stdout
    for resource in ("Resource group rg-imgsync-test", "Images storage account stproductimgtest",
                     "Container product-images", "Queue webjobs-blobtrigger-poison", f"Function app {APP}",
                     "Secret WALLIE-PASSWORD", f"Role Key Vault Secrets User for {APP} on kvimgsynctest250508",
                     f"Event subscription {APP}-blob-created (BlobCreated -> image_uploaded)"):
        assert found[resource][0] == "create", resource
    assert found[f"App settings of {APP}"][0] == "change"
    assert "+ AzureWebJobsStorage__accountName = stimgsynctest250508" in found[f"App settings of {APP}"][1]
    assert not [r for r, (action, _) in found.items() if action in ("unchanged", "delete")]
    counts = re.search(r"(\d+) to create, (\d+) to change, (\d+) to delete, (\d+) unchanged\.", result.stdout)
    assert int(counts.group(1)) == sum(1 for action, _ in found.values() if action == "create")
    assert fake.state().get("groups", {}) == {}, "nothing was created"


def test_a_plan_of_a_deployment_shows_each_change_and_leaves_the_rest(flex_deployment, make_fake_az, env_file,
                                                                      project_dir):
    fake = make_fake_az()
    fake.copy_state_from(flex_deployment["fake"])
    state = fake.state()
    app = state["apps"][APP]
    host = app["settings"]["AzureWebJobsStorage__accountName"]
    app["settings"]["LOG_LEVEL"] = "DEBUG"                                    # changed by hand
    app["settings"]["AzureWebJobsStorage"] = f"DefaultEndpointsProtocol=https;AccountName={host};AccountKey=k3y=="
    del app["settings"]["PRODUCT_SYNC_QUEUE"]                                  # deleted by hand
    app["httpsOnly"] = False
    principal = app["identity"]["principalId"]
    state["roles"] = [r for r in state["roles"] if not (r["principalId"] == principal
                                                       and r["role"] == "Storage Blob Delegator")]
    fake.write_state(state)

    result = plan(fake, env_file, project_dir, TRAEDE_APP_KEY="a-new-app-key-SECRET")
    found = entries(result.stdout)
    settings = found[f"App settings of {APP}"]
    assert settings[0] == "change"
    assert sorted(settings[1]) == sorted([
        "~ LOG_LEVEL: DEBUG -> INFO",
        "+ PRODUCT_SYNC_QUEUE = image-sync-products",
        "- AzureWebJobsStorage (was <hidden: holds a key>)",
    ])
    assert found[f"HTTPS only on {APP}"] == ("change", ["httpsOnly: false -> true"])
    assert found[f"Role Storage Blob Delegator for {APP} on stproductimgtest"][0] == "create"
    assert found["Secret TRAEDE-APP-KEY"] == ("change", ["new version from $TRAEDE_APP_KEY (value hidden)"])
    assert found["Secret WALLIE-PASSWORD"][0] == "unchanged"
    references = found[f"Key Vault references of {APP} (WALLIE_PASSWORD TRAEDE_ACCESS_TOKEN TRAEDE_APP_KEY)"]
    assert references[0] == "change" and "now: TRAEDE_APP_KEY Resolved" in references[1]
    for resource in (f"Function app {APP}", "Resource group rg-imgsync-test", f"Code of {APP}",
                     f"Event subscription {APP}-blob-created (BlobCreated -> image_uploaded)",
                     f"Role Key Vault Secrets User for {APP} on kvimgsynctest250508",
                     f"Deployment storage of {APP}", "Application Insights imgsync-test-insights"):
        assert found[resource][0] == "unchanged", resource
    assert "3 to change" not in result.stdout and re.search(r"\b[1-9]\d* unchanged\.", result.stdout)
    output = result.stdout + result.stderr
    for secret in (*SECRETS.values(), "a-new-app-key-SECRET", "k3y==", "fake-blobs-key", "InstrumentationKey="):
        assert secret not in output, "a plan shows no secret value"
    # and the subscription is exactly as it was
    after = fake.state()
    assert after["apps"][APP]["settings"] == app["settings"] and after["apps"][APP]["httpsOnly"] is False
    assert after["secrets"] == state["secrets"]


def test_a_plan_of_an_unchanged_deployment_changes_nothing(flex_deployment, make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    fake.copy_state_from(flex_deployment["fake"])
    result = plan(fake, env_file, project_dir, secrets=False)
    found = entries(result.stdout)
    assert {action for action, _ in found.values()} == {"unchanged"}, {
        r: a for r, (a, _) in found.items() if a != "unchanged"}
    assert "0 to create, 0 to change, 0 to delete" in result.stdout


def test_a_plan_shows_an_alert_rule_changed_by_hand_property_by_property(make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    run = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir,
                     "--alert-email", "ops@example.com")
    assert_ok(run)
    state = fake.state()
    rule = next(r for r in state["arm"].values() if r["name"] == f"{APP}-function-failed")
    rule["properties"]["severity"] = 4
    rule["properties"]["enabled"] = False
    fake.write_state(state)
    result = plan(fake, env_file, project_dir, "--alert-email", "ops@example.com")
    action, details = entries(result.stdout)[f"Alert rule {APP}-function-failed"]
    assert action == "change"
    assert sorted(details) == ["properties.enabled: false -> true", "properties.severity: 4 -> 2"]


@pytest.mark.parametrize("args", [["--dry-run"], ["--plan", "flex"]])
def test_plan_needs_the_subscription_and_takes_no_hosting_plan(args, make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, "--plan", *args)
    assert result.returncode != 0 and fake.calls() == []
    assert "choose one" in result.stderr or "--hosting-plan flex" in result.stderr
