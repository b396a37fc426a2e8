"""LOG_FORMAT and LOG_LEVEL: JSON lines with the bound context, text lines as before, levels honoured."""

from __future__ import annotations

import logging
from pathlib import Path
from uuid import uuid4

import pytest

from tests.conftest import make_settings
from tests.support.logs import product_logging
from training_agent.core import logs
from training_agent.core.errors import ConfigurationError
from training_agent.core.settings import load_settings


def test_json_lines_carry_the_bound_project_and_run() -> None:
    project = uuid4()
    with product_logging("INFO", "json") as captured:
        logging.getLogger("training_agent.test").info("outside %s", "any run")
        with logs.bound(project):
            logging.getLogger("training_agent.test").warning("inside the run")
            try:
                raise ValueError("boom")
            except ValueError:
                logging.getLogger("training_agent.test").exception("it failed")
        logging.getLogger("training_agent.test").debug("below the level")
    outside, inside, failed = captured.records()
    assert outside["message"] == "outside any run" and "project_id" not in outside
    assert outside["level"] == "INFO" and outside["logger"] == "training_agent.test"
    assert outside["timestamp"].endswith("Z") and "T" in outside["timestamp"]
    assert inside["project_id"] == str(project) and inside["run_name"] == f"tr-{project}"
    assert inside["level"] == "WARNING" and "request_id" not in inside
    assert "ValueError: boom" in failed["exception"] and failed["message"] == "it failed"


def test_a_trainer_process_binds_every_thread() -> None:
    import threading

    project = uuid4()
    with product_logging("INFO", "json") as captured, logs.process_bound(project):
        thread = threading.Thread(target=lambda: logging.getLogger("t").info("from a thread"))
        thread.start()
        thread.join()
    [line] = captured.records()
    assert line["project_id"] == str(project) and line["run_name"] == f"tr-{project}"
    assert logs.context_fields() == {}  # unbound once the block is over


def test_text_format_and_level(tmp_path: Path) -> None:
    with product_logging("WARNING", "text") as captured:
        logging.getLogger("training_agent.test").info("hidden")
        logging.getLogger("training_agent.test").warning("shown")
    [line] = captured.lines()
    assert line.endswith("WARNING training_agent.test: shown")


def test_log_format_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert make_settings(tmp_path).log_format == "text"
    monkeypatch.setenv("LOG_FORMAT", "JSON")
    assert load_settings().log_format == "json"
    monkeypatch.setenv("LOG_FORMAT", "yaml")
    with pytest.raises(ConfigurationError, match="LOG_FORMAT"):
        load_settings()
