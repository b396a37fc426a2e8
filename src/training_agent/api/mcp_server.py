"""The Model Context Protocol endpoint at `/mcp`: the training routes' operations as MCP tools
(mcp_tools.py), served over streamable HTTP by the official SDK inside the API's own app.

Stateless: every POST carries its own call and nothing is kept between them, so any API replica can answer
any request (no session affinity behind a Kubernetes Service) and a restart loses nothing. Answers are SSE
streams, so `wait_for_training` can send progress notifications before its result.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.security.utils import get_authorization_scheme_param
from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from training_agent import __version__
from training_agent.api.deps import check_api_key
from training_agent.api.mcp_tools import TrainingTools
from training_agent.core.settings import Settings

PATH = "/mcp"

INSTRUCTIONS = """Trains torchvision image classifiers for projects in the shared `projects` table.
start_training takes a project in `pending_training`; wait_for_training (or get_training_status) follows
it to `pending_evaluation` (the model is recorded) or `failed` (the reason is in `error`). check_dataset
tells beforehand whether a project's dataset layout would be accepted."""


class ApiKeyGuard:
    """The training routes' bearer check (MCP_API_KEY) in front of the MCP transport, answered the same
    way: 401 with `{"detail": ...}` and `WWW-Authenticate: Bearer`."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scheme, token = get_authorization_scheme_param(Headers(scope=scope).get("authorization"))
            try:
                check_api_key(self.settings, token if scheme.lower() == "bearer" else None)
            except HTTPException as exc:
                refusal = JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


@contextmanager
def _root_logging_kept() -> Iterator[None]:
    """MCPServer() calls logging.basicConfig with a rich handler at INFO; the process's logging is set up
    by the CLI (LOG_LEVEL, one format), so whatever the constructor does to the root logger is undone."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def build_server(app: FastAPI, *, poll_s: float = 1.0) -> MCPServer:
    """The MCP server with the training tools, bound to `app`'s records, executor and storage."""
    with _root_logging_kept():
        server: MCPServer = MCPServer("training-agent", version=__version__, instructions=INSTRUCTIONS)
    TrainingTools(app, poll_s=poll_s).register(server)
    return server


def router(app: FastAPI, *, poll_s: float = 1.0) -> APIRouter:
    """`/mcp` as a router for `app.include_router`: its lifespan runs the SDK's session manager inside the
    app's own (records, executor and reaper are up before the first tool call and down after the last)."""
    settings: Settings = app.state.settings
    server = build_server(app, poll_s=poll_s)
    server.streamable_http_app(
        streamable_http_path=PATH,
        stateless_http=True,
        max_request_body_size=settings.max_request_bytes,
        # The SDK's Host/Origin allow-list (DNS-rebinding protection for servers on a developer's loopback)
        # would refuse the Service and Ingress names the API is reached by on Kubernetes; the training
        # routes beside it have no such list either, and MCP_API_KEY guards both.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    manager = server.session_manager

    @asynccontextmanager
    async def lifespan(_app: object) -> AsyncIterator[None]:
        async with manager.run():
            yield

    mcp_router = APIRouter(lifespan=lifespan)
    endpoint = ApiKeyGuard(StreamableHTTPASGIApp(manager), settings)
    # A plain Starlette route: the endpoint is an ASGI app (it streams its own answer), not a FastAPI handler.
    # POST only: without sessions there is nothing to send on a GET stream nor a session to DELETE, and
    # the MCP spec's answer to both is then 405 (a GET would otherwise hold a connection open for nothing).
    mcp_router.routes.append(Route(PATH, endpoint, methods=["POST"], include_in_schema=False))
    return mcp_router
