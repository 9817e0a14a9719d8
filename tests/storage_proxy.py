"""A TCP proxy in front of a real Azurite that can kill it at an exact request: "storage dies while the listing
fetches page 2" happens at the same point on every run, whatever the machine's speed.

``StorageProxy(azurite, die_at=...)`` listens on a port of its own and forwards every connection to
Azurite's blob endpoint. ``die_at(request_line)`` sees the first line of each request; when it returns True,
Azurite is killed (SIGKILL) and the proxy stops listening and drops every connection, so the client sees
what it sees when the storage account goes away: the request in flight breaks, new connections are refused.
``revive()`` starts Azurite again (its data persisted on disk) and forwards again on the same port.
``delay(request_line)`` (seconds) holds a request back before it is forwarded: "the listing is slow" at the same
point on every run.
"""
from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable

REQUEST_LINE = re.compile(rb"(GET|PUT|POST|HEAD|DELETE|OPTIONS) (\S+) HTTP/1\.1\r\n")


class StorageProxy:
    def __init__(self, azurite, die_at: Callable[[str], bool] | None = None,
                 delay: Callable[[str], float] | None = None):
        self.azurite = azurite
        self.die_at = die_at
        self.delay = delay
        self.requests: list[str] = []
        self.died = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server: socket.socket | None = None
        self.port = 0
        self._listen()

    @property
    def connection_string(self) -> str:
        return self.azurite.connection_string.replace(f":{self.azurite.blob_port}/", f":{self.port}/")

    def _listen(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self.port = server.getsockname()[1]
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((self.azurite.host, self.azurite.blob_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client:
                    for match in REQUEST_LINE.finditer(data):
                        line = f"{match.group(1).decode()} {match.group(2).decode()}"
                        with self._lock:
                            self.requests.append(line)
                        if self.die_at is not None and not self.died.is_set() and self.die_at(line):
                            self.kill()
                            return
                        if self.delay is not None:
                            time.sleep(self.delay(line))
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.close()
                except OSError:
                    pass

    def kill(self) -> None:
        """Storage dies: Azurite gets SIGKILL, nothing listens on the proxy's port, open connections break."""
        self.died.set()
        process = self.azurite.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)
        self.close()

    def revive(self) -> None:
        """Storage is back: Azurite starts again on its ports with the data it had persisted."""
        self.die_at = None
        self.azurite.start()
        self._listen()
        self.died.clear()

    def close(self) -> None:
        """Stop listening and break every open connection."""
        with self._lock:
            server, self._server = self._server, None
            connections, self._connections = list(self._connections), set()
        if server is not None:
            server.close()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
