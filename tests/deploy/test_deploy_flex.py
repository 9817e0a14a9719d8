"""deploy.sh on Flex Consumption, from an empty subscription, twice.

Every az call goes through the real Azure CLI parser (see azcli_parse_server.py) into a fake Azure
that keeps state between calls, so the second run sees what the first created.
"""

import os
import re
import zipfile
from urllib.parse import parse_qs, urlparse

import pytest
from deploy_harness import SECRETS, command_of, is_mutating, leaks, parse_failures

CONTRACT_SETTINGS = {
    "IMAGES_STORAGE__blobServiceUri", "IMAGES_STORAGE__queueServiceUri", "IMAGES_CONTAINER", "SAS_TTL_HOURS",
    "SAS_START_SKEW_MINUTES", "WALLIE_BASE_URL", "WALLIE_TENANT", "WALLIE_USERNAME", "WALLIE_PASSWORD",
    "WALLIE_BATCH_SIZE", "TRAEDE_BASE_URL", "TRAEDE_ACCESS_TOKEN", "TRAEDE_APP_KEY", "TRAEDE_PAYLOAD_KEY",
    "TRAEDE_COLOR_ATTRIBUTE", "HTTP_TIMEOUT_SECONDS", "HTTP_MAX_RETRIES", "SYNC_CONCURRENCY", "SYNC_SCHEDULE",
    "BLOB_TRIGGER_SOURCE", "SYNC_SHARD_PRODUCTS", "SYNC_SHARD_QUEUE", "LOG_LEVEL",
    # settings of the app's next version (product queue, state and run history containers)
    "PRODUCT_SYNC_QUEUE", "PRODUCT_SYNC_DELAY_SECONDS", "SYNC_STATE_CONTAINER", "RUN_HISTORY_CONTAINER",
    "RUN_HISTORY_DAYS", "APPLICATIONINSIGHTS_CONNECTION_STRING",
}
QUEUES = ["image-sync-products", "image-sync-products-poison", "image-sync-shards", "image-sync-shards-poison",
          "webjobs-blobtrigger-poison"]


@pytest.fixture
def flex(flex_deployment):
    return flex_deployment


def index_of(calls, predicate, what):
    for i, call in enumerate(calls):
        if predicate(call):
            return i
    raise AssertionError(f"no call {what}")


def test_every_az_call_passes_the_real_cli_parser(flex):
    for run in ("first_calls", "second_calls"):
        failures = parse_failures(flex[run])
        assert not failures, "\n".join(f"az {' '.join(c['argv'])}\n  {c.get('error')}" for c in failures)
        assert all(c["rc"] == 0 or c["rc"] == 3 for c in flex[run]), [c for c in flex[run] if c["rc"] not in (0, 3)]
        assert leaks(flex[run]) == []


def test_second_run_creates_nothing(flex):
    mutating = [" ".join(c["argv"]) for c in flex["second_calls"] if is_mutating(c)]
    assert mutating == []
    assert "up to date" in flex["second"].stderr


def test_first_run_creates_everything(flex):
    created = [command_of(c) for c in flex["first_calls"] if is_mutating(c)]
    for expected in ("group create", "storage account create", "storage container-rm create", "resource create",
                     "keyvault create", "keyvault secret set", "functionapp create", "role assignment create",
                     "functionapp config appsettings set", "functionapp config appsettings delete",
                     "functionapp deployment source config-zip", "eventgrid system-topic create",
                     "eventgrid system-topic event-subscription create", "rest"):
        assert expected in created, expected
    # Flex: 'functionapp create --deployment-storage-auth-type SystemAssignedIdentity' assigns the identity
    assert "functionapp identity assign" not in created
    state = flex["state"]
    host_accounts = [name for name in state["accounts"] if name != "stproductimgtest"]
    assert "stproductimgtest" in state["accounts"] and len(host_accounts) == 1
    assert sorted(q.rsplit("/", 1)[1] for q in state["queues"]) == QUEUES
    assert sorted(c.rsplit("/", 1)[1] for c in state["containers"]) == [
        "image-sync-renditions", "image-sync-runs", "image-sync-state", "product-images"]
    for container in state["containers"].values():
        assert container["publicAccess"] == "off"
    # everything on the images account is marked as the deploy's, for teardown
    for item in [*state["containers"].values(), *state["queues"].values()]:
        assert item["metadata"] == {"image_sync_app": "imgsync-test"}


