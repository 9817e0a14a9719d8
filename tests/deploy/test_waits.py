"""Waiting on Azure is sized to what Azure documents: a new role assignment can take up to 10 minutes to
apply (Azure RBAC troubleshooting), so every wait lasts up to DEPLOY_WAIT_SECONDS (900 by default) - the
deployer's new Key Vault role, the host starting on identity-based storage, the Flex deployment
container, the Key Vault references. The fake applies each new role assignment only after N calls."""

from deploy_harness import assert_ok, leaks, parse_failures, run_script

# Every new role assignment is refused for its first 40 checks: ten minutes at one look every 15 s.
SLOW_RBAC = {"role_delay_reads": 40}


def test_a_deploy_rides_out_role_assignments_that_take_ten_minutes(make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    fake.write_state(dict(SLOW_RBAC))
    # no DEPLOY_RETRY_ATTEMPTS: the looks are derived from the 900 s wait at 15 s apart (61)
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir,
                        extra_env={"DEPLOY_RETRY_ATTEMPTS": ""}, timeout=600)
    assert_ok(result)
    calls = fake.calls()
    assert not parse_failures(calls) and not leaks(calls)
    assert "waiting for your Key Vault Secrets Officer role on" in result.stderr
    assert "attempt 40/61" in result.stderr and "up to 15 minutes" in result.stderr
    assert "Key Vault references: all 3 resolved" in result.stderr


def test_the_former_five_minutes_would_have_given_up(make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    fake.write_state(dict(SLOW_RBAC))
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir,
                        extra_env={"DEPLOY_RETRY_ATTEMPTS": "", "DEPLOY_WAIT_SECONDS": "300"}, timeout=600)
    assert result.returncode != 0
    assert "gave up waiting for: your Key Vault Secrets Officer role" in result.stderr
    assert "(after 21 attempts over about 5 minutes)" in result.stderr
