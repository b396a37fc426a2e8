"""A PostgREST-protocol server over a real PostgreSQL database — a test stand-in, never product code.

No PostgREST binary can be installed on the build machines (TESTING.md), so this serves the subset of the
protocol supabase-py sends for this project, over HTTP, from the real tables created by the project's own
migration: `GET/POST/PATCH/DELETE /rest/v1/<table>` with `select`, `order`, `limit`, `offset` and the
`eq/neq/gt/gte/lt/lte/is/in` filters, `Prefer: return=representation|minimal`, inserts that ignore a
duplicate key (`Prefer: resolution=ignore-duplicates`, `on_conflict`), `apikey` checked, and PostgREST-shaped
JSON errors. Queries are built with psycopg's `sql` module from names checked against the catalog, so a test
can never inject SQL through it.

Faults on a switch (`fail_next`): the next requests answer 503 (or 502/504), or the connection is closed
without an answer — before the request is carried out, or after it (an answer lost on the way back).
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

_OPS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_RESERVED = {"select", "order", "limit", "offset", "columns", "on_conflict"}
DROP = 0  # a fault "status": close the connection without answering


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _json_default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


class Catalog:
    """Tables and column types of the `public` schema, read once at start-up."""

    def __init__(self, conninfo: str) -> None:
        with psycopg.connect(conninfo) as db:
            rows = db.execute(
                "select table_name, column_name, data_type from information_schema.columns "
                "where table_schema = 'public'"
            ).fetchall()
        self.columns: dict[str, dict[str, str]] = {}
        for table, column, data_type in rows:
            self.columns.setdefault(table, {})[column] = data_type

    def table(self, name: str) -> dict[str, str]:
        if name not in self.columns:
            raise ApiError(404, "PGRST205", f"Could not find the table 'public.{name}' in the schema cache")
        return self.columns[name]

    def column(self, table: str, name: str) -> str:
        if name not in self.table(table):
            raise ApiError(400, "42703", f"column {table}.{name} does not exist")
        return name


class Query:
    """The parts of one request URL: filters, select list, order, limit, offset."""

    def __init__(self, catalog: Catalog, table: str, query: str) -> None:
        self.table = table
        self.catalog = catalog
        self.where: list[sql.Composable] = []
        self.params: list[Any] = []
        self.select: sql.Composable = sql.SQL("*")
        self.order: list[sql.Composable] = []
        self.limit: int | None = None
        self.offset: int | None = None
        for key, value in parse_qsl(query, keep_blank_values=True):
            self._add(key, value)

    def _add(self, key: str, value: str) -> None:
        if key == "select" and value not in ("*", ""):
            self.select = sql.SQL(", ").join(
                sql.Identifier(self.catalog.column(self.table, c.strip())) for c in value.split(",")
            )
        elif key == "order":
            for part in value.split(","):
                column, *mods = part.split(".")
                direction = sql.SQL(" DESC" if "desc" in mods else " ASC")
                self.order.append(sql.Identifier(self.catalog.column(self.table, column)) + direction)
        elif key in ("limit", "offset"):
            setattr(self, key, int(value))
        elif key not in _RESERVED:
            self._filter(key, value)

    def _filter(self, column: str, expression: str) -> None:
        ident = sql.Identifier(self.catalog.column(self.table, column))
        op, _, operand = expression.partition(".")
        if op in _OPS:
            self.where.append(ident + sql.SQL(f" {_OPS[op]} %s"))
            self.params.append(operand)
        elif op == "is" and operand in ("null", "true", "false"):
            self.where.append(ident + sql.SQL(f" IS {operand.upper()}"))
        elif op == "in" and re.fullmatch(r"\(.*\)", operand):
            items = [i.strip().strip('"') for i in operand[1:-1].split(",") if i.strip()]
            self.where.append(ident + sql.SQL(" = ANY(%s)"))
            self.params.append(items)
        else:
            raise ApiError(400, "PGRST100", f"unsupported filter {column}={expression}")

    def where_sql(self) -> sql.Composable:
        if not self.where:
            return sql.SQL("")
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(self.where)

    def tail_sql(self) -> sql.Composable:
        parts: list[sql.Composable] = []
        if self.order:
            parts.append(sql.SQL(" ORDER BY ") + sql.SQL(", ").join(self.order))
        if self.limit is not None:
            parts.append(sql.SQL(" LIMIT ") + sql.Literal(self.limit))
        if self.offset is not None:
            parts.append(sql.SQL(" OFFSET ") + sql.Literal(self.offset))
        return sql.Composed(parts)


@dataclass
class Faults:
    """What the next `count` requests (of `methods`, or all) get instead of their answer."""

    count: int = 0
    status: int = 503
    after: bool = False  # carry the request out first, then fail: the answer is lost, the write is not
    methods: frozenset[str] = frozenset()
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, method: str) -> bool:
        with self.lock:
            if self.count <= 0 or (self.methods and method not in self.methods):
                return False
            self.count -= 1
            return True


class PostgrestStandIn:
    """Serve `/rest/v1/*` for `conninfo` on 127.0.0.1; `url` is what supabase-py's create_client takes."""

    def __init__(self, conninfo: str, api_key: str) -> None:
        self.conninfo = conninfo
        self.api_key = api_key
        self.catalog = Catalog(conninfo)
        self.requests: list[tuple[str, str]] = []  # (method, path?query), for tests that check the wire
        self.faults = Faults()
        handler = self._handler_class()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> PostgrestStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail_next(
        self, count: int, *, status: int = 503, after: bool = False, methods: tuple[str, ...] = ()
    ) -> None:
        """Fail the next `count` requests (of `methods`, or any): answer `status`, or close the connection
        with no answer when `status` is DROP; `after`: only once the request has been carried out."""
        self.faults = Faults(count, status, after, frozenset(methods))

    def _values(self, table: str, row: dict[str, Any]) -> list[Any]:
        types = self.catalog.table(table)
        return [Jsonb(v) if types.get(k) == "jsonb" and v is not None else v for k, v in row.items()]

    def handle(self, method: str, path: str, query: str, body: Any, prefer: str) -> tuple[int, Any]:
        match = re.fullmatch(r"/rest/v1/([A-Za-z_][A-Za-z0-9_]*)", path)
        if not match:
            raise ApiError(404, "PGRST125", f"Invalid path {path}")
        table = match.group(1)
        self.catalog.table(table)
        q = Query(self.catalog, table, query)
        name = sql.Identifier(table)
        if method == "GET":
            statement = sql.SQL("SELECT {} FROM {}").format(q.select, name) + q.where_sql() + q.tail_sql()
            return 200, self._run(statement, q.params)
        if method == "POST":
            rows = body if isinstance(body, list) else [body]
            conflict = self._on_conflict(table, query, prefer)
            out: list[dict[str, Any]] = []
            for row in rows:
                columns = [sql.Identifier(self.catalog.column(table, c)) for c in row]
                statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                    name, sql.SQL(", ").join(columns), sql.SQL(", ").join(sql.Placeholder() * len(columns))
                )
                statement = statement + conflict + sql.SQL(" RETURNING *")
                out += self._run(statement, self._values(table, row))
            return 201, out if "return=representation" in prefer else None
        if method == "PATCH":
            sets = [sql.Identifier(self.catalog.column(table, c)) + sql.SQL(" = %s") for c in body]
            statement = sql.SQL("UPDATE {} SET {}").format(name, sql.SQL(", ").join(sets)) + q.where_sql()
            updated = self._run(statement + sql.SQL(" RETURNING *"), self._values(table, body) + q.params)
            return (200, updated) if "return=representation" in prefer else (204, None)
        if method == "DELETE":
            statement = sql.SQL("DELETE FROM {}").format(name) + q.where_sql() + sql.SQL(" RETURNING *")
            deleted = self._run(statement, q.params)
            return (200, deleted) if "return=representation" in prefer else (204, None)
        raise ApiError(405, "PGRST117", f"Unsupported HTTP method {method}")

    def _on_conflict(self, table: str, query: str, prefer: str) -> sql.Composable:
        """PostgREST's upsert that keeps the stored row: `ON CONFLICT (on_conflict or id) DO NOTHING`."""
        if "resolution=ignore-duplicates" not in prefer:
            if "resolution=" in prefer:
                raise ApiError(400, "PGRST100", "only resolution=ignore-duplicates is served here")
            return sql.SQL("")
        target = dict(parse_qsl(query)).get("on_conflict") or "id"
        columns = [sql.Identifier(self.catalog.column(table, c.strip())) for c in target.split(",")]
        return sql.SQL(" ON CONFLICT ({}) DO NOTHING").format(sql.SQL(", ").join(columns))

    def _run(self, statement: sql.Composed | sql.SQL, params: list[Any]) -> list[dict[str, Any]]:
        try:
            with psycopg.connect(self.conninfo, autocommit=True) as db, db.cursor() as cur:
                cur.execute(statement, params)
                if cur.description is None:
                    return []
                names = [c.name for c in cur.description]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        except psycopg.Error as exc:
            sqlstate = exc.sqlstate or "XX000"
            status = 409 if sqlstate.startswith("23") else 400
            raise ApiError(status, sqlstate, str(exc).splitlines()[0]) from exc

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _respond(self, status: int, payload: Any) -> None:
                data = b"" if payload is None else json.dumps(payload, default=_json_default).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _fail(self, status: int) -> None:
                if status == DROP:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._respond(status, {"message": f"fault injected by the test (HTTP {status})"})

            def _dispatch(self) -> None:
                parts = urlsplit(self.path)
                stand_in.requests.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.headers.get("apikey") != stand_in.api_key:
                    self._respond(401, {"message": "Invalid API key", "hint": "Double check your apikey"})
                    return
                faults = stand_in.faults
                fault = faults.take(self.command)
                if fault and not faults.after:
                    self._fail(faults.status)
                    return
                try:
                    body = json.loads(raw) if raw else {}
                    status, payload = stand_in.handle(
                        self.command, parts.path, parts.query, body, self.headers.get("Prefer", "")
                    )
                except ApiError as exc:
                    status, payload = (
                        exc.status,
                        {
                            "code": exc.code,
                            "message": exc.message,
                            "details": None,
                            "hint": None,
                        },
                    )
                except (ValueError, TypeError) as exc:
                    status, payload = (
                        400,
                        {"code": "PGRST102", "message": str(exc), "details": None, "hint": None},
                    )
                if fault:
                    self._fail(faults.status)
                    return
                self._respond(status, payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _dispatch

        return Handler


@contextmanager
def postgrest_stand_in(conninfo: str, api_key: str) -> Iterator[PostgrestStandIn]:
    server = PostgrestStandIn(conninfo, api_key).start()
    try:
        yield server
    finally:
        server.stop()
