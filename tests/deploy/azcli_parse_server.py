"""Check `az` argument lists against the real Azure CLI's parser, offline.

Runs inside the CLI venv (`.venv-azcli`, made by scripts/setup-azure-cli.sh) as one long-lived process,
because loading azure-cli costs about a second per start and a deploy run makes dozens of calls.

How a check works: the server imports azure-cli once and replaces `AzCliCommandInvoker._run_job` (the
step after parsing and validation that would call Azure) with one that raises a sentinel. For each
request it forks; the child runs the real `cli.invoke(argv)`, so the real command table, argparse
parser (required arguments, choices, unknown arguments, misspelt commands) and the command's own
validators all run. The child has no route to Azure: it uses a fake, token-less profile in
AZURE_CONFIG_DIR (so validators that only need a subscription id run on) and any socket connect
raises. Outcomes:

- ``ok``     the sentinel was reached, or a validator needed a login/token or the network (so the
             arguments had already parsed);
- ``error``  anything else: argparse errors (exit 2), validation errors, unknown commands.

The child also returns the parsed arguments (the handler's keyword arguments, as the parser produced
them before validation), which the fake `az` uses to key its fake resources.

Protocol: a Unix socket; one JSON line in (``{"argv": [...], "cwd": "..."}``), one JSON line out
(``{"status", "command", "params", "stderr", "seconds"}``).

Usage: python azcli_parse_server.py SOCKET_PATH   (prints "ready" on stdout when listening)
"""

import io
import json
import os
import signal
import socket
import socketserver
import sys
import time

os.environ.setdefault("AZURE_CORE_COLLECT_TELEMETRY", "0")
os.environ.setdefault("AZURE_CORE_NO_COLOR", "1")
os.environ.setdefault("AZURE_CORE_SURVEY_MESSAGE", "0")
os.environ.setdefault("AZURE_CORE_DISABLE_PROGRESS_BAR", "1")
os.environ["AZURE_EXTENSION_USE_DYNAMIC_INSTALL"] = "no"  # an unknown command must not look for extensions

from azure.cli.core import get_default_cli  # noqa: E402
from azure.cli.core.commands import AzCliCommandInvoker  # noqa: E402

# Commands from each module the deploy scripts use, parsed once in the parent so that the forked
# children find the modules already imported (a cold module load costs up to ~0.7 s).
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
    ["ad", "signed-in-user", "show"],
    ["account", "show"],
    ["tag", "list"],
]

LOGIN_HINTS = ("az login", "please run 'az login'", "msal token cache", "get_access_token")


class _Executed(BaseException):
    """Raised instead of running a command: parsing and validation passed."""


class _NetworkBlocked(Exception):
    """Raised by every socket connect in a child."""


_captured = {}


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
        _captured["network"] = True
        raise _NetworkBlocked("network disabled by the parse check")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse


def _invoke(argv):
    """Run the real CLI on argv in this process; return (status, command, stderr)."""
    cli = get_default_cli()
    out = io.StringIO()
    try:
        exit_code = cli.invoke(argv, out_file=out)
    except _Executed as done:
        return "ok", str(done), ""
    except SystemExit as ex:  # argparse exits before knack can catch it
        exit_code = ex.code
    return None, (cli.data or {}).get("command"), exit_code


def _child(argv, cwd, write_fd):
    """Forked child: redirect output, block the network, invoke, report on write_fd."""
    _captured.clear()
    started = time.monotonic()
    try:
        os.chdir(cwd)
    except OSError:
        pass
    err_path = f"/tmp/.azparse-{os.getpid()}.err"
    err_fd = os.open(err_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(err_fd, 2)
    _block_network()
    status, command, extra = "error", None, None
    try:
        status, command, extra = _invoke(argv)
    except BaseException as ex:  # noqa: BLE001 - report anything unexpected as an error
        status, extra = None, f"{type(ex).__name__}: {ex}"
    sys.stderr.flush()
    os.lseek(err_fd, 0, os.SEEK_SET)
    stderr = os.read(err_fd, 1 << 20).decode("utf-8", "replace")
    os.unlink(err_path)
    if status is None:
        # Arguments parsed (the validation step saw them) and a validator then needed Azure.
        parsed = "params" in _captured
        text = stderr.lower()
        if parsed and (_captured.get("network") or any(hint in text for hint in LOGIN_HINTS)):
            status = "ok"
        else:
            status = "error"
            if isinstance(extra, str):
                stderr += extra
    reply = {
        "status": status,
        "command": command,
        "params": _captured.get("params", {}),
        "stderr": stderr,
        "network_attempted": bool(_captured.get("network")),
        "seconds": round(time.monotonic() - started, 3),
    }
    data = json.dumps(reply).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(write_fd, view):]
    os._exit(0)


def check(argv, cwd):
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(argv, cwd, write_fd)
    os.close(write_fd)
    chunks = []
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    if not chunks:
        return {"status": "error", "stderr": "parse child died without a reply", "params": {}}
    return json.loads(b"".join(chunks))


class _Handler(socketserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline()
        if not line:
            return
        request = json.loads(line)
        reply = check(request["argv"], request.get("cwd") or os.getcwd())
        self.wfile.write(json.dumps(reply).encode() + b"\n")


def warm_up():
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        for argv in WARM_UP:
            try:
                _invoke(argv)
            except BaseException:  # noqa: BLE001 - warm-up only imports modules
                pass
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def main():
    path = sys.argv[1]
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
