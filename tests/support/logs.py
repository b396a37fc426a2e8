"""The process's logging set up by the product (`configure_logging`) for one test, its stderr captured, and
the root logger put back as it was afterwards (pytest's own capture handlers included)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from training_agent.core.logs import configure_logging


class CapturedLog:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def lines(self) -> list[str]:
        return [line for line in self.stream.getvalue().splitlines() if line.strip()]

    def records(self) -> list[dict[str, Any]]:
        """Every line as the JSON object it must be (json.loads fails the test on any other line)."""
        return [json.loads(line) for line in self.lines()]


@contextmanager
def product_logging(level: str, log_format: str) -> Iterator[CapturedLog]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_noisy = {name: logging.getLogger(name).level for name in ("httpx", "httpcore", "urllib3", "google")}
    stream = io.StringIO()
    saved_stderr, sys.stderr = sys.stderr, stream  # configure_logging writes to the stderr of the moment
    try:
        configure_logging(level, log_format)  # type: ignore[arg-type]
    finally:
        sys.stderr = saved_stderr
    try:
        yield CapturedLog(stream)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, noisy_level in saved_noisy.items():
            logging.getLogger(name).setLevel(noisy_level)
