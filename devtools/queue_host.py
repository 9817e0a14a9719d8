"""What the Functions host does with a queue-triggered function, against a real (Azurite) queue.

Core Tools cannot be installed here, so tests, the demo and the benchmark run the app's queue functions
through this stand-in for the host's queue listener. It keeps the host's contract:

- messages are received ``batch_size`` at a time with a visibility timeout and handed, decoded from
  base64, to the function as ``azure.functions.QueueMessage`` (with ``dequeue_count``), in parallel;
- a message whose invocation returns is deleted; one whose invocation raises stays and reappears after
  ``visibility_timeout`` (the host's ``visibilityTimeout`` between retries);
- a message that failed on its ``max_dequeue_count``-th delivery is moved to ``<queue>-poison``.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)


class QueueHost:
    def __init__(self, connection_string: str, queue: str, function: Callable[[Any], None], *,
                 batch_size: int = 4, visibility_timeout: int = 30, max_dequeue_count: int = 5,
                 poll_seconds: float = 0.2):
        from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

        def client(name: str) -> Any:
            return QueueClient.from_connection_string(connection_string, name,
                                                      message_encode_policy=TextBase64EncodePolicy(),
                                                      message_decode_policy=TextBase64DecodePolicy())

        self.queue = client(queue)
        self.poison = client(f"{queue}-poison")
        self.function = function
        self.batch_size = batch_size
        self.visibility_timeout = visibility_timeout
        self.max_dequeue_count = max_dequeue_count
        self.poll_seconds = poll_seconds
        self._pool = ThreadPoolExecutor(max_workers=batch_size, thread_name_prefix="queue-host")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._counts = {"invocations": 0, "failures": 0, "completed": 0, "poisoned": 0}
        for q in (self.queue, self.poison):
            _ensure(q)

    @classmethod
    def for_function(cls, function_name: str, queue: str, connection_string: str | None = None,
                     **options: Any) -> QueueHost:
        """The app's own function, found the way the host finds it: by name, in ``function_app``."""
        import os
        from importlib import import_module

        import function_app  # noqa: F401 - the blueprints are registered on import

        module = import_module(f"functions.{function_name}")
        return cls(connection_string or os.environ["IMAGES_STORAGE"], queue, getattr(module, function_name),
                   **options)

    def run_once(self) -> int:
        """Receive one batch of visible messages and run them; returns how many there were."""
        messages = list(self.queue.receive_messages(max_messages=self.batch_size,
                                                    visibility_timeout=self.visibility_timeout))
        for future in [self._pool.submit(self._invoke, m) for m in messages]:
            future.result()
        return len(messages)

    def _invoke(self, message: Any) -> None:
        from azure.functions.queue import QueueMessage  # the worker's concrete class (dequeue_count etc.)

        with self._lock:
            self._counts["invocations"] += 1
        try:
            self.function(QueueMessage(id=message.id, body=message.content.encode("utf-8"),
                                            dequeue_count=message.dequeue_count, pop_receipt=message.pop_receipt))
        except Exception as exc:  # noqa: BLE001 - the host logs a failed invocation and retries it
            with self._lock:
                self._counts["failures"] += 1
            log.info("queue host: %s failed on attempt %d: %s", message.id, message.dequeue_count, exc)
            if message.dequeue_count >= self.max_dequeue_count:
                self.poison.send_message(message.content)
                self.queue.delete_message(message)
                with self._lock:
                    self._counts["poisoned"] += 1
            return
        self.queue.delete_message(message)
        with self._lock:
            self._counts["completed"] += 1

    def pending(self) -> int:
        """Messages still in the queue, visible or not (Azure's approximate count includes both)."""
        return self.queue.get_queue_properties().approximate_message_count

    def drain(self, timeout: float = 60.0) -> None:
        """Run messages until the queue is empty, delayed and retried ones included."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue {self.queue.queue_name} still holds {self.pending()} messages "
                                   f"after {timeout:g} s")
            if not self.run_once():
                time.sleep(self.poll_seconds)

    def start(self) -> QueueHost:
        self._thread = threading.Thread(target=self._serve, name="queue-host", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                handled = self.run_once()
            except Exception as exc:  # noqa: BLE001 - storage hiccup: poll again, like the host
                log.warning("queue host: receiving failed: %s", exc)
                handled = 0
            if not handled:
                self._stop.wait(self.poll_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        self._pool.shutdown(wait=True)

    def stats(self) -> dict:
        with self._lock:
            return dict(self._counts)

    def poisoned(self) -> list[str]:
        """The contents of the poison queue (peeked, not removed)."""
        return [m.content for m in self.poison.peek_messages(max_messages=32)]


def _ensure(queue: Any) -> None:
    from azure.core.exceptions import ResourceExistsError

    try:
        queue.create_queue()
    except ResourceExistsError:
        pass
