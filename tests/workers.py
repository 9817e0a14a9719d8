"""Functions instances in their own processes, for tests that need real processes (and ``kill -9``)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class Workers:
    """``--count`` Functions instances in their own processes (``bench.burst_worker``): each runs the blob
    trigger's work for the names it is fed and serves the product queue, as a real instance does."""

    def __init__(self, env, count=2, parallel=4, visibility=30):
        self._command = [sys.executable, "-m", "bench.burst_worker", "--parallel", str(parallel),
                         "--queue", env["PRODUCT_SYNC_QUEUE"], "--visibility", str(visibility)]
        self._env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        self.processes = [self._start() for _ in range(count)]
        for process in self.processes:
            assert process.stdout.readline().strip() == "ready"
        self._lock = threading.Lock()
        self._turn = 0

    def _start(self):
        return subprocess.Popen(self._command, cwd=REPO, env=self._env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)

    def crash(self, index):
        """``kill -9`` of one instance (its leases and in-flight messages are left behind), and a new instance
        in its place, as the platform would start one."""
        with self._lock:
            dead = self.processes[index]
            dead.kill()
            dead.wait(10)
            fresh = self._start()
            assert fresh.stdout.readline().strip() == "ready"
            self.processes[index] = fresh

    def fire(self, name):
        with self._lock:
            process = self.processes[self._turn % len(self.processes)]
            self._turn += 1
            process.stdin.write(name + "\n")
            process.stdin.flush()

    def stop(self):
        counts = []
        for process in self.processes:
            process.stdin.close()
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
            out = process.stdout.read()
            process.wait(60)
            counts.append(json.loads(out.strip().splitlines()[-1]))
        return counts
