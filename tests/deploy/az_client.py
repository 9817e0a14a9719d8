"""The `az` on PATH in the deploy tests: hands the call to the parse server, which checks it with the
real Azure CLI parser and answers it from the fake Azure (see azcli_parse_server.py, fake_az.py).

Kept to the standard library and started with `python -I -S` so each call costs ~50 ms.
Environment: FAKE_AZ_SOCKET (server socket), FAKE_AZ_STATE (fake Azure state directory).
"""

import json
import os
import socket
import sys


def roundtrip(socket_path, request):
    """Send one JSON request line to the parse server; its JSON answer, or None if it hung up."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(socket_path))
    sock.sendall(json.dumps(request).encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    return json.loads(data) if data else None


def main(argv):
    request = {"argv": argv, "cwd": os.getcwd(), "fake_state": os.environ["FAKE_AZ_STATE"]}
    reply = roundtrip(os.environ["FAKE_AZ_SOCKET"], request)
    if reply is None:
        sys.stderr.write("fake az: no answer from the parse server\n")
        return 98
    sys.stdout.write(reply["stdout"])
    sys.stderr.write(reply["stderr"])
    return reply["rc"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
