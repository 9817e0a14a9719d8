"""A fake Azure for the deploy tests, behind the real Azure CLI's parser.

The `az` the deploy scripts run in the tests is az_client.py: it sends each argument list to the parse
server (azcli_parse_server.py), which checks it with the real CLI's parser and then calls `respond()`
here with the parsed arguments:

1. A call the real CLI rejects is logged and fails with exit 2, like az. The tests fail on the log,
   even where the script tolerated the failure (`... || true`).
2. Otherwise it is answered from a JSON state file, the way Azure would: `show` of something missing
   exits 3 ("not found"), `create` adds it, `delete` removes it. Creating inside a missing resource
   group, reading Key Vault secrets without a data-plane role, or an Event Grid webhook whose key or
   host is wrong fails like the real service would.
3. --query (JMESPath, the CLI's own library) and --output (json, tsv as knack writes it, none) apply.

Every call is appended to calls.jsonl in the state directory, for the tests to read.
"""

import json
import os

import jmespath

SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
TENANT = "00000000-0000-0000-0000-0000000000aa"
DEPLOYER_ID = "22222222-2222-2222-2222-222222222222"
FUNCTIONS = ["image_uploaded", "nightly_sync", "image_deleted", "sync_shard"]


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


def rg_id(rg):
    return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{rg}"


def account_id(rg, name):
    return f"{rg_id(rg)}/providers/Microsoft.Storage/storageAccounts/{name}"


def parse_id(resource_id):
    parts = resource_id.strip("/").split("/")
    out = {}
    for key, value in zip(parts[0::2], parts[1::2]):
        out[key.lower()] = value
    return out


def tags_dict(tags):
    result = {}
    for tag in tags or []:
        key, _, value = tag.partition("=")
        result[key] = value
    return result


