"""Starts a real Azurite (blob + queue) on free ports in a temporary folder, for tests, demo and bench."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public; not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_binary() -> str:
    """Azurite from ``AZURITE_BIN``, the repo's node_modules (``npm install``), or PATH."""
    candidates = [os.environ.get("AZURITE_BIN"), str(REPO / "node_modules" / ".bin" / "azurite"),
                  shutil.which("azurite")]
    for c in candidates:
        if c and Path(c).exists():
            return c
    raise RuntimeError("Azurite is not installed: run `npm install` in the repository root "
                       "(or set AZURITE_BIN)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Azurite:
    """``with Azurite() as az: az.connection_string`` — a fresh, empty emulator, removed afterwards.

    With ``persist_dir`` the data lives on disk there and survives ``stop()`` (the benchmark reuses a
    seeded catalog that took minutes to upload); loading a large one takes longer, hence the timeouts.
    """

    def __init__(self, *, host: str = "127.0.0.1", extra_args: tuple[str, ...] = (),
                 scheme: str = "http", persist_dir: str | os.PathLike | None = None):
        self.host = host
        self.scheme = scheme
        self.extra_args = extra_args
        self.blob_port = free_port()
        self.queue_port = free_port()
        self.persist_dir = Path(persist_dir) if persist_dir is not None else None
        if self.persist_dir is not None:
            self.persist_dir.mkdir(parents=True, exist_ok=True)
        self.workdir = str(self.persist_dir) if self.persist_dir else tempfile.mkdtemp(prefix="azurite-")
        self.start_timeout, self.stop_timeout = (180, 60) if self.persist_dir else (60, 10)
        self.process: subprocess.Popen | None = None

    @property
    def blob_endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.blob_port}/{ACCOUNT}"

    @property
    def queue_endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.queue_port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol={self.scheme};AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.blob_endpoint};QueueEndpoint={self.queue_endpoint};")

    def start(self) -> Azurite:
        storage = ["--location", self.workdir] if self.persist_dir else ["--inMemoryPersistence"]
        args = [azurite_binary(), "--silent", "--skipApiVersionCheck", "--disableTelemetry", *storage,
                "--blobHost", self.host, "--blobPort", str(self.blob_port),
                "--queueHost", self.host, "--queuePort", str(self.queue_port), "--tableHost", self.host,
                "--tablePort", str(free_port()), *self.extra_args]
        self._log = open(os.path.join(self.workdir, "azurite.log"), "ab")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Azurite exited with {self.process.returncode}: "
                                   f"{Path(self.workdir, 'azurite.log').read_text(errors='replace')[-2000:]}")
            if _listening(self.host, self.blob_port) and _listening(self.host, self.queue_port):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Azurite did not start listening within {self.start_timeout} s")

    def stop(self) -> None:
        """SIGTERM first: a persistent Azurite writes its database to disk before it exits."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if getattr(self, "_log", None):
            self._log.close()
        if self.persist_dir is None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0
