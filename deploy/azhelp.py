"""Small helpers for deploy.sh and teardown.sh that bash does badly. Standard library only.

  version-at-least HAVE NEED     exit 0 when version HAVE >= NEED (e.g. 2.72.0 >= 2.72.0)
  token-oid                      the "oid" claim of the JWT on stdin (the signed-in principal's object id)
  missing-actions ACTION...      the ACTIONs (one a line) that the ARM permissions JSON on stdin does
                                 not grant
  matches DESIRED_FILE           exit 0 when the JSON on stdin holds everything in DESIRED_FILE
                                 (see matches())
  get DOTTED.PATH                the string at that path of the JSON on stdin (exit 1 if missing)
  fields DOTTED.PATH...          the value at each path of the JSON on stdin, one a line (empty if missing)
  storage-account ROLE PLAN SOURCE
                                 what is wrong with the storage account JSON on stdin for ROLE (images or
                                 host) on hosting plan PLAN with blob trigger source SOURCE: "stop<TAB>why"
                                 and "warn<TAB>why" lines, and "hns<TAB>true" for a hierarchical namespace
  settings-diff DESIRED_FILE     the app settings (az ... appsettings list JSON on stdin) that differ from
                                 DESIRED_FILE (NAME=VALUE lines; an empty VALUE: must not be set), as
                                 "set|remove<TAB>NAME<TAB>current<TAB>desired", values shown as shown() does
  settings-json DESIRED_FILE NAME...
                                 those settings of DESIRED_FILE as a JSON object (for --settings @file)
  kv-references NAME...          each app setting NAME's Key Vault reference status, from the
                                 configreferences/appsettings JSON on stdin: "NAME<TAB>STATUS<TAB>why"
  diff DESIRED_FILE              what the JSON on stdin lacks of DESIRED_FILE, one "path: current -> desired"
                                 line each (see matches())
  role-definition NAME SCOPE ACTIONS DATA_ACTIONS [ID]
                                 a custom role definition as `az role definition create/update
                                 --role-definition` takes it: ACTIONS and DATA_ACTIONS comma-separated,
                                 assignable at SCOPE; with ID (the existing one's) the body of an update
  role-definition-check NAME SCOPE ACTIONS DATA_ACTIONS
                                 the custom role NAME in the `az role definition list` JSON on stdin:
                                 nothing when absent, else "ID<TAB>" and what differs from the desired
                                 definition ("; "-separated, empty when it is as it should be)
"""

import base64
import json
import re
import sys


def version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def version_at_least(have, need):
    return version_tuple(have) >= version_tuple(need)


def token_oid(token):
    """The object id in an access token. Only the payload is decoded: the signature is Azure's
    business, and the token came from the CLI's own login."""
    parts = token.strip().split(".")
    if len(parts) < 2:
        raise ValueError("not a JWT")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    claims = json.loads(base64.urlsafe_b64decode(payload))
    return claims["oid"]


def _action_pattern(pattern):
    """ARM action patterns: case-insensitive, '*' matches any run of characters (slashes included)."""
    return re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$", re.IGNORECASE)


def granted(action, permissions):
    """Whether one of the permission entries grants ACTION: an entry grants what its actions match and
    its notActions do not (notActions subtract only from their own entry, as in Azure RBAC)."""
    for entry in permissions:
        allowed = any(_action_pattern(p).match(action) for p in entry.get("actions") or [])
        denied = any(_action_pattern(p).match(action) for p in entry.get("notActions") or [])
        if allowed and not denied:
            return True
    return False


def missing_actions(actions, permissions_json):
    document = json.loads(permissions_json)
    permissions = document.get("value", document) if isinstance(document, dict) else document
    return [action for action in actions if not granted(action, permissions)]