def test_no_graph_and_no_secret_token_anywhere(flex):
    """The deployer's object id comes from the ARM token's oid claim, not from Microsoft Graph, and
    the token itself never reaches a command line or the output."""
    from fake_az import DEPLOYER_ID, access_token

    token = access_token(DEPLOYER_ID)
    payload = token.split(".")[1]
    for run in ("first_calls", "second_calls"):
        assert not [c for c in flex[run] if command_of(c).startswith("ad ")]
        assert [c for c in flex[run] if command_of(c) == "account get-access-token"]
        for call in flex[run]:
            assert payload not in " ".join(call["argv"])
    for run in ("first", "second"):
        assert payload not in flex[run].stdout + flex[run].stderr
    officer = next(r for r in flex["state"]["roles"] if r["role"] == "Key Vault Secrets Officer")
    assert (officer["principalId"], officer["principalType"]) == (DEPLOYER_ID, "User")


def test_function_app_is_flex_python_311_https_only(flex):
    create = next(c for c in flex["first_calls"] if command_of(c) == "functionapp create")
    params = create["params"]
    assert params["flexconsumption_location"] == "westeurope"
    assert params["deployment_storage_auth_type"] == "SystemAssignedIdentity"
    assert (params["runtime"], params["runtime_version"]) == ("python", "3.11")
    assert not params.get("consumption_plan_location") and not params.get("plan")
    app = flex["state"]["apps"]["imgsync-test"]
    assert app["httpsOnly"] is True
    # the plan az creates for a Flex app is tagged, so a teardown that cannot drop the group finds it
    plan = next(p for p in flex["state"]["plans"].values() if p["id"] == app["serverFarmId"])
    assert plan["tags"] == {"image-sync-app": "imgsync-test"}


def test_application_insights_is_explicit_and_workspace_based(flex):
    state = flex["state"]
    create = next(c for c in flex["first_calls"] if command_of(c) == "functionapp create")
    assert create["params"]["disable_app_insights"] in (True, "true"), "no silent default workspace attempt"
    arm = state["arm"]
    workspaces = [r for r in arm.values() if r["type"] == "Microsoft.OperationalInsights/workspaces"]
    components = [r for r in arm.values() if r["type"] == "Microsoft.Insights/components"]
    assert len(workspaces) == 1 and len(components) == 1
    component = components[0]
    assert "/resourceGroups/rg-imgsync-test/" in component["id"] and "/resourceGroups/rg-imgsync-test/" in workspaces[0]["id"]
    assert component["properties"]["WorkspaceResourceId"] == workspaces[0]["id"]
    assert component["tags"] == {"image-sync-app": "imgsync-test"}
    settings = state["apps"]["imgsync-test"]["settings"]
    assert settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == component["properties"]["ConnectionString"]
    # no alerts without ALERT_EMAIL / ALERT_ACTION_GROUP_ID, and the summary says so
    assert not [r for r in arm.values() if r["type"] in ("Microsoft.Insights/actionGroups",
                                                          "Microsoft.Insights/scheduledQueryRules")]
    assert "ALERT_EMAIL" in flex["first"].stderr


