"""How a run's end is told in `agent_logs`: the one row that closes it.

A run ends exactly once, with the compare-and-set that moves its project out of `training` (to
`pending_evaluation` or `failed`); whoever wins that move — the trainer, the local executor, the API's
reaper, the controller — writes the closing row, and nobody else does. Its wording is the seed's message to
the user ("Training complete. Model uploaded to GCP. Evaluation Agent can now begin."), naming the project,
the model and its accuracy; a failure names the project and the reason (Requirement 8.1: level `error`).
Callbacks (callbacks.py) tell the same end to whoever started the run.
"""

from __future__ import annotations

from typing import Any

from training_agent.core.logs import AgentLog

COMPLETE = "Training complete for project"
FAILED = "Training failed for project"


def complete_message(project_name: str, model_url: str, test_accuracy: float | None) -> str:
    accuracy = f" (test accuracy {test_accuracy:.1%})" if isinstance(test_accuracy, int | float) else ""
    return (
        f"{COMPLETE} {project_name}. Model uploaded to {model_url}{accuracy}. Evaluation Agent can now begin."
    )


def failed_message(project_name: str, reason: str, step: str | None = None) -> str:
    where = f" at step {step}" if step else ""
    return f"{FAILED} {project_name}{where}: {reason}"


def is_closing(message: str) -> bool:
    """Whether an agent_logs message is a run's closing row."""
    return message.startswith((COMPLETE, FAILED))


def log_complete(log: AgentLog, project_name: str, model_url: str, **metadata: Any) -> None:
    message = complete_message(project_name, model_url, metadata.get("test_accuracy"))
    log.info(message, model_url=model_url, **metadata)


def log_failed(log: AgentLog, project_name: str, error: dict[str, Any], *, step: str | None = None) -> None:
    """The closing row of a failed run; its metadata is the project's `error` (message, type, step, ...)."""
    log.error(failed_message(project_name, str(error.get("message")), step), **error)
