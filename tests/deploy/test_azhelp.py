"""deploy/azhelp.py: the checks the scripts hand to Python - version order, the token's object id,
Azure RBAC action matching, and the comparison that decides whether a resource must be written again."""

import base64
import json
import subprocess
import sys

import pytest
from deploy_harness import DEPLOY_DIR

sys.path.insert(0, str(DEPLOY_DIR))
import azhelp  # noqa: E402


@pytest.mark.parametrize("have, need, ok", [
    ("2.72.0", "2.72.0", True), ("2.100.0", "2.72.0", True), ("2.9.0", "2.72.0", False),
    ("2.71.1", "2.72.0", False), ("3.0.0b1", "2.72.0", True),
])
def test_versions_compare_as_numbers(have, need, ok):
    assert azhelp.version_at_least(have, need) is ok
    result = subprocess.run([sys.executable, str(DEPLOY_DIR / "azhelp.py"), "version-at-least", have, need])
    assert (result.returncode == 0) is ok


def test_object_id_from_a_token_without_padding():
    payload = base64.urlsafe_b64encode(json.dumps({"oid": "abc-123", "x": "y" * 5}).encode()).decode().rstrip("=")
    token = f"eyJhbGciOiJSUzI1NiJ9.{payload}.sig"
    result = subprocess.run([sys.executable, str(DEPLOY_DIR / "azhelp.py"), "token-oid"], input=token + "\n",
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "abc-123"
    bad = subprocess.run([sys.executable, str(DEPLOY_DIR / "azhelp.py"), "token-oid"], input="not-a-token",
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "not-a-token" not in bad.stderr


CONTRIBUTOR = {"actions": ["*"], "notActions": ["Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write"]}
READER = {"actions": ["*/read"], "notActions": []}
UAA = {"actions": ["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"], "notActions": []}


@pytest.mark.parametrize("action, entries, ok", [
    ("Microsoft.Web/sites/write", [CONTRIBUTOR], True),
    ("Microsoft.Authorization/roleAssignments/write", [CONTRIBUTOR], False),
    ("microsoft.authorization/ROLEASSIGNMENTS/write", [CONTRIBUTOR], False),  # case does not matter
    ("Microsoft.Authorization/roleAssignments/write", [CONTRIBUTOR, UAA], True),  # another role grants it
    ("Microsoft.KeyVault/locations/deletedVaults/read", [READER], True),
    ("Microsoft.KeyVault/locations/deletedVaults/purge/action", [READER], False),
    ("Microsoft.Web/register/action", [{"actions": ["*"], "notActions": ["*/register/action"]}], False),
    ("Microsoft.Web/sites/write", [], False),
])
def test_rbac_actions_and_not_actions(action, entries, ok):
    assert azhelp.granted(action, entries) is ok
    assert azhelp.missing_actions([action], json.dumps({"value": entries})) == ([] if ok else [action])


def test_matches_tolerates_what_azure_adds_and_normalises():
    desired = {"kind": "web", "tags": {"image-sync-app": "a"},
               "properties": {"sku": {"name": "PerGB2018"}, "WorkspaceResourceId": "/subscriptions/S/resourceGroups/RG/x",
                              "threshold": 0, "enabled": True, "values": ["PutBlob", "CopyBlob"]}}
    actual = {"kind": "web", "etag": "x", "tags": {"image-sync-app": "a", "cost-centre": "42"},
              "properties": {"sku": {"name": "pergb2018"}, "workspaceResourceId": "/subscriptions/s/resourcegroups/rg/x",
                             "threshold": 0.0, "enabled": True, "values": ["PutBlob", "CopyBlob"], "extra": 1}}
    assert azhelp.matches(desired, actual)


@pytest.mark.parametrize("change", [
    lambda a: a["properties"].update(enabled=False),
    lambda a: a["properties"].update(threshold=1),
    lambda a: a["properties"]["values"].pop(),
    lambda a: a["properties"].pop("sku"),
    lambda a: a["tags"].update({"image-sync-app": "other"}),
    lambda a: a["properties"].update(enabled=1),  # a number is not a boolean
])
def test_matches_sees_a_difference(change):
    desired = {"tags": {"image-sync-app": "a"},
               "properties": {"sku": {"name": "x"}, "threshold": 0, "enabled": True, "values": ["a", "b"]}}
    actual = json.loads(json.dumps(desired))
    change(actual)
    assert not azhelp.matches(desired, actual)


def test_matches_command_ignores_location_and_reads_stdin(tmp_path):
    desired = tmp_path / "desired.json"
    desired.write_text(json.dumps({"location": "West Europe", "properties": {"a": "B"}}))
    ok = subprocess.run([sys.executable, str(DEPLOY_DIR / "azhelp.py"), "matches", str(desired)],
                        input=json.dumps({"location": "westeurope", "properties": {"a": "b"}}), text=True)
    assert ok.returncode == 0
    empty = subprocess.run([sys.executable, str(DEPLOY_DIR / "azhelp.py"), "matches", str(desired)], input="",
                           text=True)
    assert empty.returncode == 1


def account(kind="StorageV2", sku="Standard_LRS", services=("blob", "queue", "table", "file"), **extra):
    return {"name": "acct", "resourceGroup": "rg", "kind": kind, "sku": {"name": sku},
            "primaryEndpoints": {s: f"https://acct.{s}.core.windows.net/" for s in services}, **extra}


@pytest.mark.parametrize("role, acc, plan, source, stops, warns", [
    ("images", account(), "flex", "EventGrid", [], []),
    ("images", account(kind="Storage"), "flex", "EventGrid", ["general-purpose v1"], []),
    ("host", account(kind="Storage"), "flex", "EventGrid", [], []),  # the host needs no blob events
    ("images", account(kind="BlobStorage", services=("blob",)), "flex", "EventGrid", ["no queue service"], []),
    ("host", account(kind="BlobStorage", services=("blob",)), "flex", "EventGrid", ["no queue service"], []),
    ("images", account(kind="BlockBlobStorage", sku="Premium_LRS", services=("blob",)), "flex", "EventGrid",
     ["cannot be converted"], []),
    ("images", account(sku="Premium_ZRS", services=("blob",)), "flex", "EventGrid", ["page blobs only"], []),
    ("images", account(kind="FileStorage", services=("file",)), "flex", "EventGrid", ["no blob service"], []),
    ("images", account(services=("blob",)), "flex", "EventGrid", ["no queue service endpoint"], []),
    ("images", account(isHnsEnabled=True), "flex", "EventGrid", [], ["leaves CopyBlob out"]),
    ("images", account(isHnsEnabled=True), "premium", "LogsAndContainerScan", ["does not support"], []),
    ("host", account(allowSharedKeyAccess=False), "premium", "EventGrid", ["content share"], []),
    ("host", account(allowSharedKeyAccess=False), "consumption", "EventGrid", ["keyed AzureWebJobsStorage"], []),
    ("host", account(allowSharedKeyAccess=False), "flex", "EventGrid", [], []),
    ("images", account(allowSharedKeyAccess=False), "consumption", "EventGrid", [], []),
])
def test_storage_account_verdicts(role, acc, plan, source, stops, warns):
    found_stops, found_warns, _ = azhelp._account_problems(acc, role, plan, source)
    assert len(found_stops) == len(stops) and all(s in f for s, f in zip(stops, found_stops, strict=True))
    assert len(found_warns) == len(warns) and all(w in f for w, f in zip(warns, found_warns, strict=True))
    for line in found_stops:
        instead = ("general-purpose v2", "--hosting-plan flex", "leave BLOB_TRIGGER_SOURCE at EventGrid")
        assert "acct" in line and any(remedy in line for remedy in instead), "every stop says what to do instead"


@pytest.mark.parametrize("name, value, shown", [
    ("LOG_LEVEL", "INFO", "INFO"),
    ("SYNC_SCHEDULE", "0 0 2 * * *", "'0 0 2 * * *'"),
    ("AzureWebJobsStorage", "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=xyz==", "<hidden: holds a key>"),
    ("APPLICATIONINSIGHTS_CONNECTION_STRING", "InstrumentationKey=abc;IngestionEndpoint=x", "<hidden: holds a key>"),
    ("WALLIE_PASSWORD", "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/W/)",
     "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/W/)"),
    ("WALLIE_PASSWORD", "hunter2", "<hidden: a secret value, not a Key Vault reference>"),
    ("X", "https://h/api?code=k", "<hidden: holds a key>"),
    ("X", "", "(not set)"),
])
def test_setting_values_are_shown_without_secrets(name, value, shown):
    assert azhelp.shown(name, value) == shown


def test_settings_diff_lists_what_to_set_and_remove():
    current = [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "K", "value": "AccountKey=zz"},
               {"name": "HOSTS_OWN", "value": "x"}]
    rows = azhelp.settings_diff({"A": "1", "B": "3", "C": "4", "K": "", "GONE": ""}, current)
    assert rows == [("set", "B", "2", "3"), ("set", "C", "(not set)", "4"),
                    ("remove", "K", "<hidden: holds a key>", "(not set)")]


def test_reference_statuses_name_the_reason_and_what_to_do():
    document = {"value": [
        {"id": "/s/app/config/configreferences/appsettings/A", "name": "A",
         "properties": {"status": "Resolved", "details": ""}},
        {"id": "/s/app/config/configreferences/appsettings/B",
         "properties": {"status": "AccessToKeyVaultDenied", "details": "denied access."}},
    ]}
    rows = azhelp.reference_statuses(document, ["A", "B", "C"])
    assert rows[0] == ("A", "Resolved", "")
    assert rows[1][:2] == ("B", "AccessToKeyVaultDenied") and rows[1][2].startswith("denied access.; ")
    assert "Key Vault Secrets User" in rows[1][2]
    assert rows[2] == ("C", "Missing", azhelp.REFERENCE_HINTS["Missing"])


def test_differences_name_each_property_that_differs():
    desired = {"properties": {"severity": 2, "enabled": True, "scopes": ["/a"]}, "tags": {"t": "x"}}
    actual = {"properties": {"severity": 4, "enabled": True, "scopes": ["/A"], "extra": 1}, "tags": {}}
    assert sorted(azhelp.differences(desired, actual)) == [("properties.severity", 4, 2), ("tags.t", None, "x")]
    assert azhelp.differences(desired, {**actual, "properties": {**actual["properties"], "severity": 2},
                                        "tags": {"t": "X"}}) == []