def test_order_app_roles_settings_code_then_event_grid_then_references(flex):
    calls = flex["first_calls"]
    create = index_of(calls, lambda c: command_of(c) == "functionapp create", "functionapp create")
    app_principal = flex["state"]["apps"]["imgsync-test"]["identity"]["principalId"]
    app_roles = [i for i, c in enumerate(calls) if command_of(c) == "role assignment create"
                 and c["params"]["assignee_object_id"] == app_principal]
    settings = index_of(calls, lambda c: command_of(c) == "functionapp config appsettings set", "settings write")
    keyed_host_storage_removed = index_of(calls, lambda c: command_of(c) == "functionapp config appsettings delete"
                                          and "AzureWebJobsStorage" in c["params"]["setting_names"],
                                          "removing the keyed AzureWebJobsStorage")
    deploy = index_of(calls, lambda c: command_of(c) == "functionapp deployment source config-zip", "config-zip")
    subscriptions = [i for i, c in enumerate(calls) if command_of(c).startswith("eventgrid system-topic event-subscription create")]
    refresh = index_of(calls, lambda c: command_of(c) == "rest" and c["params"]["method"] == "post", "reference refresh")
    status_reads = [i for i, c in enumerate(calls) if command_of(c) == "rest"
                    and c["params"]["url"].endswith("/config/configreferences/appsettings?api-version=2022-03-01")]
    assert create < min(app_roles)
    assert max(app_roles) < settings, "Key Vault references and identity-based host storage after the roles"
    assert settings < keyed_host_storage_removed < deploy
    assert len(subscriptions) == 2
    assert deploy < min(subscriptions), "Event Grid subscriptions must come after the code deploy"
    assert max(subscriptions) < refresh < max(status_reads), "the references are refreshed, then their status read"


def test_secret_values_never_on_a_command_line(flex):
    for run in ("first_calls", "second_calls"):
        for call in flex[run]:
            argv = " ".join(call["argv"])
            for name, value in SECRETS.items():
                assert value not in argv, f"{name} on the command line of az {command_of(call)}"
    for run in ("first", "second"):
        output = flex[run].stdout + flex[run].stderr
        for value in SECRETS.values():
            assert value not in output


def test_secrets_reach_key_vault_through_private_temp_files(flex):
    sets = [c for c in flex["first_calls"] if command_of(c) == "keyvault secret set"]
    assert sorted(c["params"]["name"] for c in sets) == ["TRAEDE-ACCESS-TOKEN", "TRAEDE-APP-KEY", "WALLIE-PASSWORD"]
    for call in sets:
        assert call["params"].get("file_path") and not call["params"].get("value")
        assert not os.path.exists(call["params"]["file_path"]), "temp secret file left behind"
    secrets = flex["state"]["secrets"]
    vault = next(iter(flex["state"]["vaults"]))
    assert secrets[f"{vault}/WALLIE-PASSWORD"] == [SECRETS["WALLIE_PASSWORD"]]
    assert secrets[f"{vault}/TRAEDE-ACCESS-TOKEN"] == [SECRETS["TRAEDE_ACCESS_TOKEN"]]
    assert secrets[f"{vault}/TRAEDE-APP-KEY"] == [SECRETS["TRAEDE_APP_KEY"]]


def test_key_vault_is_rbac_and_deployer_can_write_secrets(flex):
    create = next(c for c in flex["first_calls"] if command_of(c) == "keyvault create")
    assert create["params"]["enable_rbac_authorization"] in (True, "true")
    first_secret = index_of(flex["first_calls"], lambda c: command_of(c).startswith("keyvault secret"), "secret call")
    officer = index_of(flex["first_calls"], lambda c: command_of(c) == "role assignment create"
                       and c["params"]["role"] == "Key Vault Secrets Officer", "deployer's Secrets Officer role")
    assert officer < first_secret


