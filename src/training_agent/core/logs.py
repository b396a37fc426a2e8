"""Process logging (text or one JSON object per line), the context bound to each line, and the `agent_logs`
writer that mirrors every step into the shared table.

The context (project id, TrainingRun name, request id) lives in contextvars, so a line logged anywhere below
a request handler or a run carries it without being passed down; the request id is asgi-correlation-id's.
A trainer process runs one project: it binds its context for the whole process (`process_bound`), which its
other threads (heartbeat, data loading) then share.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any, Literal
from uuid import UUID

from asgi_correlation_id.context import correlation_id

from training_agent.core.records import LogLevel, RecordsStore
from training_agent.core.runs import run_name as run_name_of

LogFormat = Literal["text", "json"]

_PY_LEVELS = {
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARNING: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
}
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_project_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("project_id", default=None)
_run_name: contextvars.ContextVar[str | None] = contextvars.ContextVar("run_name", default=None)
_process: dict[str, str] = {}  # the trainer's project, for threads that do not inherit contextvars


def _fields(project_id: UUID | str | None, run_name: str | None) -> tuple[str | None, str | None]:
    if project_id is None:
        return None, run_name
    return str(project_id), run_name or run_name_of(UUID(str(project_id)))


def bind(project_id: UUID | str, run_name: str | None = None) -> None:
    """Name the project (and its TrainingRun, `tr-<project id>` unless given) on every later line of this
    context: a request's own task, or a worker thread's copy of it."""
    project, run = _fields(project_id, run_name)
    _project_id.set(project)
    _run_name.set(run)


@contextlib.contextmanager
def bound(project_id: UUID | str | None = None, run_name: str | None = None) -> Iterator[None]:
    """`bind` for the duration of a block (a run executed in a process that outlives it; one reconcile,
    which knows the run's name before its project)."""
    project, run = _fields(project_id, run_name)
    tokens = (_project_id.set(project), _run_name.set(run))
    try:
        yield
    finally:
        _project_id.reset(tokens[0])
        _run_name.reset(tokens[1])


@contextlib.contextmanager
def process_bound(project_id: UUID | str, run_name: str | None = None) -> Iterator[None]:
    """The project of this whole process while the block runs (`training-agent train`): the lines of every
    thread carry it, also those of threads that did not inherit the caller's contextvars."""
    project, run = _fields(project_id, run_name)
    _process.update({k: v for k, v in (("project_id", project), ("run_name", run)) if v})
    try:
        yield
    finally:
        _process.clear()


def context_fields() -> dict[str, str]:
    """What is known here of the project, its run and the request: only the keys that are set."""
    fields = dict(_process)
    for key, var in (("project_id", _project_id), ("run_name", _run_name)):
        value = var.get()
        if value is not None:
            fields[key] = value
    request_id = correlation_id.get()
    if request_id:
        fields["request_id"] = request_id
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp (UTC, ISO 8601), level, logger, message, the bound context,
    and the traceback as `exception` — what log collectors (Loki, Cloud Logging, Elastic) parse as is."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        document: dict[str, Any] = {
            "timestamp": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **context_fields(),
        }
        # kopf's lines about one object carry it as `k8s_ref`: a TrainingRun's name is the run's name.
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict) and ref.get("name"):
            document["object"] = {k: ref[k] for k in ("kind", "namespace", "name") if ref.get(k)}
            if ref.get("kind") == "TrainingRun":
                document.setdefault("run_name", ref["name"])
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, default=str, ensure_ascii=False)


def make_formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    formatter = logging.Formatter(TEXT_FORMAT, "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    return formatter


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """Log to stderr at LOG_LEVEL, one line per record (LOG_FORMAT: text, or JSON), timestamps in UTC.

    Every component logs through the root logger: uvicorn runs with `log_config=None` and kopf's own lines
    (it is run as a library, without `kopf.configure`) propagate here, so one setting governs all three."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The HTTP clients log every request at INFO; that drowns the training progress.
    for noisy in ("httpx", "httpcore", "urllib3", "google", "hpack"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


class AgentLog:
    """Writes one project's steps to `agent_logs` and to the process log.

    A failure to write a log row is reported to the process log and otherwise ignored: losing a log line
    must not fail a training run that is otherwise fine.
    """

    def __init__(self, records: RecordsStore, project_id: UUID | None, agent_name: str) -> None:
        self.records = records
        self.project_id = project_id
        self.agent_name = agent_name
        self.logger = logging.getLogger("training_agent.steps")

    def write(self, level: LogLevel, message: str, /, **metadata: Any) -> None:
        self.logger.log(_PY_LEVELS[level], "[%s] %s", self.project_id, message)
        try:
            self.records.insert_log(self.project_id, self.agent_name, level.value, message, metadata)
        except Exception:
            self.logger.warning("Could not write to agent_logs: %s", message, exc_info=True)

    def info(self, message: str, /, **metadata: Any) -> None:
        self.write(LogLevel.INFO, message, **metadata)

    def warning(self, message: str, /, **metadata: Any) -> None:
        self.write(LogLevel.WARNING, message, **metadata)

    def error(self, message: str, /, **metadata: Any) -> None:
        self.write(LogLevel.ERROR, message, **metadata)
