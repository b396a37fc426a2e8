"""Run the app with uvicorn: in the foreground (`training-agent serve`), or on a background thread for the
demo, which then talks to it over real HTTP like the MCP server would."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from training_agent.api.main import create_app
from training_agent.core.errors import ConfigurationError, TrainingAgentError
from training_agent.core.settings import Settings

logger = logging.getLogger(__name__)


class _KeepStartupError:
    """Keeps the exception that failed the app's start-up, for `serve` to raise: the command then reports it
    in one line with its own exit code, where uvicorn would log the traceback and exit 3."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.error: Exception | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        failed = False

        async def send_without_traceback(message: Message) -> None:
            nonlocal failed
            if message["type"] == "lifespan.startup.failed":
                failed = True
                message = {**message, "message": ""}  # its text is the traceback
            await send(message)

        try:
            await self.app(scope, receive, send_without_traceback)
        except Exception as exc:
            if failed:
                self.error = exc
            raise


class _Stopped(Exception):
    """SIGTERM, re-raised by uvicorn once it has shut down gracefully."""


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the app starts. uvicorn binds only after the app's start-up, and
    that start-up settles the runs it finds in `training`: on a busy port, perhaps those of the server still
    running there."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port "
            "(TRAINING_AGENT_API_PORT) or stop what is using it"
        ) from exc
    return sock


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve the API in the foreground until SIGINT or SIGTERM. A port in use or a failed start-up raises."""
    sock = _listen(host, port)
    app = _KeepStartupError(create_app(settings))
    # log_config=None: keep the process's logging set-up (LOG_LEVEL, one format) for uvicorn too.
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, proxy_headers=True))
    logger.info("Listening on http://%s:%d; starting the app", host, sock.getsockname()[1])
    # uvicorn handles SIGINT and SIGTERM itself, then raises the signal again for the handler it found: here
    # one that ends `server.run`, so that a server stopped as asked exits 0 rather than dying by the signal.
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        server.run(sockets=[sock])
    except (KeyboardInterrupt, _Stopped):
        pass
    except SystemExit:  # uvicorn's "startup failed" exits 3, which this project's commands keep for bad input
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    if app.error is not None:
        raise app.error
    if not server.started:
        raise TrainingAgentError("The API server did not start; see the log above")


@contextmanager
def background_server(app: FastAPI, host: str = "127.0.0.1", start_timeout_s: float = 30.0) -> Iterator[str]:
    """Serve `app` on a free port of `host` from a thread; yields its base URL; stops it on exit."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=0, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, name="api-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("The API server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
