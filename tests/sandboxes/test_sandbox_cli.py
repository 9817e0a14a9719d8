"""`python -m devtools.sandboxes`: starts on port 0, announces its URLs in --ready-file, stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parents[2]


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("the sandboxes never wrote their ready file")


def test_cli_serves_both_sandboxes_and_exits_cleanly_on_sigterm(tmp_path):
    ready = tmp_path / "ready.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.sandboxes", "--wallie-port", "0", "--traede-port", "0",
         "--ready-file", str(ready), "--no-download", "--throttle-rate", "0", "--token-lifetime", "60"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        urls = wait_for(ready, process)
        with requests.Session() as http:
            http.trust_env = False
            token = http.post(f"{urls['wallie']}/Token", json={"username": "wallie-user", "password": "wallie-pass"},
                              headers={"X-Tenant": "TENANT"}).json()
            assert token["expiresIn"] == 60
            sync = http.post(f"{urls['traede']}/products/images/sync",
                             json={"products": [{"item_number": "p1", "images": []}]},
                             headers={"Authorization": "Bearer traede-token", "X-Traede-App-Key": "traede-app-key"})
            assert sync.status_code == 200
            assert http.post(f"{urls['traede']}/_sandbox/faults", json={"outage": True}).status_code == 200
            state = http.get(f"{urls['traede']}/_sandbox/state").json()
            assert state["products"] == {"p1": []} and state["faults"]["outage"] is True
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    lines = stdout.splitlines()
    assert len(lines) == 2
    assert urls["wallie"] in lines[0] and "wallie-pass" in lines[0]
    assert urls["traede"] in lines[1] and "traede-app-key" in lines[1]
    assert stderr == ""  # quiet: no per-request log lines
    assert not ready.exists()


def test_cli_rejects_invalid_fault_rate(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "devtools.sandboxes", "--wallie-port", "0", "--traede-port", "0", "--error-rate", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == 2 and "error_rate" in result.stderr
