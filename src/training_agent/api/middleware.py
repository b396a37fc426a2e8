"""Around the routes: request ids (asgi-correlation-id), request metrics (prometheus-fastapi-instrumentator),
the request body size limit, and the strict JSON parsing of request bodies."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from training_agent.api.metrics import ApiMetrics

REQUEST_ID_HEADER = "X-Request-ID"
_MAX_REQUEST_ID = 64


def _printable_request_id(value: str) -> bool:
    # A caller's id goes into log lines and back into a response header: printable text only.
    return value[:_MAX_REQUEST_ID].isprintable()


def install(app: FastAPI, metrics: ApiMetrics, *, max_request_bytes: int) -> None:
    """The middleware around the routes, innermost first: the body size limit; request counts and latency
    by route template (so /metrics never grows a label per project id), 413s included; and, outermost, the
    request id — the caller's `X-Request-ID` (its first 64 characters) or a new uuid4 hex — echoed back
    and bound to every log line of the request."""
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=max_request_bytes)
    Instrumentator(registry=metrics.registry, excluded_handlers=["^/metrics$"]).instrument(app)
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name=REQUEST_ID_HEADER,
        validator=_printable_request_id,
        transformer=lambda value: value[:_MAX_REQUEST_ID],
    )


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class BodySizeLimitMiddleware:
    """Refuses request bodies over `max_bytes` with 413, whether or not they declare a Content-Length.

    The body is read (at most `max_bytes` of it) before the app runs and then replayed: the routes take
    small JSON bodies, and an app that failed half-way through reading would turn the refusal into a 400.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = {"detail": f"Request body too large; the limit is {self.max_bytes} bytes"}
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, detail, [])
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _send_json(send, 413, detail, [])
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would say

        await self.app(scope, replay, send)


class _NotAJSONNumber(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotAJSONNumber(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: Python reads it as infinity
        raise _NotAJSONNumber(f"{text} is too large for a number")
    return value


def parse_json_body(body: bytes) -> Any:
    """`json.loads` without its extensions to JSON, and with every way a body can be unreadable reported as a
    JSONDecodeError, which FastAPI answers with 422 like any other malformed body.

    The standard library accepts NaN and Infinity (and reads 1e999 as infinity): such a value cannot be
    written back in the error response, which turned a bad request into a 500. Invalid UTF-8, nesting that
    exhausts the parser's recursion, or an integer too long to convert would otherwise be a 400.
    """
    try:
        return json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError:
        raise
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("it is not valid UTF-8", "", exc.start) from exc
    except RecursionError as exc:
        raise json.JSONDecodeError("it is nested too deeply", "", 0) from exc
    except _NotAJSONNumber as exc:
        raise json.JSONDecodeError(str(exc), "", 0) from exc
    except ValueError as exc:  # int() refuses more digits than sys.get_int_max_str_digits()
        raise json.JSONDecodeError("a number in it has too many digits", "", 0) from exc


class StrictJSONRequest(Request):
    """A request whose `json()` (what FastAPI reads a JSON body with) is `parse_json_body`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json_body(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is read by `parse_json_body` (FastAPI's documented custom-request hook)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler
