"""Every hosting plan gets the Event Grid blob trigger: the BlobCreated subscription the deploy makes and
the blob trigger binding the host indexes from the app (with the settings the deploy wrote) must agree -
same function, same container, same storage account, same source. The polling trigger stays an opt-in
the deploy warns about (BLOB_TRIGGER_SOURCE=LogsAndContainerScan, Consumption/Premium only)."""

from urllib.parse import parse_qs, urlparse

import pytest
from deploy_harness import (
    app_bindings,
    assert_ok,
    command_of,
    is_mutating,
    leaks,
    parse_failures,
    resolve_app_setting_references,
    run_script,
)

APP = "imgsync-test"


def deploy(fake, env_file, project_dir, plan, **extra_env):
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir,
                        "--hosting-plan", plan, extra_env=extra_env)
    assert_ok(result)
    calls = fake.calls()
    assert not parse_failures(calls) and not leaks(calls)
    assert all(c["rc"] in (0, 3) for c in calls), [c for c in calls if c["rc"] not in (0, 3)]
    return result, calls


def binding(bindings, function, kind):
    return next(b for b in bindings[function] if b["type"] == kind)


def assert_trigger_and_subscriptions_agree(state):
    """What the host would index and what Event Grid would deliver describe the same thing."""
    app = state["apps"][APP]
    settings = app["settings"]
    bindings = app_bindings(settings)
    trigger = binding(bindings, "image_uploaded", "blobTrigger")
    assert trigger["source"] == settings["BLOB_TRIGGER_SOURCE"] == "EventGrid"
    container = resolve_app_setting_references(trigger["path"], settings).split("/", 1)[0]
    account = urlparse(settings[f"{trigger['connection']}__blobServiceUri"]).hostname.split(".")[0]

    subs = {s["name"]: s for s in state["event_subscriptions"].values()}
    created = subs[f"{APP}-blob-created"]
    topic = state["topics"][created["topic"]]
    assert topic["source"].lower().endswith(f"/storageaccounts/{account}"), "events come from the trigger's account"
    assert created["filter"]["subjectBeginsWith"] == f"/blobServices/default/containers/{container}/"
    assert created["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    url = urlparse(created["destination"]["endpointUrl"])
    assert (url.scheme, url.hostname, url.path) == ("https", app["defaultHostName"], "/runtime/webhooks/blobs")
    query = parse_qs(url.query)
    assert query["functionName"] == ["Host.Functions.image_uploaded"], "the webhook names the function holding the trigger"
    assert query["code"] == [app.get("blobs_key") or f"fake-blobs-key-{APP}"]

    deleted_trigger = binding(bindings, "image_deleted", "eventGridTrigger")
    assert deleted_trigger["name"]
    deleted = subs[f"{APP}-blob-deleted"]
    assert deleted["destination"]["resourceId"] == f"{app['id']}/functions/image_deleted"
    assert deleted["filter"]["subjectBeginsWith"] == created["filter"]["subjectBeginsWith"]
    assert deleted["topic"] == created["topic"]


@pytest.mark.parametrize("plan", ["flex", "consumption", "premium"])
def test_event_grid_subscription_and_blob_trigger_binding_agree_on_every_plan(plan, make_fake_az, env_file,
                                                                             project_dir):
    fake = make_fake_az()
    _, calls = deploy(fake, env_file, project_dir, plan)
    state = fake.state()
    app = state["apps"][APP]
    assert app["kind"] == plan
    assert_trigger_and_subscriptions_agree(state)

    create = next(c for c in calls if command_of(c) == "functionapp create")["params"]
    assert (create["runtime"], create["runtime_version"]) == ("python", "3.11")
    if plan == "consumption":
        assert create["consumption_plan_location"] == "westeurope" and create["os_type"] == "Linux"
    elif plan == "premium":
        plan_create = next(c for c in calls if command_of(c) == "functionapp plan create")["params"]
        assert plan_create["sku"] == "EP1" and plan_create["is_linux"] in (True, "true")
        assert create["plan"] == plan_create["name"]

    # every plan: the images' bytes are only read (the deploy's custom role on their container: it reads
    # them and reads and writes their verdict tags, nothing more)
    principal = app["identity"]["principalId"]
    images_roles = sorted((r["role"], r["scope"].split("/storageAccounts/")[1]) for r in state["roles"]
                          if r["principalId"] == principal and "/stproductimgtest" in r["scope"]
                          and r["role"].startswith("Storage Blob"))
    assert images_roles == [("Storage Blob Data Contributor", "stproductimgtest/blobServices/default/containers/image-sync-renditions"),
                            ("Storage Blob Data Contributor", "stproductimgtest/blobServices/default/containers/image-sync-runs"),
                            ("Storage Blob Data Contributor", "stproductimgtest/blobServices/default/containers/image-sync-state"),
                            ("Storage Blob Delegator", "stproductimgtest")]
    assert [(r["role"], r["scope"].split("/storageAccounts/")[1]) for r in state["roles"]
            if r["principalId"] == principal and r["role"].startswith("Image Sync")] == [
        ("Image Sync Image Reader and Tagger (stproductimgtest)",
         "stproductimgtest/blobServices/default/containers/product-images")]
    assert app["httpsOnly"] is True

    # a second run finds everything, the plan's own resources included
    fake.clear_log()
    again = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, "--hosting-plan", plan)
    assert_ok(again)
    assert [" ".join(c["argv"]) for c in fake.calls() if is_mutating(c)] == []