class FakeAzure:
    def __init__(self, state):
        self.s = state
        for key in ("providers", "groups", "accounts", "containers", "queues", "vaults", "deleted_vaults",
                    "secrets", "plans", "apps", "roles", "topics", "event_subscriptions"):
            self.s.setdefault(key, {} if key != "roles" else [])
        self.s.setdefault("counter", 0)

    # -- helpers -------------------------------------------------------------------------------
    def next_id(self):
        self.s["counter"] += 1
        return f"{self.s['counter']:08d}-0000-0000-0000-000000000000"

    def need_group(self, rg):
        if not rg or rg.lower() not in self.s["groups"]:
            raise AzError(f"(ResourceGroupNotFound) Resource group '{rg}' could not be found.", 3)

    def account(self, name, rg=None):
        acc = self.s["accounts"].get(name)
        if not acc or (rg and acc["resourceGroup"].lower() != rg.lower()):
            raise not_found(f"Storage account '{name}'")
        return acc

    def account_view(self, acc):
        name = acc["name"]
        return {
            "id": account_id(acc["resourceGroup"], name), "name": name, "resourceGroup": acc["resourceGroup"],
            "location": acc["location"], "kind": "StorageV2", "tags": acc.get("tags", {}),
            "primaryEndpoints": {"blob": f"https://{name}.blob.core.windows.net/",
                                 "queue": f"https://{name}.queue.core.windows.net/"},
            "publicNetworkAccess": acc.get("publicNetworkAccess", "Enabled"),
            "networkRuleSet": {"defaultAction": acc.get("defaultAction", "Allow")},
        }

    def account_by_ref(self, ref):
        """A storage account given by name or resource id."""
        if ref.startswith("/"):
            parts = parse_id(ref)
            return self.account(parts["storageaccounts"], parts["resourcegroups"])
        return self.account(ref)

    def app(self, name, rg=None):
        app = self.s["apps"].get(name)
        if not app or (rg and app["resourceGroup"].lower() != rg.lower()):
            raise not_found(f"Function app '{name}'")
        return app

    def app_view(self, app):
        return {"id": app["id"], "name": app["name"], "resourceGroup": app["resourceGroup"],
                "defaultHostName": app["defaultHostName"], "state": "Running", "kind": "functionapp,linux",
                "tags": app.get("tags", {}), "identity": app.get("identity")}

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

    def cmd_account_show(self, p, argv):
        return {"id": SUBSCRIPTION, "name": "fake-subscription", "tenantId": TENANT, "state": "Enabled",
                "user": {"name": "deployer@example.com", "type": "user"}}

    def cmd_ad_signed_in_user_show(self, p, argv):
        return {"id": DEPLOYER_ID, "userPrincipalName": "deployer@example.com"}

    def cmd_ad_sp_show(self, p, argv):
        return {"id": "33333333-3333-3333-3333-333333333333", "appId": p["identifier"]}

    def cmd_provider_show(self, p, argv):
        ns = p["resource_provider_namespace"]
        return {"namespace": ns, "registrationState": self.s["providers"].get(ns, "NotRegistered")}

    def cmd_provider_register(self, p, argv):
        self.s["providers"][p["resource_provider_namespace"]] = "Registered"

    def cmd_group_show(self, p, argv):
        group = self.s["groups"].get(p["resource_group_name"].lower())
        if not group:
            raise AzError(f"(ResourceGroupNotFound) Resource group '{p['resource_group_name']}' could not be found.", 3)
        return group

    def cmd_group_create(self, p, argv):
        name = p["rg_name"] if "rg_name" in p else p["resource_group_name"]
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
                del self.s["accounts"][name]
        for key in list(self.s["containers"]) + list(self.s["queues"]):
            if key.lower().startswith(prefix):
                self.s["containers"].pop(key, None)
                self.s["queues"].pop(key, None)
        for name, vault in list(self.s["vaults"].items()):
            if vault["resourceGroup"].lower() == low:
                self.s["deleted_vaults"][name] = self.s["vaults"].pop(name)
        for table in ("apps", "plans", "topics"):
            for name, item in list(self.s[table].items()):
                if item["resourceGroup"].lower() == low:
                    del self.s[table][name]
        for key, sub in list(self.s["event_subscriptions"].items()):
            if sub["resourceGroup"].lower() == low or sub["topic"] not in self.s["topics"]:
                del self.s["event_subscriptions"][key]
        self.s["roles"] = [r for r in self.s["roles"] if not r["scope"].lower().startswith(prefix)]

    def cmd_storage_account_show(self, p, argv):
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
                                    "tags": tags_dict(p.get("tags")), "created_by_test_run": True}
        return self.account_view(self.s["accounts"][name])

    def cmd_storage_container_rm_exists(self, p, argv):
        acc = self.account_by_ref(p["account_name"])
        key = account_id(acc["resourceGroup"], acc["name"]).lower() + "/" + p["container_name"]
        return {"exists": key in self.s["containers"]}

    def cmd_storage_container_rm_create(self, p, argv):
        acc = self.account_by_ref(p["account_name"])
        key = account_id(acc["resourceGroup"], acc["name"]).lower() + "/" + p["container_name"]
        self.s["containers"][key] = {"publicAccess": p.get("public_access")}
        return {"name": p["container_name"]}

    def _queue(self, resource_id):
        parts = parse_id(resource_id)
        if "queues" not in parts:
            raise AzError(f"fake az: 'az resource' is only faked for queues, not {resource_id}", 99)
        self.account(parts["storageaccounts"], parts["resourcegroups"])
        return resource_id.lower()

    def cmd_resource_show(self, p, argv):
        resource_id = p["resource_ids"][0]
        key = self._queue(resource_id)
        if key not in self.s["queues"]:
            raise not_found(f"Queue '{resource_id}'")
        return {"id": resource_id, "name": resource_id.rsplit("/", 1)[1]}

    def cmd_resource_create(self, p, argv):
        resource_id = p["resource_id"]
        self.s["queues"][self._queue(resource_id)] = {"id": resource_id}
        return {"id": resource_id}

    def cmd_keyvault_show(self, p, argv):
        vault = self.vault(p["vault_name"])
        return vault

    def cmd_keyvault_list_deleted(self, p, argv):
        return [{"name": v["name"], "properties": {"vaultId": v["id"]}} for v in self.s["deleted_vaults"].values()]

    def cmd_keyvault_create(self, p, argv):
        name, rg = p["vault_name"], p["resource_group_name"]
        self.need_group(rg)
        if name.lower() in self.s["deleted_vaults"]:
            raise AzError(f"(ConflictError) A vault with the same name already exists in deleted state.")
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
        self.s["vaults"][name.lower()] = vault
        return vault

    def cmd_keyvault_purge(self, p, argv):
        if p["vault_name"].lower() not in self.s["deleted_vaults"]:
            raise not_found(f"Deleted vault '{p['vault_name']}'")
        del self.s["deleted_vaults"][p["vault_name"].lower()]
        prefix = p["vault_name"].lower() + "/"
        for key in [k for k in self.s["secrets"] if k.startswith(prefix)]:
            del self.s["secrets"][key]

    def _secret_access(self, vault_name, action):
        """Data-plane calls need a Key Vault role for the deployer (RBAC vault)."""
        vault = self.vault(vault_name)
        roles = {r["role"] for r in self.s["roles"]
                 if r["principalId"] == DEPLOYER_ID and r["scope"].lower() == vault["id"].lower()}
        if "Key Vault Secrets Officer" not in roles:
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

    def cmd_functionapp_plan_list(self, p, argv):
        rg = p.get("resource_group_name")
        return [plan for plan in self.s["plans"].values() if not rg or plan["resourceGroup"].lower() == rg.lower()]

    def cmd_functionapp_plan_create(self, p, argv):
        rg, name = p["resource_group_name"], p["name"]
        self.need_group(rg)
        plan = {"id": f"{rg_id(rg)}/providers/Microsoft.Web/serverfarms/{name}", "name": name,
                "resourceGroup": rg, "sku": {"name": p["sku"]}, "reserved": bool(p.get("is_linux"))}
        self.s["plans"][name] = plan
        return plan

    def cmd_functionapp_show(self, p, argv):
        return self.app_view(self.app(p["name"], p["resource_group_name"]))

    def cmd_functionapp_create(self, p, argv):
        rg, name = p["resource_group_name"], p["name"]
        self.need_group(rg)
        self.account(p["storage_account"])
        if name in self.s["apps"]:
            raise AzError(f"Website with given name {name} already exists.")
        if p.get("flexconsumption_location"):
            kind, host = "flex", f"{name}-c0ffee1234abcd.westeurope-01.azurewebsites.net"
        elif p.get("consumption_plan_location"):
            kind, host = "consumption", f"{name}.azurewebsites.net"
        elif p.get("plan"):
            if p["plan"] not in self.s["plans"]:
                raise not_found(f"App service plan '{p['plan']}'")
            kind, host = "premium", f"{name}.azurewebsites.net"
        else:
            raise AzError("usage error: one of --plan, --consumption-plan-location, --flexconsumption-location")
        app = {"id": f"{rg_id(rg)}/providers/Microsoft.Web/sites/{name}", "name": name, "resourceGroup": rg,
               "kind": kind, "defaultHostName": host, "tags": tags_dict(p.get("tags")), "identity": None,
               "settings": {"AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=fakekey==",
                            "FUNCTIONS_EXTENSION_VERSION": "~4"},
               "deployments": [], "key_polls": 0}
        self.s["apps"][name] = app
        return self.app_view(app)

    def cmd_functionapp_restart(self, p, argv):
        self.app(p["name"], p["resource_group_name"])["restarts"] = \
            self.app(p["name"], p["resource_group_name"]).get("restarts", 0) + 1

    def cmd_functionapp_identity_show(self, p, argv):
        return self.app(p["name"], p["resource_group_name"])["identity"]

    def cmd_functionapp_identity_assign(self, p, argv):
        app = self.app(p["name"], p["resource_group_name"])
        if not app["identity"]:
            app["identity"] = {"type": "SystemAssigned", "principalId": self.next_id().replace("0000-0000", "aaaa-aaaa"),
                               "tenantId": TENANT}
        return app["identity"]

    def cmd_role_assignment_list(self, p, argv):
        principal = p.get("assignee_object_id") or p.get("assignee")
        result = []
        for assignment in self.s["roles"]:
            if principal and assignment["principalId"] != principal:
                continue
            if p.get("role") and assignment["role"].lower() != p["role"].lower():
                continue
            if p.get("scope") and assignment["scope"].lower() != p["scope"].lower():
                continue
            result.append(assignment)
        return result

    def cmd_role_assignment_create(self, p, argv):
        if not p.get("assignee_object_id") or not p.get("assignee_principal_type"):
            raise AzError("fake az: expected --assignee-object-id with --assignee-principal-type", 99)
        scope = p["scope"]
        self.check_scope_exists(scope)
        for assignment in self.s["roles"]:
            if (assignment["principalId"], assignment["role"].lower(), assignment["scope"].lower()) == (
                    p["assignee_object_id"], p["role"].lower(), scope.lower()):
                raise AzError("(RoleAssignmentExists) The role assignment already exists.")
        assignment = {"id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/{self.next_id()}",
                      "principalId": p["assignee_object_id"], "principalType": p["assignee_principal_type"],
                      "role": p["role"], "roleDefinitionName": p["role"], "scope": scope}
        self.s["roles"].append(assignment)
        return assignment

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

    def cmd_functionapp_config_appsettings_list(self, p, argv):
        app = self.app(p["name"], p["resource_group_name"])
        return [{"name": k, "value": v, "slotSetting": False} for k, v in app["settings"].items()]

    def cmd_functionapp_config_appsettings_set(self, p, argv):
        app = self.app(p["name"], p["resource_group_name"])
        for setting in p.get("settings") or []:
            key, _, value = setting.partition("=")
            app["settings"][key] = value
        return self.cmd_functionapp_config_appsettings_list(p, argv)

    def cmd_functionapp_deployment_source_config_zip(self, p, argv):
        import hashlib  # imported here: zipfile alone costs ~0.1 s, paid by every call otherwise
        import zipfile

        app = self.app(p["name"], p["resource_group_name"])
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
        resource_id = p["resource_id"]
        for app in self.s["apps"].values():
            if app["id"].lower() == resource_id.lower():
                app["tags"].update(tags_dict(p["tags"]))
                return {"properties": {"tags": app["tags"]}}
        raise not_found(f"Resource '{resource_id}'")

    def cmd_functionapp_function_list(self, p, argv):
        app = self.app(p["name"], p["resource_group_name"])
        if not app["deployments"]:
            return []
        return [{"name": f"{app['name']}/{f}", "id": f"{app['id']}/functions/{f}"} for f in FUNCTIONS]

    def cmd_functionapp_keys_list(self, p, argv):
        app = self.app(p["name"], p["resource_group_name"])
        keys = {"masterKey": "fake-master-key", "functionKeys": {"default": "fake-default-key"}, "systemKeys": {}}
        if app["deployments"]:
            # The host needs a moment after a deploy: the first poll finds no extension keys yet.
            app["key_polls"] += 1
            if app["key_polls"] > 1 or len(app["deployments"]) > 1:
                keys["systemKeys"] = {"blobs_extension": f"fake-blobs-key-{app['name']}",
                                      "eventgrid_extension": f"fake-eventgrid-key-{app['name']}"}
        return keys

    def cmd_eventgrid_system_topic_list(self, p, argv):
        rg = p.get("resource_group_name")
        return [t for t in self.s["topics"].values() if not rg or t["resourceGroup"].lower() == rg.lower()]

    def cmd_eventgrid_system_topic_show(self, p, argv):
        return self.topic(p["system_topic_name"], p["resource_group_name"])

    def cmd_eventgrid_system_topic_create(self, p, argv):
        rg, name = p["resource_group_name"], p["system_topic_name"]
        self.need_group(rg)
        self.account_by_ref(p["source"])
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

    def cmd_eventgrid_system_topic_event_subscription_show(self, p, argv):
        sub = self.s["event_subscriptions"].get(self._sub_key(p))
        if not sub:
            raise not_found(f"Event subscription '{p['event_subscription_name']}'")
        return sub

    def cmd_eventgrid_system_topic_event_subscription_list(self, p, argv):
        self.topic(p["system_topic_name"], p["resource_group_name"])
        return [s for k, s in self.s["event_subscriptions"].items() if k.startswith(p["system_topic_name"] + "/")]

    def cmd_eventgrid_system_topic_event_subscription_delete(self, p, argv):
        key = self._sub_key(p)
        if key not in self.s["event_subscriptions"]:
            raise not_found(f"Event subscription '{p['event_subscription_name']}'")
        del self.s["event_subscriptions"][key]

    def cmd_eventgrid_system_topic_event_subscription_create(self, p, argv):
        key = self._sub_key(p)
        endpoint, endpoint_type = p["endpoint"], p.get("endpoint_type") or "webhook"
        self.validate_endpoint(endpoint, endpoint_type)
        sub = {"name": p["event_subscription_name"], "topic": p["system_topic_name"],
               "resourceGroup": p["resource_group_name"], "endpointType": endpoint_type, "endpoint": endpoint,
               "includedEventTypes": p.get("included_event_types"),
               "subjectBeginsWith": p.get("subject_begins_with"),
               "eventDeliverySchema": p.get("event_delivery_schema")}
        self.s["event_subscriptions"][key] = sub
        return sub

    def validate_endpoint(self, endpoint, endpoint_type):
        """Event Grid validates a new subscription's endpoint: the code must be running."""
        if endpoint_type == "webhook":
            from urllib.parse import parse_qs, urlparse
            url = urlparse(endpoint)
            app = next((a for a in self.s["apps"].values() if a["defaultHostName"] == url.hostname), None)
            if not app or not app["deployments"]:
                raise AzError(f"(Url validation) Webhook validation handshake failed for https://{url.hostname}")
            code = parse_qs(url.query).get("code", [""])[0]
            if code != f"fake-blobs-key-{app['name']}":
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
        try:
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
