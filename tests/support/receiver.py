"""A real receiver of callbacks: `http.server` on 127.0.0.1 and a free port, in a thread.

It checks each request's signature the way the README tells a receiver to — written here from the
documented scheme, not with the product's own `sign`, so a product that drifts from its documentation fails
the tests."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SECRET = "receiver-secret"
PATH = "/hooks/training?token=t0k3n"


def verify(secret: str, headers: dict[str, str], body: bytes, max_age_s: float = 300) -> bool:
    """The README's receiver: HMAC-SHA256 over `<timestamp>.<raw body>`, and a timestamp that is recent."""
    timestamp = headers["x-training-agent-timestamp"]
    expected = (
        "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    )
    fresh = abs(time.time() - int(timestamp)) <= max_age_s
    return hmac.compare_digest(expected, headers["x-training-agent-signature"]) and fresh


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    answered: int

    @property
    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


class Receiver:
    """Answers each POST with the next status of `answers` (then 200 for ever) and keeps what it got."""

    def __init__(self, answers: list[int] | None = None, secret: str = SECRET) -> None:
        self.secret = secret
        self.answers = list(answers or [])
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    receiver.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, status)
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test asserts on what was received

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{PATH}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(self, count: int, timeout_s: float = 20) -> list[Received]:
        """Poll (bounded) until `count` requests have arrived."""
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} of {count} callbacks after {timeout_s} s")
            time.sleep(0.02)
        return list(self.received)

    def signed(self, request: Received) -> bool:
        return verify(self.secret, request.headers, request.body)


@contextmanager
def receiving(answers: list[int] | None = None) -> Iterator[Receiver]:
    receiver = Receiver(answers)
    receiver._thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def dead_url() -> str:
    """An allowed host whose port nobody listens on: every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/training"
