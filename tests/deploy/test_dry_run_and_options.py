"""--dry-run, --help, flags and settings validation of deploy.sh and teardown.sh."""

import pytest
from deploy_harness import (
    DEPLOY_DIR,
    SECRETS,
    ask_parser,
    assert_ok,
    dry_run_commands,
    run_script,
    with_temporary_files,
)


@pytest.mark.parametrize("plan", ["flex", "consumption", "premium"])
def test_deploy_dry_run_prints_commands_the_real_cli_accepts(plan, make_fake_az, env_file, project_dir,
                                                             parse_server, tmp_path):
    fake = make_fake_az()
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, "--hosting-plan", plan,
                        "--dry-run")
    assert_ok(result)
    assert fake.calls() == [], "a dry run calls no az at all"
    commands = dry_run_commands(result.stdout)
    names = [" ".join(c[:3]) for c in commands]
    assert names[0] == "provider register --namespace"
    assert "functionapp create --name" in names
    assert any(c[:2] == ["keyvault", "create"] for c in commands)
    for argv in commands:
        reply = ask_parser(parse_server, with_temporary_files(argv, tmp_path))
        assert reply["status"] == "ok", f"az {' '.join(argv)}\n{reply['stderr']}"
    for value in SECRETS.values():
        assert value not in result.stdout + result.stderr
    subscriptions = [c for c in commands if c[:4] == ["eventgrid", "system-topic", "event-subscription", "create"]]
    assert len(subscriptions) == 2, "Event Grid on every plan"
    refresh = [c for c in commands if c[:3] == ["rest", "--method", "post"]]
    assert len(refresh) == 1 and refresh[0][4].endswith("/config/configreferences/appsettings/refresh?api-version=2022-03-01")



def test_teardown_dry_run(make_fake_az, env_file, parse_server):
    fake = make_fake_az()
    result = run_script("teardown.sh", fake, "--env-file", env_file, "--images-resource-group", "rg-customer",
                        "--purge-key-vault", "--dry-run", secrets=False)
    assert_ok(result)
    assert fake.calls() == []
    commands = dry_run_commands(result.stdout)
    assert [c[:3] for c in commands][-3:] == [["group", "delete", "--name"], ["rest", "--method", "delete"],
                                              ["keyvault", "purge", "--name"]]
    assert "roleDefinitions" in commands[-2][4] or "role definition" in commands[-2][4]
    assert ["eventgrid", "system-topic", "event-subscription", "delete"] in [c[:4] for c in commands]
    for argv in commands:
        reply = ask_parser(parse_server, argv)
        assert reply["status"] == "ok", f"az {' '.join(argv)}\n{reply['stderr']}"


@pytest.mark.parametrize("script", ["deploy.sh", "teardown.sh"])
def test_help(script, make_fake_az):
    result = run_script(script, make_fake_az(), "--help", secrets=False)
    assert_ok(result)
    assert result.stdout.startswith(f"Usage: deploy/{script}")
    assert "--env-file" in result.stdout and "--dry-run" in result.stdout


@pytest.mark.parametrize("script", ["deploy.sh", "teardown.sh"])
def test_unknown_flag_fails(script, make_fake_az):
    result = run_script(script, make_fake_az(), "--resource-grup", "x", secrets=False)
    assert result.returncode != 0 and "unknown argument: --resource-grup" in result.stderr


def test_missing_settings_are_listed(make_fake_az):
    result = run_script("deploy.sh", make_fake_az(), "-g", "rg", secrets=False)
    assert result.returncode != 0
    assert "LOCATION APP_NAME IMAGES_STORAGE_ACCOUNT" in result.stderr


def test_unknown_setting_in_env_file_is_an_error(make_fake_az, tmp_path):
    env = tmp_path / "deploy.env"
    env.write_text("RESOURCE_GROUP=rg\nWALLIE_PASSWROD=oops\n")
    result = run_script("deploy.sh", make_fake_az(), "--env-file", env, secrets=False)
    assert result.returncode != 0 and "unknown setting 'WALLIE_PASSWROD'" in result.stderr


def test_bad_names_are_rejected_before_any_az_call(make_fake_az, env_file):
    fake = make_fake_az()
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--images-account", "Product_Images",
                        secrets=False)
    assert result.returncode != 0 and "IMAGES_STORAGE_ACCOUNT" in result.stderr
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--hosting-plan", "dedicated", secrets=False)
    assert result.returncode != 0 and "one of flex, consumption, premium" in result.stderr
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--python-version", "3.9", secrets=False)
    assert result.returncode != 0 and "PYTHON_VERSION '3.9': 3.11 or 3.12" in result.stderr
    assert fake.calls() == []


