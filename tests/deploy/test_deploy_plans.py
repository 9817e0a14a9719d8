"""deploy.sh on the classic Consumption and the Elastic Premium plans: polling blob trigger, no
BlobCreated subscription."""

import pytest

from deploy_harness import assert_ok, command_of, is_mutating, parse_failures, run_script


@pytest.mark.parametrize("plan", ["consumption", "premium"])
def test_polling_plans(plan, make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, "--plan", plan)
    assert_ok(result)
    calls = fake.calls()
    assert not parse_failures(calls), parse_failures(calls)
    state = fake.state()
    app = state["apps"]["imgsync-test"]
    assert app["kind"] == plan
    assert app["settings"]["BLOB_TRIGGER_SOURCE"] == "LogsAndContainerScan"

    create = next(c for c in calls if command_of(c) == "functionapp create")["params"]
    assert (create["runtime"], create["runtime_version"], create["os_type"]) == ("python", "3.11", "Linux")
    assert create["functions_version"] == "4"
    if plan == "consumption":
        assert create["consumption_plan_location"] == "westeurope"
    else:
        plan_create = next(c for c in calls if command_of(c) == "functionapp plan create")["params"]
        assert plan_create["sku"] == "EP1" and plan_create["is_linux"] in (True, "true")
        assert create["plan"] == plan_create["name"]

    # Only the BlobDeleted subscription: image_uploaded polls the container.
    subs = {s["name"]: s for s in state["event_subscriptions"].values()}
    assert set(subs) == {"imgsync-test-blob-deleted"}
    assert not any(command_of(c) == "functionapp keys list" for c in calls), "no blobs_extension key needed"

    # The polling trigger keeps receipts and leases in the images account and reads its $logs:
    # Microsoft's blob trigger table asks for Storage Blob Data Owner (and Queue Data Contributor).
    principal = app["identity"]["principalId"]
    blob_roles = sorted((r["role"], r["scope"].split("/storageAccounts/")[1]) for r in state["roles"]
                        if r["principalId"] == principal and r["role"].startswith("Storage Blob"))
    assert blob_roles == [("Storage Blob Data Owner", "stproductimgtest"),
                          ("Storage Blob Delegator", "stproductimgtest")]
    queue_roles = [r["scope"].rsplit("/", 1)[1] for r in state["roles"] if r["principalId"] == principal
                   and r["role"] == "Storage Queue Data Contributor"]
    assert "webjobs-blobtrigger-poison" in queue_roles and len(queue_roles) == 5
    assert app["httpsOnly"] is True

    if plan == "premium":  # the plan is one more thing a second run must find rather than create
        fake.clear_log()
        again = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, "--plan", plan)
        assert_ok(again)
        assert [" ".join(c["argv"]) for c in fake.calls() if is_mutating(c)] == []
