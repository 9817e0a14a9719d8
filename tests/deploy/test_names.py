"""Names derived from the app name stay within Azure's limits for the longest app name validate_names
allows (60 characters): an event subscription name has at most 64, an App Service plan 60, a Log
Analytics workspace 63. The fake Azure refuses longer ones, as Azure does."""

import subprocess

import pytest
from deploy_harness import DEPLOY_DIR, assert_ok, command_of, is_mutating, parse_failures, run_script

LONG_APP = "image-sync-production-westeurope-customer-catalogue-platform"  # 60 characters


def fit_name(name, limit):
    result = subprocess.run(["bash", "-c", f'source "{DEPLOY_DIR}/lib.sh"; fit_name "$1" "$2"', "_", name,
                             str(limit)], capture_output=True, text=True, check=True)
    return result.stdout


def test_fit_name_keeps_short_names_and_shortens_long_ones_distinctly():
    assert fit_name("imgsync-test-blob-created", 64) == "imgsync-test-blob-created"
    created, deleted = fit_name(LONG_APP + "-blob-created", 64), fit_name(LONG_APP + "-blob-deleted", 64)
    assert len(created) == len(deleted) == 64 and created != deleted
    assert created == fit_name(LONG_APP + "-blob-created", 64), "the same name on every run"
    assert not fit_name("a" * 56 + "-" * 10, 60).rstrip("0123456789").endswith("--")


@pytest.mark.parametrize("plan", ["flex", "premium"])
def test_the_longest_app_name_deploys_and_tears_down(plan, make_fake_az, env_file, project_dir):
    assert len(LONG_APP) == 60
    fake = make_fake_az()
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, "--hosting-plan", plan,
                        "--app-name", LONG_APP, "--alert-email", "ops@example.com")
    assert_ok(result)
    assert not parse_failures(fake.calls())
    state = fake.state()
    for name in [s["name"] for s in state["event_subscriptions"].values()]:
        assert len(name) <= 64
    for name in [p["name"] for p in state["plans"].values()]:
        assert len(name) <= 60
    workspace = next(r["name"] for r in state["arm"].values()
                     if r["type"] == "Microsoft.OperationalInsights/workspaces")
    assert len(workspace) <= 63
    assert len(state["event_subscriptions"]) == 2
    if plan != "flex":
        return  # the second run and the teardown find the same names whatever the plan

    fake.clear_log()
    again = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, "--hosting-plan", plan,
                       "--app-name", LONG_APP, "--alert-email", "ops@example.com")
    assert_ok(again)
    assert [c for c in fake.calls() if is_mutating(c)] == [], "the shortened names are found again"

    fake.clear_log()
    down = run_script("teardown.sh", fake, "--env-file", env_file, "--app-name", LONG_APP, "--yes", secrets=False)
    assert_ok(down)
    assert "group delete" in [command_of(c) for c in fake.calls()]
    assert fake.state()["event_subscriptions"] == {}
