"""Helpers for the deploy script tests: paths, the fake `az` directory, a fake project, assertions.

Kept apart from conftest.py (fixtures only) so test modules can import them by a unique name.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO / "deploy"
HERE = Path(__file__).resolve().parent
SETUP_HINT = ("run scripts/setup-azure-cli.sh (installs azure-cli and shellcheck into .venv-azcli, and the "
              "oldest supported azure-cli into .venv-azcli-min)")

SECRETS = {
    "WALLIE_PASSWORD": "wallie-pw-Zq81!SECRET",
    "TRAEDE_ACCESS_TOKEN": "traede-token-Kx92SECRET",
    "TRAEDE_APP_KEY": "traede-appkey-Mv73SECRET",
}

ENV_FILE_TEXT = """\
# test deployment
RESOURCE_GROUP=rg-imgsync-test
LOCATION=westeurope
APP_NAME=imgsync-test
IMAGES_STORAGE_ACCOUNT=stproductimgtest
WALLIE_BASE_URL=https://wallie.example.com/api
WALLIE_TENANT=acme
WALLIE_USERNAME=svc-images
TRAEDE_BASE_URL=https://api.traede.example.com
SYNC_SCHEDULE="0 30 1 * * *"
"""

# Commands that change something in Azure; a second deploy must make none of them.
MUTATING_VERBS = {"create", "assign", "set", "register", "recover", "delete", "purge", "update", "config-zip",
                  "restart"}


def az_cli_venv():
    return Path(os.environ.get("AZ_CLI_VENV") or REPO / ".venv-azcli")


def az_cli_min_venv():
    return Path(os.environ.get("AZ_CLI_MIN_VENV") or REPO / ".venv-azcli-min")


def parser_venv():
    """The CLI whose parser checks the calls: the pinned one, or with DEPLOY_TESTS_CLI=floor the oldest
    supported one (the whole deploy suite against the floor: DEPLOY_TESTS_CLI=floor scripts/test.sh
    tests/deploy)."""
    return az_cli_min_venv() if os.environ.get("DEPLOY_TESTS_CLI") == "floor" else az_cli_venv()


def az_min_version():
    """AZ_MIN_VERSION from deploy/lib.sh: the one place the scripts state it."""
    import re

    return re.search(r'^AZ_MIN_VERSION="([0-9.]+)"$', (DEPLOY_DIR / "lib.sh").read_text(), flags=re.M).group(1)


class FakeAz:
    """A directory with the fake `az` first on PATH and the fake Azure's state."""

    def __init__(self, root, cli_python, socket_path):
        self.root = Path(root)
        self.bin = self.root / "bin"
        self.state_dir = self.root / "state"
        self.build_dir = self.root / "build"
        for directory in (self.bin, self.state_dir, self.build_dir):
            directory.mkdir(parents=True, exist_ok=True)
        shim = self.bin / "az"
        shim.write_text(f'#!/bin/sh\nexec "{cli_python}" -I -S "{HERE / "az_client.py"}" "$@"\n')
        shim.chmod(0o755)
        # The scripts' python3 (package.py, azhelp.py, monitoring.py): this interpreter, not a version
        # manager's shim, which costs ~0.1 s a start.
        python3 = self.bin / "python3"
        if not python3.exists():
            python3.symlink_to(sys.executable)
        self.socket_path = socket_path
        # The fake refuses (and logs) any az call whose arguments carry one of these.
        self.watch(**SECRETS)

    def watch(self, **secrets):
        """Secrets the fake must never see on a command line, besides the keys it issues itself."""
        path = self.state_dir / "watched-secrets.json"
        watched = json.loads(path.read_text()) if path.exists() else {}
        watched.update(secrets)
        path.write_text(json.dumps(watched))

    def env(self, **extra):
        env = {
            "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            "TMPDIR": str(self.root),
            "FAKE_AZ_STATE": str(self.state_dir),
            "FAKE_AZ_SOCKET": str(self.socket_path),
            "DEPLOY_RETRY_SLEEP": "0",
            "DEPLOY_RETRY_ATTEMPTS": "5",
            "DEPLOY_BUILD_DIR": str(self.build_dir),
        }
        env.update({k: v for k, v in extra.items() if v is not None})
        return env

    @property
    def log_path(self):
        return self.state_dir / "calls.jsonl"

    def calls(self):
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def clear_log(self):
        if self.log_path.exists():
            self.log_path.unlink()

    def state(self):
        return json.loads((self.state_dir / "state.json").read_text())

    def write_state(self, state):
        (self.state_dir / "state.json").write_text(json.dumps(state))

    def copy_state_from(self, other):
        shutil.copy(other.state_dir / "state.json", self.state_dir / "state.json")


