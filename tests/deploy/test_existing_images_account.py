"""An images account that already exists in a customer's resource group: reused, never reconfigured,
and never deleted by teardown - only the deploy's own additions are removed from it."""

import pytest
from deploy_harness import assert_ok, command_of, parse_failures, run_script

SUB = "00000000-0000-0000-0000-000000000001"
CUSTOMER_RG = "rg-customer"
ACCOUNT = "custimages"
ACCOUNT_ID = f"/subscriptions/{SUB}/resourceGroups/{CUSTOMER_RG}/providers/Microsoft.Storage/storageAccounts/{ACCOUNT}"
OTHER_PRINCIPAL = "99999999-9999-9999-9999-999999999999"


def seed(fake, with_topic):
    state = {
        "groups": {CUSTOMER_RG: {"id": f"/subscriptions/{SUB}/resourceGroups/{CUSTOMER_RG}", "name": CUSTOMER_RG,
                                 "location": "northeurope", "tags": {}}},
        "accounts": {ACCOUNT: {"name": ACCOUNT, "resourceGroup": CUSTOMER_RG, "location": "northeurope",
                               "tags": {"owner": "customer"}, "defaultAction": "Deny"}},
        "containers": {f"{ACCOUNT_ID.lower()}/product-images": {"publicAccess": None}},
        "roles": [{"id": f"{ACCOUNT_ID}/providers/Microsoft.Authorization/roleAssignments/other",
                   "principalId": OTHER_PRINCIPAL, "principalType": "User", "role": "Storage Blob Data Owner",
                   "roleDefinitionName": "Storage Blob Data Owner", "scope": ACCOUNT_ID}],
        "topics": {}, "event_subscriptions": {},
    }
    if with_topic:
        state["topics"]["customer-events"] = {
            "id": f"/subscriptions/{SUB}/resourceGroups/{CUSTOMER_RG}/providers/Microsoft.EventGrid/systemTopics/customer-events",
            "name": "customer-events", "resourceGroup": CUSTOMER_RG, "source": ACCOUNT_ID,
            "topicType": "Microsoft.Storage.StorageAccounts", "location": "northeurope", "tags": {}}
        state["event_subscriptions"]["customer-events/other-team"] = {
            "name": "other-team", "topic": "customer-events", "resourceGroup": CUSTOMER_RG,
            "endpointType": "webhook", "endpoint": "https://other.example.com/hook"}
    fake.write_state(state)


@pytest.mark.parametrize("with_topic", [True, False], ids=["customer-topic", "no-topic"])
def test_existing_account_in_other_resource_group(with_topic, make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    seed(fake, with_topic)
    # flags win over the env file's IMAGES_STORAGE_ACCOUNT
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir,
                        "--images-account", ACCOUNT)
    assert_ok(result)
    calls = fake.calls()
    assert not parse_failures(calls)
    assert "reused as it is" in result.stderr
    assert "not reachable from the internet" in result.stderr, "a firewalled account gets a warning"

    created_accounts = [c["params"]["account_name"] for c in calls if command_of(c) == "storage account create"]
    assert len(created_accounts) == 1 and ACCOUNT not in created_accounts, "only the host account is created"
    assert not any("network-rule" in command_of(c) or command_of(c) == "storage account update" for c in calls)
    created_containers = [c["params"]["container_name"] for c in calls if command_of(c) == "storage container-rm create"]
    assert sorted(created_containers) == ["image-sync-renditions", "image-sync-runs", "image-sync-state"], \
        "existing images container reused"

    state = fake.state()
    assert state["accounts"][ACCOUNT]["tags"] == {"owner": "customer"}
    settings = state["apps"]["imgsync-test"]["settings"]
    assert settings["IMAGES_STORAGE__blobServiceUri"] == f"https://{ACCOUNT}.blob.core.windows.net"
    queues = sorted(q for q in state["queues"] if q.startswith(ACCOUNT_ID.lower()))
    assert len(queues) == 5
    assert state["containers"][f"{ACCOUNT_ID.lower()}/product-images"]["publicAccess"] is None, "left as it was"
    topic_name = "customer-events" if with_topic else f"{ACCOUNT}-events"
    assert topic_name in state["topics"]
    assert state["topics"][topic_name]["resourceGroup"] == CUSTOMER_RG
    assert any(command_of(c) == "eventgrid system-topic create" for c in calls) is (not with_topic)
    ours = {k for k in state["event_subscriptions"] if k.split("/")[1].startswith("imgsync-test-")}
    assert ours == {f"{topic_name}/imgsync-test-blob-created", f"{topic_name}/imgsync-test-blob-deleted"}
    principal = state["apps"]["imgsync-test"]["identity"]["principalId"]
    on_images = [r for r in state["roles"] if r["principalId"] == principal and f"/{ACCOUNT}" in r["scope"]]
    assert len(on_images) == 10, "owner of the images container (verdict tags), 3 contributors, delegator, 5 queues"
    # the preflight checked the rights on the customer's account before anything was created
    permission_reads = [c["argv"][c["argv"].index("--url") + 1] for c in calls if command_of(c) == "rest"]
    assert f"{ACCOUNT_ID}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01" in permission_reads

    # --- teardown ------------------------------------------------------------------------------
    fake.clear_log()
    down = run_script("teardown.sh", fake, "--env-file", env_file, "--images-account", ACCOUNT, "--yes",
                      secrets=False)
    assert_ok(down)
    calls = fake.calls()
    assert not parse_failures(calls)
    deletes = [command_of(c) for c in calls if command_of(c).endswith(" delete")]
    assert "group delete" in deletes
    assert deletes.index("role assignment delete") < deletes.index("group delete"), \
        "the app's identity is needed to find its role assignments: clean up before the group goes"
    state = fake.state()
    assert ACCOUNT in state["accounts"] and CUSTOMER_RG in state["groups"], "the customer's account stays"
    assert "rg-imgsync-test" not in state["groups"]
    # The images container and the shared blob-trigger poison queue stay; the app's own containers and
    # queues, which the deploy created (metadata), go.
    assert sorted(state["containers"]) == [f"{ACCOUNT_ID.lower()}/product-images"]
    assert [q.rsplit("/", 1)[1] for q in state["queues"]] == ["webjobs-blobtrigger-poison"]
    assert "Left in place:" in down.stderr and "container product-images" in down.stderr
    assert "webjobs-blobtrigger-poison" in down.stderr.split("Left in place:")[1]
    assert [r["principalId"] for r in state["roles"]] == [OTHER_PRINCIPAL]
    assert not any(k.split("/")[1].startswith("imgsync-test-") for k in state["event_subscriptions"])
    if with_topic:
        assert "customer-events" in state["topics"], "a topic the deploy did not create stays"
        assert "customer-events/other-team" in state["event_subscriptions"]
    else:
        assert state["topics"] == {}, "the deploy's own topic goes once unused"
    group_delete = next(c for c in calls if command_of(c) == "group delete")
    assert group_delete["params"]["resource_group_name"] == "rg-imgsync-test"
