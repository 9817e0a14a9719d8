"""Alerts: an action group and three log search alert rules on Application Insights, created once,
repaired when changed by hand, removed when alerting is switched off."""

import json
import sys

import pytest
from deploy_harness import DEPLOY_DIR, assert_ok, command_of, is_mutating, parse_failures, run_script

sys.path.insert(0, str(DEPLOY_DIR))
import monitoring  # noqa: E402

APP = "imgsync-test"
RG_ID = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-imgsync-test"
RULES = [f"{APP}-nightly-sync-failed", f"{APP}-function-failed", f"{APP}-poison-messages"]
POISON_QUEUES = ["image-sync-shards-poison", "image-sync-products-poison", "webjobs-blobtrigger-poison"]
TEAM_GROUP = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-ops/providers/"
              "microsoft.insights/actionGroups/oncall")


def deploy(fake, env_file, project_dir, *args, **env):
    fake.clear_log()
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, *args,
                        extra_env=env)
    assert_ok(result)
    assert not parse_failures(fake.calls())
    return result, [c for c in fake.calls() if is_mutating(c)]


def arm(fake, kind):
    return {r["name"]: r for r in fake.state()["arm"].values() if r["type"] == kind}


@pytest.fixture(scope="module")
def alerting(tmp_path_factory, cli_python, parse_server, env_file, project_dir):
    """A deployment with ALERT_EMAIL, deployed twice."""
    from deploy_harness import FakeAz

    fake = FakeAz(tmp_path_factory.mktemp("alerts"), cli_python, parse_server)
    first, first_changes = deploy(fake, env_file, project_dir, ALERT_EMAIL="ops@example.com, oncall@example.com")
    second, second_changes = deploy(fake, env_file, project_dir, ALERT_EMAIL="ops@example.com, oncall@example.com")
    return {"fake": fake, "first": first, "first_changes": first_changes, "second_changes": second_changes,
            "state": fake.state()}


def test_alert_rules_and_action_group_are_created_once(alerting):
    created = [c["argv"][c["argv"].index("--id") + 1].rsplit("/", 1)[1]
               for c in alerting["first_changes"] if command_of(c) == "resource create" and "--id" in c["argv"]
               and "/queueServices/" not in c["argv"][c["argv"].index("--id") + 1]]
    assert sorted(created) == sorted([f"{APP}-logs", f"{APP}-insights", f"{APP}-alerts", *RULES])
    assert alerting["second_changes"] == [], "a second run creates nothing"


def test_action_group_emails_everyone_named(alerting):
    fake = alerting["fake"]
    (group,) = arm(fake, "Microsoft.Insights/actionGroups").values()
    assert group["properties"]["groupShortName"] == "imgsync-test"
    assert [r["emailAddress"] for r in group["properties"]["emailReceivers"]] == ["ops@example.com",
                                                                                  "oncall@example.com"]
    assert group["tags"] == {"image-sync-app": APP}


def test_rules_watch_every_function_and_poison_queue(alerting):
    fake = alerting["fake"]
    rules = arm(fake, "Microsoft.Insights/scheduledQueryRules")
    assert sorted(rules) == sorted(RULES)
    (component,) = arm(fake, "Microsoft.Insights/components").values()
    (group,) = arm(fake, "Microsoft.Insights/actionGroups").values()
    for rule in rules.values():
        props = rule["properties"]
        assert props["scopes"] == [component["id"]]
        assert props["actions"]["actionGroups"] == [group["id"]]
        assert props["enabled"] is True and props["autoMitigate"] is True
        assert (props["evaluationFrequency"], props["windowSize"]) == ("PT15M", "PT1H")
        assert "'Alerts' in docs/deploy.md" in props["description"]
    query = {name: r["properties"]["criteria"]["allOf"][0]["query"] for name, r in rules.items()}
    assert '"nightly_sync"' in query[f"{APP}-nightly-sync-failed"]
    assert "success == false" in query[f"{APP}-nightly-sync-failed"]
    for function in ("image_uploaded", "image_deleted", "sync_shard", "product_sync"):
        assert f'"{function}"' in query[f"{APP}-function-failed"]
    for queue in POISON_QUEUES:
        assert f'"{queue}"' in query[f"{APP}-poison-messages"]
    assert rules[f"{APP}-nightly-sync-failed"]["properties"]["severity"] == 1
    assert rules[f"{APP}-function-failed"]["properties"]["severity"] == 2


