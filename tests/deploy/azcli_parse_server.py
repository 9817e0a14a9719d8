"""Check `az` argument lists against the real Azure CLI's parser, offline; optionally answer them
from the fake Azure in fake_az.py.

Runs inside the CLI venv (`.venv-azcli`, made by scripts/setup-azure-cli.sh) as one long-lived
process: loading azure-cli costs about a second per start and a deploy run makes ~70 calls, so each
call through a fresh `az` would make the tests several times slower.

How a check works: the server imports azure-cli once and replaces `AzCliCommandInvoker._run_job` (the
step after parsing and validation that would call Azure) with one that raises a sentinel. For each
request it runs the real `cli.invoke(argv)` in this process, so the real command table, argparse
parser (required arguments, choices, unknown arguments, misspelt commands) and the command's own
validators all run. Nothing can reach Azure: the profile in AZURE_CONFIG_DIR is a fake one without
tokens (so validators that only need a subscription id run on) and every socket connect raises.
Outcomes:

- ``ok``     the sentinel was reached, or - after the arguments had parsed - a validator needed a
             login/token or the network;
- ``error``  anything else: argparse errors (exit 2), validation errors, unknown commands.

The reply carries the parsed arguments (the handler's keyword arguments as the parser produced them,
before validation); the fake Azure keys its resources on them. Identical argument lists without file
arguments are answered from a cache.

Protocol: a Unix socket; one JSON line in, one JSON line out.
  {"argv": [...], "cwd": "..."}                      -> {"status", "command", "params", "stderr", ...}
  {"argv": [...], "cwd": "...", "fake_state": DIR}   -> the fake `az`'s {"stdout", "stderr", "rc"}

Usage: python azcli_parse_server.py SOCKET_PATH   (prints "ready" on stdout when listening)
"""

import io
import json
import os
import signal
import socket
import socketserver
import sys
import tempfile
import time

os.environ.setdefault("AZURE_CORE_COLLECT_TELEMETRY", "0")
os.environ.setdefault("AZURE_CORE_NO_COLOR", "1")
os.environ.setdefault("AZURE_CORE_SURVEY_MESSAGE", "0")
os.environ.setdefault("AZURE_CORE_DISABLE_PROGRESS_BAR", "1")
# On a parse error some CLI versions (2.72.0, not 2.91.0) ask an online service for suggestions first:
# not here, so that the error is the parser's own on every version.
os.environ.setdefault("AZURE_CORE_ERROR_RECOMMENDATION", "off")
os.environ["AZURE_EXTENSION_USE_DYNAMIC_INSTALL"] = "no"  # an unknown command must not look for extensions

import azure.cli.core.util  # noqa: E402
from azure.cli.core import get_default_cli  # noqa: E402
from azure.cli.core.commands import AzCliCommandInvoker  # noqa: E402

# A fresh config dir makes every CLI start look up the latest CLI version online; not here.
azure.cli.core.util.handle_version_update = lambda: None

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_az  # noqa: E402
from azure.cli.core import __version__ as CLI_VERSION  # noqa: E402

fake_az.CLI_VERSION = CLI_VERSION  # what the fake's `az version` reports, unless a test says otherwise

# Commands from each module the deploy scripts use, parsed once at start so that the modules are
# imported before the first timed request.
WARM_UP = [
    ["group", "show", "-n", "warm"],
    ["storage", "account", "show", "-n", "warm"],
    ["storage", "container-rm", "exists", "--storage-account", "warm", "-n", "warm"],
    ["functionapp", "show", "-n", "warm", "-g", "warm"],
    ["keyvault", "show", "-n", "warm"],
    ["role", "assignment", "list", "--scope", "/subscriptions/0"],
    ["eventgrid", "system-topic", "list"],
    ["resource", "show", "--ids", "/subscriptions/0/resourceGroups/w/providers/Microsoft.Web/sites/w"],
    ["provider", "show", "-n", "Microsoft.Web"],
    ["account", "show"],
    ["tag", "list"],
    ["rest", "--url", "/subscriptions/0/providers/Microsoft.Authorization/permissions"],
]

