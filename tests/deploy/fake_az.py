"""A fake Azure for the deploy tests, behind the real Azure CLI's parser.

The `az` the deploy scripts run in the tests is az_client.py: it sends each argument list to the parse
server (azcli_parse_server.py), which checks it with the real CLI's parser and then calls `respond()`
here with the parsed arguments:

1. A call the real CLI rejects is logged and fails with exit 2, like az. The tests fail on the log,
   even where the script tolerated the failure (`... || true`).
2. Otherwise it is answered from a JSON state file, the way Azure would: `show` of something missing
   exits 3 ("not found"), `create` adds it, `delete` removes it. What Azure or the CLI refuses at run
   time is refused here too: creating inside a missing resource group, reading Key Vault secrets without
   a data-plane role, an Event Grid webhook whose key or host is wrong, names over Azure's length
   limits, `az resource list` with both --tag and --resource-group, `role assignment list --all` with a
   scope, ARM bodies that miss required properties or point at resources that do not exist.
3. --query (JMESPath, the CLI's own library) and --output (json, tsv as knack writes it, none) apply.
4. No argument list may carry a secret (the process list shows every argument): a call whose argv holds
   a key the fake issued (account keys, function and system keys), a partner secret the test watches
   (watched-secrets.json in the state directory), a Key Vault secret value, or a keyed connection
   string, SAS signature or function key in a URL is refused with exit 97 and logged as a leak.

Storage accounts have a kind, SKU and hierarchical namespace, and only the services Azure gives that
kind (no queues on BlobStorage/BlockBlobStorage/premium StorageV2, no Event Grid on general-purpose
v1). A new role assignment can take a while to apply (state key "role_delay_reads": that many checks
of it are refused first). Function apps resolve their Key Vault references when settings change or on
the refresh call, and report each reference's status, cached until the next time (state key
"kv_resolve_delay": that many reads answer "Initialized" first); the host starts only with storage it can use (a keyed
AzureWebJobsStorage, or an identity holding Storage Blob Data Owner on the account).

The signed-in principal, its rights (the ARM permissions API) and the CLI version `az version` reports
come from the state too (keys "login", "permissions", "cli_version"), so tests can log in as a managed
identity, take rights away or pretend to be an older CLI.

Every call is appended to calls.jsonl in the state directory, for the tests to read.
"""

import base64
import json
import os
import re

SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
TENANT = "00000000-0000-0000-0000-0000000000aa"
DEPLOYER_ID = "22222222-2222-2222-2222-222222222222"
FUNCTIONS = ["image_uploaded", "nightly_sync", "image_deleted", "sync_shard", "product_sync"]
# The version of the CLI whose parser checks the calls (set by the parse server).
CLI_VERSION = "0.0.0"
OWNER = [{"actions": ["*"], "notActions": [], "dataActions": [], "notDataActions": []}]
# Built-in role ids ("Azure built-in roles"): the role assignments API returns these, not names.
ROLE_IDS = {
    "Storage Blob Data Reader": "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Delegator": "db58b8e5-c6ad-4a2a-8342-4190687cbf4a",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "Storage Account Contributor": "17d1049b-9a84-46fb-8f53-869881c3d3ab",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Reader": "acdd72a7-3385-48ef-bd42-f606fba81ae7",
}
# Arguments that must never be on a command line, whatever their value.
LEAK_PATTERNS = [
    (re.compile(r"AccountKey=", re.I), "a storage connection string with an account key"),
    (re.compile(r"SharedAccessKey=|SharedAccessSignature=", re.I), "a connection string with a shared access key"),
    (re.compile(r"[?&]sig=", re.I), "a SAS signature"),
    (re.compile(r"[?&]code=", re.I), "a function key in a URL"),
    (re.compile(r"x-functions-key", re.I), "a function key header"),
    (re.compile(r"InstrumentationKey=", re.I), "an Application Insights connection string"),
    (re.compile(r"(?:^|;)\s*password=", re.I), "a password in a connection string"),
]


def _action_matches(pattern, action):
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), action, re.IGNORECASE) is not None