def test_alerting_covers_every_function_the_app_registers(indexed):
    """When a function is added to the app, it must be added to the alerts as well."""
    assert set(indexed) <= set(monitoring.ALL_FUNCTIONS)


def test_poison_query_reads_the_host_log_line():
    """The query must match the queues extension's own warning, with the queue name extracted."""
    import re

    line = "Message has reached MaxDequeueCount of 5. Moving message to queue 'image-sync-shards-poison'."
    query = monitoring.poison_query(POISON_QUEUES)
    pattern = re.search(r'extract\(@"(.+?)", 1, message\)', query).group(1)
    assert monitoring.POISON_LOG_TEXT in line and re.search(pattern, line).group(1) == "image-sync-shards-poison"


def test_a_rule_changed_by_hand_is_put_back(alerting, make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    fake.copy_state_from(alerting["fake"])
    state = fake.state()
    rule = next(r for r in state["arm"].values() if r["name"] == f"{APP}-poison-messages")
    rule["properties"]["enabled"] = False
    fake.write_state(state)
    _, changes = deploy(fake, env_file, project_dir, ALERT_EMAIL="ops@example.com,oncall@example.com")
    assert [c["argv"][c["argv"].index("--id") + 1].rsplit("/", 1)[1] for c in changes] == [f"{APP}-poison-messages"]
    assert arm(fake, "Microsoft.Insights/scheduledQueryRules")[f"{APP}-poison-messages"]["properties"]["enabled"] is True


def test_switching_to_an_existing_action_group_and_then_off(alerting, make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    fake.copy_state_from(alerting["fake"])
    state = fake.state()
    state["arm"][TEAM_GROUP.lower()] = {"id": TEAM_GROUP, "name": "oncall", "type": "Microsoft.Insights/actionGroups",
                                        "location": "Global", "tags": {}, "properties": {"groupShortName": "oncall"}}
    fake.write_state(state)

    # ALERT_EMAIL cleared, the team's group named: the rules point at it, the deploy's own group goes.
    result, changes = deploy(fake, env_file, project_dir, "--alert-action-group", TEAM_GROUP)
    assert sorted(command_of(c) for c in changes) == ["resource create"] * 3 + ["resource delete"]
    assert list(arm(fake, "Microsoft.Insights/actionGroups")) == ["oncall"]
    for rule in arm(fake, "Microsoft.Insights/scheduledQueryRules").values():
        assert rule["properties"]["actions"]["actionGroups"] == [TEAM_GROUP]

    # No alerting at all: the rules go, the team's group stays.
    result, changes = deploy(fake, env_file, project_dir)
    assert [command_of(c) for c in changes] == ["resource delete"] * 3
    assert arm(fake, "Microsoft.Insights/scheduledQueryRules") == {}
    assert list(arm(fake, "Microsoft.Insights/actionGroups")) == ["oncall"]
    assert "no alerts" in result.stderr


def test_an_unknown_action_group_stops_before_anything_is_created(make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir,
                        "--alert-action-group", TEAM_GROUP)
    assert result.returncode != 0 and "action group" in result.stderr and "not found" in result.stderr
    assert [c for c in fake.calls() if is_mutating(c)] == []


@pytest.mark.parametrize("value, message", [
    ("ops-at-example.com", "is not an e-mail address"),
    ("ops@example.com;dev@example.com", "is not an e-mail address"),
])
def test_bad_alert_settings_are_refused_before_any_az_call(value, message, make_fake_az, env_file):
    fake = make_fake_az()
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--alert-email", value, secrets=False)
    assert result.returncode != 0 and message in result.stderr
    assert fake.calls() == []


def test_monitoring_bodies_are_json_with_pinned_api_versions():
    names = {"workspace": "w", "component": "c", "action_group": "g"}
    lines = monitoring.resources(RG_ID, APP, "westeurope", names, ["a@example.com"], [], POISON_QUEUES)
    assert [kind for kind, *_ in lines] == ["workspace", "component", "action-group"] + ["alert-rule"] * 3
    for _kind, resource_id, api, body in lines:
        assert resource_id.startswith(RG_ID + "/providers/") and api[:4].isdigit() and "preview" not in api
        json.dumps(body)
    no_alerts = monitoring.resources(RG_ID, APP, "westeurope", names)
    assert [kind for kind, *_ in no_alerts] == ["workspace", "component"]