def matches(desired, actual):
    """True when ACTUAL holds DESIRED: every key of a desired object is in the actual one with a matching
    value (Azure adds read-only and default properties, so extra keys are fine), lists match item by
    item, and strings match without regard to case: Azure returns some values in another case than it
    was given (resource ids, SKU names such as 'pergb2018')."""
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return False
        lowered = {str(k).lower(): v for k, v in actual.items()}
        return all(str(k).lower() in lowered and matches(v, lowered[str(k).lower()]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(actual, list) and len(desired) == len(actual) and all(
            matches(d, a) for d, a in zip(desired, actual, strict=True))
    if isinstance(desired, bool) or isinstance(actual, bool):
        return isinstance(desired, bool) and isinstance(actual, bool) and desired == actual  # True == 1 in Python
    if isinstance(desired, (int, float)) and isinstance(actual, (int, float)):
        return float(desired) == float(actual)
    if isinstance(desired, str) and isinstance(actual, str):
        return desired.lower() == actual.lower()
    return desired == actual


# -- Storage accounts --------------------------------------------------------------------------------
# Microsoft's "Storage account overview" (types of storage accounts) and "Azure Blob Storage as an Event
# Grid source": only StorageV2, BlobStorage and BlockBlobStorage accounts raise blob events (not
# general-purpose v1, kind Storage); BlobStorage and BlockBlobStorage have no queue service; a premium
# StorageV2 account holds page blobs only; FileStorage has no blobs. The app needs blob events, block
# blobs and queues on the images account, and the Functions host needs blobs, queues and tables.

def _account_problems(account, role, plan, source):
    name = account.get("name") or "?"
    group = account.get("resourceGroup") or "<resource group>"
    kind = account.get("kind") or "?"
    sku = ((account.get("sku") or {}).get("name")) or "?"
    endpoints = account.get("primaryEndpoints") or {}
    upgrade = (f"Upgrade it in place to general-purpose v2 (az storage account update --name {name} "
               f"--resource-group {group} --set kind=StorageV2 --access-tier Hot; this cannot be undone and "
               "changes its prices)")
    setting = "IMAGES_STORAGE_ACCOUNT" if role == "images" else "HOST_STORAGE_ACCOUNT"
    instead = f"or set {setting} to a standard general-purpose v2 (StorageV2) account"
    stops, warns = [], []
    if kind == "Storage":
        if role == "images":
            stops.append(f"storage account {name} is general-purpose v1 (kind Storage): Event Grid takes no blob "
                         f"events from it, so no upload or delete would ever reach the app. {upgrade}, "
                         f"{instead}.")
    elif kind == "BlobStorage":
        needs = "the app keeps its queues there" if role == "images" else "the Functions host needs queues and tables"
        stops.append(f"storage account {name} is a legacy Blob storage account (kind BlobStorage): it has no queue "
                     f"service, and {needs}. {upgrade}, {instead}.")
    elif kind == "BlockBlobStorage":
        stops.append(f"storage account {name} is a premium block blob account (kind BlockBlobStorage): it has no "
                     "queue service, and it cannot be converted. Copy the images to a standard general-purpose v2 "
                     f"account (azcopy copy) and set {setting} to it.")
    elif kind == "FileStorage":
        stops.append(f"storage account {name} is a premium file share account (kind FileStorage): it has no blob "
                     f"service. Set {setting} to a standard general-purpose v2 (StorageV2) account.")
    elif kind == "StorageV2" and sku.lower().startswith("premium"):
        stops.append(f"storage account {name} is a premium general-purpose v2 account ({sku}): it holds page blobs "
                     f"only, no block blobs and no queues. Set {setting} to a standard general-purpose v2 account "
                     "(Standard_LRS, Standard_ZRS, Standard_GRS, ...).")
    elif kind != "StorageV2" and kind != "Storage":
        stops.append(f"storage account {name} is of kind {kind}, which this deploy does not know. Set {setting} to "
                     "a standard general-purpose v2 (StorageV2) account.")
    if not stops:
        needed = ["blob", "queue"] + (["table"] if role == "host" else [])
        missing = [service for service in needed if not endpoints.get(service)]
        if missing:
            stops.append(f"storage account {name} has no {' and no '.join(missing)} service endpoint, which the "
                         f"{'app' if role == 'images' else 'Functions host'} needs. Set {setting} to a standard "
                         "general-purpose v2 (StorageV2) account.")
    hns = account.get("isHnsEnabled") is True
    if role == "images" and hns and not stops:
        if source == "LogsAndContainerScan":
            stops.append(f"storage account {name} has a hierarchical namespace (Data Lake Storage Gen2), which the "
                         "polling blob trigger does not support: leave BLOB_TRIGGER_SOURCE at EventGrid.")
        else:
            warns.append(f"storage account {name} has a hierarchical namespace (Data Lake Storage Gen2): there, Blob "
                         "Storage raises BlobCreated for a Copy Blob when the copy starts, before the image is "
                         "complete, so the deploy leaves CopyBlob out of the event filter. An image copied in "
                         "with Copy Blob (az storage blob copy start, Start-AzStorageBlobCopy) reaches the partners "
                         "with the nightly sync; uploads (Put Blob, Put Block List, Data Lake flush, SFTP) sync "
                         "at once.")
    if role == "host" and account.get("allowSharedKeyAccess") is False and plan in ("consumption", "premium"):
        stops.append(f"storage account {name} does not allow shared key access, which the {plan} plan needs for the "
                     "host: " + ("the Azure Files content share of an Elastic Premium app takes only a connection "
                                 "string" if plan == "premium" else "Linux Consumption builds and runs the package "
                                 "through a keyed AzureWebJobsStorage") + ". Use --hosting-plan flex (keyless), or "
                     f"allow shared keys on {name}.")
    return stops, warns, hns


# -- App settings ------------------------------------------------------------------------------------
SECRET_SETTINGS = {"WALLIE_PASSWORD", "TRAEDE_ACCESS_TOKEN", "TRAEDE_APP_KEY"}
_KEYED = re.compile(r"AccountKey=|SharedAccessKey=|SharedAccessSignature=|[?&]sig=|[?&]code=|"
                    r"InstrumentationKey=|(?:^|;)\s*password=", re.IGNORECASE)


def shown(name, value):
    """VALUE as a plan may print it: a secret or a keyed connection string is never shown."""
    if value is None or value == "":
        return "(not set)"
    if name in SECRET_SETTINGS and not value.startswith("@Microsoft.KeyVault("):
        return "<hidden: a secret value, not a Key Vault reference>"
    if _KEYED.search(value):
        return "<hidden: holds a key>"
    return repr(value) if any(c.isspace() for c in value) or value == "" else value


def read_desired(path):
    desired = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle.read().splitlines():
            if line:
                name, _, value = line.partition("=")
                desired[name] = value
    return desired


def settings_diff(desired, current_list):
    current = {item["name"]: item.get("value") for item in current_list or []}
    lines = []
    for name, value in desired.items():
        if value == "":
            if name in current:
                lines.append(("remove", name, shown(name, current[name]), "(not set)"))
        elif current.get(name) != value:
            lines.append(("set", name, shown(name, current.get(name)), shown(name, value)))
    return lines


# -- Key Vault references ----------------------------------------------------------------------------
# App Service's ResolveStatus values (azure-rest-api-specs, Microsoft.Web ApiKVReference) and what to do.
REFERENCE_HINTS = {
    "Initialized": "App Service has not resolved it yet",
    "AccessToKeyVaultDenied": "the app's identity may not read the vault: its Key Vault Secrets User role can take "
                              "up to 10 minutes to apply; if it persists, check that role and the vault's firewall",
    "SecretNotFound": "the secret is not in the vault: export its variable and deploy again",
    "SecretVersionNotFound": "that secret version is not in the vault",
    "VaultNotFound": "the vault does not exist (deleted?): deploy again to recover or create it",
    "MSINotEnabled": "the app has no system-assigned identity",
    "InvalidSyntax": "the setting is not a valid Key Vault reference",
    "FetchTimedOut": "App Service timed out reading the vault: deploy again",
    "UnauthorizedClient": "the vault refused the app's identity",
    "OtherReasons": "App Service gave no reason: see the setting's status in the portal",
    "Missing": "App Service lists no reference for this setting",
}


def reference_statuses(document, names):
    by_name = {}
    for item in (document or {}).get("value") or []:
        name = item.get("name") or (item.get("id") or "").rsplit("/", 1)[-1]
        by_name[name.rsplit("/", 1)[-1]] = item.get("properties") or {}
    rows = []
    for name in names:
        props = by_name.get(name)
        status = (props or {}).get("status") or "Missing"
        details = (props or {}).get("details") or ""
        hint = REFERENCE_HINTS.get(status, "")
        why = "" if status == "Resolved" else "; ".join(part for part in (details, hint) if part)
        rows.append((name, status, why))
    return rows


# -- What differs, for --plan ------------------------------------------------------------------------
def differences(desired, actual, path=""):
    """The paths where ACTUAL does not hold DESIRED (the same rules as matches())."""
    if matches(desired, actual):
        return []
    if isinstance(desired, dict) and isinstance(actual, dict):
        lowered = {str(k).lower(): v for k, v in actual.items()}
        found = []
        for key, value in desired.items():
            found += differences(value, lowered.get(str(key).lower()), f"{path}.{key}" if path else str(key))
        return found
    return [(path or "(the resource)", actual, desired)]


def _brief(value):
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _actions(text):
    return [action for action in text.split(",") if action]


def role_definition(name, scope, actions, data_actions, role_id=None):
    """The custom role as the CLI's --role-definition reads it: create needs "Name"; an update names the
    definition by "id" and keeps its display name in "roleName" (azure-cli's _create_update_role_definition)."""
    body = {"Description": "Image sync app: read product images and read and write their blob index tags "
                           "(the web-ready verdicts); no write, delete or permission rights on the images.",
            "IsCustom": True, "Actions": _actions(actions), "NotActions": [], "DataActions": _actions(data_actions),
            "NotDataActions": [], "AssignableScopes": [scope]}
    if role_id:
        return {"id": role_id, "roleName": name, **body}
    return {"Name": name, **body}


def role_definition_check(definitions, name, scope, actions, data_actions):
    """(id, differences) of the custom role NAME among DEFINITIONS (az role definition list), or None."""
    found = [d for d in definitions or [] if (d.get("roleName") or "").lower() == name.lower()
             and d.get("roleType", "CustomRole") == "CustomRole"]
    if not found:
        return None
    definition = found[0]
    permissions = definition.get("permissions") or [{}]
    differences = []
    for key, wanted in (("actions", _actions(actions)), ("notActions", []), ("dataActions", _actions(data_actions)),
                        ("notDataActions", [])):
        have = sorted({a.lower() for p in permissions for a in p.get(key) or []})
        want = sorted({a.lower() for a in wanted})
        if have != want:
            extra, lacking = sorted(set(have) - set(want)), sorted(set(want) - set(have))
            parts = [f"+{a}" for a in lacking] + [f"-{a}" for a in extra]
            differences.append(f"{key}: {' '.join(parts)}")
    if scope.lower() not in {s.lower().rstrip("/") for s in definition.get("assignableScopes") or []}:
        differences.append(f"assignableScopes: {', '.join(definition.get('assignableScopes') or [])} -> {scope}")
    return definition["id"], differences


def main(argv):
    command, args = argv[0], argv[1:]
    if command == "version-at-least":
        return 0 if version_at_least(args[0], args[1]) else 1
    if command == "token-oid":
        try:
            print(token_oid(sys.stdin.read()))
        except (ValueError, KeyError) as exc:
            print(f"could not read the object id from the access token: {exc}", file=sys.stderr)
            return 1
        return 0
    if command == "missing-actions":
        for action in missing_actions(args, sys.stdin.read()):
            print(action)
        return 0
    if command == "matches":
        with open(args[0], encoding="utf-8") as handle:
            desired = json.load(handle)
        # A resource's location cannot change, and Azure returns it normalised ("West Europe" ->
        # "westeurope"): it is not compared.
        desired.pop("location", None)
        text = sys.stdin.read()
        return 0 if text.strip() and matches(desired, json.loads(text)) else 1
    if command == "storage-account":
        role, plan, source = args
        stops, warns, hns = _account_problems(json.loads(sys.stdin.read() or "{}"), role, plan, source)
        for line in stops:
            print(f"stop\t{line}")
        for line in warns:
            print(f"warn\t{line}")
        if hns:
            print("hns\ttrue")
        return 0
    if command == "settings-diff":
        for row in settings_diff(read_desired(args[0]), json.loads(sys.stdin.read() or "[]")):
            print("\t".join(row))
        return 0
    if command == "settings-json":
        desired = read_desired(args[0])
        print(json.dumps({name: desired[name] for name in args[1:]}))
        return 0
    if command == "kv-references":
        for row in reference_statuses(json.loads(sys.stdin.read() or "{}"), args):
            print("\t".join(row))
        return 0
    if command == "diff":
        with open(args[0], encoding="utf-8") as handle:
            desired = json.load(handle)
        desired.pop("location", None)
        for path, actual, wanted in differences(desired, json.loads(sys.stdin.read() or "null")):
            print(f"{path}: {_brief(actual)} -> {_brief(wanted)}")
        return 0
    if command == "role-definition":
        print(json.dumps(role_definition(*args[:4], *(args[4:5] or [None])), indent=2))
        return 0
    if command == "role-definition-check":
        checked = role_definition_check(json.loads(sys.stdin.read() or "[]"), *args[:4])
        if checked:
            print(f"{checked[0]}\t{'; '.join(checked[1])}")
        return 0
    if command == "fields":
        document = json.loads(sys.stdin.read() or "null")
        for path in args:
            value = document
            for key in path.split("."):
                value = value.get(key) if isinstance(value, dict) else None
            print("" if value is None else value)
        return 0
    if command == "get":
        value = json.loads(sys.stdin.read() or "null")
        for key in args[0].split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if value in (None, ""):
            return 1
        print(value)
        return 0
    print(f"azhelp.py: unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