LOGIN_HINTS = ("az login", "please run 'az login'", "msal token cache", "get_access_token")

# Arguments naming files are checked against the file system by some validators: such argument lists
# are never answered from the cache.
FILE_ARGUMENTS = {"--file", "-f", "--src", "--src-path", "--properties", "-p"}


class _Executed(BaseException):
    """Raised instead of running a command: parsing and validation passed."""


class _NetworkBlocked(Exception):
    """Raised by every socket connect."""


_captured = {}
_cache = {}


def _fake_run_job(self, expanded_arg, cmd_copy):
    raise _Executed(cmd_copy.name)


_real_validation = AzCliCommandInvoker._validation


def _capturing_validation(self, parsed_ns):
    _captured["params"] = _plain_params(parsed_ns)
    return _real_validation(self, parsed_ns)


AzCliCommandInvoker._run_job = _fake_run_job
AzCliCommandInvoker._validation = _capturing_validation


def _plain_params(namespace):
    params = {}
    for key, value in vars(namespace).items():
        if key.startswith("_") or key in ("cmd", "func", "command"):
            continue
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
        params[key] = value
    return params


def _block_network():
    def refuse(*_args, **_kwargs):
        if "params" in _captured:  # only what validators or the command itself try counts
            _captured["network"] = True
        raise _NetworkBlocked("network disabled by the parse check")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse


def _invoke(argv):
    """Run the real CLI on argv; return (status or None, command, exit code or message)."""
    cli = get_default_cli()
    try:
        exit_code = cli.invoke(argv, out_file=io.StringIO())
    except _Executed as done:
        return "ok", str(done), 0
    except SystemExit as ex:  # argparse exits before knack can catch it
        exit_code = ex.code
    return None, (cli.data or {}).get("command"), exit_code


def check(argv, cwd):
    """Parse-check one argument list with stdout/stderr (file descriptors 1 and 2) captured."""
    _captured.clear()
    started = time.monotonic()
    saved_cwd = os.getcwd()
    try:
        os.chdir(cwd)
    except OSError:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as err_file, open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 1)
        os.dup2(err_file.fileno(), 2)
        try:
            status, command, extra = _invoke(argv)
        except BaseException as ex:  # noqa: BLE001 - report anything unexpected as an error
            status, command, extra = None, None, f"{type(ex).__name__}: {ex}"
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            os.chdir(saved_cwd)
        err_file.seek(0)
        stderr = err_file.read().decode("utf-8", "replace")
    if status is None:
        parsed = "params" in _captured
        text = stderr.lower()
        if parsed and (_captured.get("network") or any(hint in text for hint in LOGIN_HINTS)):
            status = "ok"
        else:
            status = "error"
            if isinstance(extra, str):
                stderr += extra
    return {
        "status": status,
        "command": command,
        "params": _captured.get("params", {}),
        "stderr": stderr,
        "network_attempted": bool(_captured.get("network")),
        "seconds": round(time.monotonic() - started, 3),
    }


def cached_check(argv, cwd):
    cacheable = not any(arg.startswith("@") or arg in FILE_ARGUMENTS for arg in argv)
    key = json.dumps(argv)
    if cacheable and key in _cache:
        return dict(_cache[key], cached=True)
    reply = check(argv, cwd)
    if cacheable:
        _cache[key] = reply
    return reply


class _Handler(socketserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline()
        if not line:
            return
        request = json.loads(line)
        parsed = cached_check(request["argv"], request.get("cwd") or os.getcwd())
        if request.get("fake_state"):
            reply = fake_az.respond(request["argv"], parsed, request["fake_state"])
        else:
            reply = parsed
        self.wfile.write(json.dumps(reply).encode() + b"\n")


def warm_up():
    for argv in WARM_UP:
        check(argv, os.getcwd())
    _cache.clear()


def main():
    path = sys.argv[1]
    _block_network()
    warm_up()
    if os.path.exists(path):
        os.unlink(path)
    server = socketserver.UnixStreamServer(path, _Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if os.path.exists(path):
            os.unlink(path)


if __name__ == "__main__":
    main()