def test_plan_with_a_hosting_plan_name_says_what_changed(make_fake_az, env_file):
    """--plan used to take the hosting plan: given one now, the deploy stops and names the new flag
    rather than run a plan the operator did not ask for."""
    fake = make_fake_az()
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--plan", "premium", secrets=False)
    assert result.returncode != 0
    assert "the hosting plan is --hosting-plan premium" in result.stderr
    assert fake.calls() == []


def test_the_old_plan_setting_still_names_the_hosting_plan(make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, "--dry-run",
                        extra_env={"PLAN": "premium"})
    assert_ok(result)
    assert "now called HOSTING_PLAN" in result.stderr
    assert ["functionapp", "plan", "create"] in [c[:3] for c in dry_run_commands(result.stdout)]


def test_environment_wins_over_env_file_and_flags_win_over_both(make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, "--dry-run",
                        "--app-name", "from-flag",
                        extra_env={"LOCATION": "northeurope", "APP_NAME": "from-env"})
    assert_ok(result)
    create = next(c for c in dry_run_commands(result.stdout) if c[:2] == ["functionapp", "create"])
    assert create[create.index("--name") + 1] == "from-flag"
    assert create[create.index("--flexconsumption-location") + 1] == "northeurope"


def config_names():
    """Every name deploy.env may set: lib.sh's CONFIG_VARS and deploy.sh's APP_SETTINGS."""
    import re

    lib = (DEPLOY_DIR / "lib.sh").read_text()
    block = lib[lib.index("CONFIG_VARS=(") + len("CONFIG_VARS=("):]
    names = block[:block.index(")")].split()
    deploy = (DEPLOY_DIR / "deploy.sh").read_text()
    block = deploy[deploy.index("\nAPP_SETTINGS=(") + len("\nAPP_SETTINGS=("):]
    names += re.findall(r'^\s*"([A-Z][A-Z0-9_]*)=', block[:block.index("\n)")], flags=re.M)
    return names


def test_example_env_file_lists_every_setting():
    example = (DEPLOY_DIR / "deploy.env.example").read_text()
    names = config_names()
    assert {"PRODUCT_SYNC_QUEUE", "PRODUCT_SYNC_DELAY_SECONDS", "SYNC_STATE_CONTAINER", "RUN_HISTORY_CONTAINER",
            "RUN_HISTORY_DAYS", "ALERT_EMAIL", "ALERT_ACTION_GROUP_ID", "SAS_TTL_HOURS"} <= set(names)
    for name in names:
        assert f"{name}=" in example, f"{name} is not documented in deploy.env.example"
    for secret in SECRETS:
        assert f"\n{secret}=" not in example, "secret values belong in the environment, not the example file"


def deploy_docs():
    """The deploy's documentation: docs/deploy.md, and the README's short section pointing to it."""
    from deploy_harness import REPO

    return (REPO / "docs" / "deploy.md").read_text(), (REPO / "README.md").read_text()


def test_the_docs_state_the_cli_floor_once_and_as_the_scripts_do():
    import re

    from deploy_harness import az_min_version

    guide, readme = deploy_docs()
    assert re.findall(r"Azure CLI (\d+\.\d+(?:\.\d+)?) or newer", guide) == [az_min_version()]
    assert re.findall(r"Azure CLI (\d+\.\d+(?:\.\d+)?) or newer", readme) == [], "stated in one place"


def test_the_readme_points_to_the_deploy_guide():
    guide, readme = deploy_docs()
    section = readme.split("## Deploy to Azure\n", 1)[1].split("\n## ", 1)[0]
    assert "[docs/deploy.md](docs/deploy.md)" in section
    assert len(section.strip().splitlines()) <= 20, "a few lines; the rest is in docs/deploy.md"
    for heading in ("## Permissions", "## The one command", "## Previewing a deploy: `--plan`",
                    "## A full resync by hand", "## Re-running one product", "## Teardown",
                    "## How the scripts are tested"):
        assert heading in guide and heading not in readme, heading


@pytest.mark.parametrize("script", ["deploy.sh", "teardown.sh"])
def test_every_flag_the_docs_give_a_script_exists(script, make_fake_az):
    import re

    lines = [line for text in deploy_docs() for line in text.splitlines() if f"deploy/{script}" in line]
    flags = {flag for line in lines for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", line.split("#")[0])}
    assert flags, f"the docs show no {script} command"
    usage = run_script(script, make_fake_az(), "--help", secrets=False).stdout
    for flag in flags:
        assert flag in usage, f"the docs give deploy/{script} {flag}, which --help does not list"
