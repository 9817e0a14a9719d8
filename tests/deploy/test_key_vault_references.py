"""After a run that changes settings, secrets or roles - or finds a reference that does not resolve - the
app re-reads its Key Vault references (the documented refresh call) and the deploy waits, bounded, until
each partner secret's reference reads Resolved; one that does not is named with its status and why. The
fake App Service resolves references when settings change or on refresh and caches the outcome, as App
Service does, and a new role assignment can take a while to apply."""

from deploy_harness import assert_ok, command_of, is_mutating, leaks, parse_failures, run_script

APP = "imgsync-test"
NAMES = ["WALLIE_PASSWORD", "TRAEDE_ACCESS_TOKEN", "TRAEDE_APP_KEY"]


def status_reads(calls):
    return [c for c in calls if command_of(c) == "rest" and c["params"]["method"] == "get"
            and "/config/configreferences/appsettings?" in c["params"]["url"]]


def refreshes(calls):
    return [c for c in calls if command_of(c) == "rest" and c["params"]["method"] == "post"
            and c["params"]["url"].endswith("/config/configreferences/appsettings/refresh?api-version=2022-03-01")]


def deployed_copy(flex_deployment, make_fake_az, change=None):
    fake = make_fake_az()
    fake.copy_state_from(flex_deployment["fake"])
    if change:
        state = fake.state()
        change(state)
        fake.write_state(state)
    return fake


def redeploy(fake, env_file, project_dir, **extra_env):
    fake.clear_log()
    return run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, secrets=False,
                      extra_env=extra_env)


def test_a_first_deploy_refreshes_and_sees_every_reference_resolved(flex_deployment):
    calls = flex_deployment["first_calls"]
    (refresh,) = refreshes(calls)
    reads = [i for i, c in enumerate(calls) if c in status_reads(calls)]
    assert len(reads) >= 2 and calls.index(refresh) < reads[-1]
    assert "Key Vault references: all 3 resolved" in flex_deployment["first"].stderr
    statuses = flex_deployment["state"]["apps"][APP]["kv_status"]
    assert {name: statuses[name][0] for name in NAMES} == dict.fromkeys(NAMES, "Resolved")


def test_a_run_that_changes_nothing_only_reads_the_statuses(flex_deployment):
    calls = flex_deployment["second_calls"]
    assert refreshes(calls) == [] and len(status_reads(calls)) == 1
    assert "Key Vault references of imgsync-test (WALLIE_PASSWORD TRAEDE_ACCESS_TOKEN TRAEDE_APP_KEY): all 3 resolved" \
        in flex_deployment["second"].stderr


def test_a_slow_resolve_is_waited_for(flex_deployment, make_fake_az, env_file, project_dir):
    """App Service answers Initialized while it fetches: the deploy keeps looking until Resolved."""
    fake = deployed_copy(flex_deployment, make_fake_az, lambda s: s.update(kv_resolve_delay=3))
    result = redeploy(fake, env_file, project_dir, LOG_LEVEL="DEBUG")
    assert_ok(result)
    calls = fake.calls()
    assert len(refreshes(calls)) == 1, "Initialized is not a failure: no second refresh"
    assert len(status_reads(calls)) == 5, "the run's first look, three Initialized after the refresh, then Resolved"
    assert "waiting for the Key Vault references to resolve (WALLIE_PASSWORD Initialized," in result.stderr
    assert "Key Vault references: all 3 resolved" in result.stderr


def test_a_role_still_applying_is_refreshed_again_until_it_resolves(flex_deployment, make_fake_az, env_file,
                                                                   project_dir):
    """The app's Key Vault role was removed by hand: the deploy gives it back, and App Service denies
    access (and caches that) until the new assignment applies, so the deploy refreshes as it waits."""
    def change(state):
        principal = state["apps"][APP]["identity"]["principalId"]
        state["roles"] = [r for r in state["roles"]
                          if not (r["principalId"] == principal and r["role"] == "Key Vault Secrets User")]
        state["role_delays"] = {"Key Vault Secrets User": 2}

    fake = deployed_copy(flex_deployment, make_fake_az, change)
    result = redeploy(fake, env_file, project_dir)
    assert_ok(result)
    calls = fake.calls()
    assert [command_of(c) for c in calls if is_mutating(c)][0] == "role assignment create"
    assert len(refreshes(calls)) == 3, "the run's refresh, then one for each cached denial\n" + result.stderr
    assert "AccessToKeyVaultDenied" in result.stderr and "all 3 resolved" in result.stderr


def test_a_reference_that_does_not_resolve_is_named_with_its_status_and_why(flex_deployment, make_fake_az, env_file,
                                                                           project_dir):
    def change(state):
        principal = state["apps"][APP]["identity"]["principalId"]
        state["roles"] = [r for r in state["roles"]
                          if not (r["principalId"] == principal and r["role"] == "Key Vault Secrets User")]
        state["role_delays"] = {"Key Vault Secrets User": 1000}  # never applies within the wait

    fake = deployed_copy(flex_deployment, make_fake_az, change)
    result = redeploy(fake, env_file, project_dir)
    assert result.returncode != 0
    error = result.stderr.split("ERROR: Key Vault references of imgsync-test did not all resolve", 1)[1]
    for name in NAMES:
        assert f"  - {name}: AccessToKeyVaultDenied: Key Vault reference was not able to be resolved because site " \
               "was denied access" in error
    assert "its Key Vault Secrets User role can take up to 10 minutes to apply" in error
    assert "everything else is deployed" in error
    calls = fake.calls()
    assert len(status_reads(calls)) == 1 + 5, "bounded: the first look, then DEPLOY_RETRY_ATTEMPTS"
    assert not parse_failures(calls) and not leaks(calls)


def test_a_stale_reference_is_refreshed_even_when_nothing_else_changed(flex_deployment, make_fake_az, env_file,
                                                                      project_dir):
    """A reference App Service failed to resolve earlier (say, while the vault was being recovered) stays
    failed for up to 24 hours: a run that finds one asks for the refresh although it changed nothing."""
    def change(state):
        status = state["apps"][APP]["kv_status"]
        status["TRAEDE_APP_KEY"] = ["VaultNotFound", "Key Vault reference was not able to be resolved because vault "
                                    "'x' could not be found.", "x", "TRAEDE-APP-KEY"]

    fake = deployed_copy(flex_deployment, make_fake_az, change)
    result = redeploy(fake, env_file, project_dir)
    assert_ok(result)
    calls = fake.calls()
    assert [command_of(c) for c in calls if is_mutating(c)] == ["rest"]
    assert "refreshing (1 of 3 do not read Resolved)" in result.stderr
    assert fake.state()["apps"][APP]["kv_status"]["TRAEDE_APP_KEY"][0] == "Resolved"
