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