def access_token(oid):
    """A JWT-shaped token whose payload carries the object id, as Entra ID's does (unsigned here)."""
    def part(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return ".".join([part({"typ": "JWT", "alg": "RS256"}),
                     part({"aud": "https://management.core.windows.net/", "oid": oid, "tid": TENANT,
                           "secret_marker": "ARM-TOKEN-SECRET"}),
                     "c2lnbmF0dXJl"])


class AzError(Exception):
    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def not_found(what):
    return AzError(f"(ResourceNotFound) {what} was not found.", 3)


def split_globals(argv):
    """Return (query, output) from the global arguments az handles itself."""
    query, output = None, "json"
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--query" and i + 1 < len(argv):
            query = argv[i + 1]
            i += 1
        elif arg in ("-o", "--output") and i + 1 < len(argv):
            output = argv[i + 1]
            i += 1
        elif arg.startswith("--query="):
            query = arg.split("=", 1)[1]
        elif arg.startswith("--output="):
            output = arg.split("=", 1)[1]
        i += 1
    return query, output


def option_values(argv, option):
    """Every occurrence of OPTION in argv, each as the list of words up to the next --option."""
    found = []
    for i, arg in enumerate(argv):
        if arg == option:
            words = []
            for word in argv[i + 1:]:
                if word.startswith("--"):
                    break
                words.append(word)
            found.append(words)
    return found


def rg_id(rg):
    return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{rg}"


def account_id(rg, name):
    return f"{rg_id(rg)}/providers/Microsoft.Storage/storageAccounts/{name}"


def parse_id(resource_id):
    parts = resource_id.strip("/").split("/")
    out = {}
    for key, value in zip(parts[0::2], parts[1::2], strict=False):
        out[key.lower()] = value
    return out


def resource_type(resource_id):
    """'Microsoft.Insights/components' from a resource id (top-level resources only)."""
    match = re.search(r"/providers/([^/]+)/([^/]+)/[^/]+$", resource_id)
    return f"{match.group(1)}/{match.group(2)}" if match else ""


def tags_dict(tags):
    if isinstance(tags, dict):
        return dict(tags)
    result = {}
    for tag in tags or []:
        key, _, value = tag.partition("=")
        result[key] = value
    return result


def flag(value):
    return value in (True, "true", "True")


ISO_DURATIONS = {"PT1M": 1, "PT5M": 5, "PT10M": 10, "PT15M": 15, "PT30M": 30, "PT45M": 45, "PT1H": 60,
                 "PT2H": 120, "PT3H": 180, "PT4H": 240, "PT5H": 300, "PT6H": 360, "P1D": 1440, "P2D": 2880}


class FakeAzure:
    def __init__(self, state):
        self.s = state
        for key in ("providers", "groups", "accounts", "containers", "queues", "vaults", "deleted_vaults",
                    "secrets", "plans", "apps", "topics", "event_subscriptions", "arm"):
            self.s.setdefault(key, {})
        self.s.setdefault("roles", [])
        self.s.setdefault("role_definitions", [])
        self.s.setdefault("counter", 0)
        # One tick per az call: a role assignment still applying is refused at most once a call.
        self.s["clock"] = self.tick = self.s.get("clock", 0) + 1

    # -- helpers -------------------------------------------------------------------------------
    def next_id(self):
        self.s["counter"] += 1
        return f"{self.s['counter']:08d}-0000-0000-0000-000000000000"

    @property
    def login(self):
        return {"name": "deployer@example.com", "type": "user", "oid": DEPLOYER_ID, **self.s.get("login", {})}

    def permissions_at(self, scope):
        """The signed-in principal's permission entries that apply at SCOPE (granted there or above)."""
        grants = self.s.get("permissions")
        if grants is None:
            return OWNER
        scope = scope.lower().rstrip("/")
        entries = []
        for granted_scope, permissions in grants.items():
            granted_scope = granted_scope.lower().rstrip("/")
            if scope == granted_scope or scope.startswith(granted_scope + "/"):
                entries.extend(permissions)
        return entries

    def require(self, action, scope):
        """Azure refuses what the caller's roles do not grant (AuthorizationFailed, HTTP 403)."""
        for entry in self.permissions_at(scope):
            if any(_action_matches(p, action) for p in entry.get("actions") or []) and not any(
                    _action_matches(p, action) for p in entry.get("notActions") or []):
                return
        raise AzError(f"(AuthorizationFailed) The client does not have authorization to perform action "
                      f"'{action}' over scope '{scope}'.")

    def add_role(self, principal, principal_type, role, scope):
        """A new role assignment; with "role_delay_reads" in the state (or "role_delays": {role: n}), it is
        refused in the first that many az calls that check it, as Azure RBAC takes up to about 10 minutes
        to apply a new assignment."""
        delay = (self.s.get("role_delays") or {}).get(role, self.s.get("role_delay_reads", 0))
        assignment = {"id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/{self.next_id()}",
                      "principalId": principal, "principalType": principal_type, "role": role,
                      "roleDefinitionName": role, "scope": scope, "pending_reads": delay,
                      "roleDefinitionId": self.role_definition_id(role)}
        self.s["roles"].append(assignment)
        return assignment

    def holds(self, principal, roles, scope):
        """Whether PRINCIPAL holds one of ROLES at SCOPE or above, counting only assignments that applied."""
        low = scope.lower().rstrip("/")
        for r in self.s["roles"]:
            at = r["scope"].lower().rstrip("/")
            if r["principalId"] == principal and r["role"] in roles and (low == at or low.startswith(at + "/")):
                if r.get("pending_reads", 0) > 0:
                    if r.get("seen_at") != self.tick:
                        r["pending_reads"] -= 1
                        r["seen_at"] = self.tick
                    continue
                return True
        return False

    def need_group(self, rg):
        if not rg or rg.lower() not in self.s["groups"]:
            raise AzError(f"(ResourceGroupNotFound) Resource group '{rg}' could not be found.", 3)

    def account(self, name, rg=None):
        acc = self.s["accounts"].get(name)
        if not acc or (rg and acc["resourceGroup"].lower() != rg.lower()):
            raise not_found(f"Storage account '{name}'")
        return acc

    @staticmethod
    def services(acc):
        """The services Azure gives an account of this kind and SKU ("Types of storage accounts")."""
        kind, sku = acc.get("kind", "StorageV2"), acc.get("sku", "Standard_LRS")
        if kind == "FileStorage":
            return {"file"}
        if kind in ("BlobStorage", "BlockBlobStorage") or (kind == "StorageV2" and sku.startswith("Premium")):
            return {"blob"}  # premium StorageV2: page blobs only
        return {"blob", "queue", "table", "file"}

    def account_key(self, acc):
        return f"fakeaccountkey{acc['name']}=="

    def connection_string(self, acc):
        return (f"DefaultEndpointsProtocol=https;EndpointSuffix=core.windows.net;AccountName={acc['name']};"
                f"AccountKey={self.account_key(acc)}")

    def account_view(self, acc):
        name = acc["name"]
        endpoints = {service: f"https://{name}.{service}.core.windows.net/" for service in sorted(self.services(acc))}
        if acc.get("isHnsEnabled"):
            endpoints["dfs"] = f"https://{name}.dfs.core.windows.net/"
        sku = acc.get("sku", "Standard_LRS")
        return {
            "id": account_id(acc["resourceGroup"], name), "name": name, "resourceGroup": acc["resourceGroup"],
            "location": acc["location"], "kind": acc.get("kind", "StorageV2"), "tags": acc.get("tags", {}),
            "sku": {"name": sku, "tier": sku.split("_")[0]}, "type": "Microsoft.Storage/storageAccounts",
            "isHnsEnabled": bool(acc.get("isHnsEnabled")),
            # null unless someone set it: Azure then allows shared keys
            "allowSharedKeyAccess": acc.get("allowSharedKeyAccess"),
            "primaryEndpoints": endpoints,
            "publicNetworkAccess": acc.get("publicNetworkAccess", "Enabled"),
            "networkRuleSet": {"defaultAction": acc.get("defaultAction", "Allow")},
        }

    def account_by_ref(self, ref):
        """A storage account given by name or resource id."""
        if ref.startswith("/"):
            parts = parse_id(ref)
            return self.account(parts["storageaccounts"], parts["resourcegroups"])
        return self.account(ref)

    def container_key(self, account_ref, container):
        acc = self.account_by_ref(account_ref)
        return account_id(acc["resourceGroup"], acc["name"]).lower() + "/" + container

    def app(self, name, rg=None):
        app = self.s["apps"].get(name)
        if not app or (rg and app["resourceGroup"].lower() != rg.lower()):
            raise not_found(f"Function app '{name}'")
        return app

    def app_view(self, app):
        """`az functionapp show`: the flattened site on Consumption and Premium; on Flex Consumption the
        CLI returns the raw ARM resource (get_raw_functionapp), everything under "properties"."""
        common = {"id": app["id"], "name": app["name"], "type": "Microsoft.Web/sites", "kind": "functionapp,linux",
                  "location": app.get("location"), "tags": app.get("tags", {}), "identity": app.get("identity")}
        site = {"defaultHostName": app["defaultHostName"], "state": "Running", "httpsOnly": app.get("httpsOnly", False),
                "serverFarmId": app.get("serverFarmId"), "resourceGroup": app["resourceGroup"]}
        if app["kind"] == "flex":
            return {**common, "properties": {**site, "sku": "FlexConsumption", "siteConfig": {"linuxFxVersion": ""},
                                             "functionAppConfig": self.function_app_config(app)}}
        return {**common, **site, "siteConfig": {"linuxFxVersion": f"Python|{app.get('python', '3.11')}"}}

    def function_app_config(self, app):
        auth = app.get("deployment_auth") or {"type": "StorageAccountConnectionString",
                                              "storageAccountConnectionStringName": "DEPLOYMENT_STORAGE_CONNECTION_STRING"}
        return {"deployment": {"storage": {"type": "blobContainer", "value": app["deployment_container"],
                                           "authentication": {"userAssignedIdentityResourceId": None,
                                                              "storageAccountConnectionStringName": None, **auth}}},
                "runtime": {"name": "python", "version": app.get("python", "3.11")},
                "scaleAndConcurrency": {"instanceMemoryMB": 2048, "maximumInstanceCount": 100}}

    def plan_sites(self, plan):
        return sum(1 for a in self.s["apps"].values() if (a.get("serverFarmId") or "").lower() == plan["id"].lower())

    def plan_view(self, plan):
        return {**plan, "type": "Microsoft.Web/serverfarms", "numberOfSites": self.plan_sites(plan),
                "properties": {"numberOfSites": self.plan_sites(plan)}}

    def vault_name(self, p):
        if p.get("vault_name"):
            return p["vault_name"]
        return p["vault_base_url"].split("//", 1)[1].split(".", 1)[0]

    def vault(self, name):
        vault = self.s["vaults"].get(name.lower())
        if not vault:
            raise not_found(f"Vault '{name}'")
        return vault

    def topic(self, name, rg):
        topic = self.s["topics"].get(name)
        if not topic or topic["resourceGroup"].lower() != rg.lower():
            raise not_found(f"System topic '{name}'")
        return topic

    # -- commands ----------------------------------------------------------------------------------
    def run(self, command, p, argv):
        handler = getattr(self, "cmd_" + command.replace(" ", "_").replace("-", "_"), None)
        if handler is None:
            raise AzError(f"fake az: no fake for 'az {command}' (add one to tests/deploy/fake_az.py)", 99)
        return handler(p, argv)

    def cmd_version(self, p, argv):
        version = self.s.get("cli_version") or CLI_VERSION
        return {"azure-cli": version, "azure-cli-core": version, "azure-cli-telemetry": "1.1.0", "extensions": {}}

    def cmd_account_show(self, p, argv):
        return {"id": SUBSCRIPTION, "name": "fake-subscription", "tenantId": TENANT, "state": "Enabled",
                "user": {"name": self.login["name"], "type": self.login["type"]}}

    def cmd_account_get_access_token(self, p, argv):
        return {"accessToken": access_token(self.login["oid"]), "expiresOn": "2099-01-01 00:00:00.000000",
                "subscription": SUBSCRIPTION, "tenant": TENANT, "tokenType": "Bearer"}

    def cmd_rest(self, p, argv):
        url, method = p.get("url") or p["uri"], (p.get("method") or "get").lower()
        path, _, query = url.partition("?")
        if method == "get" and path.lower().endswith("/providers/microsoft.authorization/permissions"):
            if "api-version=" not in query:
                raise AzError("(MissingApiVersionParameter) The api-version query parameter is required.")
            return {"value": self.permissions_at(path[: -len("/providers/Microsoft.Authorization/permissions")])}
        if method == "get" and path.lower().endswith("/providers/microsoft.authorization/roleassignments"):
            # Role Assignments - List For Scope: with principalId eq, the principal's assignments at,
            # above and below the scope.
            scope = path[: -len("/providers/Microsoft.Authorization/roleAssignments")]
            self.require("Microsoft.Authorization/roleAssignments/read", scope)
            match = re.search(r"\$filter=principalId(?:%20| )eq(?:%20| )'([^']+)'", query)
            if "api-version=" not in query or not match:
                raise AzError("fake az: list role assignments with api-version and a principalId filter", 99)
            low = scope.lower().rstrip("/")
            found = [r for r in self.s["roles"] if r["principalId"] == match.group(1) and (
                r["scope"].lower() == low or r["scope"].lower().startswith(low + "/")
                or low.startswith(r["scope"].lower() + "/"))]
            return {"value": [{"id": r["id"], "name": r["id"].rsplit("/", 1)[1],
                               "type": "Microsoft.Authorization/roleAssignments",
                               "properties": {"roleDefinitionId": r.get("roleDefinitionId")
                                              or self.role_definition_id(r["role"]),
                                              "principalId": r["principalId"], "principalType": r["principalType"],
                                              "scope": r["scope"]}} for r in found]}
        if method == "delete" and "/providers/microsoft.authorization/roledefinitions/" in path.lower():
            # Role Definitions - Delete; Azure refuses while the role is still assigned.
            if "api-version=" not in query:
                raise AzError("(MissingApiVersionParameter) The api-version query parameter is required.")
            definition = next((d for d in self.s["role_definitions"] if d["id"].lower() == path.lower()), None)
            if not definition:
                return None  # as Azure: 204 for a definition that is not there
            for scope in definition["assignableScopes"]:
                self.require("Microsoft.Authorization/roleDefinitions/delete", scope)
            if any((r.get("roleDefinitionId") or "").lower() == path.lower() for r in self.s["roles"]):
                raise AzError("(RoleDefinitionHasAssignments) There are existing role assignments referencing role.")
            self.s["role_definitions"].remove(definition)
            return None
        if method == "post" and path.lower().endswith("/config/configreferences/appsettings/refresh"):
            if "api-version=" not in query:
                raise AzError("(MissingApiVersionParameter) The api-version query parameter is required.")
            parts = parse_id(path)
            app = self.app(parts.get("sites", ""), parts.get("resourcegroups"))
            app["kv_refreshes"] = app.get("kv_refreshes", 0) + 1
            self.resolve_references(app)
            return None
        if method == "get" and path.lower().endswith("/config/configreferences/appsettings"):
            if "api-version=" not in query:
                raise AzError("(MissingApiVersionParameter) The api-version query parameter is required.")
            parts = parse_id(path)
            app = self.app(parts.get("sites", ""), parts.get("resourcegroups"))
            return {"value": self.reference_statuses(app)}
        raise AzError(f"fake az: 'az rest --method {method} --url {url}' is not faked", 99)

    # -- Key Vault references (App Service "Use Key Vault references") -------------------------------
    def resolve_references(self, app):
        """What App Service does on a settings change or the refresh call: fetch every Key Vault reference
        again with the app's identity, and keep the outcome until the next time (it caches for 24 hours)."""
        statuses = {}
        for name, value in app["settings"].items():
            match = re.fullmatch(r"@Microsoft\.KeyVault\(SecretUri=https://([^.]+)\.vault\.azure\.net/secrets/([^/]+)/?\)",
                                 value or "")
            if not (value or "").startswith("@Microsoft.KeyVault("):
                continue
            if not match:
                statuses[name] = ("InvalidSyntax", "The Key Vault reference is not in a supported format.", "", "")
                continue
            vault_name, secret = match.groups()
            vault = self.s["vaults"].get(vault_name.lower())
            if not app.get("identity"):
                status = ("MSINotEnabled", "Key Vault reference was not able to be resolved because the site has no "
                          "managed identity.")
            elif not vault:
                status = ("VaultNotFound", f"Key Vault reference was not able to be resolved because vault "
                          f"'{vault_name}' could not be found.")
            elif not self.holds(app["identity"]["principalId"], {"Key Vault Secrets User", "Key Vault Secrets Officer"},
                                vault["id"]):
                status = ("AccessToKeyVaultDenied", "Key Vault reference was not able to be resolved because site was "
                          "denied access to Key Vault reference's vault.")
            elif not self.s["secrets"].get(f"{vault_name.lower()}/{secret}"):
                status = ("SecretNotFound", f"Key Vault reference was not able to be resolved because secret "
                          f"'{secret}' could not be found in vault '{vault_name}'.")
            else:
                status = ("Resolved", "")
            statuses[name] = (*status, vault_name, secret)
        app["kv_status"] = statuses
        app["kv_pending_reads"] = self.s.get("kv_resolve_delay", 0)

    def reference_statuses(self, app):
        pending = app.get("kv_pending_reads", 0) > 0
        if pending:
            app["kv_pending_reads"] -= 1
        result = []
        for name, (status, details, vault_name, secret) in sorted((app.get("kv_status") or {}).items()):
            if pending:
                status, details = "Initialized", ""
            result.append({"id": f"{app['id']}/config/configreferences/appsettings/{name}", "name": name,
                           "type": "Microsoft.Web/sites/config/configreferences",
                           "properties": {"reference": app["settings"].get(name), "status": status, "details": details,
                                          "vaultName": vault_name, "secretName": secret, "source": "KeyVault",
                                          "identityType": "SystemAssigned"}})
        return result

    def cmd_provider_show(self, p, argv):
        ns = p["resource_provider_namespace"]
        return {"namespace": ns, "registrationState": self.s["providers"].get(ns, "NotRegistered")}

    def cmd_provider_list(self, p, argv):
        known = {"Microsoft.Web", "Microsoft.Storage", "Microsoft.KeyVault", "Microsoft.EventGrid", "Microsoft.Insights",
                 "Microsoft.OperationalInsights", "Microsoft.Compute", "Microsoft.Network", *self.s["providers"]}
        return [{"namespace": ns, "registrationState": self.s["providers"].get(ns, "NotRegistered")}
                for ns in sorted(known)]

    def cmd_provider_register(self, p, argv):
        self.require(f"{p['resource_provider_namespace']}/register/action", f"/subscriptions/{SUBSCRIPTION}")
        self.s["providers"][p["resource_provider_namespace"]] = "Registered"

    def cmd_group_show(self, p, argv):
        group = self.s["groups"].get(p["resource_group_name"].lower())
        if not group:
            raise AzError(f"(ResourceGroupNotFound) Resource group '{p['resource_group_name']}' could not be found.", 3)
        return group

    def cmd_group_create(self, p, argv):
        name = p["rg_name"] if "rg_name" in p else p["resource_group_name"]
        self.require("Microsoft.Resources/subscriptions/resourceGroups/write", rg_id(name))
        group = {"id": rg_id(name), "name": name, "location": p["location"], "tags": tags_dict(p.get("tags"))}
        self.s["groups"][name.lower()] = group
        return group

    def cmd_group_delete(self, p, argv):
        rg = p["resource_group_name"]
        self.need_group(rg)
        low = rg.lower()
        prefix = rg_id(rg).lower() + "/"
        del self.s["groups"][low]
        for name, acc in list(self.s["accounts"].items()):
            if acc["resourceGroup"].lower() == low:
                self.delete_account(name)
        for name, vault in list(self.s["vaults"].items()):
            if vault["resourceGroup"].lower() == low:
                self.s["deleted_vaults"][name] = self.s["vaults"].pop(name)
        for table in ("apps", "plans", "topics"):
            for name, item in list(self.s[table].items()):
                if item["resourceGroup"].lower() == low:
                    del self.s[table][name]
        for key in list(self.s["arm"]):
            if key.startswith(prefix):
                del self.s["arm"][key]
        for key, sub in list(self.s["event_subscriptions"].items()):
            if sub["resourceGroup"].lower() == low or sub["topic"] not in self.s["topics"]:
                del self.s["event_subscriptions"][key]
        self.s["roles"] = [r for r in self.s["roles"] if not r["scope"].lower().startswith(prefix)]

    def delete_account(self, name):
        acc = self.s["accounts"].pop(name)
        prefix = account_id(acc["resourceGroup"], name).lower() + "/"
        for table in ("containers", "queues"):
            for key in list(self.s[table]):
                if key.lower().startswith(prefix):
                    del self.s[table][key]
        self.s["roles"] = [r for r in self.s["roles"]
                           if not (r["scope"].lower() + "/").startswith(prefix)]

    def cmd_storage_account_show(self, p, argv):
        if p.get("ids"):
            return self.account_view(self.account_by_ref(p["ids"][0]))
        return self.account_view(self.account(p["account_name"], p.get("resource_group_name")))

    def cmd_storage_account_list(self, p, argv):
        rg = p.get("resource_group_name")
        return [self.account_view(a) for a in self.s["accounts"].values()
                if not rg or a["resourceGroup"].lower() == rg.lower()]

    def cmd_storage_account_create(self, p, argv):
        rg, name = p["resource_group_name"], p["account_name"]
        self.need_group(rg)
        if name in self.s["accounts"]:
            raise AzError(f"(StorageAccountAlreadyTaken) The storage account named {name} is already taken.")
        self.s["accounts"][name] = {"name": name, "resourceGroup": rg, "location": p["location"],
                                    "tags": tags_dict(p.get("tags")), "created_by_test_run": True,
                                    "kind": p.get("kind") or "StorageV2", "sku": p.get("sku_name") or p.get("sku")
                                    or "Standard_RAGRS", "isHnsEnabled": flag(p.get("enable_hierarchical_namespace"))}
        if p.get("allow_shared_key_access") is not None:
            self.s["accounts"][name]["allowSharedKeyAccess"] = flag(p["allow_shared_key_access"])
        return self.account_view(self.s["accounts"][name])

    def cmd_storage_container_rm_exists(self, p, argv):
        return {"exists": self.container_key(p["account_name"], p["container_name"]) in self.s["containers"]}

    def cmd_storage_container_rm_list(self, p, argv):
        acc = self.account_by_ref(p["account_name"])
        prefix = account_id(acc["resourceGroup"], acc["name"]).lower() + "/"
        return [{"name": key[len(prefix):], "metadata": c.get("metadata") or {}}
                for key, c in self.s["containers"].items() if key.startswith(prefix)]

    def cmd_storage_container_rm_create(self, p, argv):
        key = self.container_key(p["account_name"], p["container_name"])
        metadata = dict(word.split("=", 1) for words in option_values(argv, "--metadata") for word in words)
        self.s["containers"][key] = {"publicAccess": p.get("public_access"), "metadata": metadata}
        return {"name": p["container_name"], "metadata": metadata}

    def cmd_storage_container_rm_show(self, p, argv):
        key = self.container_key(p["account_name"], p["container_name"])
        if key not in self.s["containers"]:
            raise not_found(f"Container '{p['container_name']}'")
        container = self.s["containers"][key]
        return {"name": p["container_name"], "metadata": container.get("metadata") or {},
                "publicAccess": container.get("publicAccess")}

    def cmd_storage_container_rm_delete(self, p, argv):
        key = self.container_key(p["account_name"], p["container_name"])
        if key not in self.s["containers"]:
            raise not_found(f"Container '{p['container_name']}'")
        del self.s["containers"][key]

    # -- generic resources (az resource) -----------------------------------------------------------
    def _queue_key(self, resource_id):
        parts = parse_id(resource_id)
        acc = self.account(parts["storageaccounts"], parts["resourcegroups"])
        if "queue" not in self.services(acc):
            raise AzError(f"(FeatureNotSupportedForAccount) Queue is not supported for the account "
                          f"{acc['name']} (kind {acc.get('kind', 'StorageV2')}, {acc.get('sku', 'Standard_LRS')}).")
        return resource_id.lower()

    def find(self, resource_id):
        """(table, key) of the resource with this id, or raises not found."""
        low = resource_id.lower()
        parts = parse_id(resource_id)
        if "queues" in parts:
            key = self._queue_key(resource_id)
            if key in self.s["queues"]:
                return "queues", key
        elif low in self.s["arm"]:
            return "arm", low
        else:
            for table in ("apps", "plans", "topics"):
                for name, item in self.s[table].items():
                    if item["id"].lower() == low:
                        return table, name
            for name, acc in self.s["accounts"].items():
                if account_id(acc["resourceGroup"], name).lower() == low:
                    return "accounts", name
            for name, vault in self.s["vaults"].items():
                if vault["id"].lower() == low:
                    return "vaults", name
        raise not_found(f"Resource '{resource_id}'")

    def generic_view(self, table, key):
        if table == "queues":
            queue = self.s["queues"][key]
            return {"id": queue["id"], "name": queue["id"].rsplit("/", 1)[1],
                    "type": "Microsoft.Storage/storageAccounts/queueServices/queues",
                    "properties": {"metadata": queue.get("metadata") or {}, "approximateMessageCount": 0}}
        if table == "arm":
            return self.s["arm"][key]
        if table == "plans":
            return self.plan_view(self.s["plans"][key])
        if table == "accounts":
            return self.account_view(self.s["accounts"][key])
        item = self.s[table][key]
        kinds = {"apps": "Microsoft.Web/sites", "topics": "Microsoft.EventGrid/systemTopics",
                 "vaults": "Microsoft.KeyVault/vaults"}
        return {"id": item["id"], "name": item["name"], "type": kinds[table], "tags": item.get("tags", {}),
                "resourceGroup": item["resourceGroup"], "location": item.get("location")}

    def cmd_resource_show(self, p, argv):
        return self.generic_view(*self.find(p["resource_ids"][0]))

    def cmd_resource_list(self, p, argv):
        if p.get("tag") and p.get("resource_group_name"):
            raise AzError("you cannot use '--tag' with '--resource-group'")
        rg = p.get("resource_group_name")
        if rg:
            self.need_group(rg)
        found = []
        for table in ("accounts", "vaults", "apps", "plans", "topics"):
            for key, item in self.s[table].items():
                if not rg or item["resourceGroup"].lower() == rg.lower():
                    view = self.generic_view(table, key)
                    found.append({k: view.get(k) for k in ("id", "name", "type", "tags", "location")})
        prefix = rg_id(rg).lower() + "/" if rg else ""
        for key, item in self.s["arm"].items():
            if key.startswith(prefix):
                found.append({k: item.get(k) for k in ("id", "name", "type", "tags", "location")})
        return found

    def cmd_resource_delete(self, p, argv):
        for resource_id in p.get("resource_ids") or []:
            table, key = self.find(resource_id)
            if table == "plans" and self.plan_sites(self.s["plans"][key]):
                raise AzError("(Conflict) Server farm cannot be deleted because it has web app(s) assigned to it.")
            if table == "accounts":
                self.delete_account(key)
            elif table == "vaults":
                # Soft-deleting a vault deletes its role assignments; recovering does not bring them back
                # (Key Vault soft-delete overview).
                vault = self.s["vaults"].pop(key)
                self.s["deleted_vaults"][key] = vault
                self.s["roles"] = [r for r in self.s["roles"] if r["scope"].lower() != vault["id"].lower()]
            elif table == "topics":
                del self.s["topics"][key]
                for sub in [k for k in self.s["event_subscriptions"] if k.startswith(key + "/")]:
                    del self.s["event_subscriptions"][sub]
            else:
                del self.s[table][key]

    def cmd_resource_update(self, p, argv):
        """A generic GET-then-PUT; faked for the one property the deploy repairs this way."""
        ids = p.get("resource_ids") or ([p["resource_id"]] if p.get("resource_id") else [])
        if len(ids) != 1:
            raise AzError("fake az: resource update of exactly one --ids is faked", 99)
        table, key = self.find(ids[0])
        if table != "apps":
            raise AzError(f"fake az: resource update of {ids[0]} is not faked", 99)
        app = self.s["apps"][key]
        for words in option_values(argv, "--set"):
            for word in words:
                path, _, value = word.partition("=")
                if path != "properties.httpsOnly":
                    raise AzError(f"fake az: resource update --set {path} is not faked", 99)
                app["httpsOnly"] = value.lower() == "true"
        return self.generic_view(table, key)

    def cmd_resource_create(self, p, argv):
        resource_id = p["resource_id"]
        body = json.loads(p["properties"])
        parts = parse_id(resource_id)
        if "queues" in parts:
            key = self._queue_key(resource_id)
            self.s["queues"][key] = {"id": resource_id, "metadata": body.get("metadata") or {}}
            return {"id": resource_id}
        if not p.get("is_full_object"):
            raise AzError("fake az: the deploy creates monitoring resources with --is-full-object", 99)
        if not p.get("api_version"):
            raise AzError("fake az: pin --api-version for az resource create", 99)
        self.need_group(parts.get("resourcegroups"))
        kind = resource_type(resource_id)
        validate = getattr(self, "validate_" + kind.split("/")[1].lower(), None)
        if validate is None:
            raise AzError(f"fake az: az resource create of {kind} is not faked", 99)
        existing = self.s["arm"].get(resource_id.lower())
        resource = {**body, "id": resource_id, "name": resource_id.rsplit("/", 1)[1], "type": kind,
                    "tags": body.get("tags") or {}, "properties": dict(body.get("properties") or {})}
        validate(resource, existing)
        self.s["arm"][resource_id.lower()] = resource
        return resource

    def arm_exists(self, resource_id):
        return resource_id.lower() in self.s["arm"]

    def validate_workspaces(self, resource, existing):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{2,61}[A-Za-z0-9]", resource["name"]):
            raise AzError("(InvalidParameter) Workspace name must be 4-63 letters, digits and hyphens.")
        if not (resource["properties"].get("sku") or {}).get("name"):
            raise AzError("(BadRequest) sku is required")
        if not resource.get("location"):
            raise AzError("(LocationRequired) location is required")
        resource["properties"]["sku"]["name"] = resource["properties"]["sku"]["name"].lower()  # as Azure does
        resource["properties"].setdefault("retentionInDays", 30)
        resource["properties"]["customerId"] = (existing or {}).get("properties", {}).get("customerId") or self.next_id()

    def validate_components(self, resource, existing):
        props = resource["properties"]
        if resource.get("kind") != "web" or props.get("Application_Type") != "web":
            raise AzError("(BadRequest) kind and Application_Type are required")
        workspace = props.get("WorkspaceResourceId")
        if not workspace or not self.arm_exists(workspace):
            raise AzError(f"(BadRequest) Workspace {workspace} not found")
        old = (existing or {}).get("properties", {})
        key = old.get("InstrumentationKey") or self.next_id().replace("0000-0000", "1111-1111")
        props["InstrumentationKey"] = key
        props["ConnectionString"] = (f"InstrumentationKey={key};IngestionEndpoint=https://westeurope-5.in."
                                     "applicationinsights.azure.com/;ApplicationId=" + key)

    def validate_actiongroups(self, resource, existing):
        props = resource["properties"]
        if (resource.get("location") or "").lower() != "global":
            raise AzError("(BadRequest) An action group's location must be 'Global'")
        if not 1 <= len(props.get("groupShortName") or "") <= 12:
            raise AzError("(BadRequest) groupShortName must have 1 to 12 characters")
        if "enabled" not in props:
            raise AzError("(BadRequest) enabled is required")
        for receiver in props.get("emailReceivers") or []:
            if not receiver.get("name") or "@" not in (receiver.get("emailAddress") or ""):
                raise AzError("(BadRequest) invalid email receiver")

    def validate_scheduledqueryrules(self, resource, existing):
        props = resource["properties"]
        if not resource.get("location"):
            raise AzError("(LocationRequired) location is required")
        if resource.get("kind", "LogAlert") != "LogAlert" or props.get("severity") not in range(5):
            raise AzError("(BadRequest) a LogAlert rule needs a severity from 0 to 4")
        for scope in props.get("scopes") or [None]:
            if not scope or not self.arm_exists(scope):
                raise AzError(f"(BadRequest) scope {scope} not found")
        frequency, window = props.get("evaluationFrequency"), props.get("windowSize")
        if frequency not in ISO_DURATIONS or window not in ISO_DURATIONS or ISO_DURATIONS[window] < ISO_DURATIONS[frequency]:
            raise AzError("(BadRequest) evaluationFrequency/windowSize invalid")
        conditions = (props.get("criteria") or {}).get("allOf") or []
        if not conditions or not all(c.get("query") and c.get("timeAggregation") and c.get("operator")
                                     and "threshold" in c for c in conditions):
            raise AzError("(BadRequest) criteria.allOf needs query, timeAggregation, operator and threshold")
        for group in (props.get("actions") or {}).get("actionGroups") or []:
            if not self.arm_exists(group):
                raise AzError(f"(BadRequest) action group {group} not found")
        if not isinstance(props.get("enabled"), bool):
            raise AzError("(BadRequest) enabled is required")

    # -- Key Vault ---------------------------------------------------------------------------------
    def cmd_keyvault_show(self, p, argv):
        vault = self.vault(p["vault_name"])
        if p.get("resource_group_name") and vault["resourceGroup"].lower() != p["resource_group_name"].lower():
            raise not_found(f"Vault '{p['vault_name']}'")
        return vault

    def cmd_keyvault_list_deleted(self, p, argv):
        self.require("Microsoft.KeyVault/locations/deletedVaults/read", f"/subscriptions/{SUBSCRIPTION}")
        return [{"name": v["name"], "properties": {"vaultId": v["id"]}} for v in self.s["deleted_vaults"].values()]

    def cmd_keyvault_create(self, p, argv):
        name, rg = p["vault_name"], p["resource_group_name"]
        self.need_group(rg)
        if name.lower() in self.s["deleted_vaults"]:
            raise AzError("(ConflictError) A vault with the same name already exists in deleted state.")
        if name.lower() in self.s["vaults"]:
            raise AzError(f"(VaultAlreadyExists) The vault name '{name}' is already in use.")
        vault = {"id": f"{rg_id(rg)}/providers/Microsoft.KeyVault/vaults/{name}", "name": name,
                 "resourceGroup": rg, "location": p["location"], "tags": tags_dict(p.get("tags")),
                 "properties": {"vaultUri": f"https://{name.lower()}.vault.azure.net/",
                                "enableRbacAuthorization": p.get("enable_rbac_authorization")}}
        self.s["vaults"][name.lower()] = vault
        return vault

    def cmd_keyvault_recover(self, p, argv):
        name = p["vault_name"]
        if name.lower() not in self.s["deleted_vaults"]:
            raise not_found(f"Deleted vault '{name}'")
        self.need_group(p["resource_group_name"])
        vault = self.s["deleted_vaults"].pop(name.lower())
        vault["resourceGroup"] = p["resource_group_name"]
        vault["id"] = f"{rg_id(p['resource_group_name'])}/providers/Microsoft.KeyVault/vaults/{vault['name']}"
        self.s["vaults"][name.lower()] = vault
        return vault

    def cmd_keyvault_purge(self, p, argv):
        self.require("Microsoft.KeyVault/locations/deletedVaults/purge/action", f"/subscriptions/{SUBSCRIPTION}")
        if p["vault_name"].lower() not in self.s["deleted_vaults"]:
            raise not_found(f"Deleted vault '{p['vault_name']}'")
        del self.s["deleted_vaults"][p["vault_name"].lower()]
        prefix = p["vault_name"].lower() + "/"
        for key in [k for k in self.s["secrets"] if k.startswith(prefix)]:
            del self.s["secrets"][key]

    def _secret_access(self, vault_name, action):
        """Data-plane calls need a Key Vault role for the deployer (RBAC vault)."""
        vault = self.vault(vault_name)
        if not self.holds(self.login["oid"], {"Key Vault Secrets Officer"}, vault["id"]):
            raise AzError(f"(Forbidden) Caller is not authorized to perform action on resource ({action}).")
        return vault

    def cmd_keyvault_secret_list(self, p, argv):
        name = self.vault_name(p)
        self._secret_access(name, "list")
        prefix = name.lower() + "/"
        return [{"name": key.split("/", 1)[1], "id": f"https://{name}.vault.azure.net/secrets/{key.split('/', 1)[1]}"}
                for key in self.s["secrets"] if key.startswith(prefix)]

    def cmd_keyvault_secret_show(self, p, argv):
        name = self.vault_name(p)
        self._secret_access(name, "get")
        versions = self.s["secrets"].get(f"{name.lower()}/{p['name']}")
        if not versions:
            raise not_found(f"Secret '{p['name']}'")
        return {"name": p["name"], "value": versions[-1]}

    def cmd_keyvault_secret_set(self, p, argv):
        name = self.vault_name(p)
        self._secret_access(name, "set")
        if p.get("file_path"):
            with open(p["file_path"], encoding=p.get("encoding") or "utf-8") as handle:
                value = handle.read()
        else:
            value = p.get("value")
        self.s["secrets"].setdefault(f"{name.lower()}/{p['name']}", []).append(value)
        return {"name": p["name"], "id": f"https://{name}.vault.azure.net/secrets/{p['name']}/v1"}

    # -- App Service -------------------------------------------------------------------------------
    def cmd_functionapp_plan_list(self, p, argv):
        rg = p.get("resource_group_name")
        return [self.plan_view(plan) for plan in self.s["plans"].values()
                if not rg or plan["resourceGroup"].lower() == rg.lower()]

    def add_plan(self, rg, name, sku, location, tags=None):
        if not 1 <= len(name) <= 60:
            raise AzError(f"(InvalidName) The plan name '{name}' must have 1 to 60 characters.")
        plan = {"id": f"{rg_id(rg)}/providers/Microsoft.Web/serverfarms/{name}", "name": name,
                "resourceGroup": rg, "sku": {"name": sku}, "reserved": True, "location": location,
                "tags": tags or {}}
        self.s["plans"][name] = plan
        return plan

    def cmd_functionapp_plan_create(self, p, argv):
        rg, name = p["resource_group_name"], p["name"]
        self.need_group(rg)
        plan = self.add_plan(rg, name, p["sku"], p.get("location"), tags_dict(p.get("tags")))
        plan["reserved"] = flag(p.get("is_linux"))
        return self.plan_view(plan)

    def cmd_functionapp_show(self, p, argv):
        return self.app_view(self.app(p["name"], p["resource_group_name"]))

    def cmd_functionapp_create(self, p, argv):
        """As azure-cli's create_functionapp: AzureWebJobsStorage gets a connection string with the host
        account's key (the CLI lists the keys); Consumption and Premium also get the Azure Files content
        share's; Flex gets a deployment container, reached with a keyed DEPLOYMENT_STORAGE_CONNECTION_STRING
        unless --deployment-storage-auth-type SystemAssignedIdentity, which assigns the identity and gives it
        Storage Blob Data Contributor on the deployment account."""
        rg, name = p["resource_group_name"], p["name"]
        self.need_group(rg)
        host_account = self.account(p["storage_account"])
        if name in self.s["apps"]:
            raise AzError(f"Website with given name {name} already exists.")
        location = self.s["groups"][rg.lower()]["location"]
        if p.get("flexconsumption_location"):
            kind, host = "flex", f"{name}-c0ffee1234abcd.westeurope-01.azurewebsites.net"
            plan = self.add_plan(rg, f"ASP-{rg.replace('-', '')[:20]}-{len(self.s['plans']):04x}", "FC1",
                                 p["flexconsumption_location"])
        elif p.get("consumption_plan_location"):
            kind, host = "consumption", f"{name}.azurewebsites.net"
            # Azure puts classic Consumption apps of a group and region on one shared dynamic plan.
            plan_name = p["consumption_plan_location"].title().replace(" ", "") + "LinuxDynamicPlan"
            plan = self.s["plans"].get(plan_name) or self.add_plan(rg, plan_name, "Y1", p["consumption_plan_location"])
        elif p.get("plan"):
            if p["plan"] not in self.s["plans"]:
                raise not_found(f"App service plan '{p['plan']}'")
            kind, host = "premium", f"{name}.azurewebsites.net"
            plan = self.s["plans"][p["plan"]]
        else:
            raise AzError("usage error: one of --plan, --consumption-plan-location, --flexconsumption-location")
        if p.get("runtime_version") not in ("3.10", "3.11", "3.12"):
            raise AzError(f"(BadRequest) Python {p.get('runtime_version')} is not supported on this plan.")
        keyed = self.connection_string(host_account)
        settings = {"AzureWebJobsStorage": keyed, "FUNCTIONS_EXTENSION_VERSION": "~4"}
        if kind in ("consumption", "premium"):
            settings["WEBSITE_CONTENTAZUREFILECONNECTIONSTRING"] = keyed
            settings["WEBSITE_CONTENTSHARE"] = f"{name.lower()}abc123"
        if not flag(p.get("disable_app_insights")):
            # What the CLI does when told nothing: try to create a default workspace and component,
            # and go without Application Insights when it cannot.
            settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] = "InstrumentationKey=auto-created-by-the-cli"
        app = {"id": f"{rg_id(rg)}/providers/Microsoft.Web/sites/{name}", "name": name, "resourceGroup": rg,
               "kind": kind, "defaultHostName": host, "tags": tags_dict(p.get("tags")), "identity": None,
               "httpsOnly": flag(p.get("https_only")), "serverFarmId": plan["id"], "location": location,
               "settings": settings, "deployments": [], "key_polls": 0, "python": p["runtime_version"]}
        self.s["apps"][name] = app
        if kind == "flex":
            app["deployment_container"] = (f"https://{host_account['name']}.blob.core.windows.net/"
                                           f"app-package-{name.lower()}-0a1b2c3")
            auth_type = p.get("deployment_storage_auth_type") or "StorageAccountConnectionString"
            self.set_deployment_auth(app, auth_type, host_account)
        return self.app_view(app)

    def deployment_account(self, app):
        return self.account(app["deployment_container"].split("//", 1)[1].split(".", 1)[0])

    def set_deployment_auth(self, app, auth_type, account):
        if auth_type == "SystemAssignedIdentity":
            app["deployment_auth"] = {"type": "SystemAssignedIdentity"}
            principal = self.assign_identity(app)["principalId"]
            scope = account_id(account["resourceGroup"], account["name"])
            if not any(r["principalId"] == principal and r["scope"].lower() == scope.lower()
                       and r["role"] in ("Storage Blob Data Contributor", "Storage Blob Data Owner") for r in self.s["roles"]):
                self.add_role(principal, "ServicePrincipal", "Storage Blob Data Contributor", scope)
        elif auth_type == "StorageAccountConnectionString":
            app["deployment_auth"] = {"type": auth_type,
                                      "storageAccountConnectionStringName": "DEPLOYMENT_STORAGE_CONNECTION_STRING"}
            app["settings"]["DEPLOYMENT_STORAGE_CONNECTION_STRING"] = self.connection_string(account)
        else:
            raise AzError(f"fake az: deployment storage auth {auth_type} is not faked", 99)

    def flex_app(self, p):
        app = self.app(p["name"], p["resource_group_name"])
        if app["kind"] != "flex":
            raise AzError("This command is only valid for Azure Functions on the Flex Consumption plan.")
        return app

    def cmd_functionapp_deployment_config_show(self, p, argv):
        return self.function_app_config(self.flex_app(p))["deployment"]

    def cmd_functionapp_deployment_config_set(self, p, argv):
        app = self.flex_app(p)
        if p.get("deployment_storage_auth_type"):
            self.set_deployment_auth(app, p["deployment_storage_auth_type"], self.deployment_account(app))
        return self.function_app_config(app)["deployment"]

    def cmd_functionapp_runtime_config_set(self, p, argv):
        app = self.flex_app(p)
        app["python"] = p["runtime_version"]
        return self.function_app_config(app)["runtime"]

    def cmd_functionapp_config_set(self, p, argv):
        app = self.app(p["name"], p["resource_group_name"])
        if app["kind"] == "flex":
            raise AzError("(BadRequest) linuxFxVersion cannot be set on a Flex Consumption app: use "
                          "'az functionapp runtime config set'.")
        fx = p.get("linux_fx_version") or ""
        if not re.fullmatch(r"(?i)python\|3\.1[0-2]", fx):
            raise AzError(f"fake az: functionapp config set {fx!r} is not faked", 99)
        app["python"] = fx.split("|")[1]
        return {"linuxFxVersion": fx}

    def cmd_functionapp_restart(self, p, argv):
        app = self.app(p["name"], p["resource_group_name"])
        app["restarts"] = app.get("restarts", 0) + 1

    def cmd_functionapp_identity_show(self, p, argv):
        return self.app(p["name"], p["resource_group_name"])["identity"]

    def assign_identity(self, app):
        if not app["identity"]:
            app["identity"] = {"type": "SystemAssigned", "principalId": self.next_id().replace("0000-0000", "aaaa-aaaa"),
                               "tenantId": TENANT}
        return app["identity"]

    def cmd_functionapp_identity_assign(self, p, argv):
        return self.assign_identity(self.app(p["name"], p["resource_group_name"]))

    def host_storage_ok(self, app):
        """The host starts only with storage it can use: a keyed AzureWebJobsStorage, or an identity-based
        one whose account the app's identity may use as blob data owner (Functions' host storage needs)."""
        settings = app["settings"]
        if settings.get("AzureWebJobsStorage"):
            return True
        name = settings.get("AzureWebJobsStorage__accountName")
        if not name or name not in self.s["accounts"] or not app.get("identity"):
            return False
        acc = self.s["accounts"][name]
        return self.holds(app["identity"]["principalId"], {"Storage Blob Data Owner"},
                          account_id(acc["resourceGroup"], name))

    # -- Role assignments --------------------------------------------------------------------------
    def cmd_role_assignment_list(self, p, argv):
        """As azure-cli's list_role_assignments: --all lists the whole subscription (and refuses a
        scope); otherwise only assignments exactly at the scope (the subscription when none is given)
        unless --include-inherited."""
        if p.get("show_all") and (p.get("scope") or p.get("resource_group_name")):
            raise AzError("group or scope are not required when --all is used")
        scope = None
        if not p.get("show_all"):
            scope = p.get("scope") or (rg_id(p["resource_group_name"]) if p.get("resource_group_name")
                                       else f"/subscriptions/{SUBSCRIPTION}")
        self.require("Microsoft.Authorization/roleAssignments/read", scope or f"/subscriptions/{SUBSCRIPTION}")
        principal = p.get("assignee_object_id") or p.get("assignee")
        result = []
        for assignment in self.s["roles"]:
            if principal and assignment["principalId"] != principal:
                continue
            if p.get("role") and assignment["role"].lower() != p["role"].lower():
                continue
            if scope and not p.get("include_inherited") and assignment["scope"].lower() != scope.lower():
                continue
            if scope and p.get("include_inherited") and not scope.lower().startswith(assignment["scope"].lower()):
                continue
            result.append(assignment)
        return result

    def cmd_role_assignment_create(self, p, argv):
        if not p.get("assignee_object_id") or not p.get("assignee_principal_type"):
            raise AzError("fake az: expected --assignee-object-id with --assignee-principal-type", 99)
        scope = p["scope"]
        self.require("Microsoft.Authorization/roleAssignments/write", scope)
        self.check_scope_exists(scope)
        role = self.resolve_role(p["role"], scope)
        for assignment in self.s["roles"]:
            if (assignment["principalId"], assignment["role"].lower(), assignment["scope"].lower()) == (
                    p["assignee_object_id"], role.lower(), scope.lower()):
                raise AzError("(RoleAssignmentExists) The role assignment already exists.")
        return self.add_role(p["assignee_object_id"], p["assignee_principal_type"], role, scope)

    # -- Role definitions (custom roles) ---------------------------------------------------------------
    def role_definition_id(self, role):
        """The full definition id of a built-in role (by name) or of a custom one."""
        if role in ROLE_IDS:
            return f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{ROLE_IDS[role]}"
        for definition in self.s["role_definitions"]:
            if definition["roleName"].lower() == role.lower():
                return definition["id"]
        raise AzError(f"fake az: no role definition named {role!r}", 99)

    def resolve_role(self, role, scope):
        """As azure-cli's _resolve_role_id: a definition id, a GUID or a name (looked up at SCOPE). A new
        custom definition is unknown to role assignments for a while (state key "role_definition_delay":
        that many assignment attempts are refused), as Azure replicates it to every region."""
        low = role.lower()
        for name, guid in ROLE_IDS.items():
            if low in (name.lower(), guid) or low.endswith("/roledefinitions/" + guid):
                return name
        for definition in self.s["role_definitions"]:
            guid = definition["name"].lower()
            by_id = low in (guid, definition["id"].lower()) or low.endswith("/roledefinitions/" + guid)
            by_name = low == definition["roleName"].lower() and self.assignable(definition, scope)
            if by_id or by_name:
                if not self.assignable(definition, scope):
                    raise AzError(f"(InvalidRoleDefinitionScope) Role definition {definition['roleName']} is not "
                                  f"assignable at scope {scope}.")
                if definition.get("pending_assignments", 0) > 0:
                    definition["pending_assignments"] -= 1
                    raise AzError(f"(RoleDefinitionDoesNotExist) The specified role definition with ID "
                                  f"'{guid}' does not exist.")
                return definition["roleName"]
        raise AzError(f"Role '{role}' doesn't exist.")

    @staticmethod
    def assignable(definition, scope):
        low = scope.lower().rstrip("/")
        return any(low == s.lower().rstrip("/") or low.startswith(s.lower().rstrip("/") + "/")
                   for s in definition["assignableScopes"])

    def definition_view(self, definition):
        return {"id": definition["id"], "name": definition["name"], "roleName": definition["roleName"],
                "roleType": "CustomRole", "type": "Microsoft.Authorization/roleDefinitions",
                "description": definition.get("description"), "assignableScopes": definition["assignableScopes"],
                "permissions": definition["permissions"]}

    def cmd_role_definition_list(self, p, argv):
        """Role Definitions - List at a scope: the definitions assignable there (custom ones here)."""
        scope = p.get("scope") or (rg_id(p["resource_group_name"]) if p.get("resource_group_name")
                                   else f"/subscriptions/{SUBSCRIPTION}")
        self.require("Microsoft.Authorization/roleDefinitions/read", scope)
        name = (p.get("name") or "").lower()
        return [self.definition_view(d) for d in self.s["role_definitions"] if self.assignable(d, scope)
                and (not name or name in (d["roleName"].lower(), d["name"].lower()))]

    def _definition_body(self, p):
        text = p["role_definition"]
        if os.path.exists(text):
            with open(text, encoding="utf-8") as handle:
                text = handle.read()
        body = json.loads(text)
        body = {(k[:1].lower() + k[1:]): v for k, v in body.items()}  # as the CLI does
        scopes = body.get("assignableScopes") or []
        if not scopes:
            raise AzError("please provide 'assignableScopes'")
        for scope in scopes:
            self.require("Microsoft.Authorization/roleDefinitions/write", scope)
            if "storageaccounts" in parse_id(scope):
                self.check_scope_exists(scope)
        permissions = [{key: body.get(key) or [] for key in ("actions", "notActions", "dataActions", "notDataActions")}]
        return body, scopes, permissions

    def cmd_role_definition_create(self, p, argv):
        body, scopes, permissions = self._definition_body(p)
        name = body.get("name")
        if not name:
            raise AzError("please provide role name")
        if any(d["roleName"].lower() == name.lower() for d in self.s["role_definitions"]):
            raise AzError(f"(RoleDefinitionWithSameNameExists) A custom role with the same name '{name}' already "
                          "exists in this directory.")
        guid = self.next_id().replace("0000-0000", "dddd-dddd")
        definition = {"id": f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{guid}",
                      "name": guid, "roleName": name, "description": body.get("description"),
                      "assignableScopes": scopes, "permissions": permissions,
                      "pending_assignments": self.s.get("role_definition_delay", 0)}
        self.s["role_definitions"].append(definition)
        return self.definition_view(definition)

    def cmd_role_definition_update(self, p, argv):
        body, scopes, permissions = self._definition_body(p)
        if not body.get("id") or not body.get("roleName"):
            raise AzError("fake az: the deploy updates a role definition by its id and roleName", 99)
        definition = next((d for d in self.s["role_definitions"] if d["id"].lower() == body["id"].lower()), None)
        if not definition:
            raise AzError("(RoleDefinitionDoesNotExist) The specified role definition does not exist.")
        definition.update(roleName=body["roleName"], description=body.get("description"), assignableScopes=scopes,
                          permissions=permissions)
        return self.definition_view(definition)

    def check_scope_exists(self, scope):
        parts = parse_id(scope)
        if "storageaccounts" in parts:
            acc = self.account(parts["storageaccounts"], parts["resourcegroups"])
            base = account_id(acc["resourceGroup"], acc["name"]).lower()
            if "containers" in parts and base + "/" + parts["containers"] not in self.s["containers"]:
                raise not_found(f"Container scope {scope}")
            if "queues" in parts and scope.lower() not in self.s["queues"]:
                raise not_found(f"Queue scope {scope}")
        elif "vaults" in parts:
            self.vault(parts["vaults"])
        else:
            raise AzError(f"fake az: unexpected role assignment scope {scope}", 99)

    def cmd_role_assignment_delete(self, p, argv):
        ids = {i.lower() for i in p.get("ids") or []}
        before = len(self.s["roles"])
        self.s["roles"] = [r for r in self.s["roles"] if r["id"].lower() not in ids]
        if len(self.s["roles"]) == before:
            raise not_found("Role assignment")

    # -- App settings, code, keys --------------------------------------------------------------------
    def cmd_functionapp_config_appsettings_list(self, p, argv):
        app = self.app(p["name"], p["resource_group_name"])
        return [{"name": k, "value": v, "slotSetting": False} for k, v in app["settings"].items()]

    def cmd_functionapp_config_appsettings_set(self, p, argv):
        app = self.app(p["name"], p["resource_group_name"])
        for setting in p.get("settings") or []:
            try:
                parsed = json.loads(setting)  # a JSON object, as from --settings @file.json
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                app["settings"].update({k: str(v) for k, v in parsed.items()})
            else:
                key, _, value = setting.partition("=")
                app["settings"][key] = value
        self.resolve_references(app)
        return self.cmd_functionapp_config_appsettings_list(p, argv)

    def cmd_functionapp_config_appsettings_delete(self, p, argv):
        app = self.app(p["name"], p["resource_group_name"])
        for name in p.get("setting_names") or []:
            app["settings"].pop(name, None)
        self.resolve_references(app)
        return self.cmd_functionapp_config_appsettings_list(p, argv)

    def cmd_functionapp_deployment_source_config_zip(self, p, argv):
        import hashlib  # imported here: zipfile alone costs ~0.1 s, paid by every call otherwise
        import zipfile

        app = self.app(p["name"], p["resource_group_name"])
        if app["kind"] == "consumption" and "AzureWebJobsStorage" not in app["settings"]:
            # azure-cli's validate_zip_deploy_app_setting_exists, on Linux Consumption
            raise AzError("The Azure CLI does not support this deployment path. Please configure the app to deploy "
                          "from a remote package using the steps here: https://aka.ms/deployfromurl")
        if app["kind"] == "flex":
            auth = app.get("deployment_auth") or {}
            if auth.get("type") == "SystemAssignedIdentity":
                acc = self.deployment_account(app)
                if not app.get("identity") or not self.holds(
                        app["identity"]["principalId"], {"Storage Blob Data Contributor", "Storage Blob Data Owner"},
                        account_id(acc["resourceGroup"], acc["name"])):
                    raise AzError("(Forbidden) The deployment could not write the package: the app's identity may not "
                                  "write to the deployment storage container (AuthorizationPermissionMismatch).")
            elif not app["settings"].get(auth.get("storageAccountConnectionStringName") or "-"):
                raise AzError("(BadRequest) The deployment storage connection string setting is missing.")
        src = p["src"]
        with zipfile.ZipFile(src) as archive:
            names = archive.namelist()
        if "host.json" not in names:
            raise AzError("Deployment failed: host.json not found at the root of the package")
        with open(src, "rb") as handle:
            sha = hashlib.sha256(handle.read()).hexdigest()
        app["deployments"].append({"files": sorted(names), "sha256": sha, "build_remote": p.get("build_remote")})
        app["key_polls"] = 0
        return None

    def cmd_tag_update(self, p, argv):
        table, key = self.find(p["resource_id"])
        if table not in ("apps", "plans"):
            raise AzError(f"fake az: tag update is only faked for apps and plans, not {p['resource_id']}", 99)
        item = self.s[table][key]
        item.setdefault("tags", {}).update(tags_dict(p["tags"]))
        return {"properties": {"tags": item["tags"]}}

    def cmd_functionapp_function_list(self, p, argv):
        app = self.app(p["name"], p["resource_group_name"])
        if not app["deployments"] or not self.host_storage_ok(app):
            return []  # nothing indexed: no code, or a host that cannot reach its storage
        return [{"name": f"{app['name']}/{f}", "id": f"{app['id']}/functions/{f}"} for f in FUNCTIONS]

    def blobs_key(self, app):
        return app.get("blobs_key") or f"fake-blobs-key-{app['name']}"

    def cmd_functionapp_keys_list(self, p, argv):
        app = self.app(p["name"], p["resource_group_name"])
        if not self.host_storage_ok(app):
            # the keys live in the host's storage
            raise AzError("(BadRequest) Encountered an error (ServiceUnavailable) from host runtime.")
        keys = {"masterKey": "fake-master-key", "functionKeys": {"default": "fake-default-key"}, "systemKeys": {}}
        if app["deployments"]:
            # The host needs a moment after a deploy: the first poll finds no extension keys yet.
            app["key_polls"] += 1
            if app["key_polls"] > 1 or len(app["deployments"]) > 1:
                keys["systemKeys"] = {"blobs_extension": self.blobs_key(app),
                                      "eventgrid_extension": f"fake-eventgrid-key-{app['name']}"}
        return keys

    # -- Event Grid --------------------------------------------------------------------------------
    def cmd_eventgrid_system_topic_list(self, p, argv):
        rg = p.get("resource_group_name")
        return [t for t in self.s["topics"].values() if not rg or t["resourceGroup"].lower() == rg.lower()]

    def cmd_eventgrid_system_topic_show(self, p, argv):
        return self.topic(p["system_topic_name"], p["resource_group_name"])

    def cmd_eventgrid_system_topic_create(self, p, argv):
        rg, name = p["resource_group_name"], p["system_topic_name"]
        self.need_group(rg)
        source = self.account_by_ref(p["source"])
        if source.get("kind", "StorageV2") not in ("StorageV2", "BlobStorage", "BlockBlobStorage"):
            raise AzError(f"(InvalidRequest) Storage accounts of kind {source.get('kind')} do not support Event Grid "
                          "integration: only StorageV2, BlobStorage and BlockBlobStorage do.")
        for topic in self.s["topics"].values():
            if topic["source"].lower() == p["source"].lower():
                raise AzError("(Conflict) Only one system topic is allowed per source.")
        topic = {"id": f"{rg_id(rg)}/providers/Microsoft.EventGrid/systemTopics/{name}", "name": name,
                 "resourceGroup": rg, "source": p["source"], "topicType": p["topic_type"],
                 "location": p.get("location"), "tags": tags_dict(p.get("tags"))}
        self.s["topics"][name] = topic
        return topic

    def cmd_eventgrid_system_topic_delete(self, p, argv):
        self.topic(p["system_topic_name"], p["resource_group_name"])
        del self.s["topics"][p["system_topic_name"]]
        for key in list(self.s["event_subscriptions"]):
            if key.startswith(p["system_topic_name"] + "/"):
                del self.s["event_subscriptions"][key]

    def _sub_key(self, p):
        self.topic(p["system_topic_name"], p["resource_group_name"])
        return f"{p['system_topic_name']}/{p['event_subscription_name']}"

    def subscription_view(self, sub, full_url):
        view = json.loads(json.dumps(sub))
        if view["destination"]["endpointType"] == "WebHook" and not full_url:
            view["destination"]["endpointUrl"] = None
        return view

    def cmd_eventgrid_system_topic_event_subscription_show(self, p, argv):
        sub = self.s["event_subscriptions"].get(self._sub_key(p))
        if not sub:
            raise not_found(f"Event subscription '{p['event_subscription_name']}'")
        return self.subscription_view(sub, flag(p.get("include_full_endpoint_url")))

    def cmd_eventgrid_system_topic_event_subscription_list(self, p, argv):
        self.topic(p["system_topic_name"], p["resource_group_name"])
        return [self.subscription_view(s, False) for k, s in self.s["event_subscriptions"].items()
                if k.startswith(p["system_topic_name"] + "/")]

    def cmd_eventgrid_system_topic_event_subscription_delete(self, p, argv):
        key = self._sub_key(p)
        if key not in self.s["event_subscriptions"]:
            raise not_found(f"Event subscription '{p['event_subscription_name']}'")
        del self.s["event_subscriptions"][key]

    def cmd_eventgrid_system_topic_event_subscription_create(self, p, argv):
        """A PUT (the CLI's create_or_update): an existing subscription of that name is replaced."""
        name = p["event_subscription_name"]
        if not re.fullmatch(r"[A-Za-z0-9-]{3,64}", name):
            raise AzError(f"(InvalidRequest) Event subscription name {name} must be 3-64 letters, digits or hyphens.")
        key = self._sub_key(p)
        endpoint, endpoint_type = p["endpoint"], (p.get("endpoint_type") or "webhook").lower()
        self.validate_endpoint(endpoint, endpoint_type)
        if endpoint_type == "webhook":
            destination = {"endpointType": "WebHook", "endpointUrl": endpoint,
                           "endpointBaseUrl": endpoint.split("?", 1)[0]}
        else:
            destination = {"endpointType": "AzureFunction", "resourceId": endpoint, "maxEventsPerBatch": 1}
        filters = [{"key": words[0], "operatorType": words[1], "values": words[2:]}
                   for words in option_values(argv, "--advanced-filter")]
        schema = {"eventgridschema": "EventGridSchema", "cloudeventschemav1_0": "CloudEventSchemaV1_0"}
        sub = {"name": name, "topic": p["system_topic_name"], "resourceGroup": p["resource_group_name"],
               "destination": destination,
               "filter": {"includedEventTypes": p.get("included_event_types"),
                          "subjectBeginsWith": p.get("subject_begins_with") or "",
                          "subjectEndsWith": "", "advancedFilters": filters},
               "eventDeliverySchema": schema.get((p.get("event_delivery_schema") or "").lower(), "EventGridSchema")}
        self.s["event_subscriptions"][key] = sub
        return self.subscription_view(sub, False)

    def validate_endpoint(self, endpoint, endpoint_type):
        """Event Grid validates a new subscription's endpoint: the code must be running."""
        if endpoint_type == "webhook":
            from urllib.parse import parse_qs, urlparse
            url = urlparse(endpoint)
            app = next((a for a in self.s["apps"].values() if a["defaultHostName"] == url.hostname), None)
            if not app or not app["deployments"]:
                raise AzError(f"(Url validation) Webhook validation handshake failed for https://{url.hostname}")
            code = parse_qs(url.query).get("code", [""])[0]
            if code != self.blobs_key(app):
                raise AzError("(Url validation) Webhook validation handshake failed: HTTP 401")
        elif endpoint_type == "azurefunction":
            parts = parse_id(endpoint)
            app = self.s["apps"].get(parts.get("sites", ""))
            if not app or not app["deployments"] or parts.get("functions") not in FUNCTIONS:
                raise AzError(f"(InvalidRequest) Function {endpoint} does not exist")
        else:
            raise AzError(f"fake az: endpoint type {endpoint_type} not faked", 99)


