"""What deploy.sh puts in Azure Monitor, as Azure Resource Manager request bodies: a Log Analytics
workspace, the workspace-based Application Insights component the app logs to, and - with alerting on -
an action group and three log search alert rules. Standard library only.

deploy.sh creates each with `az resource create --id ID --api-version API --is-full-object --properties
JSON` (a PUT, so running it again repairs a rule someone changed) and compares what exists with the
body first, so an unchanged resource is not written. `az monitor app-insights` and `az monitor
scheduled-query` would be shorter, but both are CLI extensions, not part of the core CLI (checked in
azure-cli 2.91.0: 'scheduled-query' is not recognized): they need `az extension add` and network access
to the extension index at deploy time, and their arguments cannot be checked by the tests. The api
versions below are stable ones from azure-rest-api-specs (specification/.../stable/<version>).

Usage:
  monitoring.py resources --resource-group-id ID --app NAME --location REGION --workspace-name NAME
                          --component-name NAME --action-group-name NAME [--email ADDRESS]...
                          [--action-group-id ID]... [--poison-queue NAME]...
  prints one line per resource, in creation order: KIND <tab> RESOURCE_ID <tab> API_VERSION <tab> JSON.
  Alert rules are included when an --email or an --action-group-id is given.

The alerts ("Alerts" in docs/deploy.md says what each means and what to do):
  <app>-nightly-sync-failed   a nightly_sync invocation failed                       severity 1 (Error)
  <app>-function-failed       an invocation of a trigger function failed             severity 2 (Warning)
  <app>-poison-messages       the host moved a message to one of the poison queues   severity 1 (Error)
Each runs every 15 minutes over the last hour of Application Insights data: an invocation is logged
when it ends but stamped with its start, and host.json allows 10 minutes, so a shorter window could miss
it. The rules resolve themselves (autoMitigate), so one failure sends one notification, not four.
Requests are never sampled (host.json excludes Request and Exception from sampling); traces can be,
under heavy load, which is why a failed invocation alerts on its own and not only through the poison
rule.
"""

import argparse
import json
import sys

MANAGED_TAG_KEY = "image-sync-app"

WORKSPACE_API = "2022-10-01"  # Microsoft.OperationalInsights/workspaces
COMPONENT_API = "2020-02-02"  # Microsoft.Insights/components (WorkspaceResourceId: workspace-based)
ACTION_GROUP_API = "2023-01-01"  # Microsoft.Insights/actionGroups
ALERT_RULE_API = "2023-12-01"  # Microsoft.Insights/scheduledQueryRules

NIGHTLY_FUNCTION = "nightly_sync"
# Every other function of the app: the blob and Event Grid triggers and the two queue functions.
TRIGGER_FUNCTIONS = ("image_uploaded", "image_deleted", "sync_shard", "product_sync")
# The operator's HTTP pages (the contact sheet, the resubmit and its button on the sheet): whoever asked sees
# its answer, so they raise no alert.
PAGE_FUNCTIONS = ("contact_sheet", "resubmit", "resubmit_from_sheet")
ALL_FUNCTIONS = (NIGHTLY_FUNCTION, *TRIGGER_FUNCTIONS, *PAGE_FUNCTIONS)

# The queues extension logs this warning (Microsoft.Azure.WebJobs.Extensions.Storage.Queues,
# QueueProcessor.CopyMessageToPoisonQueueAsync) when a message reaches maxDequeueCount, for queue
# triggers and for the blob trigger's internal queue alike:
#   "Message has reached MaxDequeueCount of 5. Moving message to queue 'image-sync-shards-poison'."
POISON_LOG_TEXT = "Moving message to queue"

EVALUATION_FREQUENCY = "PT15M"
WINDOW_SIZE = "PT1H"


def kql_list(names):
    return ", ".join(json.dumps(name) for name in names)


def failed_requests_query(functions):
    names = kql_list(functions)
    return (
        "requests\n"
        f"| where name in ({names}) or operation_Name in ({names})\n"
        "| where success == false\n"
        "| project timestamp, name, resultCode, duration, operation_Id"
    )


def poison_query(queues):
    return (
        "traces\n"
        f"| where message has \"{POISON_LOG_TEXT}\"\n"
        f"| extend queue = extract(@\"{POISON_LOG_TEXT} '([^']+)'\", 1, message)\n"
        f"| where queue in ({kql_list(queues)})\n"
        "| project timestamp, queue, message, operation_Name"
    )