def test_app_settings(flex):
    state = flex["state"]
    app = state["apps"]["imgsync-test"]
    settings = app["settings"]
    assert CONTRACT_SETTINGS <= set(settings)
    # the host reaches its storage with the identity: no account key anywhere in the app's settings
    host = next(name for name in state["accounts"] if name != "stproductimgtest")
    assert settings["AzureWebJobsStorage__accountName"] == host
    assert "AzureWebJobsStorage" not in settings and "DEPLOYMENT_STORAGE_CONNECTION_STRING" not in settings
    assert not [name for name, value in settings.items() if "AccountKey=" in value]
    assert app["deployment_auth"] == {"type": "SystemAssignedIdentity"}
    # ... and the accounts' shared-key access is left as it was (the deploy never writes it)
    assert all("allowSharedKeyAccess" not in account for account in state["accounts"].values())
    assert not [c for c in flex["first_calls"] if command_of(c) == "storage account update"]
    # the values went to az in a file, not on the command line
    (write,) = [c for c in flex["first_calls"] if command_of(c) == "functionapp config appsettings set"]
    assert write["argv"][write["argv"].index("--settings") + 1].startswith("@")
    vault_uri = next(iter(state["vaults"].values()))["properties"]["vaultUri"]
    for name, secret in (("WALLIE_PASSWORD", "WALLIE-PASSWORD"), ("TRAEDE_ACCESS_TOKEN", "TRAEDE-ACCESS-TOKEN"),
                         ("TRAEDE_APP_KEY", "TRAEDE-APP-KEY")):
        # versionless, so a new secret version is picked up without redeploying
        assert settings[name] == f"@Microsoft.KeyVault(SecretUri={vault_uri}secrets/{secret}/)"
    for value in settings.values():
        for secret in SECRETS.values():
            assert secret not in value
    assert settings["IMAGES_STORAGE__blobServiceUri"] == "https://stproductimgtest.blob.core.windows.net"
    assert settings["IMAGES_STORAGE__queueServiceUri"] == "https://stproductimgtest.queue.core.windows.net"
    assert "IMAGES_STORAGE" not in settings, "identity-based connection only: no connection string in Azure"
    assert settings["BLOB_TRIGGER_SOURCE"] == "EventGrid"
    assert settings["SYNC_SCHEDULE"] == "0 30 1 * * *"  # from the env file, quotes stripped
    assert settings["IMAGES_CONTAINER"] == "product-images"
    assert settings["SYNC_SHARD_QUEUE"] == "image-sync-shards"
    assert (settings["SAS_TTL_HOURS"], settings["SAS_START_SKEW_MINUTES"]) == ("48", "15")
    assert (settings["WALLIE_BATCH_SIZE"], settings["TRAEDE_PAYLOAD_KEY"], settings["TRAEDE_COLOR_ATTRIBUTE"]) == (
        "500", "products", "Color")
    assert (settings["HTTP_TIMEOUT_SECONDS"], settings["HTTP_MAX_RETRIES"], settings["SYNC_CONCURRENCY"],
            settings["SYNC_SHARD_PRODUCTS"], settings["LOG_LEVEL"]) == ("30", "5", "4", "2000", "INFO")
    assert (settings["PRODUCT_SYNC_QUEUE"], settings["PRODUCT_SYNC_DELAY_SECONDS"], settings["SYNC_STATE_CONTAINER"],
            settings["RUN_HISTORY_CONTAINER"], settings["RUN_HISTORY_DAYS"]) == (
        "image-sync-products", "10", "image-sync-state", "image-sync-runs", "30")
    assert (settings["RENDITIONS_CONTAINER"], settings["WEB_IMAGES"]) == ("image-sync-renditions", "convert")
    assert "IMAGE_PATH_PATTERN" not in settings, "optional: the app's default layout applies"


def test_role_assignments_are_narrow(flex):
    state = flex["state"]
    principal = state["apps"]["imgsync-test"]["identity"]["principalId"]
    account = next(a for a in state["accounts"].values() if a["name"] == "stproductimgtest")
    account_id = (f"/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/{account['resourceGroup']}"
                  f"/providers/Microsoft.Storage/storageAccounts/stproductimgtest")
    host = next(name for name in state["accounts"] if name != "stproductimgtest")
    host_id = account_id.replace("stproductimgtest", host)
    vault_id = next(iter(state["vaults"].values()))["id"]
    roles = sorted((r["role"], r["scope"]) for r in state["roles"] if r["principalId"] == principal)
    # the Event Grid-sourced blob trigger only reads the blob it is handed; the web stage reads and writes the
    # images' verdict tags: the deploy's own custom role (read, tags read and write), on the images container
    assert roles == sorted([
        ("Image Sync Image Reader and Tagger (stproductimgtest)",
         f"{account_id}/blobServices/default/containers/product-images"),
        ("Storage Blob Data Contributor", f"{account_id}/blobServices/default/containers/image-sync-state"),
        ("Storage Blob Data Contributor", f"{account_id}/blobServices/default/containers/image-sync-runs"),
        ("Storage Blob Data Contributor", f"{account_id}/blobServices/default/containers/image-sync-renditions"),
        ("Storage Blob Delegator", account_id),
        *[("Storage Queue Data Contributor", f"{account_id}/queueServices/default/queues/{q}") for q in QUEUES],
        ("Key Vault Secrets User", vault_id),
        # the host's own account, reached with the identity ("Connecting to host storage with an identity")
        ("Storage Blob Data Owner", host_id), ("Storage Queue Data Contributor", host_id),
        ("Storage Account Contributor", host_id), ("Storage Table Data Contributor", host_id),
        # what az functionapp create gives the identity for the Flex deployment container
        ("Storage Blob Data Contributor", host_id),
    ])
    assert all(r["principalType"] == "ServicePrincipal" for r in state["roles"] if r["principalId"] == principal)