def format_output(result, query, output):
    if query:
        import jmespath  # the CLI's own library: in the CLI venv (the tests' venv imports this module too)

        result = jmespath.search(query, result)
    if output == "none" or result is None:
        return ""
    if output == "tsv":
        return format_tsv(result)
    return json.dumps(result, indent=2) + "\n"


def _tsv_cell(value):
    if isinstance(value, list):
        return str(len(value))
    if isinstance(value, dict):
        return ""
    return value if isinstance(value, str) else str(value)


def format_tsv(result):
    """The Azure CLI's tsv output (knack.output._TsvOutput), without importing knack (saves ~0.15 s a call)."""
    lines = []
    for row in result if isinstance(result, list) else [result]:
        if isinstance(row, dict):
            lines.append("\t".join(_tsv_cell(v) for _, v in sorted(row.items())))
        elif isinstance(row, list):
            lines.append("\t".join(_tsv_cell(v) for v in row))
        elif isinstance(row, bool):
            lines.append(str(row).lower())
        else:
            lines.append(_tsv_cell(row))
    return "".join(line + "\n" for line in lines)


def secrets_on(argv, state, state_dir):
    """What secrets the arguments carry, described (never quoted): values the fake issued or holds, the
    partner secrets the test watches (watched-secrets.json), and keyed connection strings, signatures
    and function keys, whatever their value."""
    known = {}
    watched = os.path.join(state_dir, "watched-secrets.json")
    if os.path.exists(watched):
        with open(watched, encoding="utf-8") as handle:
            known.update({value: f"the secret in ${name}" for name, value in json.load(handle).items()})
    fake = FakeAzure(json.loads(json.dumps(state)))
    issued = {}
    for acc in fake.s["accounts"].values():
        issued[fake.account_key(acc)] = f"the account key of {acc['name']}"
    for app in fake.s["apps"].values():
        issued.update({"fake-master-key": "the master key", "fake-default-key": "a function key",
                       fake.blobs_key(app): "the blobs_extension system key",
                       f"fake-eventgrid-key-{app['name']}": "the eventgrid_extension system key"})
    for name, versions in fake.s["secrets"].items():
        issued.update({value: f"the value of Key Vault secret {name}" for value in versions if value})
    for value, what in issued.items():
        known.setdefault(value, what)  # a watched secret keeps its name
    found = set()
    for arg in argv:
        found.update(what for value, what in known.items() if len(value) >= 8 and value in arg)
        found.update(what for pattern, what in LEAK_PATTERNS if pattern.search(arg))
    return sorted(found)


