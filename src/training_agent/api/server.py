"""Run the app with uvicorn: in the foreground (`training-agent serve`), or on a background thread for the
demo, which then talks to it over real HTTP like the MCP server would."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from training_agent.api.main import create_app
from training_agent.core.settings import Settings


def serve(settings: Settings, host: str, port: int) -> None:
    # log_config=None: keep the process's logging set-up (LOG_LEVEL, one format) for uvicorn too.
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, proxy_headers=True)


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
