"""Signed callbacks: a start may name a `callback_url`, and when its run ends that URL is told how.

The URL is checked when the start is accepted (http or https, a host in TRAINING_AGENT_CALLBACK_ALLOWED_HOSTS,
a TRAINING_AGENT_CALLBACK_SECRET to sign with) and kept in the run record (`metadata.training_run`), so
whichever long-lived component sees the run end reports it, after a restart too: the API server for local
runs (its executor settles every run it watched), the controller for Kubernetes runs (it sees the Job end).

The report is one POST of a JSON body `{project_id, run_id, status, model_url, metrics, error}` with:

    X-Training-Agent-Timestamp: <unix seconds>
    X-Training-Agent-Signature: sha256=<hex HMAC-SHA256 over "<timestamp>.<raw body>", key: the secret>
    X-Training-Agent-Delivery:  <id, the same on every try of one report>

The timestamp is inside the signed string, so a receiver that refuses old timestamps refuses replays.
Connection errors, timeouts and 5xx answers are tried again with exponential backoff, a bounded number of
times; any other answer is final. Delivery happens on the sender's own thread: neither a run nor a
reconcile ever waits for a receiver. A report that could not be delivered is an `agent_logs` warning.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_when_event_set,
    wait_exponential,
)

from training_agent import __version__
from training_agent.core.lease import run_of
from training_agent.core.logs import AgentLog
from training_agent.core.records import Project, ProjectStatus, RecordsStore
from training_agent.core.settings import Settings, env_name

logger = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-Training-Agent-Timestamp"
SIGNATURE_HEADER = "X-Training-Agent-Signature"
DELIVERY_HEADER = "X-Training-Agent-Delivery"
MAX_URL_LENGTH = 2048
_MAX_BACKOFF_S = 60.0
_REMEMBERED = 4096  # reported runs kept in memory, so a run reported twice in this process is sent once
_ENDED = frozenset({ProjectStatus.PENDING_EVALUATION.value, ProjectStatus.FAILED.value})
# What a report carries of the model's metrics: the headline numbers, not the per-epoch history or the
# per-class report (those are in the models row and the sidecar beside the weights).
METRIC_KEYS = (
    "test_accuracy",
    "test_loss",
    "test_macro_f1",
    "test_balanced_accuracy",
    "val_accuracy",
    "val_loss",
    "best_epoch",
    "epochs_run",
    "stopped_early",
    "training_seconds",
    "images_per_second",
)
# What it carries of `metadata.error`: not the traceback (the receiver may be outside the system).
ERROR_KEYS = ("message", "type", "step", "exit_code", "failed_at")


class CallbackRefused(ValueError):
    """A callback URL this service will not call; the message says why in one sentence."""


# -- at the start: the URL -----------------------------------------------------------------------------------
def _host_allowed(host: str, allowed: list[str]) -> bool:
    return any(host == entry or (entry.startswith("*.") and host.endswith(entry[1:])) for entry in allowed)


def check_callback_url(url: str, settings: Settings) -> str:
    """The URL, if callbacks are on and it may be called; raises CallbackRefused otherwise."""
    hosts_setting = env_name("callback_allowed_hosts")
    if not settings.callback_allowed_host_list:
        raise CallbackRefused(f"Callbacks are off on this server: {hosts_setting} names no host.")
    if settings.callback_secret is None:
        raise CallbackRefused(
            f"Callbacks are off on this server: {env_name('callback_secret')} (their signing key) is not set."
        )
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if (
        len(url) > MAX_URL_LENGTH
        or not port_ok
        or parts.scheme not in ("http", "https")
        or not parts.hostname
    ):
        raise CallbackRefused(f"callback_url must be an http or https URL with a host, not {url[:200]!r}.")
    if parts.username or parts.password:
        raise CallbackRefused("callback_url must not carry a user name or password.")
    if not _host_allowed(parts.hostname.lower(), settings.callback_allowed_host_list):
        raise CallbackRefused(f"callback_url host {parts.hostname!r} is not allowed by {hosts_setting}.")
    return url


# -- the report ----------------------------------------------------------------------------------------------
def outcome(records: RecordsStore, project: Project) -> dict[str, Any]:
    """`{project_id, run_id, status, model_url, metrics, error}` of a project whose run has ended."""
    model_url = metrics = error = None
    if project.status == ProjectStatus.PENDING_EVALUATION.value:
        models = records.list_models(project.id)
        if models:
            model_url = models[-1].gcs_url
            metrics = {k: models[-1].metadata[k] for k in METRIC_KEYS if k in models[-1].metadata}
    recorded = project.metadata.get("error")
    if project.status == ProjectStatus.FAILED.value and isinstance(recorded, dict):
        error = {k: recorded.get(k) for k in ERROR_KEYS}
    return {
        "project_id": str(project.id),
        "run_id": run_of(project).get("run_id"),
        "status": project.status,
        "model_url": model_url,
        "metrics": metrics,
        "error": error,
    }


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value: `sha256=` and the hex HMAC-SHA256 of `<timestamp>.<body>`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def shown(url: str) -> str:
    """The URL for logs: without its query and fragment, which may carry a receiver's token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class _Retry(Exception):
    """A try worth repeating: a 5xx answer (connection errors and timeouts are httpx's own)."""


class _Final(Exception):
    """An answer that another try would not change (a 3xx, 4xx)."""