def make_project(root):
    """A minimal Functions project tree, independent of the real app code."""
    root = Path(root)
    (root / "functions").mkdir(parents=True)
    (root / "shared").mkdir()
    (root / "tests").mkdir()
    (root / "devtools").mkdir()
    (root / "deploy").mkdir()
    (root / "host.json").write_text('{"version": "2.0"}\n')
    (root / "function_app.py").write_text("import azure.functions as func\napp = func.FunctionApp()\n")
    (root / "requirements.txt").write_text("azure-functions\nrequests\n")
    (root / "functions" / "__init__.py").write_text("")
    (root / "functions" / "image_uploaded.py").write_text('"""Blob trigger."""\n')
    (root / "shared" / "__init__.py").write_text("")
    (root / "tests" / "test_something.py").write_text("def test_x():\n    pass\n")
    (root / "devtools" / "seed.py").write_text("")
    (root / "deploy" / "deploy.sh").write_text("#!/bin/sh\n")
    (root / "local.settings.json").write_text('{"Values": {"WALLIE_PASSWORD": "local-secret"}}\n')
    (root / ".funcignore").write_text("# not deployed\n.git*\n.vscode\ntests/\ndevtools/\nbench/\ndeploy/\n.venv*\n")
    return root


def run_script(script, fake, *args, secrets=True, extra_env=None, timeout=300):
    env = fake.env(**(SECRETS if secrets else {}))
    env.update(extra_env or {})
    started = time.monotonic()
    result = subprocess.run(["bash", str(DEPLOY_DIR / script), *map(str, args)], capture_output=True,
                            text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
    result.seconds = time.monotonic() - started
    return result


def assert_ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr}"


def parse_failures(calls):
    return [c for c in calls if c["parse"] != "ok"]


def leaks(calls):
    """The calls the fake refused because their arguments carried a secret."""
    return [c for c in calls if c.get("leaks")]


def command_of(call):
    return call.get("command") or ""


def is_mutating(call):
    command = command_of(call)
    if command == "rest":
        return (call.get("params", {}).get("method") or "get").lower() != "get"
    return command.split(" ")[-1] in MUTATING_VERBS


BINDING_PROBE = r"""
import json
import function_app
out = {}
for function in function_app.app.get_functions():
    bindings = []
    for binding in function.get_bindings():
        raw = binding.get_dict_repr()
        bindings.append({k: getattr(v, "value", v) for k, v in raw.items()})
    out[function.get_function_name()] = bindings
print(json.dumps(out, default=str))
"""


def app_bindings(settings):
    """The bindings the Functions host indexes from this repository's app when it runs with SETTINGS
    (the app settings as environment variables, as the host passes them): {function: [binding, ...]}."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IMAGES_", "WALLIE_", "TRAEDE_", "BLOB_TRIGGER", "AzureWebJobs"))}
    env.update(settings)
    result = subprocess.run([sys.executable, "-c", BINDING_PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def resolve_app_setting_references(text, settings):
    """'%IMAGES_CONTAINER%/{name}' with the %NAME% parts replaced by the settings' values, as the host does."""
    import re

    return re.sub(r"%([A-Za-z0-9_]+)%", lambda m: settings[m.group(1)], text)


def ask_parser(socket_path, argv):
    """Check one az argument list with the parse server directly (as the fake az does)."""
    from az_client import roundtrip

    return roundtrip(socket_path, {"argv": argv, "cwd": os.getcwd()})


def dry_run_commands(stdout):
    """The az argument lists a --dry-run printed ("+ az ..." lines, shell-quoted)."""
    import shlex

    return [shlex.split(line[len("+ az "):]) for line in stdout.splitlines() if line.startswith("+ az ")]


def with_temporary_files(argv, tmp_path):
    """The dry run names the temporary files it would write (a secret, the settings as JSON, the webhook
    URL); the CLI reads or checks them, so stand in real ones."""
    stand_ins = {"<temporary file holding": ("secret", "value"),
                 "@<temporary file with the settings as JSON>": ("settings.json", '{"A": "b"}'),
                 "@<temporary file with the webhook URL": ("endpoint", "https://example.com/hook"),
                 "@<temporary file with the role definition as JSON>": ("role.json", json.dumps({
                     "Name": "Image Sync Image Reader and Tagger (stproductimgtest)",
                     "DataActions": ["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"],
                     "AssignableScopes": ["/subscriptions/00000000-0000-0000-0000-000000000001"]}))}
    result = []
    for arg in argv:
        for prefix, (name, content) in stand_ins.items():
            if arg.startswith(prefix):
                path = tmp_path / name
                path.write_text(content)
                arg = ("@" if arg.startswith("@") else "") + str(path)
                break
        result.append(arg)
    return result