def test_host_storage_per_plan(make_fake_az, env_file, project_dir):
    """Premium's host storage goes through the identity too; its Azure Files content share keeps the
    connection string it must have. Linux Consumption keeps a keyed AzureWebJobsStorage (its remote build
    needs one, and az's zip deploy requires it), and the deploy says so."""
    premium = make_fake_az()
    deploy(premium, env_file, project_dir, "premium")
    settings = premium.state()["apps"][APP]["settings"]
    assert "AzureWebJobsStorage" not in settings and settings["AzureWebJobsStorage__accountName"]
    assert "AccountKey=" in settings["WEBSITE_CONTENTAZUREFILECONNECTIONSTRING"], "the host's own, left alone"

    consumption = make_fake_az()
    result, _ = deploy(consumption, env_file, project_dir, "consumption")
    state = consumption.state()
    settings = state["apps"][APP]["settings"]
    assert "AccountKey=" in settings["AzureWebJobsStorage"] and "AzureWebJobsStorage__accountName" not in settings
    principal = state["apps"][APP]["identity"]["principalId"]
    host = next(name for name in state["accounts"] if name != "stproductimgtest")
    assert not [r for r in state["roles"] if r["principalId"] == principal and f"/{host}" in r["scope"]]
    assert "Linux Consumption retires on 30 September 2028" in result.stderr
    assert "keeps an account key" in result.stderr


def test_polling_is_an_opt_in_that_says_what_it_costs(make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    result, calls = deploy(fake, env_file, project_dir, "consumption", BLOB_TRIGGER_SOURCE="LogsAndContainerScan")
    assert "runs image_uploaded once for every blob" in result.stderr and "100,000 calls" in result.stderr
    state = fake.state()
    app = state["apps"][APP]
    assert app["settings"]["BLOB_TRIGGER_SOURCE"] == "LogsAndContainerScan"
    assert binding(app_bindings(app["settings"]), "image_uploaded", "blobTrigger")["source"] == "LogsAndContainerScan"
    assert {s["name"] for s in state["event_subscriptions"].values()} == {f"{APP}-blob-deleted"}
    assert not any(command_of(c) == "functionapp keys list" for c in calls), "no webhook, no blobs_extension key"
    # the polling trigger keeps receipts and leases in the images account: Storage Blob Data Owner there
    principal = app["identity"]["principalId"]
    assert ("Storage Blob Data Owner", "stproductimgtest") in {
        (r["role"], r["scope"].rsplit("/", 1)[1]) for r in state["roles"] if r["principalId"] == principal}

    # back to the default: Event Grid, the subscription, and the Owner role goes
    fake.clear_log()
    deploy(fake, env_file, project_dir, "consumption")
    state = fake.state()
    assert_trigger_and_subscriptions_agree(state)
    assert "Storage Blob Data Owner" not in {r["role"] for r in state["roles"]
                                             if r["principalId"] == principal and r["scope"].endswith("/stproductimgtest")}


def test_flex_refuses_the_polling_trigger_before_any_az_call(make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir,
                        extra_env={"BLOB_TRIGGER_SOURCE": "LogsAndContainerScan"})
    assert result.returncode != 0
    assert "Flex Consumption supports only the Event Grid blob trigger" in result.stderr
    assert fake.calls() == []
