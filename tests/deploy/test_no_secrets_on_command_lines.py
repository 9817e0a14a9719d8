"""No key or secret on a command line: anyone on the machine can read a process's arguments (ps, /proc),
and shells keep them in their history. The fake az refuses - exit 97, logged as a leak - any argument list
that carries a key it issued (account, master, function and system keys), a watched partner secret, a Key
Vault secret's value, or a keyed connection string, SAS signature or function key in a URL. The deploy,
its summary and the docs pass keys through files and pipes instead."""

import re
import subprocess

import pytest
from deploy_harness import REPO, SECRETS, assert_ok, leaks, run_script

APP = "imgsync-test"


def az(fake, *argv):
    return subprocess.run(["az", *argv], capture_output=True, text=True, env=fake.env())


@pytest.fixture
def deployed(flex_deployment, make_fake_az):
    fake = make_fake_az()
    fake.copy_state_from(flex_deployment["fake"])
    return fake


@pytest.mark.parametrize("argv, what", [
    (["functionapp", "config", "appsettings", "set", "-g", "rg-imgsync-test", "-n", APP, "--settings",
      "AzureWebJobsStorage=DefaultEndpointsProtocol=https;AccountName=x;AccountKey=abc=="],
     "a storage connection string with an account key"),
    (["functionapp", "config", "appsettings", "set", "-g", "rg-imgsync-test", "-n", APP, "--settings",
      f"WALLIE_PASSWORD={SECRETS['WALLIE_PASSWORD']}"], "the secret in $WALLIE_PASSWORD"),
    (["keyvault", "secret", "set", "--vault-name", "kv", "--name", "TRAEDE-APP-KEY", "--value",
      SECRETS["TRAEDE_APP_KEY"]], "the secret in $TRAEDE_APP_KEY"),
    (["rest", "--method", "post", "--url", "https://example.azurewebsites.net/admin/functions/nightly_sync",
      "--headers", "x-functions-key=fake-master-key"], "the master key"),
    (["eventgrid", "system-topic", "event-subscription", "create", "-n", "s", "-g", "rg-imgsync-test",
      "--system-topic-name", "stproductimgtest-events", "--endpoint",
      f"https://h/runtime/webhooks/blobs?functionName=Host.Functions.image_uploaded&code=fake-blobs-key-{APP}"],
     "the blobs_extension system key"),
], ids=["account-key", "partner-password", "secret-value", "master-key", "key-in-url"])
def test_the_fake_refuses_a_command_line_that_carries_a_secret(deployed, argv, what):
    before = deployed.state()
    result = az(deployed, *argv)
    assert result.returncode == 97 and "carries" in result.stderr and what in result.stderr
    (call,) = deployed.calls()[-1:]
    assert what in call["leaks"]
    for value in SECRETS.values():
        assert value not in result.stderr, "the refusal never repeats the secret"
    after = deployed.state()
    assert after["apps"][APP]["settings"] == before["apps"][APP]["settings"], "refused: nothing was written"


def test_no_run_of_the_scripts_puts_a_secret_on_a_command_line(deployed, env_file, project_dir):
    """A rotation, a plan and a teardown on top of the two deploys the other tests check."""
    deployed.watch(TRAEDE_APP_KEY="rotated-app-key-SECRET")
    runs = [("deploy.sh", "--project-dir", project_dir), ("deploy.sh", "--project-dir", project_dir, "--plan"),
            ("teardown.sh", "--yes", "--purge-key-vault")]
    for script, *args in runs:
        deployed.clear_log()
        result = run_script(script, deployed, "--env-file", env_file, *args, secrets=False,
                            extra_env={"TRAEDE_APP_KEY": "rotated-app-key-SECRET"})
        assert_ok(result)
        assert leaks(deployed.calls()) == [], script
        assert "rotated-app-key-SECRET" not in result.stdout + result.stderr


def doc_command_lines():
    """Every line of a bash block in README.md and docs/deploy.md, continuation lines joined."""
    lines = []
    for doc in (REPO / "README.md", REPO / "docs" / "deploy.md"):
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S):
            lines += [(doc.name, line.strip()) for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return lines


# A key or secret handed to a program as an argument: in a header or URL, as --value, or as the output of
# a command substitution that reads one (only a shell assignment may hold that: export is a builtin, so
# no process's argument list shows it).
KEY_ON_ARGV = [
    re.compile(r"x-functions-key:\s*\$"),
    re.compile(r"[?&]code=\$"),
    re.compile(r"--value\s"),
    re.compile(r"AccountKey=", re.I),
]
READS_A_SECRET = re.compile(r"\$\(az [^)]*(keys list|secret show|show-connection-string|keys renew)")
ASSIGNMENT = re.compile(r'^(export )?[A-Za-z_][A-Za-z0-9_]*="?\$\(az [^)]*\)"?$')


def test_the_docs_print_no_command_line_with_a_key():
    lines = doc_command_lines()
    assert any("keys list" in line for _, line in lines), "the docs show how to read a key"
    assert any("secret show" in line for _, line in lines)
    for doc, line in lines:
        for pattern in KEY_ON_ARGV:
            assert not pattern.search(line), f"{doc}: {line}"
        if READS_A_SECRET.search(line):
            assert ASSIGNMENT.match(line), f"{doc}: a secret read by a command substitution reaches an argument: {line}"
        if "keys list" in line:
            # the key goes from az to the next program through a pipe, never through an argument
            assert re.search(r"keys list .*\| *sed 's/\^/x-functions-key: /' *\| *curl .*-H @-", line), f"{doc}: {line}"


def test_curl_reads_a_header_from_stdin():
    """The docs rely on curl's -H @- (headers from stdin, curl 7.55+): check the curl here does that."""
    import http.server
    import threading

    seen = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            seen["key"] = self.headers.get("x-functions-key")
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    command = (f"printf 'sekrit-master\\n' | sed 's/^/x-functions-key: /' | curl -fsS -X POST "
               f"http://127.0.0.1:{server.server_port}/admin/functions/nightly_sync -H @- "
               "-H 'Content-Type: application/json' -d '{}'")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
    thread.join(10)
    server.server_close()
    assert result.returncode == 0, result.stderr
    assert seen["key"] == "sekrit-master"
    assert "sekrit-master" not in command.split("|")[-1], "not on curl's command line"