def test_event_grid_subscriptions(flex):
    state = flex["state"]
    app = state["apps"]["imgsync-test"]
    subs = {s["name"]: s for s in state["event_subscriptions"].values()}
    created = subs["imgsync-test-blob-created"]
    url = urlparse(created["destination"]["endpointUrl"])
    # host name read from the app (the fake's Flex host name is not <app>.azurewebsites.net)
    assert url.scheme == "https" and url.hostname == app["defaultHostName"]
    assert url.path == "/runtime/webhooks/blobs"
    query = parse_qs(url.query)
    assert query["functionName"] == ["Host.Functions.image_uploaded"]
    assert query["code"] == ["fake-blobs-key-imgsync-test"]
    assert created["destination"]["endpointType"] == "WebHook"
    assert created["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    # only fully committed blobs: no event for ADLS CreateFile or an SFTP upload's empty first blob
    assert created["filter"]["advancedFilters"] == [{
        "key": "data.api", "operatorType": "StringIn",
        "values": ["CopyBlob", "PutBlob", "PutBlockList", "FlushWithClose", "SftpCommit"]}]
    deleted = subs["imgsync-test-blob-deleted"]
    assert deleted["destination"]["endpointType"] == "AzureFunction"
    assert deleted["destination"]["resourceId"] == f"{app['id']}/functions/image_deleted"
    assert deleted["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobDeleted"]
    for sub in (created, deleted):
        assert sub["filter"]["subjectBeginsWith"] == "/blobServices/default/containers/product-images/"
        assert sub["eventDeliverySchema"] == "EventGridSchema"
    topic = next(iter(state["topics"].values()))
    assert topic["source"].endswith("/storageAccounts/stproductimgtest")
    assert topic["topicType"].lower() == "microsoft.storage.storageaccounts"


def test_blobs_extension_key_is_read_from_the_app_and_kept_off_command_lines(flex):
    calls = flex["first_calls"]
    key_reads = [c for c in calls if command_of(c) == "functionapp keys list"]
    assert len(key_reads) >= 2, "the fake host has no key on the first poll: the script must retry"
    for call in calls:
        assert "fake-blobs-key" not in " ".join(call["argv"])


def test_package_honours_funcignore(flex, project_dir):
    deployment = flex["state"]["apps"]["imgsync-test"]["deployments"][-1]
    files = deployment["files"]
    assert {"host.json", "function_app.py", "requirements.txt", "functions/image_uploaded.py",
            "shared/__init__.py"} <= set(files)
    for path in files:
        assert not re.match(r"(tests|devtools|deploy|bench)/", path), path
    assert "local.settings.json" not in files and ".funcignore" not in files
    assert deployment["build_remote"] == "true"
    assert len(flex["state"]["apps"]["imgsync-test"]["deployments"]) == 1, "same code: no second upload"


def test_summary_tells_how_to_run_the_first_full_sync(flex):
    host = flex["state"]["apps"]["imgsync-test"]["defaultHostName"]
    out = flex["first"].stdout
    assert f"https://{host}/admin/functions/nightly_sync" in out
    assert "x-functions-key" in out and "masterKey" in out and "-d '{}'" in out
    assert "fake-master-key" not in out
    # the key reaches curl on stdin (-H @-), never as an argument: no command substitution in a header
    assert "-H @-" in out and "$(" not in out


def test_zip_is_deterministic(flex, project_dir, tmp_path):
    # the same tree packs to the same bytes, which is what lets a second run skip the upload
    zips = list(flex["fake"].build_dir.glob("*.zip"))
    assert len(zips) == 1
    with zipfile.ZipFile(zips[0]) as archive:
        assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in archive.infolist())
