"""Process logging, and the `agent_logs` writer that mirrors every step into the shared table."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any
from uuid import UUID

from training_agent.core.records import LogLevel, RecordsStore

_PY_LEVELS = {
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARNING: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
}


def configure_logging(level: str) -> None:
    """Log to stderr at LOG_LEVEL, one line per record, timestamps in UTC."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
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