def respond(argv, parsed, state_dir):
    """Answer one az call whose parse check is `parsed`; log it to calls.jsonl in state_dir."""
    state_path = os.path.join(state_dir, "state.json")
    log_path = os.path.join(state_dir, "calls.jsonl")
    record = {"argv": argv, "command": parsed.get("command"), "parse": parsed["status"],
              "parse_seconds": parsed.get("seconds")}
    if parsed["status"] != "ok":
        record.update(rc=2, error=parsed["stderr"])
        reply = {"stdout": "", "stderr": parsed["stderr"] or "ERROR: rejected by the Azure CLI parser\n", "rc": 2}
    else:
        state = {}
        if os.path.exists(state_path):
            with open(state_path, encoding="utf-8") as handle:
                state = json.load(handle)
        fake = FakeAzure(state)
        query, output = split_globals(argv)
        rc, out, err = 0, "", ""
        leaks = secrets_on(argv, state, state_dir)
        try:
            if leaks:
                record["leaks"] = leaks
                raise AzError("fake az: refused, this command line carries " + "; ".join(leaks) + " (anyone on the "
                              "machine can read a process's arguments: pass it in a file or on stdin)", 97)
            result = fake.run(parsed["command"], parsed["params"], argv)
            out = format_output(result, query, output)
        except AzError as ex:
            rc, err = ex.code, f"ERROR: {ex}\n"
        except Exception as ex:  # noqa: BLE001 - a bug in the fake must fail the test, not hang it
            rc, err = 99, f"fake az crashed: {type(ex).__name__}: {ex}\n"
        record.update(rc=rc, params=parsed["params"], error=err.strip() or None)
        with open(state_path, "w", encoding="utf-8") as handle:
            json.dump(fake.s, handle, indent=1)
        reply = {"stdout": out, "stderr": err, "rc": rc}
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")
    return reply