def alert_rule(name, location, tags, scope, action_groups, severity, description, query):
    return {
        "location": location,
        "kind": "LogAlert",
        "tags": tags,
        "properties": {
            "displayName": name,
            "description": description,
            "severity": severity,
            "enabled": True,
            "scopes": [scope],
            "evaluationFrequency": EVALUATION_FREQUENCY,
            "windowSize": WINDOW_SIZE,
            "criteria": {"allOf": [{
                "query": query,
                "timeAggregation": "Count",
                "operator": "GreaterThan",
                "threshold": 0,
                "failingPeriods": {"numberOfEvaluationPeriods": 1, "minFailingPeriodsToAlert": 1},
            }]},
            "autoMitigate": True,
            "actions": {"actionGroups": list(action_groups)},
        },
    }


def resources(rg_id, app, location, names, emails=(), action_group_ids=(), poison_queues=()):
    """(kind, id, api version, body) for everything deploy.sh ensures in Azure Monitor, in order. NAMES
    holds the workspace, component and action group names deploy/lib.sh derives (they must fit Azure's
    length limits, which lib.sh's fit_name takes care of)."""
    tags = {MANAGED_TAG_KEY: app}
    base = f"{rg_id}/providers"
    workspace_id = f"{base}/Microsoft.OperationalInsights/workspaces/{names['workspace']}"
    component_id = f"{base}/Microsoft.Insights/components/{names['component']}"
    out = [
        ("workspace", workspace_id, WORKSPACE_API,
         {"location": location, "tags": tags, "properties": {"sku": {"name": "PerGB2018"}}}),
        ("component", component_id, COMPONENT_API,
         {"location": location, "kind": "web", "tags": tags,
          "properties": {"Application_Type": "web", "WorkspaceResourceId": workspace_id,
                         "IngestionMode": "LogAnalytics"}}),
    ]
    groups = list(action_group_ids)
    if emails:
        group_id = f"{base}/Microsoft.Insights/actionGroups/{names['action_group']}"
        receivers = [{"name": f"email{i}", "emailAddress": address, "useCommonAlertSchema": True}
                     for i, address in enumerate(emails, 1)]
        out.append(("action-group", group_id, ACTION_GROUP_API,
                    {"location": "Global", "tags": tags,
                     "properties": {"groupShortName": short_name(app), "enabled": True,
                                    "emailReceivers": receivers}}))
        groups.insert(0, group_id)
    if not groups:
        return out
    rules = [
        ("nightly-sync-failed", 1,
         f"The nightly full sync ({NIGHTLY_FUNCTION}) failed: some or all images did not reach Wallie or "
         "TRAEDE tonight. Open the failed request in Application Insights for the reason, fix it (see "
         "'Alerts' in docs/deploy.md), then start nightly_sync by hand.",
         failed_requests_query([NIGHTLY_FUNCTION])),
        ("function-failed", 2,
         f"An invocation of {', '.join(TRIGGER_FUNCTIONS)} failed. The host retries it (5 attempts); if "
         "every attempt fails the message goes to a poison queue and the poison alert follows. See "
         "'Alerts' in docs/deploy.md.",
         failed_requests_query(TRIGGER_FUNCTIONS)),
        ("poison-messages", 1,
         f"The host gave up on a message and moved it to {', '.join(poison_queues)}: an image, a product "
         "or a shard of the nightly sync was not synced. See 'Alerts' in docs/deploy.md.",
         poison_query(poison_queues)),
    ]
    for suffix, severity, description, query in rules:
        name = f"{app}-{suffix}"  # an app name has at most 60 characters, a rule name may have 260
        out.append(("alert-rule", f"{base}/Microsoft.Insights/scheduledQueryRules/{name}", ALERT_RULE_API,
                    alert_rule(name, location, tags, component_id, groups, severity, description, query)))
    return out


def short_name(app):
    """An action group's short name (at most 12 characters) is shown in notifications."""
    return app[:12].rstrip("-") or "imagesync"


def main(argv):
    parser = argparse.ArgumentParser(prog="monitoring.py")
    sub = parser.add_subparsers(dest="command", required=True)
    res = sub.add_parser("resources")
    res.add_argument("--resource-group-id", required=True)
    res.add_argument("--app", required=True)
    res.add_argument("--location", required=True)
    res.add_argument("--workspace-name", required=True)
    res.add_argument("--component-name", required=True)
    res.add_argument("--action-group-name", required=True)
    res.add_argument("--email", action="append", default=[])
    res.add_argument("--action-group-id", action="append", default=[])
    res.add_argument("--poison-queue", action="append", default=[])
    args = parser.parse_args(argv)
    names = {"workspace": args.workspace_name, "component": args.component_name,
             "action_group": args.action_group_name}
    for kind, resource_id, api, body in resources(args.resource_group_id, args.app, args.location, names,
                                                  args.email, args.action_group_id, args.poison_queue):
        print("\t".join([kind, resource_id, api, json.dumps(body, separators=(",", ":"))]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
