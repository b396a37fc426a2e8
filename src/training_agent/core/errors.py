"""Errors that carry the pipeline step they happened in and the process exit code they map to.

The exit codes are a contract with whoever runs the trainer (the local executor, a Kubernetes Job's pod
failure policy): invalid input can never succeed on a retry, anything else might. The README's "Exit codes"
table lists them; every command exits with one of these.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # unexpected error: a retry may succeed
# Bad command line or configuration: an environment variable, no kubeconfig, a port in use (argparse uses 2).
EXIT_USAGE = 2
# The project, its dataset or training options are wrong (in the records or on the demo's command line):
# retrying cannot help.
EXIT_INVALID_INPUT = 3
# Stopped on request (SIGTERM: preemption, node drain) after saving a checkpoint: run it again to resume.
# 75 is sysexits' EX_TEMPFAIL.
EXIT_RETRY = 75
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT): 128 + the signal's number, as shells report it


class TrainingAgentError(Exception):
    """Base class for errors this project raises on purpose, with a message meant for people."""

    exit_code = EXIT_FAILED


class ConfigurationError(TrainingAgentError):
    """The service's own configuration (environment variables, command-line options) cannot work."""

    exit_code = EXIT_USAGE


class StepError(TrainingAgentError):
    """A pipeline step failed; `step` names it so the project's error says where."""

    def __init__(self, message: str, *, step: str | None = None) -> None:
        super().__init__(message)
        self.step = step


class InvalidInputError(StepError):
    """The project, its dataset or its training metadata cannot be trained on as they are."""

    exit_code = EXIT_INVALID_INPUT


class StorageError(StepError):
    """An object could not be read from or written to storage."""


class ObjectNotFoundError(StorageError, InvalidInputError):
    """The object a URL names does not exist: the record points at nothing."""

    exit_code = EXIT_INVALID_INPUT


class RecordsError(StepError):
    """The records store (Supabase or SQLite) refused or failed a request."""


class Interrupted(TrainingAgentError):
    """The trainer was asked to stop (SIGTERM). The project stays `training`, and a checkpoint, if one was
    written, lets the next attempt resume."""

    exit_code = EXIT_RETRY