def _worth_retrying(exc: BaseException) -> bool:
    return isinstance(exc, _Retry | httpx.TransportError)


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, _Retry | _Final) else f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class _Ended:
    project_id: UUID
    run_id: str | None  # the run seen ending; None: whichever run the records hold


# -- delivery -----------------------------------------------------------------------------------------------
class CallbackSender:
    """Reports ended runs to their callback URLs from one background thread, started on first use."""

    def __init__(self, settings: Settings, records: RecordsStore) -> None:
        self.settings = settings
        self.records = records
        self._queue: queue.Queue[_Ended | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._reported: OrderedDict[tuple[UUID, str | None], None] = OrderedDict()

    def run_ended(self, project_id: UUID, run_id: str | None = None) -> None:
        """Report the project's ended run if its start named a callback URL. Returns at once."""
        with self._lock:
            if self._closing.is_set():
                logger.warning("Not reporting the end of project %s: the sender is closed", project_id)
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, daemon=True, name="callbacks")
                self._thread.start()
            # Under the lock: nothing is queued behind the sentinel that `close` puts.
            self._queue.put(_Ended(project_id, run_id))

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop: reports still queued get one try each while `timeout_s` lasts; the rest are dropped."""
        with self._lock:
            self._closing.set()
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join(timeout_s)

    def join(self, timeout_s: float) -> bool:
        """Wait (bounded) until every queued report was handled; whether they all were."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self._queue.unfinished_tasks

    def _work(self) -> None:
        with httpx.Client(
            timeout=self.settings.callback_timeout_seconds,
            follow_redirects=False,  # a redirect could lead anywhere: only allowed hosts are called
            headers={"User-Agent": f"training-agent/{__version__}"},
        ) as client:
            while (item := self._queue.get()) is not None:
                try:
                    self._report(client, item)
                except Exception:  # a records hiccup costs this report, never the thread
                    logger.warning("Could not report the end of project %s", item.project_id, exc_info=True)
                finally:
                    self._queue.task_done()
            self._queue.task_done()

    def _report(self, client: httpx.Client, ended: _Ended) -> None:
        project = self.records.get_project(ended.project_id)
        run = run_of(project) if project is not None else {}
        url = run.get("callback_url")
        if project is None or not isinstance(url, str):
            return
        run_id = run.get("run_id")
        if ended.run_id is not None and run_id != ended.run_id:
            logger.info("Not reporting project %s: a newer run has started", project.id)
            return
        if project.status not in _ENDED:
            logger.warning("Not reporting project %s: its records say %r", project.id, project.status)
            return
        if not self._first_report(project.id, run_id):
            return
        log = AgentLog(self.records, project.id, self.settings.agent_name)
        try:
            check_callback_url(url, self.settings)  # this process's settings may be narrower than the API's
        except CallbackRefused as exc:
            log.warning(f"Callback to {shown(url)} not sent: {exc}", callback_url=shown(url))
            return
        body = json.dumps(outcome(self.records, project), separators=(",", ":")).encode()
        self._deliver(client, url, body, log)

    def _first_report(self, project_id: UUID, run_id: str | None) -> bool:
        key = (project_id, run_id)
        if key in self._reported:
            return False
        self._reported[key] = None
        if len(self._reported) > _REMEMBERED:
            self._reported.popitem(last=False)
        return True

    def _deliver(self, client: httpx.Client, url: str, body: bytes, log: AgentLog) -> None:
        delivery = uuid.uuid4().hex
        retrying = Retrying(
            stop=stop_after_attempt(self.settings.callback_attempts) | stop_when_event_set(self._closing),
            wait=wait_exponential(multiplier=self.settings.callback_backoff_seconds, max=_MAX_BACKOFF_S),
            retry=retry_if_exception(_worth_retrying),
            sleep=self._pause,
            before_sleep=lambda state: logger.info(
                "Callback to %s failed (%s); trying again", shown(url), _outcome_reason(state)
            ),
            reraise=True,
        )
        try:
            status = retrying(self._post, client, url, body, delivery)
        except Exception as exc:  # noqa: BLE001 - every way a delivery can fail ends as the same warning
            attempts = retrying.statistics.get("attempt_number", 1)
            log.warning(
                f"Callback to {shown(url)} failed after {attempts} attempt(s): {_reason(exc)}",
                callback_url=shown(url),
                attempts=attempts,
                delivery=delivery,
            )
            return
        logger.info("Callback to %s delivered (HTTP %d, delivery %s)", shown(url), status, delivery)

    def _pause(self, seconds: float) -> None:
        self._closing.wait(seconds)  # a shutdown does not sit out a backoff

    def _post(self, client: httpx.Client, url: str, body: bytes, delivery: str) -> int:
        """One try, signed afresh: a late retry carries a current timestamp."""
        timestamp = str(int(time.time()))
        secret = self.settings.callback_secret
        assert secret is not None  # checked before delivery
        response = client.post(
            url,
            content=body,
            headers={
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(secret.get_secret_value(), timestamp, body),
                DELIVERY_HEADER: delivery,
            },
        )
        if response.status_code >= 500:
            raise _Retry(f"HTTP {response.status_code}")
        if not response.is_success:
            raise _Final(f"HTTP {response.status_code}")
        return response.status_code


def _outcome_reason(state: RetryCallState) -> str:
    exc = state.outcome.exception() if state.outcome is not None else None
    return _reason(exc) if exc is not None else "no answer"
