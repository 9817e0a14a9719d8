"""The README stays true: every command, setting, script and function it names exists."""
import json
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
SETTINGS_DOC = open(os.path.join(REPO, "docs", "settings.md"), encoding="utf-8").read()
HOST_SETTINGS = {"BLOB_TRIGGER_SOURCE", "SYNC_SCHEDULE"}  # read by the Functions host, not by Settings


def test_the_two_opening_commands_exist_and_are_executable():
    opening = README.split("## How it works")[0]
    commands = re.findall(r"^\./(scripts/\S+)", opening, flags=re.M)
    assert commands[:2] == ["scripts/demo.sh", "scripts/test.sh"]
    for path in commands:
        assert os.access(os.path.join(REPO, path), os.X_OK), path


def test_ci_runs_the_readme_test_command():
    ci = open(os.path.join(REPO, ".ci", "run"), encoding="utf-8").read()
    assert "scripts/test.sh" in ci


def test_every_setting_in_the_settings_reference_is_read_and_listed_in_the_example():
    table = SETTINGS_DOC
    names = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", table, flags=re.M))
    names |= set(re.findall(r"^\| `[A-Z_]+` / `([A-Z][A-Z0-9_]+)`", table, flags=re.M))
    settings_source = open(os.path.join(REPO, "shared", "config", "settings.py"), encoding="utf-8").read()
    example = json.load(open(os.path.join(REPO, "local.settings.json.example")))["Values"]
    assert len(names) > 20
    for name in names - HOST_SETTINGS:
        assert f'"{name}"' in settings_source, f"{name} is in docs/settings.md but not read by Settings"
    identity_only = {n for n in names if "__" in n}
    for name in names - identity_only:
        assert name in example, f"{name} is missing from local.settings.json.example"


def test_every_function_in_the_readme_table_is_in_the_app(indexed):
    table = README.split("## Running in Azure", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.M))
    assert named and named <= set(indexed)
    for name in indexed:
        assert f"`{name}`" in README, f"function {name} is not documented"


def test_the_settings_reference_gives_each_default_the_code_has():
    """docs/settings.md cannot drift from Settings: every default it states is the one the code reads."""
    from shared.config import settings as module

    source = open(module.__file__, encoding="utf-8").read()
    calls = re.findall(r'r\.(?:text|number|integer|flag|choice)\(\s*"([A-Z][A-Z0-9_]+)",\s*([^,)\n]+)', source)
    assert len(calls) > 20
    rows = dict(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \| ((?:[^|\\]|\\.)+) \|", SETTINGS_DOC, flags=re.M))
    for name, expression in calls:
        default = eval(expression, vars(module))  # a literal or one of the module's constants
        if default is None:
            continue
        written = rows[name].strip().strip("`").replace("\\|", "|")
        expected = str(default).lower() if isinstance(default, (bool, str)) else f"{default:g}"
        assert written.lower() == expected, f"{name}: docs/settings.md says {written!r}, the code {default!r}"
